"""How many vectors a signal holds, and its peaks found to that count."""

import torch

from ._harmonics import kernel
from ._peaks import Peaks, find_peaks
from ._project import _lmax, check_finite


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
    unit = kernel(signals.new_tensor([0.0, 0.0, 1.0]), _lmax(signals))[0]  # one Dirac's l = 0 coefficient
    return (signals[:, 0, 0] / unit).round().clamp(min=0).long()


def _keep_first(peaks: Peaks, counts: torch.Tensor) -> Peaks:
    """At most ``counts[s]`` peaks of each signal ``s``: its first (strongest) ones."""
    per_signal = torch.bincount(peaks.index, minlength=len(counts))  # (N,)
    starts = torch.cumsum(per_signal, 0) - per_signal  # (N,)
    rank = torch.arange(len(peaks.index), device=counts.device) - starts[peaks.index]  # (P,): rank in its signal
    keep = rank < counts[peaks.index]  # (P,)
    return Peaks(peaks.vectors[keep], peaks.index[keep], peaks.amplitudes[keep])


def find_counted_peaks(
    signals: torch.Tensor, counts: torch.Tensor | None = None, low_threshold: float = 0.2, **kwargs
) -> Peaks:
    r"""Peaks of each signal, as many as it holds vectors (:func:`count_vectors`).

    :func:`find_peaks` (with ``kwargs``) finds the peaks; a signal with more than its count
    keeps its strongest ones; a signal with fewer is searched again with absolute threshold
    ``low_threshold`` and no relative one, and keeps the strongest of those. Signals whose
    peaks match their count are left exactly as :func:`find_peaks` found them.

    For a signal made by :func:`project` both rules agree. For a predicted signal, whose
    peaks are blurred where the prediction is uncertain, a peak's fitted weight can fall
    under the threshold although the integral still counts its vector.

    Args:
        signals: ``(N, 2, (lmax+1)**2)``.
        counts: ``(N,)`` the number of peaks wanted, :func:`count_vectors` when ``None``.
        low_threshold: absolute threshold of the second search.
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
    kwargs = dict(kwargs, threshold=low_threshold, relative_threshold=0.0)
    again = _keep_first(find_peaks(signals[few], **kwargs), counts[few])
    kept = ~torch.isin(peaks.index, few)  # (P,)
    index = torch.cat([peaks.index[kept], few[again.index]])  # (P',)
    order = torch.sort(index, stable=True).indices  # by signal; within one, as found
    return Peaks(
        torch.cat([peaks.vectors[kept], again.vectors])[order],
        index[order],
        torch.cat([peaks.amplitudes[kept], again.amplitudes])[order],
    )
