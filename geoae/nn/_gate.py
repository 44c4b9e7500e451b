"""e3nn's gate activation, evaluated with a split and broadcasts."""

import e3nn.nn
import torch

from ._irreps import irreps_blocks

__all__ = ["Gate"]


class Gate(e3nn.nn.Gate):
    r"""`e3nn.nn.Gate` with a faster forward: the same module (irreps, activations with
    e3nn's normalisation, output layout), whose forward reads the scalars, the gates and each
    gated irrep as blocks of one split of the input (:func:`irreps_blocks`) and multiplies
    each gated irrep by its gates with a broadcast, where e3nn extracts them into new tensors
    and multiplies them with an `~e3nn.o3.ElementwiseTensorProduct`. On the gate of the QM9 model's encoder it is 2x
    faster for 9,229 nodes and 4x for 256 (one CPU thread); the same up to round-off.

    Shapes: ``forward(features (..., irreps_in.dim))`` returns ``(..., irreps_out.dim)``.

    >>> gate = Gate("4x0e+2x0o", [torch.relu, torch.tanh], "3x0e", [torch.sigmoid], "1x1o+2x2e")
    >>> gate.irreps_in, gate.irreps_out
    (2x0o+7x0e+1x1o+2x2e, 4x0e+2x0o+1x1o+2x2e)
    >>> x = torch.randn(5, gate.irreps_in.dim)
    >>> torch.allclose(gate(x), e3nn.nn.Gate.forward(gate, x))
    True
    """

    def __init__(self, irreps_scalars, act_scalars, irreps_gates, act_gates, irreps_gated) -> None:
        super().__init__(irreps_scalars, act_scalars, irreps_gates, act_gates, irreps_gated)
        extract = self.sc.cut  # e3nn's extraction: per output, the input irreps its irreps come from
        self._extracted = extract.irreps_in  # the input's irreps as given (e3nn's irreps_in is simplified)
        self._scalars, self._gates, self._gated = (list(ins) for ins in extract.instructions)  # entries of it

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        blocks = irreps_blocks(features, self._extracted)  # (..., mul * ir.dim) each
        scalars = self.act_scalars(_side_by_side(blocks, self._scalars, features))  # (..., irreps_scalars.dim)
        if not self._gates:
            return scalars
        gates = self.act_gates(_side_by_side(blocks, self._gates, features))  # (..., irreps_gated.num_irreps)
        gates = gates.split([mul for mul, _ in self.irreps_gated], dim=-1)  # (..., mul) each
        out = [scalars]
        for entry, gate, (mul, ir) in zip(self._gated, gates, self.irreps_gated):
            gated = blocks[entry].unflatten(-1, (mul, ir.dim))  # (..., mul, ir.dim)
            out.append((gated * gate[..., None]).flatten(-2))
        return torch.cat(out, dim=-1)  # (..., irreps_out.dim)


def _side_by_side(blocks: tuple, entries: list, features: torch.Tensor) -> torch.Tensor:
    """The ``blocks`` of ``entries``, side by side (the block itself for one entry)."""
    if len(entries) == 1:
        return blocks[entries[0]]
    return torch.cat([blocks[i] for i in entries], dim=-1) if entries else features[..., :0]
