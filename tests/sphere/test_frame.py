"""Canonical frames: peak finding in each signal's own frame turns and mirrors with the signal."""

import pytest
import torch
from e3nn import io, o3
from scipy.optimize import linear_sum_assignment

from geoae.sphere import count_vectors, find_counted_peaks, find_peaks, project, spherical_harmonics
from geoae.sphere._detect import _detection
from geoae.sphere._frame import canonical_frames, turn_signals
from tests.utils.equivariance import default_dtype

LMAX = 4  # the decoders' signal_lmax


def blurred_signals(num_signals: int, seed: int) -> torch.Tensor:
    """``(num_signals, 2, M)`` float64 signals like a decoder's uncertain predictions: 1-4 vectors
    each, every vector spread over five directions up to ~20 degrees apart with uneven weights,
    plus a small smooth random part. Their peaks are low and wide, so which grid points see them,
    and where a short fit stops, depend on how the signal sits on the grid."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 5, (num_signals,), generator=generator)
    index = torch.repeat_interleave(torch.arange(num_signals), counts)
    centres = torch.nn.functional.normalize(torch.randn(len(index), 3, generator=generator, dtype=torch.float64), dim=1)
    spread = centres[:, None] + 0.35 * torch.randn(len(index), 5, 3, generator=generator, dtype=torch.float64)
    lengths = 1 + torch.rand(len(index), 1, 1, generator=generator, dtype=torch.float64)
    vectors = (torch.nn.functional.normalize(spread, dim=2) * lengths).reshape(-1, 3)  # [5V, 3]
    weights = torch.rand(len(vectors), generator=generator, dtype=torch.float64) * 0.4  # [5V]: 1 per vector on average
    signals = project(vectors, torch.arange(len(vectors)), len(vectors), LMAX) * weights[:, None, None]
    signals = torch.zeros(num_signals, *signals.shape[1:], dtype=torch.float64).index_add(0, index.repeat_interleave(5), signals)
    return signals + 0.02 * torch.randn(signals.shape, generator=generator, dtype=torch.float64)


def turned(signals: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    with default_dtype(torch.float64):  # e3nn's Wigner D is float64-exact only under that default
        wigner = io.SphericalTensor(LMAX, 1, -1).D_from_matrix(matrix)  # [M, M], parity included
    return signals @ wigner.T


def matrices():
    q = torch.tensor([0.5, -0.3, 0.7, 0.4], dtype=torch.float64)
    rotation = o3.quaternion_to_matrix(q / q.norm())
    return [rotation, -rotation, -torch.eye(3, dtype=torch.float64)]


@pytest.mark.parametrize("matrix", matrices(), ids=["rotation", "rotoinversion", "inversion"])
def test_frames_turn_and_mirror_with_the_signal(matrix):
    signals = blurred_signals(300, seed=0)
    detection = _detection(LMAX, None, torch.float64, torch.device("cpu"))
    frames, moved = canonical_frames(signals, detection), canonical_frames(turned(signals, matrix), detection)
    eye = torch.eye(3, dtype=torch.float64).expand_as(frames)
    torch.testing.assert_close(frames.transpose(1, 2) @ frames, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(moved, matrix @ frames, atol=1e-9, rtol=0)


def test_turned_signals_are_the_signals_seen_in_the_frames():
    signals = blurred_signals(20, seed=1)
    frames = o3.rand_matrix(20, dtype=torch.float64) * torch.tensor([1.0, -1.0]).repeat(10)[:, None, None]
    directions = torch.nn.functional.normalize(torch.randn(20, 7, 3, dtype=torch.float64), dim=2)
    seen = turn_signals(signals, frames) @ spherical_harmonics(directions, LMAX).transpose(1, 2)  # [20, 2, 7]: g(d)
    original = signals @ spherical_harmonics(directions @ frames.transpose(1, 2), LMAX).transpose(1, 2)  # f(Q d)
    torch.testing.assert_close(seen, original, atol=1e-12, rtol=0)


def assert_same_peaks(peaks, moved_peaks, matrix, num_signals, atol):
    """Per signal, the same number of peaks, at ``matrix`` times the first's vectors."""
    assert torch.equal(peaks.index, moved_peaks.index)
    torch.testing.assert_close(moved_peaks.amplitudes, peaks.amplitudes, atol=atol, rtol=0)
    for i in range(num_signals):
        a, b = peaks.vectors[peaks.index == i] @ matrix.T, moved_peaks.vectors[moved_peaks.index == i]
        distances = torch.cdist(a, b)
        rows, columns = linear_sum_assignment(distances.numpy())
        assert (distances[rows, columns] < atol).all(), f"signal {i}"


@pytest.mark.parametrize("matrix", matrices(), ids=["rotation", "rotoinversion", "inversion"])
def test_peaks_of_blurred_signals_are_equivariant_to_round_off(matrix):
    signals = blurred_signals(300, seed=2)
    moved = turned(signals, matrix)
    assert torch.equal(count_vectors(moved), count_vectors(signals))
    for find in (find_counted_peaks, find_peaks):
        peaks, moved_peaks = find(signals), find(moved)
        assert len(peaks.index) > len(signals)  # signals with several peaks, not a trivial pass
        assert_same_peaks(peaks, moved_peaks, matrix, len(signals), atol=1e-9)
