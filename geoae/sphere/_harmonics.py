"""Spherical harmonics, the projection kernel and its derivatives on the sphere.

All signals here use e3nn's real spherical harmonics with ``normalization="integral"``
(the convention of ``e3nn.io.SphericalTensor.signal_xyz``) and e3nn's component order, so
``SphericalTensor(lmax, 1, -1).D_from_matrix(R)`` rotates (and, with ``R = -I``, inverts) a
signal's coefficients.
"""

import functools
import math

import torch
from e3nn import o3


@functools.lru_cache(maxsize=None)
def _sh_module(lmax: int) -> o3.SphericalHarmonics:
    # Building e3nn's module scripts its kernel: do it once per lmax, not once per call.
    return o3.SphericalHarmonics(list(range(lmax + 1)), normalize=False, normalization="integral")


def spherical_harmonics(directions: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""Real spherical harmonics of degrees ``0..lmax`` at unit ``directions``.

    Args:
        directions: ``(..., 3)`` unit vectors (not normalized here).
        lmax: largest degree.

    Returns:
        ``(..., (lmax+1)**2)``, e3nn's ``"integral"`` normalization and component order.

    >>> spherical_harmonics(torch.tensor([0.0, 0.0, 1.0]), 1).shape
    torch.Size([4])
    """
    return _sh_module(lmax)(directions)


def dirac_scale(lmax: int) -> float:
    r"""Scale that gives a band-limited Dirac the value 1 at its own direction.

    In the ``"integral"`` normalization ``sum_m Y_lm(u)^2 = (2l+1) / (4 pi)``, so the Dirac
    ``Y(u) . Y(x)`` is ``(lmax+1)**2 / (4 pi)`` at ``x = u``; no taper over ``l`` is applied.

    >>> u = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    >>> round(dirac_scale(2) * float(spherical_harmonics(u, 2) @ spherical_harmonics(u, 2)), 12)
    1.0
    """
    return 4 * math.pi / (lmax + 1) ** 2


def kernel(directions: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""Coefficients of a unit band-limited Dirac at each unit direction, ``(..., (lmax+1)**2)``.

    ``kernel(u, lmax) = dirac_scale(lmax) * Y(u)``: its signal is 1 at ``u``.
    """
    return spherical_harmonics(directions, lmax) * dirac_scale(lmax)


def _degrees(lmax: int) -> list[int]:
    return [l for l in range(lmax + 1) for _ in range(2 * l + 1)]


@functools.lru_cache(maxsize=None)
def _derivative_matrices(lmax: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r"""``A`` of shape ``(3, M, M)`` with ``d Y(x) / d x_k = Y(x) @ A[k]`` for the solid harmonics.

    The solid harmonics ``|x|^l Y_l(x/|x|)`` are harmonic homogeneous polynomials, so their
    derivative of degree ``l - 1`` is a fixed linear map of the degree ``l - 1`` ones. The map is
    found once by least squares on random points in float64 (exact to round-off).
    """
    dim = (lmax + 1) ** 2
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(4 * dim, 3, generator=generator, dtype=torch.float64)  # [P, 3]
    values = spherical_harmonics(points, lmax)  # [P, M]
    jacobian = torch.func.vmap(torch.func.jacrev(lambda x: spherical_harmonics(x, lmax)))(points)  # [P, M, 3]
    solution = torch.linalg.lstsq(values.expand(3, -1, -1), jacobian.permute(2, 0, 1)).solution  # [3, M, M]
    degrees = torch.tensor(_degrees(lmax))  # [M]
    solution = solution * (degrees[:, None] + 1 == degrees[None, :])  # only degree l-1 -> l
    return solution.to(dtype=dtype, device=device)


def cartesian_gradient(harmonics: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""Cartesian gradient ``(..., 3, M)`` of the solid harmonics from their values ``(..., M)``.

    At a unit vector ``u`` its component along a tangent ``t`` is the derivative of ``Y`` along
    the sphere; its radial component ``u . grad Y_l`` is ``l Y_l`` (Euler: degree-l homogeneous).
    """
    matrices = _derivative_matrices(lmax, harmonics.dtype, harmonics.device)  # [3, M, M]
    dim = harmonics.shape[-1]
    flat = harmonics.reshape(-1, dim) @ matrices.permute(1, 0, 2).reshape(dim, 3 * dim)  # [B, 3M]
    return flat.reshape(harmonics.shape[:-1] + (3, dim))


def harmonics_and_gradient(directions: torch.Tensor, lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Spherical harmonics and their gradient along the sphere.

    Args:
        directions: ``(..., 3)`` unit vectors.

    Returns:
        ``(Y, dY)`` of shapes ``(..., M)`` and ``(..., 3, M)``, ``M = (lmax+1)**2``: the Cartesian
        gradient projected on the tangent plane.

    >>> u = torch.tensor([0.0, 0.0, 1.0])
    >>> y, dy = harmonics_and_gradient(u, 1)
    >>> (dy * (4 * math.pi / 3) ** 0.5).round()
    tensor([[0., 1., 0., 0.],
            [0., 0., 1., 0.],
            [0., 0., 0., 0.]])
    """
    values = spherical_harmonics(directions, lmax)  # [..., M]
    cartesian = cartesian_gradient(values, lmax)  # [..., 3, M]
    degrees = torch.tensor(_degrees(lmax), dtype=values.dtype, device=values.device)  # [M]
    radial = degrees * values  # [..., M]
    return values, cartesian - directions[..., :, None] * radial[..., None, :]
