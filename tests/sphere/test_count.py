import pytest
import torch
from e3nn import o3
from torch_geometric.utils import scatter

from geoae.sphere import count_vectors, find_counted_peaks, find_peaks, project

from .test_sphere import LMAX, batch, match, random_sets, rotated_signals


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lmax", [2, 4, 6])
def test_count_of_projected_sets_is_their_size(dtype, lmax):
    sets = random_sets(100, seed=3, max_vectors=8, min_angle=0.0)  # close and even equal directions count too
    sets.append(torch.zeros(2, 3, dtype=torch.float64))  # zero vectors have no direction: project skips them
    vectors, index = batch(sets, dtype)
    counts = count_vectors(project(vectors, index, len(sets) + 1, lmax))  # one more signal, empty
    assert counts.tolist() == [len(s) for s in sets[:-1]] + [0, 0]


@pytest.mark.parametrize("inversion", [False, True])
def test_count_is_invariant_and_counted_peaks_are_equivariant(inversion):
    sets = random_sets(20, seed=1)
    vectors, index = batch(sets)
    torch.manual_seed(0)
    matrix = o3.rand_matrix(dtype=torch.float64) * (-1 if inversion else 1)
    # a blurred prediction: every set's vectors at weights 0.55-1.3, some under the thresholds
    weights = 0.55 + 0.75 * torch.rand(len(vectors), dtype=torch.float64)
    signals = (project(vectors, torch.arange(len(vectors)), len(vectors), LMAX) * weights[:, None, None])
    signals = torch.zeros(len(sets), *signals.shape[1:], dtype=torch.float64).index_add(0, index, signals)
    moved = rotated_signals(signals, matrix)
    assert torch.equal(count_vectors(moved), count_vectors(signals))
    peaks, moved_peaks = find_counted_peaks(signals), find_counted_peaks(moved)
    assert torch.equal(peaks.index, moved_peaks.index)
    for i in range(len(sets)):
        angles, lengths = match(peaks.vectors[peaks.index == i] @ matrix.T, moved_peaks.vectors[moved_peaks.index == i])
        assert angles.max() < 1e-3 and lengths.max() < 1e-4


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_weak_peaks_are_found_to_the_count(dtype):
    sets = random_sets(200, seed=5)
    vectors, index = batch(sets, dtype)
    generator = torch.Generator().manual_seed(0)
    weights = 0.5 + torch.rand(len(vectors), generator=generator, dtype=torch.float64)
    # a blurred prediction that keeps the integral: each set's weights average to 1
    weights = (weights / scatter(weights, index, dim=0, reduce="mean")[index]).to(dtype)
    per_vector = project(vectors, torch.arange(len(vectors)), len(vectors), LMAX) * weights[:, None, None]
    signals = torch.zeros(len(sets), *per_vector.shape[1:], dtype=dtype).index_add(0, index, per_vector)
    sizes = torch.tensor([len(s) for s in sets])
    assert torch.equal(count_vectors(signals), sizes)
    thresholded = torch.bincount(find_peaks(signals).index, minlength=len(sets))
    peaks = find_counted_peaks(signals)
    assert (thresholded < sizes).sum() >= 10  # the relative threshold loses weak peaks of many sets
    assert torch.equal(torch.bincount(peaks.index, minlength=len(sets)), sizes)
    matched = [match(s.to(dtype).double(), peaks.vectors[peaks.index == i].double()) for i, s in enumerate(sets)]
    assert max(angles.max() for angles, _ in matched) < 2.0  # degrees: each weak peak where its vector is


def test_projected_signals_give_find_peaks_result():
    sets = random_sets(50, seed=2)
    vectors, index = batch(sets)
    signals = project(vectors, index, len(sets), LMAX)
    counted, plain = find_counted_peaks(signals), find_peaks(signals)
    assert torch.equal(counted.index, plain.index)
    # both fits converged: equal to the fit's tolerance (no last polishing step without gradients)
    torch.testing.assert_close(counted.amplitudes, plain.amplitudes, rtol=0, atol=1e-6)
    for i in range(len(sets)):  # equal amplitudes (1) leave the order within a signal free
        angles, lengths = match(counted.vectors[counted.index == i], plain.vectors[plain.index == i])
        assert angles.max() < 1e-5 and lengths.max() < 1e-8  # degrees: arccos near 1 in float64


def test_more_peaks_than_the_count_keep_the_strongest():
    vectors = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    weights = torch.tensor([1.0, 1.4, 0.8, 1.2], dtype=torch.float64)
    per_vector = project(vectors, torch.arange(4), 4, LMAX) * weights[:, None, None]
    signals = torch.stack([per_vector[:3].sum(0), per_vector[3]])  # signal 0: three vectors; 1: one
    peaks = find_counted_peaks(signals, counts=torch.tensor([2, 0]))
    assert peaks.index.tolist() == [0, 0]
    angles, _ = match(vectors[[1, 0]], peaks.vectors)  # the two strongest of signal 0
    assert angles.max() < 0.1
    assert torch.all(peaks.amplitudes[:-1] >= peaks.amplitudes[1:])


def test_empty_and_bad_signals():
    empty = find_counted_peaks(torch.zeros(0, 2, (LMAX + 1) ** 2))
    assert empty.vectors.shape == (0, 3) and empty.index.shape == (0,)
    assert count_vectors(torch.zeros(3, 2, (LMAX + 1) ** 2)).tolist() == [0, 0, 0]
    assert len(find_counted_peaks(torch.zeros(3, 2, (LMAX + 1) ** 2)).index) == 0
    with pytest.raises(ValueError, match="signals must have shape"):
        count_vectors(torch.zeros(2, (LMAX + 1) ** 2))
    with pytest.raises(ValueError, match="NaN or infinite"):
        count_vectors(torch.full((1, 2, (LMAX + 1) ** 2), float("nan")))


def _weak_third_peak(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """One signal of three vectors whose peaks came out 1.3, 1.1 and 0.25 high, and the vectors."""
    vectors = torch.tensor([[0.0, 0.6, 1.2], [1.1, -0.3, 0.1], [-0.4, -0.9, -0.5]], dtype=dtype)
    weights = torch.tensor([1.3, 1.1, 0.25], dtype=dtype)
    signals = (project(vectors, torch.arange(3), 3, LMAX) * weights[:, None, None]).sum(0, keepdim=True)
    return signals, vectors


def test_completed_peaks_carry_gradients_to_the_signal():
    signals, truth = _weak_third_peak()
    assert len(find_peaks(signals, threshold=0.3, relative_threshold=0.3).index) == 2  # the third comes from the completion

    def decode(coefficients):
        peaks = find_counted_peaks(coefficients, counts=torch.tensor([3]))
        order = (torch.nn.functional.normalize(peaks.vectors, dim=1) @ truth.T).argmax(dim=0)  # follow each vector
        return peaks.vectors[order], peaks.amplitudes[order]

    vectors, amplitudes = decode(signals)
    torch.testing.assert_close(vectors, truth)
    torch.testing.assert_close(amplitudes, torch.tensor([1.3, 1.1, 0.25], dtype=torch.float64))
    assert torch.autograd.gradcheck(decode, (signals.requires_grad_(),), eps=1e-6, atol=1e-5)


def test_completion_in_chunks_gives_the_same_peaks():
    sets = random_sets(40, seed=7)
    vectors, index = batch(sets)
    weights = 0.2 + torch.rand(len(vectors), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    per_vector = project(vectors, torch.arange(len(vectors)), len(vectors), LMAX) * weights[:, None, None]
    signals = torch.zeros(len(sets), *per_vector.shape[1:], dtype=torch.float64).index_add(0, index, per_vector)
    counts = torch.tensor([len(s) for s in sets])
    candidates = find_peaks(signals, threshold=0.3, relative_threshold=0.3)  # find_counted_peaks' first ones
    assert (torch.bincount(candidates.index, minlength=len(sets)) < counts).sum() >= 5  # completion at work
    whole, chunked = find_counted_peaks(signals, counts), find_counted_peaks(signals, counts, chunk_size=7)
    assert torch.equal(chunked.index, whole.index)
    for i in range(len(sets)):
        angles, lengths = match(whole.vectors[whole.index == i], chunked.vectors[chunked.index == i])
        assert angles.max() < 1e-4 and lengths.max() < 1e-6
