"""Peaks of two-channel spherical signals: grid detection, then a joint fit of all peaks."""

import math
from typing import NamedTuple

import torch

from ._detect import _Detection, _detection, _local_maxima, _pad, _suppress
from ._frame import canonical_frames, turn_signals
from ._fit import _DAMPING, _apply, _compact, _diracs, _Fit, _projections, _refine_rows, _solve, _State, _Target, _target
from ._project import _lmax, check_finite, project  # noqa: F401 (project: doctest)


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


def _residual_candidates(fit: _Fit, coefficients: torch.Tensor, detection: _Detection, cut: torch.Tensor, lmax: int):
    r"""Local maxima above ``cut`` ``(S,)`` of what the fit leaves unexplained in channel 0 of
    ``coefficients`` ``(S, 2, M)``, away from the fit's peaks: ``(S, K', 3)`` directions and
    ``(S, K')`` heights and mask, highest first."""
    model = fit.weights[:, :, 0:1].transpose(1, 2) @ _diracs(fit, lmax)  # [S, 1, M]
    residual = coefficients[:, 0] - model[:, 0]  # [S, M]
    # |f(x)| <= |r| |Y(x)| = |r| sqrt(M / 4 pi): most residuals cannot reach the cut anywhere
    bound = residual.norm(dim=1) * math.sqrt(residual.shape[1] / (4 * math.pi))  # [S]
    near_cut = (1.01 * bound > cut).nonzero().squeeze(1)  # [S'']
    signal, extra, heights = _local_maxima(residual[near_cut] @ detection.table, detection, cut[near_cut])
    extra, heights, mask = _pad(near_cut[signal], extra, heights, len(coefficients))
    near = (extra @ fit.directions.transpose(1, 2) > detection.cos_merge) & fit.mask[:, None, :]  # [S, K', K]
    return extra, heights, mask & ~near.any(dim=2)


def _extend(fit: _Fit, directions: torch.Tensor, heights: torch.Tensor, mask: torch.Tensor) -> _Fit:
    r"""``fit`` with more peaks ``(S, K', 3)``, their weights started at their ``heights``."""
    return _Fit(
        torch.cat([fit.directions, directions], dim=1),
        torch.cat([fit.weights, heights[..., None].expand(-1, -1, 2)], dim=1),
        torch.cat([fit.mask, mask], dim=1),
    )


def _prune(fit: _Fit, target: _Target, cut: torch.Tensor, detection: _Detection, lmax: int, steps: int) -> _Fit:
    r"""Drop peaks whose channel-0 weight is under ``cut`` ``(S,)`` and peaks fitted onto the
    same direction (the stronger stays); the signals that lost one are refitted."""
    amplitude = fit.weights[..., 0]  # [S, K]
    mask = _suppress(fit.directions, amplitude, fit.mask & (amplitude > cut[:, None]), detection.cos_merge)
    changed = (mask != fit.mask).any(dim=1).nonzero().squeeze(1)
    return _compact(_refine_rows(fit._replace(mask=mask), changed, target, lmax, steps))


def _finish(fit: _Fit, signals: torch.Tensor, rows: torch.Tensor, lmax: int):
    r"""``(vectors, index, amplitudes)`` of the fit of ``signals[rows]``; when the signals carry
    gradients, after one more step taken with their autograd graph: its derivative is the
    implicit derivative of the fit. (Without gradients that step, a fifth of the time of peak
    finding in a decoding, only polishes a converged fit.)"""
    if fit.mask.shape[1] == 0:  # no peak left in any signal
        return signals.new_zeros(0, 3), rows[:0], signals.new_zeros(0)
    if signals.requires_grad and torch.is_grad_enabled():
        state = _State(_projections(_diracs(fit, lmax), _target(signals[rows], lmax)), None)  # carries the gradient
        damping = torch.full_like(fit.weights[:, 0, 0], _DAMPING)
        fit = _apply(fit, *_solve(fit, state, lmax, damping))
    order = torch.where(fit.mask, fit.weights[..., 0], -math.inf).argsort(dim=1, descending=True, stable=True)
    take = fit.mask.gather(1, order)  # [S, K]
    directions = fit.directions.gather(1, order[..., None].expand_as(fit.directions))[take]  # [P, 3]
    weights = fit.weights.gather(1, order[..., None].expand_as(fit.weights))[take]  # [P, 2]
    index = rows[:, None].expand_as(take)[take]  # [P]
    return directions * (weights[:, 1:] / weights[:, :1]), index, weights[:, 0]


class _Options(NamedTuple):  # the arguments of find_peaks and find_counted_peaks (defaults in theirs)
    threshold: float
    relative_threshold: float
    resolution: int | None
    steps: int
    chunk_size: int
    low_threshold: float | None = None  # find_counted_peaks' only


def _find_chunk(signals: torch.Tensor, detection: _Detection, options: _Options, counts: torch.Tensor | None):
    r"""Peaks of ``(S, 2, M)`` signals: returns ``(vectors, index, amplitudes)``. With ``counts``
    ``(S,)``, at most that many per signal, completed from the residual towards them (see
    :func:`geoae.sphere.find_counted_peaks`)."""
    lmax = _lmax(signals)
    # each signal is seen in its own frame (counted: only those with peaks to find)
    turn = torch.arange(len(signals), device=signals.device) if counts is None else (counts > 0).nonzero().squeeze(1)
    frames = torch.eye(3, dtype=signals.dtype, device=signals.device).repeat(len(signals), 1, 1)  # [S, 3, 3]
    seen = signals[turn]  # [S'', 2, M]
    frames[turn] = own = canonical_frames(seen, detection)
    signals = signals.index_copy(0, turn, turn_signals(seen, own))
    coefficients = signals.detach()  # [S, 2, M]
    values = coefficients[:, 0] @ detection.table  # [S, G]
    cut = (options.relative_threshold * values.amax(dim=1)).clamp(min=options.threshold)  # [S]

    directions, heights, mask = _pad(*_local_maxima(values, detection, cut), len(values))
    mask = _suppress(directions, heights, mask, detection.cos_merge)
    if counts is None:
        live = mask.any(dim=1).nonzero().squeeze(1)  # [S'] signals with peaks
    else:  # a signal without a peak strong enough is completed below
        live = (counts > 0).nonzero().squeeze(1)
    if len(live) == 0:
        return signals.new_zeros(0, 3), live, signals.new_zeros(0)
    coefficients, cut = coefficients[live], cut[live]
    target = _target(coefficients, lmax)
    fit = _compact(_Fit(directions[live], heights[live, :, None].expand(-1, -1, 2), mask[live]))
    fit = _refine_rows(fit, torch.arange(len(live), device=live.device), target, lmax, options.steps)

    if counts is None:
        # Peaks hidden by a neighbour's tail stand out in what the fit leaves unexplained.
        extra = _residual_candidates(fit, coefficients, detection, cut / 2, lmax)
    else:
        # Signals short of their count: the highest maxima of the residual, as many as are missing.
        cut = torch.full_like(cut, options.low_threshold)
        missing = counts[live] - fit.mask.sum(dim=1)  # [S'] (the residual of the others is not looked at)
        residual_cut = cut.masked_fill(missing <= 0, math.inf) / 2
        directions, heights, mask = _residual_candidates(fit, coefficients, detection, residual_cut, lmax)
        mask = _suppress(directions, heights, mask, detection.cos_merge)
        mask &= mask.long().cumsum(dim=1) <= missing[:, None]
        extra = directions, heights, mask
    fit = _refine_rows(_extend(fit, *extra), extra[2].any(dim=1).nonzero().squeeze(1), target, lmax, options.steps)

    # Weak peaks and peaks fitted onto the same direction are dropped; the others take over.
    if counts is None:
        largest = fit.weights[..., 0].where(fit.mask, -math.inf).max(dim=1).values  # [S']
        cut = (options.relative_threshold * largest).clamp(min=options.threshold)
    fit = _prune(fit, target, cut, detection, lmax, options.steps)
    vectors, index, amplitudes = _finish(fit, signals, live, lmax)
    return (frames[index] * vectors[:, None, :]).sum(2), index, amplitudes  # turned back: Q v


def _find(signals: torch.Tensor, options: _Options, counts: torch.Tensor | None = None) -> Peaks:
    r"""Peaks of ``(N, 2, M)`` signals, ``chunk_size`` at a time (see :func:`_find_chunk`)."""
    if signals.dim() != 3 or signals.shape[1] != 2:
        raise ValueError(f"signals must have shape (N, 2, (lmax+1)**2), got {tuple(signals.shape)}")
    check_finite(signals, "signals")
    detection = _detection(_lmax(signals), options.resolution, signals.dtype, torch.device(signals.device))
    offsets = range(0, signals.shape[0], options.chunk_size)
    parts = [
        _find_chunk(
            signals[start : start + options.chunk_size],
            detection,
            options,
            None if counts is None else counts[start : start + options.chunk_size],
        )
        for start in offsets
    ]
    if not parts:
        empty = signals.new_zeros(0)
        return Peaks(empty.reshape(0, 3), torch.zeros(0, dtype=torch.long, device=signals.device), empty)
    return Peaks(
        torch.cat([vectors for vectors, _, _ in parts]),
        torch.cat([index + offset for (_, index, _), offset in zip(parts, offsets)]),
        torch.cat([amplitudes for _, _, amplitudes in parts]),
    )


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

    When ``signals`` require gradients, a last Gauss-Newton step is taken with their autograd
    graph, so ``vectors`` and ``amplitudes`` carry gradients to ``signals``: the implicit
    derivative of the fitted parameters, ``(J^T J)^{-1} J^T``, exact when the signal is a sum of
    Diracs. Which peaks are found does not depend differentiably on the signal.

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
    return _find(signals, _Options(threshold, relative_threshold, resolution, steps, chunk_size))
