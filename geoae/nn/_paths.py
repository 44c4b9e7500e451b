"""The constants of an e3nn tensor product's paths, shared by our evaluations of it."""

import math
from typing import Any, NamedTuple

import torch
from e3nn import o3

__all__ = ["Path", "paths"]


class Path(NamedTuple):
    instruction: Any  # e3nn's Instruction: i_in1, i_in2, i_out, connection_mode, path_shape, ...
    w3j: torch.Tensor  # (ir_in1.dim, ir_in2.dim, ir_out.dim), float64, times the path weight
    weights: slice  # the path's part of the flat weights, of shape instruction.path_shape


def paths(tp: o3.TensorProduct) -> list[Path]:
    """Each instruction of ``tp`` with its constant, ``path_weight * wigner_3j(l1, l2, l3)`` in
    float64 (e3nn multiplies a path's contraction of the inputs, its weights and this Wigner 3j
    symbol by ``path_weight``, which holds the normalisations), and its slice of the weights."""
    out, offset = [], 0
    for ins in tp.instructions:
        l1, l2, l3 = tp.irreps_in1[ins.i_in1].ir.l, tp.irreps_in2[ins.i_in2].ir.l, tp.irreps_out[ins.i_out].ir.l
        size = math.prod(ins.path_shape)
        out.append(Path(ins, ins.path_weight * o3.wigner_3j(l1, l2, l3, dtype=torch.float64), slice(offset, offset + size)))
        offset += size
    return out
