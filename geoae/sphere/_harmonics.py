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
    degrees = torch.tensor([l for l in range(lmax + 1) for _ in range(2 * l + 1)])  # [M]
    solution = solution * (degrees[:, None] + 1 == degrees[None, :])  # only degree l-1 -> l
    return solution.to(dtype=dtype, device=device)


def harmonics_and_gradient(directions: torch.Tensor, lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Spherical harmonics and their gradient along the sphere.

    Args:
        directions: ``(..., 3)`` unit vectors.

    Returns:
        ``(Y, dY)`` of shapes ``(..., M)`` and ``(..., 3, M)``, ``M = (lmax+1)**2``: ``dY[..., k, :]``
        is the derivative along the unit tangent ``t`` with ``t = e_k - u u_k`` (the Cartesian
        gradient projected on the tangent plane).
    """
    matrices = _derivative_matrices(lmax, directions.dtype, directions.device)  # [3, M, M]
    values = spherical_harmonics(directions, lmax)  # [..., M]
    cartesian = torch.einsum("...m,kmn->...kn", values, matrices)  # [..., 3, M]
    radial = torch.einsum("...k,...kn->...n", directions, cartesian)  # [..., M]
    tangent = cartesian - directions[..., :, None] * radial[..., None, :]  # [..., 3, M]
    return values, tangent
