"""Radial embedding of edge lengths: Bessel basis times a smooth polynomial cutoff."""

import torch
from e3nn.math import soft_one_hot_linspace

__all__ = ["RadialEmbedding", "polynomial_cutoff"]


def polynomial_cutoff(x: torch.Tensor, p: int = 6) -> torch.Tensor:
    r"""Smooth envelope of NequIP / DimeNet, :math:`u(x)` for :math:`x = r / r_{max}`.

    .. math::

        u(x) = 1 - \frac{(p+1)(p+2)}{2} x^p + p(p+2) x^{p+1} - \frac{p(p+1)}{2} x^{p+2}

    for :math:`x < 1` and 0 beyond (``x`` is clamped to 1): :math:`u(0) = 1`, and :math:`u`, :math:`u'`, :math:`u''`
    vanish at :math:`x = 1`. Shape of ``x`` is kept.

    >>> polynomial_cutoff(torch.tensor([0.0, 1.0, 2.0]))
    tensor([1., 0., 0.])
    """
    p = float(p)
    # clamping keeps large x from overflowing; u(1) = 0 exactly, so u = 0 beyond with no gradient
    x = x.clamp(max=1.0)
    return (
        1.0
        - (p + 1.0) * (p + 2.0) / 2.0 * x.pow(p)
        + p * (p + 2.0) * x.pow(p + 1.0)
        - p * (p + 1.0) / 2.0 * x.pow(p + 2.0)
    )


class RadialEmbedding(torch.nn.Module):
    r"""Edge lengths to ``num_basis`` smooth radial features, zero beyond ``r_max``.

    :math:`e_n(r) = \sqrt{2/r_{max}} \, \sin(n \pi r / r_{max}) / r \cdot u(r / r_{max})`:
    e3nn's Bessel basis (``soft_one_hot_linspace(..., basis="bessel")``) times the polynomial
    envelope :func:`polynomial_cutoff` (NequIP's choice), so the features go to zero at
    ``r_max`` together with their first derivatives (the envelope's value and first two
    derivatives vanish there). e3nn's own ``cutoff=True`` only truncates
    (the derivative jumps at ``r_max``) and sets :math:`r = 0` to 0; here :math:`r = 0` gets
    the finite limit :math:`\sqrt{2/r_{max}}\, n\pi / r_{max}` with a finite gradient, so a
    zero-length edge (a cluster centre on one of its members) still carries a message.

    Parameters
    ----------
    num_basis : int
        number of Bessel functions.
    r_max : float
        cutoff radius.
    cutoff_p : int
        exponent :math:`p` of the polynomial envelope.

    Shapes: ``forward(edge_length)``: ``(num_edges,)`` -> ``(num_edges, num_basis)``.

    >>> emb = RadialEmbedding(num_basis=8, r_max=2.5)
    >>> emb(torch.tensor([0.0, 1.0, 2.5, 3.0])).shape
    torch.Size([4, 8])
    """

    def __init__(self, num_basis: int, r_max: float, cutoff_p: int = 6) -> None:
        super().__init__()
        self.num_basis = int(num_basis)
        self.r_max = float(r_max)
        self.cutoff_p = int(cutoff_p)

    def forward(self, edge_length: torch.Tensor) -> torch.Tensor:
        # edge_length: (E,)
        is_zero = edge_length == 0
        # evaluate the basis at a harmless length where r == 0, so neither value nor gradient is NaN
        r_safe = torch.where(is_zero, torch.ones_like(edge_length), edge_length)
        basis = soft_one_hot_linspace(
            r_safe, 0.0, self.r_max, self.num_basis, basis="bessel", cutoff=False
        )  # (E, num_basis)
        n = torch.arange(1, self.num_basis + 1, dtype=basis.dtype, device=basis.device)
        at_zero = (2.0 / self.r_max) ** 0.5 * torch.pi / self.r_max * n  # (num_basis,) limit r -> 0
        basis = torch.where(is_zero[:, None], at_zero, basis)
        envelope = polynomial_cutoff(edge_length / self.r_max, self.cutoff_p)  # (E,)
        return basis * envelope[:, None]  # (E, num_basis)

    def extra_repr(self) -> str:
        return f"num_basis={self.num_basis}, r_max={self.r_max}, cutoff_p={self.cutoff_p}"
