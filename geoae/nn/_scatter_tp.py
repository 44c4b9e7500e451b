"""A convolution's tensor product and message sum as a few dense matrix products."""

from typing import Optional

import torch
from e3nn import o3

from ._irreps import irreps_blocks
from ._paths import paths

__all__ = ["ScatterTensorProduct"]


class ScatterTensorProduct(torch.nn.Module):
    r"""``sum_{e: dst_e = i} tp(x[src_e], y_e, w_e)`` for an e3nn `~e3nn.o3.TensorProduct`
    ``tp`` whose instructions are all ``uvu`` with per-edge weights and a second input of
    multiplicity one (the edge's spherical harmonics), as in NequIP's convolution.

    e3nn evaluates each path with its own small operations over all edges at once; on a CPU
    that is the bulk of a convolution's time, spent moving ``(E, irreps_out.dim)`` tensors
    through memory. Here the kernel of each input irrep (the Wigner 3j blocks of all its paths
    times their path weights) is built once, in float64, from ``tp``'s instructions. Input
    irreps with the same kernel (the two parities of an ``l``) form one group. The edges go
    in chunks small enough for their messages to stay in cache: per chunk, one product
    ``y @ K`` gives every edge's kernel, and per group the sources' features are contracted
    with it (a batched matrix product, one ``(channels, ir.dim) @ (ir.dim, width)`` per
    edge), multiplied by the weights and added to their targets. The sums are put in
    ``tp``'s output layout on the targets, not on the edges. A caller that evaluates many
    edges in parts (as :class:`~geoae.nn.NequIPConvolution` does, to keep its tensors in
    cache) groups the features once with :meth:`features` and sums each part with
    :meth:`scatter`. Weights that are a product ``coefficients @ basis`` (the last, linear
    layer of a radial MLP) can be given as such (``basis``): each group's columns of the basis
    are put in the messages' order once per call, and every edge's weights come out of one
    matrix product in that order, instead of each edge's ``weight_numel`` weights being
    gathered into ``channels * width`` columns (10% of a QM9 encoder's time on two threads). It equals
    ``tp`` followed by the sum up to round-off (terms are added in another order); on this
    project's QM9 model it is 4-7x faster than e3nn forward, 4-5x forward and backward
    (``benchmarks/tensor_product.py``, one thread). Where no
    gradient is asked for, a group whose features are exactly zero on every source is skipped
    (its messages are exactly zero): the first convolution of an encoder sees only the
    scalars of an embedding of the species, and runs 3x faster.

    Args:
        tp: the tensor product (its instructions and irreps; it is not kept).
        chunk_size: edges per chunk on a CPU; on other devices all edges form one chunk.
        scale: factor of the sums (folded into the kernels, so it costs nothing), e.g. a
            convolution's normalisation by the number of neighbours.

    Shapes: ``forward(x (N_src, irreps_in1.dim), y (E, irreps_in2.dim), weight (E,
    weight_numel), edge_index (2, E), num_out)`` returns ``(num_out, irreps_out.dim)``; with
    ``basis (H, weight_numel)``, ``weight`` is ``(E, H)`` and the edges' weights are
    ``weight @ basis``.

    >>> tp = o3.TensorProduct("4x0e+4x1o", "0e+1o", "4x0e+4x1o+4x1o+4x0e",
    ...     [(0, 0, 0, "uvu", True), (0, 1, 1, "uvu", True), (1, 0, 2, "uvu", True), (1, 1, 3, "uvu", True)],
    ...     shared_weights=False, internal_weights=False)
    >>> stp = ScatterTensorProduct(tp)
    >>> x, y, w = torch.randn(3, 16), torch.randn(5, 4), torch.randn(5, tp.weight_numel)
    >>> edge_index = torch.tensor([[0, 1, 2, 2, 0], [1, 0, 0, 1, 1]])
    >>> reference = torch.zeros(2, 32).index_add_(0, edge_index[1], tp(x[edge_index[0]], y, w))
    >>> torch.allclose(stp(x, y, w, edge_index, num_out=2), reference, atol=1e-5)
    True
    >>> coefficients, basis = torch.randn(5, 8), torch.randn(8, tp.weight_numel)  # weights as a product
    >>> torch.allclose(stp(x, y, coefficients, edge_index, 2, basis), stp(x, y, coefficients @ basis, edge_index, 2), atol=1e-5)
    True
    """

    def __init__(self, tp: o3.TensorProduct, chunk_size: int = 512, scale: float = 1.0) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.irreps_in1, self.irreps_in2, self.irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        if tp.shared_weights or any(i.connection_mode != "uvu" for i in tp.instructions):
            raise ValueError("ScatterTensorProduct needs uvu instructions and per-edge weights (shared_weights=False)")
        if any(mul != 1 for mul, _ in self.irreps_in2):
            raise ValueError(f"ScatterTensorProduct needs a second input of multiplicity 1, got {self.irreps_in2}")
        self.weight_numel = tp.weight_numel

        kernels, columns = self._kernels(tp, scale)
        # group the input irreps that share a kernel (e.g. both parities of an l): one batched product serves them all
        groups = []  # (kernel, input irreps)
        for i_in, kernel in kernels.items():
            same = [g for g in groups if g[0].shape == kernel.shape and torch.equal(g[0], kernel)]
            if same:
                same[0][1].append(i_in)
            else:
                groups.append((kernel, [i_in]))
        self.groups = [(members, kernel.shape[1], kernel.shape[2]) for kernel, members in groups]  # (irreps, ir.dim, width)
        self.columns = []  # per group: its columns of the kernel, and of the messages (weight_index)
        column = message_column = 0
        for members, dim, width in self.groups:
            size = sum(self.irreps_in1[i].mul for i in members) * width
            self.columns.append((slice(column, column + dim * width), slice(message_column, message_column + size)))
            column, message_column = column + dim * width, message_column + size
        blocks = [kernel.flatten(1) for kernel, _ in groups]
        weight_index = [columns[i][0].flatten() for _, members in groups for i in members]
        out_index = torch.cat([columns[i][1].flatten() for _, members in groups for i in members])
        if not torch.equal(torch.sort(out_index).values, torch.arange(self.irreps_out.dim)):
            raise ValueError("ScatterTensorProduct needs exactly one instruction for each output irrep")
        self.register_buffer("kernel", torch.cat(blocks, dim=1), persistent=False)  # float64, cast when used
        self.register_buffer("weight_index", torch.cat(weight_index), persistent=False)
        self.register_buffer("out_order", torch.argsort(out_index), persistent=False)  # ours -> tp's layout

    @staticmethod
    def _kernels(tp: o3.TensorProduct, scale: float):
        """Each input irrep's kernel ``(irreps_in2.dim, ir.dim, width)`` in float64: ``scale``
        times the path weight times the Wigner 3j symbol of each of its paths, side by side (e3nn's ``uvu``:
        ``out[u, k] = path_weight * w[u] * sum_ij w3j[i, j, k] x1[u, i] x2[j]``); and, per channel
        and kernel column, the weight it is multiplied by and its column in ``tp``'s output."""
        kernels, columns, all_paths = {}, {}, paths(tp)
        for i_in, (mul, ir) in enumerate(tp.irreps_in1):
            blocks, weights, outs = [], [], []
            for path in all_paths:
                ins = path.instruction
                if ins.i_in1 != i_in:
                    continue
                ir_out = tp.irreps_out[ins.i_out].ir
                block = torch.zeros(tp.irreps_in2.dim, ir.dim, ir_out.dim, dtype=torch.float64)
                block[tp.irreps_in2.slices()[ins.i_in2]] = scale * path.w3j.transpose(0, 1)
                blocks.append(block)
                u, m = torch.arange(mul)[:, None], torch.arange(ir_out.dim)[None, :]
                weights.append((path.weights.start + u).expand(mul, ir_out.dim))
                outs.append(tp.irreps_out[: ins.i_out].dim + u * ir_out.dim + m)
            if blocks:
                kernels[i_in] = torch.cat(blocks, dim=-1)  # (in2.dim, ir.dim, width)
                columns[i_in] = (torch.cat(weights, dim=1), torch.cat(outs, dim=1))  # (mul, width) each
        return kernels, columns

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        edge_index: torch.Tensor,
        num_out: int,
        basis: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        return self.scatter(self.features(x), y, weight, edge_index[0], edge_index[1], num_out, basis)

    def features(self, x: torch.Tensor) -> list:
        """The sources' features ``x (N_src, irreps_in1.dim)`` by group, channels stacked: one
        ``(N_src, channels, ir.dim)`` tensor per group, or ``None`` for a group whose features
        are all exactly zero where no gradient is asked for (it adds exactly nothing: e.g. the
        ``l > 0`` features of an embedding of the species). Computed once for any number of
        :meth:`scatter` calls over parts of the edges."""
        blocks = irreps_blocks(x, self.irreps_in1)  # (N_src, mul * ir.dim) each
        needs_grad = torch.is_grad_enabled() and x.requires_grad
        grouped = []
        for members, dim, _ in self.groups:
            features = torch.cat([blocks[i].reshape(len(x), self.irreps_in1[i].mul, dim) for i in members], dim=1)
            grouped.append(features if needs_grad or bool(features.any()) else None)
        return grouped

    def scatter(
        self,
        features: list,
        y: torch.Tensor,
        weight: torch.Tensor,
        src: torch.Tensor,
        dst: torch.Tensor,
        num_out: int,
        basis: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``forward`` from the grouped :meth:`features`, with edges ``src (E,)`` -> ``dst (E,)``
        (indices into the sources and the ``num_out`` targets): ``(num_out, irreps_out.dim)``.
        ``weight`` is ``(E, weight_numel)``, or ``(E, H)`` coefficients of ``basis (H, weight_numel)``."""
        kernel = self.kernel.to(y.dtype)  # (irreps_in2.dim, sum over groups of ir.dim * width)
        live = [g for g, group in enumerate(features) if group is not None]
        # per group, what gives each edge's weights in the messages' order: a gather of its
        # weights, or a product with the basis's columns in that order, (H, channels * width)
        bases = {} if basis is None else {g: basis.index_select(1, self.weight_index[self.columns[g][1]]) for g in live}
        on_edges = [features[g].index_select(0, src) for g in live]  # on the edges' sources: (E, channels, ir.dim) each
        sums = [y.new_zeros(num_out, messages.stop - messages.start) for _, messages in self.columns]
        # chunks of edges small enough for their messages to stay in cache; split (not sliced)
        # so that backward concatenates the chunks' gradients once
        chunk = self.chunk_size if y.device.type == "cpu" else max(1, len(src))
        chunks = zip(dst.split(chunk), y.split(chunk), weight.split(chunk), *(f.split(chunk) for f in on_edges))
        for dst_chunk, y_chunk, weight_chunk, *features_chunk in chunks:
            kernels = y_chunk @ kernel  # (n, sum over groups of ir.dim * width)
            n = kernels.shape[0]
            for g, xe in zip(live, features_chunk):
                (_, dim, width), (kernel_columns, message_columns), total = self.groups[g], self.columns[g], sums[g]
                k = kernels[:, kernel_columns].view(n, dim, width)  # (n, ir.dim, width)
                # (n, channels, width); a batched product of (channels, ir.dim) @ (ir.dim, width) is 2-3x
                # faster than ir.dim multiply-adds, but much slower than one product for scalars
                messages = torch.bmm(xe, k) if dim > 1 else xe * k
                if basis is None:
                    w = weight_chunk.index_select(1, self.weight_index[message_columns])  # (n, channels * width)
                else:
                    w = weight_chunk @ bases[g]  # (n, channels * width)
                total.index_add_(0, dst_chunk, messages.view(n, total.shape[1]) * w)
        return torch.cat(sums, dim=1).index_select(1, self.out_order)  # (num_out, irreps_out.dim), tp's layout
