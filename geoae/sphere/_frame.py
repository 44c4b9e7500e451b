"""Canonical frames of spherical signals, so that peak finding on a fixed grid is equivariant.

Grid detection and a fit stopped after a few steps depend on where the grid's points fall on the
signal: the same signal rotated can give a peak more or less, or a fit ending in another local
optimum. Peak finding therefore runs on each signal turned into its own frame, one that turns
with the signal (and mirrors with it), and the peaks found are turned back.
"""

import functools
import math

import numpy
import torch

from ._detect import _Detection, _local_maxima, _pad, _suppress
from ._fit import _tangent_basis
from ._grid import sphere_grid
from ._harmonics import _derivative_matrices, spherical_harmonics
from ._project import _lmax

_CANDIDATES = 4  # the highest grid maxima, climbed to the signal's local maxima
_CANDIDATE_CUT = 0.4  # of the highest grid value: lower maxima can neither be the first nor the
# second axis' peak (which must reach _SECOND_PEAK of the first; a grid maximum is within a few
# percent of the signal's maximum near it)
_CLIMB_STEPS = 20  # at most, steps on the sphere (Newton where concave) from grid maxima
_MAX_TURN = 0.25  # radians: the largest move of one climbing step
_COLLINEAR = 0.95  # |cos| above which a second maximum cannot set the frame's second axis
_SECOND_PEAK = 0.5  # nor one under this fraction of the highest
_ROUND = 0.1  # relative gap of the two spreads across the first axis under which they are "equal"
_TURN_CHUNK = 512  # signals turned at once: their (chunk, P, M) harmonics stay small (all 10,000
# signals of the sphere benchmark at once took 2.1x as long as chunks of 500, on this project's CPU)



@functools.lru_cache(maxsize=None)
def _second_derivative_pairs(lmax: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r"""``(10, M, M)``: the identity, ``A_k`` and ``A_j A_k`` (``j <= k``) so that ``Y(u) @ maps[i] @ c``
    is the value, the Cartesian gradient and the Hessian of the solid-harmonic extension of ``c``."""
    a = _derivative_matrices(lmax, torch.float64, torch.device("cpu"))  # [3, M, M]
    pairs = [a[j] @ a[k] for j in range(3) for k in range(j, 3)]
    eye = torch.eye(a.shape[1], dtype=torch.float64)
    return torch.stack([eye, *a, *pairs]).to(dtype=dtype, device=device)


_PAIR_INDEX = [[0, 1, 2], [1, 3, 4], [2, 4, 5]]  # position of (j, k) among the six pairs j <= k


@functools.lru_cache(maxsize=None)
def _moment_maps(lmax: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r"""``(6, M, M)``: ``c @ maps[i] @ c`` is ``integral of f(u)**2 u_j u_k`` over the sphere for the pairs
    ``(j, k)``, ``j <= k``, of :data:`_PAIR_INDEX`. Exact: Gauss-Legendre in ``cos(theta)`` times
    a uniform rule in ``phi``, enough points for degree ``2 lmax + 2``."""
    nodes, weights = numpy.polynomial.legendre.leggauss(lmax + 2)
    phi = numpy.arange(2 * lmax + 4) * (2 * math.pi / (2 * lmax + 4))
    z, phi = numpy.meshgrid(nodes, phi, indexing="ij")
    r = numpy.sqrt(1 - z**2)
    points = torch.from_numpy(numpy.stack([r * numpy.cos(phi), r * numpy.sin(phi), z], axis=-1).reshape(-1, 3))
    weight = torch.from_numpy(numpy.repeat(weights, phi.shape[1]) * (2 * math.pi / phi.shape[1]))  # [P]
    harmonics = spherical_harmonics(points, lmax)  # [P, M]
    pairs = torch.stack([points[:, j] * points[:, k] for j in range(3) for k in range(j, 3)])  # [6, P]
    maps = torch.einsum("p,kp,pa,pb->kab", weight, pairs, harmonics, harmonics)
    return maps.to(dtype=dtype, device=device)


def _climb(derivatives: torch.Tensor, directions: torch.Tensor, signal: torch.Tensor, lmax: int):
    r"""Newton's method on the sphere from ``directions (P, 3)`` to local maxima of the signals
    ``signal (P,)`` whose value and derivatives' coefficients are ``derivatives (S, M, 10)``; each
    point stops on its own once its step is round-off small.

    Returns the directions and the values there ``(P,)``.
    """
    index = torch.tensor(_PAIR_INDEX, device=directions.device) + 4
    eye = torch.eye(2, dtype=directions.dtype, device=directions.device)
    converged = torch.finfo(directions.dtype).eps ** 0.5  # radians: Newton's next step is ~ its square
    active = torch.arange(len(directions), device=directions.device)  # [A]: points still climbing
    for _ in range(_CLIMB_STEPS):
        u = directions[active]  # [A, 3]
        values = (spherical_harmonics(u, lmax)[:, None, :] @ derivatives[signal[active]]).squeeze(1)  # [A, 10]
        gradient, hessian = values[:, 1:4], values[:, index]  # [A, 3], [A, 3, 3]
        tangents = torch.stack(_tangent_basis(u), dim=-1)  # [A, 3, 2]
        tangent_gradient = (gradient[:, :, None] * tangents).sum(1)  # [A, 2]
        radial = (u * gradient).sum(-1)  # [A]
        # the Riemannian Hessian of f on the sphere: P H P - (u . grad f) P, in the tangent basis
        curvature = tangents.transpose(1, 2) @ hessian @ tangents - radial[:, None, None] * eye  # [A, 2, 2]
        a, b, d = curvature[:, 0, 0], curvature[:, 0, 1], curvature[:, 1, 1]
        det = a * d - b * b
        concave = (a < 0) & (det > 0)  # near a maximum: Newton's step
        newton = torch.stack([b * tangent_gradient[:, 1] - d * tangent_gradient[:, 0],
                              b * tangent_gradient[:, 0] - a * tangent_gradient[:, 1]], dim=1)
        newton = newton / torch.where(concave, det, 1)[:, None]
        scale = curvature.flatten(1).norm(dim=1).clamp(min=torch.finfo(u.dtype).eps)
        ascent = tangent_gradient / scale[:, None]  # elsewhere: a gradient step
        step = torch.where(concave[:, None], newton, ascent)  # [A, 2]
        length = step.norm(dim=1)
        step = step * (_MAX_TURN / length.clamp(min=_MAX_TURN))[:, None]
        directions = directions.index_copy(0, active, torch.nn.functional.normalize(u + (tangents @ step[:, :, None]).squeeze(2), dim=1))
        active = active[length >= converged]
        if len(active) == 0:
            break
    return directions, (spherical_harmonics(directions, lmax) * derivatives[signal, :, 0]).sum(1)


def _value(coefficients: torch.Tensor, directions: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""Values ``(S,)`` of signals ``coefficients (S, M)`` at ``directions (S, 3)``."""
    return (spherical_harmonics(directions, lmax) * coefficients).sum(-1)


def _oriented(axis: torch.Tensor, up: torch.Tensor, coefficients: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""``axis (S, 3)`` or its opposite, whichever side of ``up (S, 3)`` (a unit vector orthogonal to
    ``axis``) the signal ``coefficients (S, M)`` is higher on: ``f(up + axis) + f(axis) > f(up - axis)
    + f(-axis)``. This turns and mirrors with the signal; on a tie (a signal symmetric under the
    mirror that swaps the sides) either side gives the same canonical signal."""
    plus = torch.nn.functional.normalize(up + axis, dim=-1)
    minus = torch.nn.functional.normalize(up - axis, dim=-1)
    side = _value(coefficients, plus, lmax) - _value(coefficients, minus, lmax)
    side = side + _value(coefficients, axis, lmax) - _value(coefficients, -axis, lmax)
    return torch.where((side < 0)[:, None], -axis, axis)


def canonical_frames(signals: torch.Tensor, detection: _Detection) -> torch.Tensor:
    r"""An orthogonal frame ``(S, 3, 3)`` per signal ``(S, 2, M)`` (columns: its axes), from channel 0.

    The first axis is the signal's highest local maximum (the highest of ``_CANDIDATES`` grid
    maxima, each climbed to its local maximum by Newton's method). The second is, across the
    first, the main axis of the signal's second moment ``integral f(u)**2 u u^T`` (exact from the
    coefficients), towards the higher side; where the signal spreads about equally in every
    direction across the first axis (three peaks at equal angles around it), it points to the
    highest other maximum instead (one not (anti)parallel to the first, at least half as high).
    The third is normal to both, on the higher side.

    Each is computed from the signal alone, so for an orthogonal ``R`` (a rotation or not) the
    frame of the signal turned by ``R`` is ``R`` times this one, except where a choice ties: two
    maxima of equal height, a side test that comes out even, a spread at the threshold. Where
    the tie comes from a symmetry of the signal, either choice gives the same canonical signal.
    """
    lmax = _lmax(signals)
    coefficients = signals[:, 0].detach()  # [S, M]
    num = len(coefficients)
    values = coefficients @ detection.table  # [S, G]
    highest = values.amax(dim=1)  # [S]
    cut = torch.where(highest > 0, _CANDIDATE_CUT * highest, 2 * highest)  # the highest grid point always passes
    signal, directions, heights = _local_maxima(values, detection, cut)
    directions, heights, mask = _pad(signal, directions, heights, num)
    mask = _suppress(directions, heights, mask, detection.cos_merge)
    order = torch.where(mask, heights, -torch.inf).argsort(dim=1, descending=True, stable=True)[:, :_CANDIDATES]
    mask = mask.gather(1, order)  # [S, K]
    directions = directions.gather(1, order[..., None].expand(-1, -1, 3))  # [S, K, 3]
    if directions.shape[1] == 0:  # no maximum in any signal (all are constant)
        directions, mask = coefficients.new_tensor([0.0, 0.0, 1.0]).expand(num, 1, 3), mask.new_ones(num, 1)

    maps = _second_derivative_pairs(lmax, coefficients.dtype, coefficients.device)  # [10, M, M]
    derivatives = torch.einsum("kab,sb->sak", maps, coefficients).contiguous()  # [S, M, 10]
    row, column = mask.nonzero(as_tuple=True)  # [P]: the candidates
    climbed, height = _climb(derivatives, directions[row, column], row, lmax)
    directions = directions.index_put((row, column), climbed)  # [S, K, 3]
    heights = torch.full_like(mask, -torch.inf, dtype=coefficients.dtype).index_put((row, column), height)  # [S, K]
    best = heights.argmax(dim=1)  # [S]
    rows = torch.arange(num, device=signals.device)
    first = directions[rows, best]  # [S, 3]

    # second axis: across the first, the direction in which the signal spreads most (the main
    # axis of its second moment of f**2, exact from the coefficients, projected on the plane
    # normal to the first axis), to the higher side ...
    moment = torch.einsum("sa,kab,sb->sk", coefficients, _moment_maps(lmax, coefficients.dtype, coefficients.device), coefficients)
    moment = moment[:, _PAIR_INDEX]  # [S, 3, 3]
    across = torch.eye(3, dtype=moment.dtype, device=moment.device) - first[:, :, None] * first[:, None, :]  # [S, 3, 3]
    spreads, axes = torch.linalg.eigh(across @ moment @ across)  # [S, 3] ascending (0 along the first axis)
    spread = _oriented(axes[..., 2], first, coefficients, lmax)
    # ... unless it spreads about as much in every direction across it (e.g. three peaks at equal
    # angles around it): then towards the highest other maximum that stands apart (not
    # (anti)parallel to the first, at least half as high)
    round_ = spreads[:, 2] - spreads[:, 1] < _ROUND * spreads[:, 2]
    apart = mask & ((directions * first[:, None]).sum(-1).abs() < _COLLINEAR)
    apart &= heights >= _SECOND_PEAK * heights[rows, best][:, None]
    other = directions[rows, torch.where(apart, heights, -torch.inf).argmax(dim=1)]
    towards = other - (other * first).sum(-1, keepdim=True) * first
    second = torch.where((round_ & apart.any(dim=1))[:, None], towards, spread)
    second = torch.nn.functional.normalize(second, dim=-1)
    third = _oriented(torch.linalg.cross(first, second), first, coefficients, lmax)
    return torch.stack([first, second, third], dim=-1)  # [S, 3, 3]


@functools.lru_cache(maxsize=None)
def _samples(lmax: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Sample directions ``(P, 3)`` and the map ``(P, M)`` from a band-limited signal's values there
    to its coefficients (the pseudo-inverse of their harmonics), computed in float64."""
    dim = (lmax + 1) ** 2
    points = sphere_grid(lmax, dim + dim // 4 + 1, torch.float64).points  # [P, 3]: harmonics' condition < 2 to lmax 10
    inverse = torch.linalg.pinv(spherical_harmonics(points, lmax))  # [M, P]
    return points.to(dtype=dtype, device=device), inverse.T.contiguous().to(dtype=dtype, device=device)


def turn_signals(signals: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    r"""Coefficients ``(S, C, M)`` of ``g(u) = f(Q u)`` for the signals ``f`` ``(S, C, M)`` and
    orthogonal ``Q = frames (S, 3, 3)``: the signals seen in those frames. Differentiable in
    ``signals`` (the frames are taken as given).

    >>> from geoae.sphere import evaluate, project
    >>> signals = project(torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([0]), 1, lmax=3)
    >>> swap = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])  # x <-> z
    >>> evaluate(turn_signals(signals, swap), torch.tensor([1.0, 0.0, 0.0])).round(decimals=4)
    tensor([[1., 2.]])
    """
    lmax = _lmax(signals)
    points, inverse = _samples(lmax, signals.dtype, signals.device)  # [P, 3], [P, M]
    parts = []
    for part, frame in zip(signals.split(_TURN_CHUNK), frames.detach().split(_TURN_CHUNK)):
        turned = (frame @ points.T).transpose(1, 2)  # [S', P, 3]: Q p
        values = part @ spherical_harmonics(turned, lmax).transpose(1, 2)  # [S', C, P]: f(Q p)
        parts.append(values @ inverse)  # [S', C, M]
    return torch.cat(parts)  # (split gives one empty part for no signals)
