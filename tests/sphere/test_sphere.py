import math

import pytest
import torch
from e3nn import io, o3

from geoae.sphere import (
    evaluate,
    evaluate_gradient,
    find_peaks,
    harmonics_and_gradient,
    project,
    sphere_grid,
    spherical_harmonics,
)

LMAX = 6


def random_sets(num_sets, seed, max_vectors=6, min_angle=45.0, lengths=(0.5, 3.0)):
    generator = torch.Generator().manual_seed(seed)
    sets = []
    for _ in range(num_sets):
        count = int(torch.randint(1, max_vectors + 1, (1,), generator=generator))
        while True:
            directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator, dtype=torch.float64), dim=1)
            if (directions @ directions.T - 2 * torch.eye(count)).max() <= math.cos(math.radians(min_angle)):
                break
        low, high = lengths
        sets.append(directions * (low + (high - low) * torch.rand(count, 1, generator=generator, dtype=torch.float64)))
    return sets


def batch(sets, dtype=torch.float64):
    index = torch.cat([torch.full((len(s),), i) for i, s in enumerate(sets)])
    return torch.cat(sets).to(dtype), index


def match(truth, found):
    """Angles (degrees) and length errors of each true vector to its found one; None on a wrong count."""
    if len(truth) != len(found):
        return None
    cosines = torch.nn.functional.normalize(truth, dim=1) @ torch.nn.functional.normalize(found, dim=1).T
    best = cosines.argmax(dim=1)
    assert len(set(best.tolist())) == len(truth)
    angles = torch.rad2deg(cosines.max(dim=1).values.clamp(max=1).arccos())
    return angles, (truth.norm(dim=1) - found[best].norm(dim=1)).abs()


def round_trip(sets, dtype=torch.float64, **kwargs):
    vectors, index = batch(sets, dtype)
    peaks = find_peaks(project(vectors, index, len(sets), LMAX), **kwargs)
    return [peaks.vectors[peaks.index == i].double() for i in range(len(sets))], peaks


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_accuracy_on_random_sets(dtype):
    sets = random_sets(200, seed=0)
    found, _ = round_trip(sets, dtype)
    matched = [match(t, f) for t, f in zip(sets, found)]
    assert all(m is not None for m in matched), "every vector found, no spurious peak"
    angles = torch.cat([m[0] for m in matched])
    lengths = torch.cat([m[1] for m in matched])
    assert angles.median() < 0.05 and angles.max() < 0.5
    assert lengths.max() < 1e-3


def test_signal_values_at_isolated_vectors():
    vectors = torch.tensor([[0.0, 0.0, 2.5], [0.0, 0.0, -0.5]], dtype=torch.float64)  # antipodal
    signals = project(vectors, torch.tensor([0, 0]), 1, LMAX)
    values = evaluate(signals[0], torch.nn.functional.normalize(vectors, dim=1))  # [2 channels, 2]
    ringing = (-1) ** LMAX * (LMAX + 1) / (LMAX + 1) ** 2  # each Dirac's value at the antipode
    torch.testing.assert_close(values[0], torch.full((2,), 1 + ringing, dtype=torch.float64))
    torch.testing.assert_close(values[1], torch.tensor([2.5, 0.5], dtype=torch.float64) + ringing * torch.tensor([0.5, 2.5]))


def rotated_signals(signals, matrix):
    wigner = io.SphericalTensor(LMAX, 1, -1).D_from_matrix(matrix)  # [M, M], parity included
    return signals @ wigner.T


@pytest.mark.parametrize("inversion", [False, True])
def test_equivariance(inversion):
    sets = random_sets(20, seed=1)
    vectors, index = batch(sets)
    torch.manual_seed(0)
    matrix = o3.rand_matrix(dtype=torch.float64)
    if inversion:
        matrix = -matrix
    signals = project(vectors, index, len(sets), LMAX)
    moved = rotated_signals(signals, matrix)
    # e3nn builds the Wigner D from float32 generators: agreement to ~1e-6, not to float64 round-off
    torch.testing.assert_close(moved, project(vectors @ matrix.T, index, len(sets), LMAX), atol=1e-5, rtol=0)
    peaks, moved_peaks = find_peaks(signals), find_peaks(moved)
    for i in range(len(sets)):
        angles, lengths = match(peaks.vectors[peaks.index == i] @ matrix.T, moved_peaks.vectors[moved_peaks.index == i])
        assert angles.max() < 1e-3 and lengths.max() < 1e-5


def test_pure_inversion():
    signals = project(torch.tensor([[0.3, -1.0, 0.7], [1.5, 0.2, 0.1]], dtype=torch.float64), torch.tensor([0, 0]), 1, LMAX)
    inverted = find_peaks(rotated_signals(signals, -torch.eye(3, dtype=torch.float64)))
    angles, lengths = match(-find_peaks(signals).vectors, inverted.vectors)
    assert angles.max() < 1e-5 and lengths.max() < 1e-8


def cube():
    return torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float64) / 3**0.5


SYMMETRIC = {
    "square": torch.tensor([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], dtype=torch.float64),
    "tetrahedron": torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64) / 3**0.5,
    "octahedron": torch.cat([torch.eye(3, dtype=torch.float64), -torch.eye(3, dtype=torch.float64)]),
    "cube": cube(),
}


@pytest.mark.parametrize("name", list(SYMMETRIC))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_symmetric_sets_give_all_peaks_with_equal_heights(name, dtype):
    torch.manual_seed(2)
    shapes = [1.7 * SYMMETRIC[name], 1.7 * SYMMETRIC[name] @ o3.rand_matrix(dtype=torch.float64).T]
    found, peaks = round_trip(shapes, dtype)
    tolerance = 1e-6 if dtype == torch.float64 else 1e-4
    for i, (truth, guess) in enumerate(zip(shapes, found)):
        angles, lengths = match(truth, guess)
        assert angles.max() < 10 * tolerance and lengths.max() < tolerance
        amplitudes = peaks.amplitudes[peaks.index == i]
        torch.testing.assert_close(amplitudes, torch.ones_like(amplitudes), atol=tolerance, rtol=0)
    vectors, index = batch(shapes, dtype)
    heights = evaluate(project(vectors, index, 2, LMAX)[:, 0], peaks.vectors)  # [2 signals, P]
    own = heights[peaks.index, torch.arange(len(peaks.index))]
    torch.testing.assert_close(own, own[:1].expand_as(own), atol=tolerance, rtol=0)


@pytest.mark.parametrize(
    "vectors",
    [
        [[0.0, 0.0, 1.3]],  # one vector, at a pole
        [[0.0, 0.0, -0.7]],  # the other pole
        [[-2.0, 0.0, 0.0]],  # on the seam of a (beta, alpha) grid
        [[0.0, 0.0, 1.0], [0.0, 0.0, -2.0]],  # antipodal, on the poles
        [[1.0, 1.0, 0.0], [-1.5, -1.5, 0.0]],  # antipodal
        [[-1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.5, 0.0, -0.5]],  # seam and pole together
    ],
)
def test_edge_case_sets(vectors):
    truth = torch.tensor(vectors, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        (found,), _ = round_trip([truth], dtype)
        angles, lengths = match(truth, found)
        assert angles.max() < 1e-3 and lengths.max() < 1e-4


def test_zero_signal_and_zero_vectors():
    assert len(find_peaks(torch.zeros(3, 2, (LMAX + 1) ** 2)).vectors) == 0
    assert find_peaks(torch.zeros(0, 2, (LMAX + 1) ** 2)).vectors.shape == (0, 3)
    vectors = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    signals = project(vectors, torch.tensor([0, 1, 1]), 2, LMAX)
    assert signals[0].abs().max() == 0
    torch.testing.assert_close(signals[1], project(vectors[1:2], torch.tensor([0]), 1, LMAX)[0])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_is_refused(bad):
    signals = torch.zeros(2, 2, (LMAX + 1) ** 2)
    signals[1, 0, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        find_peaks(signals)
    with pytest.raises(ValueError, match="NaN or infinite"):
        project(torch.tensor([[bad, 0.0, 1.0]]), torch.tensor([0]), 1, LMAX)


def test_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="shape"):
        find_peaks(torch.zeros(2, (LMAX + 1) ** 2))
    with pytest.raises(ValueError, match="lmax"):
        find_peaks(torch.zeros(2, 2, 10))


def test_thresholds():
    strong = project(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), torch.tensor([0]), 1, LMAX)
    weak = project(torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64), torch.tensor([0]), 1, LMAX)
    signals = strong + 0.3 * weak  # a weight-0.3 peak of length 2 beside a weight-1 peak
    assert len(find_peaks(signals).vectors) == 1
    peaks = find_peaks(signals, threshold=0.1, relative_threshold=0.1)
    torch.testing.assert_close(peaks.amplitudes, torch.tensor([1.0, 0.3], dtype=torch.float64))
    torch.testing.assert_close(peaks.vectors, torch.tensor([[0.0, 0.0, 1.0], [2.0, 0.0, 0.0]], dtype=torch.float64))
    assert len(find_peaks(signals, threshold=0.1, relative_threshold=0.5).vectors) == 1


def test_chunks_give_the_same_peaks():
    sets = random_sets(30, seed=3)
    vectors, index = batch(sets)
    signals = project(vectors, index, len(sets), LMAX)
    whole, chunked = find_peaks(signals), find_peaks(signals, chunk_size=7)
    torch.testing.assert_close(chunked.index, whole.index)
    for i in range(len(sets)):  # peaks of equal amplitude may come in another order
        angles, lengths = match(whole.vectors[whole.index == i], chunked.vectors[chunked.index == i])
        assert angles.max() < 1e-4 and lengths.max() < 1e-6  # padding differs: round-off only


def test_grid_and_matrices_are_cached():
    assert sphere_grid(LMAX, dtype=torch.float64) is sphere_grid(LMAX, dtype=torch.float64)
    assert sphere_grid(LMAX, dtype=torch.float32) is not sphere_grid(LMAX, dtype=torch.float64)
    grid = sphere_grid(3, 300, torch.float64)
    assert grid.points.shape == (300, 3) and grid.harmonics.shape == (300, 16)
    assert (grid.neighbors != torch.arange(300)[:, None]).sum(dim=1).min() >= 3  # every point has neighbours


@pytest.mark.parametrize("lmax", [0, 1, 2, 4, 6, 8, 10, 12])
def test_harmonics_equal_e3nns(lmax):
    axes = torch.cat([torch.eye(3), -torch.eye(3)]).double()  # the poles of every axis
    directions = torch.cat([torch.nn.functional.normalize(torch.randn(500, 3, dtype=torch.float64), dim=1), axes])
    reference = o3.spherical_harmonics(list(range(lmax + 1)), directions, normalize=False, normalization="integral")
    torch.testing.assert_close(spherical_harmonics(directions, lmax), reference, rtol=0, atol=1e-12)
    ours = spherical_harmonics(directions.float(), lmax).double()
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)  # e3nn's own float32 error: 1e-6 at lmax 12


def test_harmonics_gradients():
    directions = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.6, 0.0, 0.8], [0.3, -0.5, 0.2]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda d: spherical_harmonics(d, 6), (directions.requires_grad_(),))


def test_gradient_on_the_sphere_matches_autograd():
    directions = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=1)
    signals = torch.randn(2, (LMAX + 1) ** 2, dtype=torch.float64)
    moved = directions.clone().requires_grad_()
    cartesian = torch.autograd.grad(evaluate(signals, moved).sum(), moved)[0]  # [5, 3], evaluate normalizes
    torch.testing.assert_close(evaluate_gradient(signals, directions).sum(0), cartesian)
    values, gradient = harmonics_and_gradient(directions, LMAX)
    assert (torch.einsum("pk,pkm->pm", directions, gradient)).abs().max() < 1e-12  # tangent


def test_peaks_carry_gradients_to_the_signal():
    truth = torch.tensor([[0.0, 0.6, 1.2], [1.1, -0.3, 0.1], [-0.4, -0.9, -0.5]], dtype=torch.float64)
    signals = project(truth, torch.zeros(3, dtype=torch.long), 1, 4)

    def decode(coefficients):
        peaks = find_peaks(coefficients)
        order = (peaks.vectors @ truth.T).argmax(dim=0)  # follow each true vector
        return peaks.vectors[order], peaks.amplitudes[order]

    assert torch.autograd.gradcheck(decode, (signals.requires_grad_(),), eps=1e-6, atol=1e-5)
