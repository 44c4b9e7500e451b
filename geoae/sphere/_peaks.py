"""Peaks of two-channel spherical signals: grid detection, then a joint fit of all peaks."""

import functools
import math
from typing import NamedTuple

import numpy
import torch

from ._grid import SphereGrid, sphere_grid
from ._harmonics import _derivative_matrices, dirac_scale, spherical_harmonics
from ._project import _lmax, check_finite, project  # noqa: F401 (project: doctest)

_MAX_TURN = 0.25  # radians: the largest move of a direction in one Gauss-Newton step
_DAMPING_START = 1e-3  # Levenberg-Marquardt damping, relative to the diagonal of J^T J
_DAMPING = 1e-6  # the smallest damping, also that of the final differentiable step
_CONVERGED = 1e-4  # radians: a signal whose last step moved a peak more gets _MORE_STEPS more
_MORE_STEPS = 8
_GROUP_COST = 4096.0  # a refinement group's fixed cost, in rows times squared width (measured on CPU)


class Peaks(NamedTuple):
    r"""Peaks found in a batch of signals.

    Attributes:
        vectors: ``(P, 3)``, direction times length.
        index: ``(P,)``, the signal each peak came from, sorted; within a signal, peaks are
            sorted by decreasing amplitude.
        amplitudes: ``(P,)``, the fitted weight of the peak's Dirac in channel 0: 1 for each
            vector given to :func:`project`, 2 for two vectors too close to be told apart.
    """

    vectors: torch.Tensor
    index: torch.Tensor
    amplitudes: torch.Tensor


class _Fit(NamedTuple):
    directions: torch.Tensor  # [S, K, 3]
    weights: torch.Tensor  # [S, K, 2]: Dirac weights in channels 0 and 1
    mask: torch.Tensor  # [S, K]


def _tangent_basis(directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x_axis = torch.zeros_like(directions)  # [..., 3]
    x_axis[..., 0] = 1
    y_axis = x_axis.roll(1, dims=-1)
    reference = torch.where(directions[..., :1].abs() < 0.9, x_axis, y_axis)  # [..., 3]
    first = torch.nn.functional.normalize(torch.linalg.cross(directions, reference), dim=-1)
    return first, torch.linalg.cross(directions, first)


class _Detection(NamedTuple):
    grid: SphereGrid
    table: torch.Tensor  # [M, G]: the grid's harmonics, transposed, contiguous
    offsets: torch.Tensor  # [D, G]: each point's neighbours minus the point's own index


@functools.lru_cache(maxsize=None)
def _detection(lmax: int, resolution: int | None, dtype: torch.dtype, device: torch.device) -> _Detection:
    grid = sphere_grid(lmax, resolution, dtype, device)
    own = torch.arange(len(grid.neighbors), device=grid.neighbors.device)[:, None]
    return _Detection(grid, grid.harmonics.T.contiguous(), (grid.neighbors - own).T.contiguous())


def _local_maxima(values: torch.Tensor, detection: _Detection, cut: torch.Tensor):
    r"""Grid points above ``cut`` and not below any neighbour. ``values``: ``(S, G)``, ``cut``: ``(S,)``.

    Returns ``(signal, direction, height)``: ``(C,)``, ``(C, 3)``, ``(C,)``.
    """
    width = values.shape[1]
    flat = values.reshape(-1)
    place = (values > cut[:, None]).reshape(-1).nonzero().squeeze(1)  # [C]: signal * G + point
    height = flat[place]  # [C]
    for offsets in detection.offsets:  # one neighbour at a time, on the survivors: most fall at the first ones
        keep = height >= flat[place + offsets[place % width]]
        place, height = place[keep], height[keep]
    return place // width, detection.grid.points[place % width], height


def _pad(signal: torch.Tensor, directions: torch.Tensor, height: torch.Tensor, num_signals: int):
    r"""Ragged candidates to ``(S, K, 3)`` directions and ``(S, K)`` heights and mask, highest first."""
    order = torch.sort(height, descending=True, stable=True).indices
    order = order[torch.sort(signal[order], stable=True).indices]  # by signal, then height
    signal, directions, height = signal[order], directions[order], height[order]
    counts = torch.bincount(signal, minlength=num_signals)  # [S]
    width = int(counts.max()) if len(signal) else 0
    rank = torch.arange(len(signal), device=signal.device) - (counts.cumsum(0) - counts)[signal]  # [C]
    padded = directions.new_zeros(num_signals, width, 3)
    padded[..., 2] = 1  # masked slots hold a valid unit vector
    padded[signal, rank] = directions
    heights = height.new_zeros(num_signals, width)
    heights[signal, rank] = height
    mask = torch.zeros(num_signals, width, dtype=torch.bool, device=signal.device)
    mask[signal, rank] = True
    return padded, heights, mask


def _suppress(directions: torch.Tensor, score: torch.Tensor, mask: torch.Tensor, cos_merge: float) -> torch.Tensor:
    r"""Greedy merging: drop a peak within the merge angle of a kept peak of higher score.

    ``directions``: ``(S, K, 3)``; ``score``, ``mask``: ``(S, K)``. Returns the kept ``(S, K)`` mask.
    """
    order = torch.where(mask, score, -math.inf).argsort(dim=1, descending=True, stable=True)  # [S, K]
    sorted_directions = directions.gather(1, order[..., None].expand_as(directions))  # [S, K, 3]
    close = sorted_directions @ sorted_directions.transpose(1, 2) > cos_merge  # [S, K, K]
    keep = mask.gather(1, order)  # [S, K]
    for rank in range(1, keep.shape[1]):
        keep[:, rank] &= ~(close[:, rank, :rank] & keep[:, :rank]).any(dim=1)
    return torch.zeros_like(mask).scatter(1, order, keep)


class _Target(NamedTuple):
    coefficients: torch.Tensor  # [S, 2, M]
    products: torch.Tensor  # [S, M, 8]: the coefficients of both channels, then A[k] @ them (k = x, y, z)

    def rows(self, rows: torch.Tensor) -> "_Target":
        return _Target(self.coefficients[rows], self.products[rows])


def _target(coefficients: torch.Tensor, lmax: int) -> _Target:
    r"""The coefficients ``(S, 2, M)`` with the maps that turn harmonics into projections.

    ``Y(u) @ products`` gives, per channel, the signal's value at ``u`` and its Cartesian gradient
    (of the solid harmonics), since ``d Y / d x_k = Y @ A[k]``: one matmul per evaluation.
    """
    num, _, dim = coefficients.shape
    maps = _projection_maps(lmax, coefficients.dtype, coefficients.device)  # [4M, M]
    products = (coefficients.reshape(2 * num, dim) @ maps.T).reshape(num, 2, 4, dim)  # [S, 2, 4, M]
    return _Target(coefficients, products.permute(0, 3, 2, 1).reshape(num, dim, 8))


@functools.lru_cache(maxsize=None)
def _projection_maps(lmax: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    matrices = _derivative_matrices(lmax, torch.float64, torch.device("cpu"))  # [3, M, M]
    eye = torch.eye(matrices.shape[1], dtype=torch.float64)[None]
    return torch.cat([eye, matrices]).reshape(-1, matrices.shape[1]).to(dtype=dtype, device=device)  # [4M, M]


@functools.lru_cache(maxsize=None)
def _kernel_table(lmax: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r"""``(lmax+1, 3)``: ``c**n @ table`` gives ``g(c), g'(c), g''(c)`` for the Gram kernel
    ``g(u . v) = <s Y(u), s Y(v)> = s^2 sum_l (2l+1) / (4 pi) P_l(u . v)`` (addition theorem)."""
    coefficients = numpy.zeros(lmax + 1)
    for degree in range(lmax + 1):
        polynomial = numpy.polynomial.legendre.leg2poly(numpy.eye(lmax + 1)[degree])
        coefficients[: len(polynomial)] += (2 * degree + 1) / (4 * math.pi) * polynomial
    coefficients *= dirac_scale(lmax) ** 2
    first = numpy.polynomial.polynomial.polyder(coefficients)
    second = numpy.polynomial.polynomial.polyder(first)
    table = numpy.zeros((lmax + 1, 3))
    for column, values in enumerate((coefficients, first, second)):
        table[: len(values), column] = values
    return torch.tensor(table, dtype=dtype, device=device)


def _kernel(cosines: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""``g, g', g''`` at ``cosines`` (evaluated in float64), shape ``cosines.shape + (3,)``."""
    table = _kernel_table(lmax, torch.float64, cosines.device)
    powers = cosines.double()[..., None].expand(cosines.shape + (lmax,)).cumprod(dim=-1)  # [..., L - 1]
    return (powers @ table[1:] + table[0]).to(cosines.dtype)


class _State(NamedTuple):
    projections: torch.Tensor  # [S, K, 4, 2]: per channel, <s Y(u_k), c> and its Cartesian gradient
    cost: torch.Tensor  # [S]: squared residual of the fit


def _diracs(fit: _Fit, lmax: int) -> torch.Tensor:
    r"""Coefficients ``(S, K, M)`` of the peaks' unit Diracs, zero for dead peaks."""
    return spherical_harmonics(fit.directions, lmax) * (dirac_scale(lmax) * fit.mask[..., None])


def _cost(fit: _Fit, diracs: torch.Tensor, target: _Target) -> torch.Tensor:
    return (target.coefficients - fit.weights.transpose(1, 2) @ diracs).square().sum(dim=(1, 2))  # [S]


def _projections(diracs: torch.Tensor, target: _Target) -> torch.Tensor:
    return (diracs @ target.products).reshape(diracs.shape[:2] + (4, 2))  # [S, K, 4, 2]


def _state(fit: _Fit, target: _Target, lmax: int) -> _State:
    r"""Projections of the coefficients on the peaks' Diracs and the fit's squared residual."""
    diracs = _diracs(fit, lmax)  # [S, K, M]
    return _State(_projections(diracs, target), _cost(fit, diracs, target))


def _gram(fit: _Fit, first: torch.Tensor, second: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""Gram matrix ``(S, 3, K, 3, K)`` of each peak's Dirac and its derivatives along the two tangents.

    Analytic, from the addition theorem: with ``c = u_k . u_l``, ``<f0_k, f0_l> = g(c)``,
    ``<fi_k, f0_l> = g'(c) t_k . u_l``, ``<fi_k, fj_l> = g''(c) (t_k . u_l)(u_k . t'_l) + g'(c) t_k . t'_l``.
    Zero for dead peaks.
    """
    num, width, _ = fit.directions.shape
    frames = torch.stack([fit.directions, first, second], dim=1).reshape(num, 3 * width, 3)  # [S, 3K, 3]
    dots = (frames @ frames.transpose(1, 2)).reshape(num, 3, width, 3, width)  # [S, 3, K, 3, K]
    cosines = dots[:, 0, :, 0, :]  # [S, K, K]
    kernel = _kernel(cosines, lmax) * (fit.mask[:, :, None] & fit.mask[:, None, :])[..., None]
    value, slope, curvature = kernel.unbind(dim=-1)  # [S, K, K] each
    gram = slope[:, None, :, None, :] * dots  # [S, 3, K, 3, K]
    tangent_dot_u, u_dot_tangent = dots[:, 1:, :, 0, :], dots[:, 0, :, 1:, :]  # [S, 2, K, K], [S, K, 2, K]
    gram[:, 1:, :, 1:, :] += curvature[:, None, :, None, :] * tangent_dot_u[:, :, :, None, :] * u_dot_tangent[:, None]
    gram[:, 0, :, 0, :] = value
    return gram


def _solve(fit: _Fit, state: _State, lmax: int, damping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Levenberg-Marquardt step ``(S, K, 4)`` towards the coefficients whose projections are in ``state``.

    ``damping`` ``(S,)`` is relative to the diagonal of ``J^T J``; a signal whose damped matrix
    is not numerically positive definite gets a zero step. Also returns the two tangents used.

    Per peak the parameters are two tangent moves and the Dirac weights in channels 0 and 1.
    ``J^T J`` and ``J^T r`` are assembled from the analytic Gram matrix of the Diracs and their
    derivatives and from the projections of the coefficients on them: no ``(2M, 4K)`` Jacobian.
    """
    num, width = fit.mask.shape
    first, second = _tangent_basis(fit.directions)  # [S, K, 3] each
    gram = _gram(fit, first, second, lmax)  # [S, 3, K, 3, K]
    weights = fit.weights  # [S, K, 2]
    values, gradients = state.projections[:, :, 0], state.projections[:, :, 1:]  # [S, K, 2], [S, K, 3, 2]
    tangents = torch.stack([first, second], dim=2)  # [S, K, 2, 3]
    projection = torch.cat([values[:, :, None], tangents @ gradients], dim=2)  # [S, K, 3, 2]
    residual = projection - torch.einsum("sikl,slc->skic", gram[:, :, :, 0], weights)  # [S, K, 3, 2]
    # J^T J in blocks of (move 1, move 2, weight a in channel 0, weight b in channel 1) x peaks
    moves = (weights @ weights.transpose(1, 2))[:, None, :, None] * gram[:, 1:, :, 1:]  # [S, 2, K, 2, K]
    move_weight = weights[:, None, :, :, None] * gram[:, 1:, :, None, 0]  # [S, 2, K, 2, K]: (move i, k, channel, l)
    diracs = gram[:, :1, :, :1]  # [S, 1, K, 1, K]
    zero = diracs.new_zeros(()).expand_as(diracs)
    weight_weight = torch.cat([torch.cat([diracs, zero], dim=3), torch.cat([zero, diracs], dim=3)], dim=1)
    normal = torch.cat(
        [torch.cat([moves, move_weight], dim=3), torch.cat([move_weight.permute(0, 3, 4, 1, 2), weight_weight], dim=3)],
        dim=1,
    ).reshape(num, 4 * width, 4 * width)
    right = torch.cat(
        [(residual[:, :, 1:] * weights[:, :, None]).sum(dim=3).transpose(1, 2), residual[:, :, 0].transpose(1, 2)], dim=1
    ).reshape(num, 4 * width)
    dead = (~fit.mask).repeat(1, 4).to(normal.dtype)  # [S, 4K]
    diagonal = normal.diagonal(dim1=1, dim2=2)  # [S, 4K], a view
    tiny = torch.finfo(normal.dtype).tiny ** 0.5
    diagonal.add_(damping[:, None] * diagonal + dead + tiny)
    factor, info = torch.linalg.cholesky_ex(normal)  # [S, 4K, 4K], [S]
    step = torch.cholesky_solve(right[..., None], factor).reshape(num, 4, width).transpose(1, 2)  # [S, K, 4]
    return torch.where((info == 0)[:, None, None], step, 0), first, second


def _apply(fit: _Fit, step: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> _Fit:
    move = step[..., :2]  # [S, K, 2]
    move = move * (_MAX_TURN / move.norm(dim=-1, keepdim=True).clamp(min=_MAX_TURN))
    directions = fit.directions + move[..., :1] * first + move[..., 1:] * second  # [S, K, 3]
    return _Fit(torch.nn.functional.normalize(directions, dim=-1), fit.weights + step[..., 2:], fit.mask)


def _choose(better: torch.Tensor, new, old):
    r"""Per signal (``better``: ``(S,)``), fields of ``new`` where true, of ``old`` elsewhere."""
    return type(new)(*(torch.where(better.view((-1,) + (1,) * (a.dim() - 1)), a, b) for a, b in zip(new, old)))


def _refine(fit: _Fit, target: _Target, lmax: int, steps: int) -> tuple[_Fit, torch.Tensor]:
    r"""Least-squares weights for the current directions, then ``steps`` Levenberg-Marquardt steps.

    A step that does not lower the squared residual is undone and the damping raised tenfold;
    one that does lowers it tenfold. Returns the fit and each signal's largest proposed move of
    a direction in the last step, ``(S,)``.
    """
    if fit.mask.shape[1] == 0:  # no live peak in any of these signals
        return fit, fit.directions.new_zeros(fit.mask.shape[0])
    diracs = _diracs(fit, lmax)  # [S, K, M]
    projections = _projections(diracs, target)
    fit = fit._replace(weights=_linear_weights(fit, projections[:, :, 0], lmax))
    state = _State(projections, _cost(fit, diracs, target))
    damping = torch.full_like(state.cost, _DAMPING_START)  # [S]
    for _ in range(steps):
        move, first, second = _solve(fit, state, lmax, damping)  # [S, K, 4]
        trial = _apply(fit, move, first, second)
        trial_state = _state(trial, target, lmax)
        better = trial_state.cost <= state.cost  # [S]
        fit, state = _choose(better, trial, fit), _choose(better, trial_state, state)
        damping = torch.where(better, damping / 10, damping * 10).clamp(_DAMPING, 1e6)
    return fit, move[..., :2].norm(dim=-1).amax(dim=1)


def _linear_weights(fit: _Fit, projections: torch.Tensor, lmax: int) -> torch.Tensor:
    r"""Least-squares Dirac weights ``(S, K, 2)`` for the fit's directions, given the projections
    ``(S, K, 2)`` of the coefficients on the Diracs."""
    cosines = fit.directions @ fit.directions.transpose(1, 2)  # [S, K, K]
    gram = _kernel(cosines, lmax)[..., 0] * (fit.mask[:, :, None] & fit.mask[:, None, :])
    gram = gram + torch.diag_embed((~fit.mask).to(gram.dtype))  # [S, K, K]
    return torch.linalg.solve(gram, projections)  # [S, K, 2]


def _compact(fit: _Fit) -> _Fit:
    r"""Move live peaks first and drop the all-dead columns."""
    order = (~fit.mask).to(torch.uint8).argsort(dim=1, stable=True)  # [S, K]
    width = int(fit.mask.sum(dim=1).max()) if fit.mask.numel() else 0
    order = order[:, :width]
    return _Fit(
        fit.directions.gather(1, order[..., None].expand(-1, -1, 3)),
        fit.weights.gather(1, order[..., None].expand(-1, -1, 2)),
        fit.mask.gather(1, order),
    )


def _rows(fit: _Fit, rows: torch.Tensor) -> _Fit:
    return _compact(_Fit(fit.directions[rows], fit.weights[rows], fit.mask[rows]))


def _put(fit: _Fit, rows: torch.Tensor, part: _Fit) -> _Fit:
    r"""``fit`` with the signals ``rows`` replaced by ``part`` (not wider than ``fit``)."""
    width = part.mask.shape[1]
    directions, weights, mask = fit.directions.clone(), fit.weights.clone(), fit.mask.clone()
    directions[rows, :width], weights[rows, :width], mask[rows] = part.directions, part.weights, False
    mask[rows, :width] = part.mask
    return _Fit(directions, weights, mask)


def _groups_by_count(counts: torch.Tensor, group_cost: float = _GROUP_COST) -> list[torch.Tensor]:
    r"""Split rows by their peak ``counts`` ``(R,)`` into groups of consecutive counts, each
    refined at the width of its largest count.

    The split minimises ``sum over groups (group_cost + rows * width**2)`` (dynamic programming
    over the distinct counts): a group's fixed cost (its Python and kernel-launch overhead)
    against the padding of narrow rows to the group's width. Returns the rows' positions in
    ``counts``, one tensor per group, widest first.

    >>> counts = torch.tensor([1, 3, 3, 2, 1])
    >>> [g.tolist() for g in _groups_by_count(counts, group_cost=2.0)]
    [[1, 2], [3], [0, 4]]
    >>> [g.tolist() for g in _groups_by_count(counts, group_cost=100.0)]  # one group, padded to 3
    [[0, 1, 2, 3, 4]]
    """
    values, sizes = torch.unique(counts, return_counts=True)  # ascending
    values, sizes = values.tolist(), sizes.tolist()
    best, cut = [0.0], [0]  # best[j]: cheapest split of the first j counts; its last group starts at cut[j]
    for j in range(1, len(values) + 1):
        options = [(best[i] + group_cost + sum(sizes[i:j]) * max(values[j - 1], 1) ** 2, i) for i in range(j)]
        cost, start = min(options)
        best.append(cost)
        cut.append(start)
    groups, j = [], len(values)
    while j > 0:
        low, high = values[cut[j]], values[j - 1]
        groups.append(((counts >= low) & (counts <= high)).nonzero().squeeze(1))
        j = cut[j]
    return groups


def _refine_rows(fit: _Fit, rows: torch.Tensor, target: _Target, lmax: int, steps: int) -> _Fit:
    r"""Refine only the signals ``rows`` of ``fit``: ``steps`` steps, then more for the slow ones.

    Signals are refined in groups of similar peak count, so that few are padded (the normal
    matrices grow as the cube of the padded width).
    """
    for group in _groups_by_count(fit.mask[rows].sum(dim=1)):
        group = rows[group]
        group_target = target.rows(group)
        part, moved = _refine(_rows(fit, group), group_target, lmax, steps)
        slow = (moved > _CONVERGED).nonzero().squeeze(1)
        if len(slow):
            part = _put(part, slow, _refine(_rows(part, slow), group_target.rows(slow), lmax, _MORE_STEPS)[0])
        fit = _put(fit, group, part)
    return fit


def _find_chunk(signals: torch.Tensor, detection: _Detection, threshold: float, relative: float, steps: int):
    r"""Peaks of ``(S, 2, M)`` signals: returns ``(vectors, index, amplitudes)``."""
    lmax = _lmax(signals)
    coefficients = signals.detach()  # [S, 2, M]
    cos_merge = math.cos(2.5 * detection.grid.spacing)
    values = coefficients[:, 0] @ detection.table  # [S, G]
    cut = (relative * values.amax(dim=1)).clamp(min=threshold)  # [S]

    directions, heights, mask = _pad(*_local_maxima(values, detection, cut), len(values))
    mask = _suppress(directions, heights, mask, cos_merge)
    live = mask.any(dim=1).nonzero().squeeze(1)  # [S'] signals with peaks
    if len(live) == 0:
        return signals.new_zeros(0, 3), live, signals.new_zeros(0)
    coefficients, cut = coefficients[live], cut[live]
    target = _target(coefficients, lmax)
    fit = _compact(_Fit(directions[live], heights[live, :, None].expand(-1, -1, 2), mask[live]))
    fit = _refine_rows(fit, torch.arange(len(live), device=live.device), target, lmax, steps)

    # Peaks hidden by a neighbour's tail stand out in what the fit leaves unexplained.
    model = fit.weights[:, :, 0:1].transpose(1, 2) @ _diracs(fit, lmax)  # [S', 1, M]
    residual = coefficients[:, 0] - model[:, 0]  # [S', M]
    # |f(x)| <= |r| |Y(x)| = |r| sqrt(M / 4 pi): most residuals cannot reach the cut anywhere
    bound = residual.norm(dim=1) * math.sqrt(residual.shape[1] / (4 * math.pi))  # [S']
    near_cut = (1.01 * bound > cut / 2).nonzero().squeeze(1)  # [S'']
    signal, extra, extra_heights = _local_maxima(residual[near_cut] @ detection.table, detection, cut[near_cut] / 2)
    extra, extra_heights, extra_mask = _pad(near_cut[signal], extra, extra_heights, len(live))
    near = (extra @ fit.directions.transpose(1, 2) > cos_merge) & fit.mask[:, None, :]  # [S', K', K]
    extra_mask &= ~near.any(dim=2)
    fit = _Fit(
        torch.cat([fit.directions, extra], dim=1),
        torch.cat([fit.weights, extra_heights[..., None].expand(-1, -1, 2)], dim=1),
        torch.cat([fit.mask, extra_mask], dim=1),
    )
    fit = _refine_rows(fit, extra_mask.any(dim=1).nonzero().squeeze(1), target, lmax, steps)

    # Weak peaks and peaks fitted onto the same direction are dropped; the others take over.
    amplitude = fit.weights[..., 0]  # [S', K]
    largest = amplitude.where(fit.mask, -math.inf).max(dim=1).values  # [S']
    strong = amplitude > (relative * largest).clamp(min=threshold)[:, None]  # [S', K]
    mask = _suppress(fit.directions, amplitude, fit.mask & strong, cos_merge)
    changed = (mask != fit.mask).any(dim=1).nonzero().squeeze(1)
    fit = _compact(_refine_rows(fit._replace(mask=mask), changed, target, lmax, steps))
    if fit.mask.shape[1] == 0:  # every candidate was too weak
        return signals.new_zeros(0, 3), live[:0], signals.new_zeros(0)

    # One more step, differentiable: its derivative is the implicit derivative of the fit.
    state = _State(_projections(_diracs(fit, lmax), _target(signals[live], lmax)), None)  # carries the gradient
    damping = torch.full_like(fit.weights[:, 0, 0], _DAMPING)
    fit = _apply(fit, *_solve(fit, state, lmax, damping))

    order = torch.where(fit.mask, fit.weights[..., 0], -math.inf).argsort(dim=1, descending=True, stable=True)
    take = fit.mask.gather(1, order)  # [S', K]
    directions = fit.directions.gather(1, order[..., None].expand_as(fit.directions))[take]  # [P, 3]
    weights = fit.weights.gather(1, order[..., None].expand_as(fit.weights))[take]  # [P, 2]
    index = live[:, None].expand_as(take)[take]  # [P]
    return directions * (weights[:, 1:] / weights[:, :1]), index, weights[:, 0]


def find_peaks(
    signals: torch.Tensor,
    threshold: float = 0.5,
    relative_threshold: float = 0.5,
    resolution: int | None = None,
    steps: int = 4,
    chunk_size: int = 16384,
) -> Peaks:
    r"""Find the peaks of a batch of two-channel signals made by :func:`project`.

    Channel 0's local maxima on a near-uniform grid (``sphere_grid``; no poles, no seam) above
    ``max(threshold, relative_threshold * largest value of the signal)`` are the candidates;
    candidates closer than 2.5 grid spacings are merged (the highest is kept). The directions and
    the Dirac weights of both channels of all candidates of a signal are then fitted jointly to the
    coefficients by damped Gauss-Newton, which removes the pull of the neighbours' tails; a peak
    hidden by a neighbour shows as a maximum of the residual and is added; peaks whose channel-0
    weight (``amplitudes``) is under the same thresholds are dropped. ``length = weight1 / weight0``.

    The last Gauss-Newton step is taken with the signals' autograd graph, so ``vectors`` and
    ``amplitudes`` carry gradients to ``signals``: the implicit derivative of the fitted
    parameters, ``(J^T J)^{-1} J^T``, exact when the signal is a sum of Diracs. Which peaks are
    found does not depend differentiably on the signal.

    Args:
        signals: ``(N, 2, (lmax+1)**2)``.
        threshold: absolute threshold on channel 0 (an isolated vector's peak is 1).
        relative_threshold: threshold relative to the signal's largest peak.
        resolution: number of grid points, ``default_resolution(lmax)`` when ``None``.
        steps: Gauss-Newton steps per fitting stage.
        chunk_size: signals processed at once (bounds memory).

    Returns:
        :class:`Peaks`.

    >>> vectors = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [0.0, -0.5, 0.0]])
    >>> peaks = find_peaks(project(vectors, torch.tensor([0, 0, 1]), 2, lmax=6))
    >>> peaks.index  # the two isolated peaks of signal 0 tie in amplitude: their order is free
    tensor([0, 0, 1])
    >>> order = peaks.vectors.norm(dim=1).argsort()
    >>> peaks.vectors[order].round(decimals=4).abs(), peaks.index[order]
    (tensor([[0.0000, 0.5000, 0.0000],
            [1.0000, 0.0000, 0.0000],
            [0.0000, 0.0000, 2.0000]]), tensor([1, 0, 0]))
    """
    if signals.dim() != 3 or signals.shape[1] != 2:
        raise ValueError(f"signals must have shape (N, 2, (lmax+1)**2), got {tuple(signals.shape)}")
    check_finite(signals, "signals")
    detection = _detection(_lmax(signals), resolution, signals.dtype, torch.device(signals.device))
    parts = [
        _find_chunk(signals[start : start + chunk_size], detection, threshold, relative_threshold, steps)
        for start in range(0, signals.shape[0], chunk_size)
    ]
    if not parts:
        empty = signals.new_zeros(0)
        return Peaks(empty.reshape(0, 3), torch.zeros(0, dtype=torch.long, device=signals.device), empty)
    offsets = range(0, signals.shape[0], chunk_size)
    return Peaks(
        torch.cat([vectors for vectors, _, _ in parts]),
        torch.cat([index + offset for (_, index, _), offset in zip(parts, offsets)]),
        torch.cat([amplitudes for _, _, amplitudes in parts]),
    )
