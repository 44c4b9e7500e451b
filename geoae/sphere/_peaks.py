"""Peaks of two-channel spherical signals: grid detection, then a joint fit of all peaks."""

import math
from typing import NamedTuple

import torch

from ._grid import SphereGrid, sphere_grid
from ._harmonics import cartesian_gradient, dirac_scale, spherical_harmonics
from ._project import _lmax, check_finite, project  # noqa: F401 (project: doctest)

_MAX_TURN = 0.25  # radians: the largest move of a direction in one Gauss-Newton step
_DAMPING_START = 1e-3  # Levenberg-Marquardt damping, relative to the diagonal of J^T J
_DAMPING = 1e-6  # the smallest damping, also that of the final differentiable step
_CONVERGED = 1e-4  # radians: a signal whose last step moved a peak more gets _MORE_STEPS more
_MORE_STEPS = 8


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


def _local_maxima(values: torch.Tensor, grid: SphereGrid, cut: torch.Tensor):
    r"""Grid points above ``cut`` and not below any neighbour. ``values``: ``(S, G)``, ``cut``: ``(S,)``.

    Returns ``(signal, direction, height)``: ``(C,)``, ``(C, 3)``, ``(C,)``.
    """
    signal, point = (values > cut[:, None]).nonzero(as_tuple=True)  # [C], [C]
    height = values[signal, point]  # [C]
    around = values[signal[:, None], grid.neighbors[point]]  # [C, D]
    keep = (height[:, None] >= around).all(dim=1)  # [C]
    return signal[keep], grid.points[point[keep]], height[keep]


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


class _Basis(NamedTuple):
    functions: torch.Tensor  # [S, K, 3, M]: each peak's Dirac and its derivatives along two tangents
    gram: torch.Tensor  # [S, K, 3, K, 3]: their inner products
    first: torch.Tensor  # [S, K, 3]: the two tangents
    second: torch.Tensor  # [S, K, 3]


def _basis(fit: _Fit, lmax: int) -> _Basis:
    r"""Diracs of the peaks and their tangent derivatives, zero for dead peaks."""
    num, width, _ = fit.directions.shape
    harmonics = spherical_harmonics(fit.directions, lmax)  # [S, K, M]
    cartesian = cartesian_gradient(harmonics, lmax)  # [S, K, 3, M]
    first, second = _tangent_basis(fit.directions)  # [S, K, 3] each
    functions = torch.stack(
        [harmonics, (first[..., None] * cartesian).sum(dim=2), (second[..., None] * cartesian).sum(dim=2)],
        dim=2,
    )  # [S, K, 3, M]
    functions = functions * (dirac_scale(lmax) * fit.mask[..., None, None])
    flat = functions.flatten(1, 2)  # [S, 3K, M]
    gram = (flat @ flat.transpose(1, 2)).reshape(num, width, 3, width, 3)
    return _Basis(functions, gram, first, second)


def _model(fit: _Fit, basis: _Basis) -> torch.Tensor:
    r"""Coefficients ``(S, 2, M)`` of the fitted sum of Diracs."""
    return torch.einsum("skc,skm->scm", fit.weights, basis.functions[:, :, 0])


def _solve(fit: _Fit, basis: _Basis, coefficients: torch.Tensor, damping: torch.Tensor) -> torch.Tensor:
    r"""Levenberg-Marquardt step ``(S, K, 4)`` towards ``coefficients`` ``(S, 2, M)``.

    ``damping`` ``(S,)`` is relative to the diagonal of ``J^T J``; a signal whose damped matrix
    is not numerically positive definite gets a zero step.

    Per peak the parameters are two tangent moves and the Dirac weights in channels 0 and 1.
    ``J^T J`` and ``J^T r`` are assembled from the Gram matrix of the basis and the projections of
    the coefficients on it: no ``(2M, 4K)`` Jacobian is built.
    """
    num, width = fit.mask.shape
    gram, weights = basis.gram, fit.weights  # [S, K, 3, K, 3], [S, K, 2]
    projection = (basis.functions.flatten(1, 2) @ coefficients.transpose(1, 2)).reshape(num, width, 3, 2)
    residual = projection - torch.einsum("skil,slc->skic", gram[..., 0], weights)  # [S, K, 3, 2]
    # J^T J blocks between peaks k and l; parameters: moves t1, t2, weights a (channel 0), b (channel 1)
    moves = (weights @ weights.transpose(1, 2))[:, :, None, :, None] * gram[:, :, 1:, :, 1:]  # [S, K, 2, K, 2]
    move_a = weights[:, :, None, None, 0:1] * gram[:, :, 1:, :, :1]  # [S, K, 2, K, 1]
    move_b = weights[:, :, None, None, 1:2] * gram[:, :, 1:, :, :1]  # [S, K, 2, K, 1]
    dirac = gram[:, :, :1, :, :1]  # [S, K, 1, K, 1]
    zero = torch.zeros_like(dirac)
    normal = torch.cat(
        [
            torch.cat([moves, move_a, move_b], dim=4),
            torch.cat([move_a.transpose(1, 3).transpose(2, 4), dirac, zero], dim=4),
            torch.cat([move_b.transpose(1, 3).transpose(2, 4), zero, dirac], dim=4),
        ],
        dim=2,
    ).reshape(num, 4 * width, 4 * width)
    right = torch.cat(
        [torch.einsum("skic,skc->ski", residual[:, :, 1:], weights), residual[:, :, 0]], dim=2
    ).reshape(num, 4 * width)
    dead = (~fit.mask).repeat_interleave(4, dim=1).to(normal.dtype)  # [S, 4K]
    diagonal = normal.diagonal(dim1=1, dim2=2)  # [S, 4K]
    tiny = torch.finfo(normal.dtype).tiny ** 0.5
    normal = normal + torch.diag_embed(damping[:, None] * diagonal + dead + tiny)
    factor, info = torch.linalg.cholesky_ex(normal)  # [S, 4K, 4K], [S]
    step = torch.cholesky_solve(right[..., None], factor).reshape(num, width, 4)
    return torch.where((info == 0)[:, None, None], step, 0)


def _apply(fit: _Fit, step: torch.Tensor, basis: _Basis) -> _Fit:
    move = step[..., :2]  # [S, K, 2]
    move = move * (_MAX_TURN / move.norm(dim=-1, keepdim=True).clamp(min=_MAX_TURN))
    directions = fit.directions + move[..., :1] * basis.first + move[..., 1:] * basis.second  # [S, K, 3]
    return _Fit(torch.nn.functional.normalize(directions, dim=-1), fit.weights + step[..., 2:], fit.mask)


def _cost(fit: _Fit, basis: _Basis, coefficients: torch.Tensor) -> torch.Tensor:
    return (coefficients - _model(fit, basis)).square().sum(dim=(1, 2))  # [S]


def _choose(better: torch.Tensor, new, old):
    r"""Per signal (``better``: ``(S,)``), fields of ``new`` where true, of ``old`` elsewhere."""
    return type(new)(*(torch.where(better.view((-1,) + (1,) * (a.dim() - 1)), a, b) for a, b in zip(new, old)))


def _refine(fit: _Fit, coefficients: torch.Tensor, lmax: int, steps: int) -> tuple[_Fit, torch.Tensor]:
    r"""Least-squares weights for the current directions, then ``steps`` Levenberg-Marquardt steps.

    A step that does not lower the squared residual is undone and the damping raised tenfold;
    one that does lowers it tenfold. Returns the fit and each signal's largest proposed move of
    a direction in the last step, ``(S,)``.
    """
    if fit.mask.shape[1] == 0:  # no live peak in any of these signals
        return fit, fit.directions.new_zeros(fit.mask.shape[0])
    basis = _basis(fit, lmax)
    fit = fit._replace(weights=_linear_weights(fit, basis, coefficients))
    cost = _cost(fit, basis, coefficients)  # [S]
    damping = torch.full_like(cost, _DAMPING_START)  # [S]
    for _ in range(steps):
        move = _solve(fit, basis, coefficients, damping)  # [S, K, 4]
        trial = _apply(fit, move, basis)
        trial_basis = _basis(trial, lmax)
        trial_cost = _cost(trial, trial_basis, coefficients)
        better = trial_cost <= cost  # [S]
        fit, basis = _choose(better, trial, fit), _choose(better, trial_basis, basis)
        cost = torch.where(better, trial_cost, cost)
        damping = torch.where(better, damping / 10, damping * 10).clamp(_DAMPING, 1e6)
    return fit, move[..., :2].norm(dim=-1).amax(dim=1)


def _linear_weights(fit: _Fit, basis: _Basis, coefficients: torch.Tensor) -> torch.Tensor:
    r"""Least-squares Dirac weights ``(S, K, 2)`` for the fit's directions."""
    gram = basis.gram[:, :, 0, :, 0] + torch.diag_embed((~fit.mask).to(basis.gram.dtype))  # [S, K, K]
    return torch.linalg.solve(gram, basis.functions[:, :, 0] @ coefficients.transpose(1, 2))  # [S, K, 2]


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


def _refine_rows(fit: _Fit, rows: torch.Tensor, coefficients: torch.Tensor, lmax: int, steps: int) -> _Fit:
    r"""Refine only the signals ``rows`` of ``fit``: ``steps`` steps, then more for the slow ones."""
    if len(rows) == 0:
        return fit
    part, moved = _refine(_rows(fit, rows), coefficients[rows], lmax, steps)
    slow = (moved > _CONVERGED).nonzero().squeeze(1)
    if len(slow):
        part = _put(part, slow, _refine(_rows(part, slow), coefficients[rows][slow], lmax, _MORE_STEPS)[0])
    return _put(fit, rows, part)


def _find_chunk(signals: torch.Tensor, grid: SphereGrid, threshold: float, relative: float, steps: int):
    r"""Peaks of ``(S, 2, M)`` signals: returns ``(vectors, index, amplitudes)``."""
    lmax = _lmax(signals)
    coefficients = signals.detach()  # [S, 2, M]
    cos_merge = math.cos(2.5 * grid.spacing)
    values = coefficients[:, 0] @ grid.harmonics.T  # [S, G]
    cut = (relative * values.max(dim=1).values).clamp(min=threshold)  # [S]

    directions, heights, mask = _pad(*_local_maxima(values, grid, cut), len(values))
    mask = _suppress(directions, heights, mask, cos_merge)
    live = mask.any(dim=1).nonzero().squeeze(1)  # [S'] signals with peaks
    if len(live) == 0:
        return signals.new_zeros(0, 3), live, signals.new_zeros(0)
    coefficients, cut = coefficients[live], cut[live]
    fit = _compact(_Fit(directions[live], heights[live, :, None].expand(-1, -1, 2), mask[live]))
    fit = _refine_rows(fit, torch.arange(len(live), device=live.device), coefficients, lmax, steps)

    # Peaks hidden by a neighbour's tail stand out in what the fit leaves unexplained.
    residual = (coefficients - _model(fit, _basis(fit, lmax)))[:, 0] @ grid.harmonics.T  # [S', G]
    extra, extra_heights, extra_mask = _pad(*_local_maxima(residual, grid, cut / 2), len(live))
    near = (extra @ fit.directions.transpose(1, 2) > cos_merge) & fit.mask[:, None, :]  # [S', K', K]
    extra_mask &= ~near.any(dim=2)
    fit = _Fit(
        torch.cat([fit.directions, extra], dim=1),
        torch.cat([fit.weights, extra_heights[..., None].expand(-1, -1, 2)], dim=1),
        torch.cat([fit.mask, extra_mask], dim=1),
    )
    fit = _refine_rows(fit, extra_mask.any(dim=1).nonzero().squeeze(1), coefficients, lmax, steps)

    # Weak peaks and peaks fitted onto the same direction are dropped; the others take over.
    amplitude = fit.weights[..., 0]  # [S', K]
    largest = amplitude.where(fit.mask, -math.inf).max(dim=1).values  # [S']
    strong = amplitude > (relative * largest).clamp(min=threshold)[:, None]  # [S', K]
    mask = _suppress(fit.directions, amplitude, fit.mask & strong, cos_merge)
    changed = (mask != fit.mask).any(dim=1).nonzero().squeeze(1)
    fit = _compact(_refine_rows(fit._replace(mask=mask), changed, coefficients, lmax, steps))
    if fit.mask.shape[1] == 0:  # every candidate was too weak
        return signals.new_zeros(0, 3), live[:0], signals.new_zeros(0)

    # One more step, differentiable: its derivative is the implicit derivative of the fit.
    basis = _basis(fit, lmax)
    damping = torch.full_like(fit.weights[:, 0, 0], _DAMPING)
    fit = _apply(fit, _solve(fit, basis, signals[live], damping), basis)  # signals[live] carries the gradient

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
    chunk_size: int = 4096,
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
    >>> peaks.vectors.round(decimals=4).abs(), peaks.index
    (tensor([[1.0000, 0.0000, 0.0000],
            [0.0000, 0.0000, 2.0000],
            [0.0000, 0.5000, 0.0000]]), tensor([0, 0, 1]))
    """
    if signals.dim() != 3 or signals.shape[1] != 2:
        raise ValueError(f"signals must have shape (N, 2, (lmax+1)**2), got {tuple(signals.shape)}")
    check_finite(signals, "signals")
    grid = sphere_grid(_lmax(signals), resolution, signals.dtype, signals.device)
    parts = [
        _find_chunk(signals[start : start + chunk_size], grid, threshold, relative_threshold, steps)
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
