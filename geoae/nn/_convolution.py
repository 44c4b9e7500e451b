"""Equivariant point convolutions behind one interface, chosen by name from a registry."""

from typing import Callable, Dict, Optional, Type

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet

from ._linear import Linear
from ._radial import RadialEmbedding
from ._scatter_tp import ScatterTensorProduct

__all__ = ["Convolution", "NequIPConvolution", "CONVOLUTIONS", "register_convolution", "build_convolution"]


class Convolution(torch.nn.Module):
    r"""Interface of every point convolution in geoae.

    A convolution sends features from source nodes to target nodes along edges. Sources and
    targets may be the same point set or two different ones (bipartite, e.g. cluster members
    to cluster centres): the caller gives the edge vectors, so the convolution never sees
    positions.

    Subclasses take ``irreps_in`` and ``irreps_out`` (strings or `e3nn.o3.Irreps`) as their
    first two arguments, expose them as `e3nn.o3.Irreps` attributes, and implement
    :meth:`forward`. Register them with :func:`register_convolution` to make them buildable by
    name.
    """

    irreps_in: o3.Irreps
    irreps_out: o3.Irreps

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vec: torch.Tensor,
        num_nodes_out: Optional[int] = None,
    ) -> torch.Tensor:
        r"""Convolve.

        Parameters
        ----------
        x : `torch.Tensor`
            source features, shape ``(num_src_nodes, irreps_in.dim)``.
        edge_index : `torch.Tensor`
            shape ``(2, num_edges)``, long: ``edge_index[0]`` source index into ``x``,
            ``edge_index[1]`` target index into the output (PyG convention).
        edge_vec : `torch.Tensor`
            shape ``(num_edges, 3)``: ``pos_source - pos_target``, the vector from the receiving
            node to the sending node. May be zero (source on top of target).
        num_nodes_out : int, optional
            number of target nodes; ``None``: ``x.shape[0]``.

        Returns
        -------
        `torch.Tensor`
            shape ``(num_nodes_out, irreps_out.dim)``.
        """
        raise NotImplementedError


CONVOLUTIONS: Dict[str, Type[Convolution]] = {}


def register_convolution(name: str) -> Callable[[Type[Convolution]], Type[Convolution]]:
    """Class decorator adding a :class:`Convolution` subclass to :data:`CONVOLUTIONS`."""

    def decorator(cls: Type[Convolution]) -> Type[Convolution]:
        if name in CONVOLUTIONS:
            raise ValueError(f"a convolution named {name!r} is already registered")
        CONVOLUTIONS[name] = cls
        return cls

    return decorator


def build_convolution(name: str, **kwargs) -> Convolution:
    """Build the convolution registered as ``name`` with keyword arguments ``kwargs``.

    >>> conv = build_convolution("nequip", irreps_in="4x0e+2x1o", irreps_out="4x0e+2x1o")
    >>> type(conv).__name__
    'NequIPConvolution'
    """
    if name not in CONVOLUTIONS:
        raise ValueError(f"unknown convolution {name!r}; valid names: {sorted(CONVOLUTIONS)}")
    return CONVOLUTIONS[name](**kwargs)


@register_convolution("nequip")
class NequIPConvolution(Convolution):
    r"""NequIP's interaction: self-linear, ``uvu`` tensor product with radial weights, linear.

    For every edge :math:`j \to i` with :math:`\vec r = pos_j - pos_i`:

    .. math::

        m_{ij} = \mathrm{TP}_{uvu}\big(W_1 x_j,\; Y(\hat r);\; \mathrm{MLP}(B(|\vec r|))\big),
        \qquad
        y_i = W_2 \frac{1}{\sqrt{\bar n}} \sum_{j} m_{ij}

    with :math:`Y` the spherical harmonics up to ``lmax`` (``component`` normalization),
    :math:`B` the :class:`~geoae.nn.RadialEmbedding`, the MLP an `e3nn.nn.FullyConnectedNet`
    with SiLU, :math:`W_1`, :math:`W_2` :class:`~geoae.nn.Linear` (e3nn's linear map) and :math:`\bar n` =
    ``avg_num_neighbors``. The tensor product has one ``uvu`` path for each input irrep, each
    spherical harmonic and each product irrep that appears in ``irreps_out`` (as in NequIP's
    ``InteractionBlock``); output irreps reached by no path are zero. It is defined by an e3nn
    `~e3nn.o3.TensorProduct` (``tp``, kept in checkpoints) and evaluated, with the sum over
    edges, by :class:`~geoae.nn.ScatterTensorProduct` (the same up to round-off, 4-7x faster
    on a CPU).

    The ``l > 0`` harmonics fade in over ``[0, r_min]`` (a smoothstep of ``r / r_min``), so a
    zero-length edge keeps only its ``l = 0`` harmonic (the direction of a zero vector is
    undefined; e3nn would give a finite value but a ~1e12 gradient) and the convolution is
    continuous as an edge shrinks to zero length (a point placed a hair off its origin gets
    the same features as one placed on it). The radial features are the finite
    :math:`r \to 0` limit.

    Parameters
    ----------
    irreps_in, irreps_out : str or `e3nn.o3.Irreps`
        input and output features.
    lmax : int
        largest order of the edge spherical harmonics.
    num_basis : int
        number of radial basis functions.
    r_max : float
        cutoff of the radial basis: edges at least this long carry nothing.
    radial_hidden, radial_layers : int
        width and number of hidden layers of the radial MLP.
    avg_num_neighbors : float
        the summed messages are divided by its square root.
    r_min : float
        length over which the ``l > 0`` harmonics fade in from zero.
    chunk_size : int
        edges evaluated at a time on a CPU (each chunk with all its targets' edges); on other
        devices all edges at once. It changes nothing but the order of additions.

    Examples
    --------
    >>> conv = NequIPConvolution("8x0e+4x1o", "8x0e+4x1o+2x2e", lmax=2)
    >>> x = torch.randn(5, conv.irreps_in.dim)
    >>> edge_index = torch.tensor([[0, 1, 2, 3], [1, 0, 0, 4]])
    >>> edge_vec = torch.randn(4, 3)
    >>> conv(x, edge_index, edge_vec).shape
    torch.Size([5, 30])
    >>> conv(x, edge_index, edge_vec, num_nodes_out=7).shape  # bipartite: 7 targets
    torch.Size([7, 30])
    """

    def __init__(
        self,
        irreps_in,
        irreps_out,
        lmax: int = 2,
        num_basis: int = 8,
        r_max: float = 2.5,
        radial_hidden: int = 32,
        radial_layers: int = 2,
        avg_num_neighbors: float = 4.0,
        r_min: float = 0.1,
        chunk_size: int = 2048,
    ) -> None:
        super().__init__()
        self.r_min, self.chunk_size = float(r_min), int(chunk_size)
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.avg_num_neighbors = float(avg_num_neighbors)

        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        # 1 for the l = 0 components of the harmonics, 0 for the others, (irreps_sh.dim,)
        self.register_buffer(
            "_sh_scalar_mask",
            torch.cat([torch.full((ir.dim,), float(ir.l == 0)) for _, ir in self.irreps_sh]),
            persistent=False,
        )
        self.radial = RadialEmbedding(num_basis, r_max)
        self.linear_in = Linear(self.irreps_in, self.irreps_in)

        irreps_mid = []
        instructions = []
        for i_in, (mul, ir_in) in enumerate(self.irreps_in):
            for i_sh, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir_mid in ir_in * ir_sh:
                    if ir_mid in self.irreps_out:
                        instructions.append((i_in, i_sh, len(irreps_mid), "uvu", True))
                        irreps_mid.append((mul, ir_mid))
        if not instructions:
            raise ValueError(
                f"no tensor-product path from {self.irreps_in} x {self.irreps_sh} reaches any irrep of "
                f"{self.irreps_out}"
            )
        irreps_mid = o3.Irreps(irreps_mid)
        # sort the intermediate irreps (so the final Linear sees grouped irreps), remap paths
        irreps_mid, perm, _ = irreps_mid.sort()
        instructions = [(i_in, i_sh, perm[i_mid], mode, train) for i_in, i_sh, i_mid, mode, train in instructions]
        self.irreps_mid = irreps_mid
        self.tp = o3.TensorProduct(
            self.irreps_in,
            self.irreps_sh,
            irreps_mid,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        # the same tensor product with the sum over edges (divided by sqrt(avg_num_neighbors)),
        # evaluated in a few dense products
        self.scatter_tp = ScatterTensorProduct(self.tp, scale=self.avg_num_neighbors**-0.5)
        self.radial_mlp = FullyConnectedNet(
            [num_basis] + radial_layers * [radial_hidden] + [self.tp.weight_numel],
            torch.nn.functional.silu,
        )
        self.linear_out = Linear(irreps_mid.simplify(), self.irreps_out)

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vec: torch.Tensor,
        num_nodes_out: Optional[int] = None,
    ) -> torch.Tensor:
        """See :meth:`Convolution.forward`: ``(num_src_nodes, irreps_in.dim)`` -> ``(num_nodes_out, irreps_out.dim)``."""
        if num_nodes_out is None:
            num_nodes_out = x.shape[0]
        src, dst = edge_index[0], edge_index[1]  # (E,), (E,)
        # about chunk edges and all their targets' edges at a time: the (targets, irreps_mid.dim)
        # sums and the (edges, tp.weight_numel) radial weights stay in cache instead of going
        # through memory
        chunk = self.chunk_size if x.device.type == "cpu" else max(1, len(dst))
        if len(dst) > chunk and bool((dst[1:] < dst[:-1]).any()):  # edges grouped by target (a radius graph's already are)
            dst, order = torch.sort(dst, stable=True)
            src, edge_vec = src[order], edge_vec[order]
        features = self.scatter_tp.features(self.linear_in(x))  # by group: (num_src_nodes, channels, ir.dim)
        # the radial MLP's last layer is linear: its map (radial_hidden, tp.weight_numel) is given to the
        # tensor product, which multiplies it by the edges' hidden features in its own order
        *hidden_layers, last = self.radial_mlp
        basis = last(torch.eye(last.weight.shape[0], dtype=x.dtype, device=x.device))  # (radial_hidden, tp.weight_numel)
        out = []
        for edges, targets in _target_chunks(dst, num_nodes_out, chunk):
            edge_sh, hidden = self._edge_terms(edge_vec[edges], hidden_layers)  # (n, irreps_sh.dim), (n, radial_hidden)
            mid = self.scatter_tp.scatter(features, edge_sh, hidden, src[edges], dst[edges] - targets.start, len(targets), basis)
            out.append(self.linear_out(mid))  # (targets, irreps_out.dim)
        return out[0] if len(out) == 1 else torch.cat(out)  # (num_nodes_out, irreps_out.dim)

    def _edge_terms(self, edge_vec: torch.Tensor, radial_layers):
        """The edges' spherical harmonics ``(E, irreps_sh.dim)`` (their ``l > 0`` part faded in
        over ``[0, r_min]``) and their radial basis through ``radial_layers`` (the radial MLP
        but its last layer: ``(E, radial_hidden)``) from ``edge_vec (E, 3)``."""
        edge_length = torch.linalg.vector_norm(edge_vec, dim=-1)  # (E,)
        is_zero = edge_length == 0
        # harmonics of a harmless direction where the edge has no direction (faded out below)
        safe_vec = torch.where(is_zero[:, None], torch.ones_like(edge_vec), edge_vec)
        edge_sh = self.sh(safe_vec)  # (E, irreps_sh.dim)
        t = (edge_length / self.r_min).clamp(max=1.0)  # (E,)
        fade = t * t * (3 - 2 * t)  # smoothstep: 0 at r = 0, 1 from r_min on, (E,)
        edge_sh = edge_sh * (self._sh_scalar_mask + (1 - self._sh_scalar_mask) * fade[:, None])
        hidden = self.radial(edge_length)  # (E, num_basis)
        for layer in radial_layers:
            hidden = layer(hidden)  # invariant
        return edge_sh, hidden


def _target_chunks(dst: torch.Tensor, num_targets: int, size: int):
    """Consecutive ``(edges, targets)`` slices and ranges covering all edges ``dst (E,)``
    (sorted, where there are more than ``size``) and all ``num_targets`` targets, each holding
    about ``size`` edges and every edge of its targets: a target's edges are never split.

    >>> [(e.start, e.stop, t.start, t.stop) for e, t in _target_chunks(torch.tensor([0, 0, 1, 1, 2, 3]), 5, 2)]
    [(0, 2, 0, 1), (2, 4, 1, 2), (4, 6, 2, 5)]
    """
    if len(dst) <= size:
        yield slice(0, len(dst)), range(num_targets)
        return
    bounds = torch.cat([dst.new_zeros(1), dst[size::size], dst.new_full((1,), num_targets)]).unique_consecutive()
    edge_bounds = torch.searchsorted(dst, bounds).tolist()
    bounds = bounds.tolist()
    for i in range(len(bounds) - 1):
        yield slice(edge_bounds[i], edge_bounds[i + 1]), range(bounds[i], bounds[i + 1])
