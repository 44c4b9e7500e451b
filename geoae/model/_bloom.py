"""Linear maps with a quadratic term, and the decoder's bloom head built on one."""

from __future__ import annotations

import torch
from e3nn import o3

from geoae.nn import BilinearForm, Linear, irreps_from_lmax

__all__ = ["BloomHead", "QuadraticLinear"]


class QuadraticLinear(torch.nn.Module):
    """``Linear(x) + TensorProduct(m, m)`` with ``m = pre(x) / sqrt(1 + mean(pre(x)**2))``: an
    equivariant map that also reaches irreps the input lacks (degrees up to twice the
    input's, and the other parity). The division by an invariant keeps the quadratic term of
    the size of ``x`` (an unbounded square made training diverge).

    Args:
        irreps_in, irreps_out: features in and out.
        mul_quadratic: multiplicity of each irrep of ``pre(x)``.

    Shapes: ``(..., irreps_in.dim) -> (..., irreps_out.dim)``.

    >>> f = QuadraticLinear("4x0e+4x1o", "2x0e+2x0o+1x2e")
    >>> f(torch.randn(3, f.irreps_in.dim)).shape
    torch.Size([3, 9])
    """

    def __init__(self, irreps_in, irreps_out, mul_quadratic: int = 8) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        lmax_in = max(ir.l for _, ir in self.irreps_in)
        parities = {ir.p for _, ir in self.irreps_in if ir.l > 0} | {ir.p * (-1) ** ir.l for _, ir in self.irreps_in}
        irreps_mid = irreps_from_lmax(mul_quadratic, lmax_in, "both" if len(parities) > 1 else "sh")
        self.linear = Linear(self.irreps_in, self.irreps_out)
        self.pre = Linear(self.irreps_in, irreps_mid)
        self.quadratic = o3.FullyConnectedTensorProduct(irreps_mid, irreps_mid, self.irreps_out)  # holds the weights
        self.square = BilinearForm(self.quadratic)  # evaluates it, 4-5x faster on a CPU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.pre(x)  # (..., irreps_mid.dim)
        # divide by an invariant, sqrt(1 + mean square), so the square stays of the size of x
        mid = mid / (1 + mid.pow(2).mean(dim=-1, keepdim=True)).sqrt()
        shape = mid.shape[:-1]
        mid = mid.reshape(-1, mid.shape[-1])  # (Z, irreps_mid.dim)
        square = self.square(mid, mid, self.quadratic.weight).reshape(shape + (self.irreps_out.dim,))  # (..., irreps_out.dim)
        return self.linear(x) + square


class BloomHead(torch.nn.Module):
    """Predict, for each point, the spherical signal of its children and its centre child.

    The signal has the two channels of :func:`geoae.sphere.project` (peaks at the children's
    directions; channel 1 carries their distances), each with irreps ``0e+1o+2e+...`` up to
    ``signal_lmax``. The centre child, which a signal cannot express (a zero offset has no
    direction), is a ``0e`` logit (is there a child at the point itself?) and a ``1o``
    vector (its small offset). A linear map makes all three when the features hold every
    irrep of the signal, else a :class:`QuadraticLinear`, so the signal may go beyond the
    features' degree (up to twice it).

    Shapes: ``forward(x (M, irreps_in.dim))`` returns ``signal (M, 2, (signal_lmax+1)**2)``,
    ``centre_logit (M,)`` and ``centre_vector (M, 3)``.

    >>> head = BloomHead("8x0e+8x1o+8x2e", signal_lmax=4)
    >>> [t.shape for t in head(torch.randn(5, head.irreps_in.dim))]
    [torch.Size([5, 2, 25]), torch.Size([5]), torch.Size([5, 3])]
    """

    def __init__(self, irreps_in, signal_lmax: int, mul_quadratic: int = 8) -> None:
        super().__init__()
        self.signal_lmax = signal_lmax
        signal = o3.Irreps([(2, (l, (-1) ** l)) for l in range(signal_lmax + 1)])
        irreps_in, irreps_out = o3.Irreps(irreps_in), signal + o3.Irreps("0e + 1o")
        reachable = all(ir in irreps_in for _, ir in irreps_out)
        self.map = Linear(irreps_in, irreps_out) if reachable else QuadraticLinear(irreps_in, irreps_out, mul_quadratic)
        self.irreps_in, self.irreps_out = self.map.irreps_in, self.map.irreps_out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.map(x)  # (M, irreps_out.dim)
        blocks, start = [], 0
        for l in range(self.signal_lmax + 1):  # irreps "2xl" are laid out [channel, m]
            blocks.append(out[:, start : start + 2 * (2 * l + 1)].reshape(-1, 2, 2 * l + 1))
            start += 2 * (2 * l + 1)
        signal = torch.cat(blocks, dim=-1)  # (M, 2, (signal_lmax+1)**2)
        return signal, out[:, start], out[:, start + 1 : start + 4]
