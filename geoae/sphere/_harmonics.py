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


def _degrees(lmax: int) -> list[int]:
    return [l for l in range(lmax + 1) for _ in range(2 * l + 1)]


def _chebyshev_and_ring(directions: torch.Tensor, lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The factors of the harmonics at unit ``directions`` ``(..., 3)``.

    e3nn's polar axis is ``y``. Returns ``T_j(y)`` for ``j = 0..lmax`` (Chebyshev polynomials, by
    their stable recurrence), ``(..., lmax+1)``, and ``1, Re w^k, Im w^k`` for ``k = 1..lmax`` with
    ``w = z + i x``, ``(..., 2 lmax + 1)``.
    """
    x, y, z = directions.unbind(dim=-1)  # [...] each
    chebyshev = [torch.ones_like(y), y]
    for _ in range(2, lmax + 1):
        chebyshev.append(2 * y * chebyshev[-1] - chebyshev[-2])
    powers = torch.complex(z, x)[..., None].expand(x.shape + (lmax,)).cumprod(dim=-1)  # [..., lmax]
    ring = torch.cat([chebyshev[0][..., None], powers.real, powers.imag], dim=-1)  # [..., 2 lmax + 1]
    return torch.stack(chebyshev[: lmax + 1], dim=-1), ring


@functools.lru_cache(maxsize=None)
def _factor_table(lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``Y_c(u) = (T(y) @ table)[c] * ring[ring_index[c]]`` for each component ``c`` of e3nn's harmonics.

    A real harmonic of degree ``l`` and order ``k`` is a polynomial of degree ``l - k`` (parity
    ``l - k``) in the polar coordinate times ``Re`` or ``Im`` of ``(z + i x)^k``. Which factor, and
    the polynomial's Chebyshev coefficients, are found once by least squares against e3nn's
    harmonics in float64 (exact to round-off; checked).
    """
    generator = torch.Generator().manual_seed(0)
    points = torch.nn.functional.normalize(torch.randn(8 * (lmax + 1) ** 2, 3, generator=generator, dtype=torch.float64), dim=1)
    reference = _sh_module(lmax)(points)  # [P, M]
    chebyshev, ring = _chebyshev_and_ring(points, lmax)  # [P, lmax+1], [P, 2 lmax + 1]
    orders = [0] + list(range(1, lmax + 1)) * 2  # order k of each ring column
    table = torch.zeros(lmax + 1, reference.shape[1], dtype=torch.float64)
    ring_index = torch.zeros(reference.shape[1], dtype=torch.long)
    for component, degree in enumerate(_degrees(lmax)):
        fits = []
        for column, order in enumerate(orders):
            if order > degree:
                continue
            powers = list(range(degree - order, -1, -2))
            basis = chebyshev[:, powers] * ring[:, column : column + 1]  # [P, len(powers)]
            solution = torch.linalg.lstsq(basis, reference[:, component : component + 1]).solution[:, 0]
            error = float((basis @ solution - reference[:, component]).abs().max())
            fits.append((error, column, powers, solution))
        error, column, powers, solution = min(fits, key=lambda fit: fit[0])
        if error > 1e-10:
            raise RuntimeError(f"e3nn's harmonic {component} (lmax {lmax}) is not of the expected form: error {error:.1e}")
        table[powers, component], ring_index[component] = solution, column
    return table, ring_index


@functools.lru_cache(maxsize=None)
def _factor_table_as(lmax: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    table, ring_index = _factor_table(lmax)
    return table.to(dtype=dtype, device=device), ring_index.to(device)


def spherical_harmonics(directions: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""Real spherical harmonics of degrees ``0..lmax`` at unit ``directions``.

    The values of e3nn's ``o3.spherical_harmonics(range(lmax+1), directions, normalize=False,
    normalization="integral")`` on the unit sphere, evaluated in a dozen batched operations (a
    Chebyshev polynomial in the polar coordinate times a power of ``z + i x`` per component)
    instead of e3nn's hundreds of small ones: about 3 times faster at lmax 6. Off the sphere the
    values are not the solid harmonics.

    Args:
        directions: ``(..., 3)`` unit vectors (not normalized here).
        lmax: largest degree (at most 12, as e3nn).

    Returns:
        ``(..., (lmax+1)**2)``, e3nn's ``"integral"`` normalization and component order.

    >>> u = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=1)
    >>> bool(torch.allclose(spherical_harmonics(u, 6), o3.spherical_harmonics(list(range(7)), u, False, "integral")))
    True
    """
    table, ring_index = _factor_table_as(lmax, directions.dtype, directions.device)  # [lmax+1, M], [M]
    chebyshev, ring = _chebyshev_and_ring(directions, lmax)  # [..., lmax+1], [..., 2 lmax + 1]
    return (chebyshev @ table) * ring[..., ring_index]  # [..., M]


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
    solid = _sh_module(lmax)  # e3nn's: the solid harmonics, off the sphere too
    values = solid(points)  # [P, M]
    jacobian = torch.func.vmap(torch.func.jacrev(solid))(points)  # [P, M, 3]
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
