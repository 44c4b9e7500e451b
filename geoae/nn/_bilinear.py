"""A tensor product with shared weights as dense bilinear forms, one per pair of input irreps."""

import torch
from e3nn import o3

from ._irreps import irreps_blocks
from ._paths import paths

__all__ = ["BilinearForm"]


class BilinearForm(torch.nn.Module):
    r"""Evaluate an e3nn `~e3nn.o3.TensorProduct` of ``uvw`` paths with shared weights (e.g.
    `~e3nn.o3.FullyConnectedTensorProduct`) as ``out[z, o] = sum_ab x1[z, a] x2[z, b] B[a, b, o]``.

    ``B`` is sparse: a pair of input irreps reaches only the output irreps of its paths (6% of
    the bloom head's ``B`` is not zero). So it is kept in blocks, one per pair of input irreps
    with paths, of shape ``(ir1 block, ir2 block, the outputs of its paths)``, assembled from the
    weights at each call (cheap: it does not depend on the batch) as the path weight times the
    weights times the Wigner 3j symbol of each path; each block is applied with two matrix
    products. e3nn evaluates each path with its own operations over the batch; on a CPU this is
    several times faster for dozens of paths. The result equals ``tp(x1, x2, weight)`` up to
    round-off. The module keeps only constants (the Wigner 3j symbols times path weights, in
    float64), not ``tp`` nor its weights: pass them.

    Shapes: ``forward(x1 (Z, irreps_in1.dim), x2 (Z, irreps_in2.dim), weight (weight_numel,))``
    returns ``(Z, irreps_out.dim)``.

    >>> tp = o3.FullyConnectedTensorProduct("2x0e+2x1o", "2x0e+2x1o", "3x0e+1x1o+1x2e")
    >>> form = BilinearForm(tp)
    >>> x1, x2 = torch.randn(4, 8), torch.randn(4, 8)
    >>> torch.allclose(form(x1, x2, tp.weight), tp(x1, x2), atol=1e-5)
    True
    """

    def __init__(self, tp: o3.TensorProduct, chunk_size: int = 1024) -> None:
        super().__init__()
        if not tp.shared_weights or any(i.connection_mode != "uvw" for i in tp.instructions):
            raise ValueError("BilinearForm needs uvw instructions with shared weights")
        self.irreps_in1, self.irreps_in2, self.irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        self.weight_numel, self.chunk_size = tp.weight_numel, chunk_size
        so = self.irreps_out.slices()
        pairs = {}  # (i_in1, i_in2) -> its paths' (number, weights' slice, weights' shape, output slice)
        for k, path in enumerate(paths(tp)):
            ins = path.instruction
            self.register_buffer(f"w3j_{k}", path.w3j, persistent=False)  # (ir1.dim, ir2.dim, ir_out.dim)
            pairs.setdefault((ins.i_in1, ins.i_in2), []).append((k, path.weights, ins.path_shape, so[ins.i_out]))
        self.pairs = [(i1, i2, pair_paths) for (i1, i2), pair_paths in pairs.items()]  # entries of irreps_in1, irreps_in2
        # the output column of each column of the blocks, pair after pair
        columns = [torch.arange(o.start, o.stop) for _, _, pair_paths in self.pairs for *_, o in pair_paths]
        self.register_buffer("columns", torch.cat(columns) if columns else torch.zeros(0, dtype=torch.long), persistent=False)

    def blocks(self, weight: torch.Tensor) -> list[torch.Tensor]:
        """Per pair of input irreps, its block of ``B``, ``(ir1 block dim, ir2 block dim * its outputs)``,
        for the flat ``weight``."""
        blocks = []
        for i1, i2, pair_paths in self.pairs:
            parts = []
            for k, w, shape, o in pair_paths:
                w3j = getattr(self, f"w3j_{k}").to(weight.dtype)  # (ir1.dim, ir2.dim, ir_out.dim)
                part = torch.einsum("uvw,ijk->uivjwk", weight[w].view(shape), w3j)  # (u, i, v, j, w, k)
                parts.append(part.reshape(self.irreps_in1[i1].dim, self.irreps_in2[i2].dim, o.stop - o.start))
            blocks.append(torch.cat(parts, dim=2).flatten(1))
        return blocks

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        blocks = self.blocks(weight)
        out = []
        for c1, c2 in zip(x1.split(self.chunk_size), x2.split(self.chunk_size)):  # bounds the (chunk, ir2 dim * outputs) products
            b1, b2 = irreps_blocks(c1, self.irreps_in1), irreps_blocks(c2, self.irreps_in2)  # (z, ir block dim) each
            parts = []
            for (i1, i2, _), block in zip(self.pairs, blocks):
                partial = (b1[i1] @ block).unflatten(1, (b2[i2].shape[1], -1))  # sum over in1: (z, ir2 block dim, outputs)
                parts.append(torch.bmm(b2[i2][:, None], partial)[:, 0])  # sum over in2: (z, outputs)
            chunk = c1.new_zeros(len(c1), self.irreps_out.dim)
            out.append(chunk.index_add_(1, self.columns, torch.cat(parts, dim=1)) if parts else chunk)  # (z, out.dim)
        return torch.cat(out)  # (split gives one empty chunk for an empty batch)
