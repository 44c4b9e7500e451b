"""Alternative child counts of the decoder (geoae/model/_decoder.py)."""

import pytest
import torch

from geoae.model import Autoencoder, BloomPrediction, flipped_counts
from geoae.sphere import integral_count, project
from tests.utils.model import SMALL


def test_flipped_counts_round_one_point_per_structure_the_other_way():
    integral = torch.tensor([1.45, 0.9, 2.6, -0.2, 0.3])
    batch = torch.tensor([0, 0, 1, 2, 2])
    assert flipped_counts(integral, batch, flip=0).tolist() == [2, 1, 2, 0, 1]
    # rank 1: structure 0's second most uncertain; structure 1 has no second point; -0.2 cannot flip (zero children)
    assert flipped_counts(integral, batch, flip=1).tolist() == [1, 0, 3, 0, 0]
    assert flipped_counts(integral, batch, flip=5).tolist() == [1, 1, 3, 0, 0]


def test_flipped_counts_skip_points_that_cannot_flip():
    """-0.45 is the most uncertain of its structure, but zero children cannot become minus one:
    the first flip goes to the next point, and the second finds none left."""
    integral, batch = torch.tensor([-0.45, 0.2, 1.7]), torch.tensor([0, 0, 1])
    assert flipped_counts(integral, batch, flip=0).tolist() == [0, 1, 1]
    assert flipped_counts(integral, batch, flip=1).tolist() == [0, 0, 2]


def signals_with_integrals() -> torch.Tensor:
    """Three parents' signals with integrals 1.45, 0.9 (structure 0) and 2.6 (structure 1)."""
    vectors = torch.tensor([[0.0, 0, 1.2], [1.3, 0, 0], [0, 1.1, 0], [0, 0, -1.0], [1.0, 0, 0], [0, -1.2, 0]])
    weights = torch.tensor([1.0, 0.45, 0.9, 1.0, 1.0, 0.6])
    parent = torch.tensor([0, 0, 1, 2, 2, 2])
    each = project(vectors, torch.arange(6), 6, lmax=4) * weights[:, None, None]
    return torch.zeros(3, *each.shape[1:]).index_add(0, parent, each)


@pytest.mark.parametrize("flip, counts", [(None, [1, 1, 3]), (0, [2, 1, 2]), (1, [1, 0, 3])])
def test_read_children_with_flip_keeps_the_flipped_number_of_peaks(flip, counts):
    decoder = Autoencoder(**SMALL).decoder
    signals = signals_with_integrals()
    torch.testing.assert_close(integral_count(signals), torch.tensor([1.45, 0.9, 2.6]), atol=1e-5, rtol=0)
    prediction = BloomPrediction(0, signals, -torch.ones(3), torch.zeros(3, 3))  # no centre child
    parent, offset, _ = decoder.read_children(prediction, torch.tensor([0, 0, 1]), flip)
    assert torch.bincount(parent, minlength=3).tolist() == counts
    assert offset.shape == (sum(counts), 3)


def test_flip_needs_integral_counts():
    decoder = Autoencoder(**SMALL, child_count="peaks").decoder
    prediction = BloomPrediction(0, signals_with_integrals(), -torch.ones(3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="flip needs child_count='integral'"):
        decoder.read_children(prediction, torch.tensor([0, 0, 1]), flip=0)
