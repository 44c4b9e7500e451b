"""How many vectors a signal holds, and its peaks found to that count."""

import torch

from ._detect import _detection, _rank, _suppress
from ._fit import _compact, _Fit, _refine_rows, _target
from ._harmonics import kernel
from ._peaks import Peaks, _extend, _finish, _prune, _residual_candidates, find_peaks
from ._project import _lmax, check_finite


def integral_count(signals: torch.Tensor) -> torch.Tensor:
    r"""The signal's integral over the sphere in units of one vector, ``(N,)``, before
    :func:`count_vectors` rounds it: channel 0's ``l = 0`` coefficient over one Dirac's.
    Differentiable, and unchecked (a training loss calls it on every step).

    Args:
        signals: ``(N, 2, (lmax+1)**2)``.

    >>> from geoae.sphere import project
    >>> integral_count(project(torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]]), torch.tensor([0, 0]), 1, lmax=4))
    tensor([2.])
    """
    unit = kernel(signals.new_tensor([0.0, 0.0, 1.0]), _lmax(signals))[0]  # one Dirac's l = 0 coefficient
    return signals[:, 0, 0] / unit


def count_vectors(signals: torch.Tensor) -> torch.Tensor:
    r"""Number of vectors each signal of :func:`project` holds, ``(N,)`` long.

    Channel 0 is a sum of unit Diracs and every Dirac has the same ``l = 0`` coefficient
    (``kernel(u, lmax)[0] = sqrt(4 pi) / (lmax+1)**2`` for every direction ``u``), so that
    coefficient divided by one Dirac's, rounded (and at least 0), counts them: the signal's
    integral over the sphere in units of one vector. Unlike the number of peaks above a
    threshold, it does not depend on how sharp or how close the peaks are.

    Args:
        signals: ``(N, 2, (lmax+1)**2)``.

    >>> from geoae.sphere import project
    >>> vectors = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.05], [0.0, -0.5, 0.0]])
    >>> count_vectors(project(vectors, torch.tensor([0, 0, 0, 1]), 3, lmax=4))
    tensor([3, 1, 0])
    """
    if signals.dim() != 3 or signals.shape[1] != 2:
        raise ValueError(f"signals must have shape (N, 2, (lmax+1)**2), got {tuple(signals.shape)}")
    check_finite(signals, "signals")
    return integral_count(signals).round().clamp(min=0).long()


def _keep_first(peaks: Peaks, counts: torch.Tensor) -> Peaks:
    """At most ``counts[s]`` peaks of each signal ``s``: its first (strongest) ones."""
    keep = _rank(peaks.index, len(counts)) < counts[peaks.index]  # (P,)
    return Peaks(peaks.vectors[keep], peaks.index[keep], peaks.amplitudes[keep])


def _fit_of(peaks: Peaks, num_signals: int, width: int) -> _Fit:
    r"""The fit ``peaks`` came from, padded to ``(num_signals, width)``."""
    rank = _rank(peaks.index, num_signals)  # (P,)
    length = peaks.vectors.norm(dim=1)  # (P,)
    directions = peaks.vectors.new_zeros(num_signals, width, 3)
    directions[..., 2] = 1  # masked slots hold a valid unit vector
    directions[peaks.index, rank] = peaks.vectors / length[:, None].clamp(min=torch.finfo(length.dtype).tiny)
    weights = peaks.vectors.new_zeros(num_signals, width, 2)
    weights[peaks.index, rank] = torch.stack([peaks.amplitudes, peaks.amplitudes * length], dim=1)
    mask = torch.zeros(num_signals, width, dtype=torch.bool, device=peaks.index.device)
    mask[peaks.index, rank] = True
    return _Fit(directions, weights, mask)


def _complete(signals: torch.Tensor, fit: _Fit, counts: torch.Tensor, threshold: float, resolution, steps: int):
    r"""The fit of the peaks found in ``signals`` ``(S, 2, M)`` completed towards ``counts``
    ``(S,)``: returns ``(vectors, index, amplitudes)``, see :func:`find_counted_peaks`."""
    lmax = _lmax(signals)
    detection = _detection(lmax, resolution, signals.dtype, torch.device(signals.device))
    coefficients = signals.detach()  # [S, 2, M]
    target = _target(coefficients, lmax)
    cut = signals.new_full((len(signals),), threshold)  # [S]
    directions, heights, mask = _residual_candidates(fit, coefficients, detection, cut / 2, lmax)  # highest first
    mask = _suppress(directions, heights, mask, detection.cos_merge)
    mask &= mask.long().cumsum(dim=1) <= (counts - fit.mask.sum(dim=1))[:, None]  # as many as are missing
    rows = torch.arange(len(signals), device=counts.device)
    fit = _refine_rows(_compact(_extend(fit, directions, heights, mask)), rows, target, lmax, steps)
    return _finish(_prune(fit, target, cut, detection, lmax, steps), signals, rows, lmax)


def find_counted_peaks(
    signals: torch.Tensor, counts: torch.Tensor | None = None, low_threshold: float = 0.2, **kwargs
) -> Peaks:
    r"""Peaks of each signal, as many as it holds vectors (:func:`count_vectors`).

    :func:`find_peaks` (with ``kwargs``) finds the peaks; a signal with more than its count
    keeps its strongest ones; a signal with fewer is completed: the highest maxima of what its
    peaks leave unexplained (above ``low_threshold / 2``, away from its peaks), as many as are
    missing, join them, all are fitted again jointly, and those whose fitted weight ends under
    ``low_threshold`` are dropped. Signals whose peaks match their count are left exactly as
    :func:`find_peaks` found them.

    For a signal made by :func:`project` both rules agree. For a predicted signal, whose
    peaks are blurred where the prediction is uncertain, a peak's fitted weight can fall
    under the threshold although the integral still counts its vector. Like
    :func:`find_peaks`, the result carries gradients to ``signals`` through a last fitting step.

    Args:
        signals: ``(N, 2, (lmax+1)**2)``.
        counts: ``(N,)`` the number of peaks wanted, :func:`count_vectors` when ``None``.
        low_threshold: the smallest weight of a peak added to complete a signal.
        kwargs: passed on to :func:`find_peaks`.

    Returns:
        :class:`Peaks` (index sorted; within a signal, by decreasing amplitude); a signal may
        end with fewer than ``counts`` peaks when not enough are found.

    Three vectors whose predicted peaks came out 1.3, 1.1 and 0.6 high: the last is under
    :func:`find_peaks`'s relative threshold (half the highest), yet the integral counts it:

    >>> from geoae.sphere import project
    >>> vectors = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    >>> weights = torch.tensor([1.3, 1.1, 0.6])
    >>> signals = (project(vectors, torch.arange(3), 3, lmax=4) * weights[:, None, None]).sum(0, keepdim=True)
    >>> count_vectors(signals), len(find_peaks(signals).index), len(find_counted_peaks(signals).index)
    (tensor([3]), 2, 3)
    """
    counts = count_vectors(signals) if counts is None else counts
    num_signals = signals.shape[0]
    peaks = _keep_first(find_peaks(signals, **kwargs), counts)
    few = (torch.bincount(peaks.index, minlength=num_signals) < counts).nonzero().flatten()  # (F,)
    if len(few) == 0:
        return peaks
    inside = torch.isin(peaks.index, few)  # (P,)
    found = Peaks(peaks.vectors[inside].detach(), torch.searchsorted(few, peaks.index[inside]), peaks.amplitudes[inside].detach())
    fit = _fit_of(found, len(few), int(counts[few].max()))  # [F, K]: signal i of it is few[i]
    chunk_size, resolution, steps = kwargs.get("chunk_size", 16384), kwargs.get("resolution"), kwargs.get("steps", 4)
    parts = []
    for start in range(0, len(few), chunk_size):
        rows = few[start : start + chunk_size]
        part = _Fit(*(field[start : start + chunk_size] for field in fit))
        vectors, index, amplitudes = _complete(signals[rows], part, counts[rows], low_threshold, resolution, steps)
        parts.append(Peaks(vectors, rows[index], amplitudes))
    index = torch.cat([peaks.index[~inside]] + [part.index for part in parts])  # (P',)
    order = torch.sort(index, stable=True).indices  # by signal; within one, as found
    return Peaks(
        torch.cat([peaks.vectors[~inside]] + [part.vectors for part in parts])[order],
        index[order],
        torch.cat([peaks.amplitudes[~inside]] + [part.amplitudes for part in parts])[order],
    )
