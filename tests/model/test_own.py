"""Scheduled sampling: the hierarchy moved to the model's own decoding (geoae/model/_own.py)."""

import pytest
import torch
from ase.build import molecule

from geoae.data import tetris
from geoae.model import Decoded, Hierarchy, load, with_decoded_positions
from tests.utils.equivariance import assert_equivariant_both_dtypes

NUM_TRUE, NUM_DECODED = 6, 5  # one level of two structures: 3 + 3 true points, 3 + 2 decoded


def one_level(true_pos: torch.Tensor, decoded_pos: torch.Tensor) -> tuple[Hierarchy, Decoded]:
    """A one-level hierarchy of two structures (3 points each, under 2 roots) and a decoding
    of that level with 3 and 2 points."""
    true_batch = torch.tensor([0, 0, 0, 1, 1, 1])
    decoded_batch = torch.tensor([0, 0, 0, 1, 1])
    roots = torch.zeros(2, 3, dtype=true_pos.dtype)
    hierarchy = Hierarchy(
        [true_pos, roots], [true_batch, torch.arange(2)], [torch.ones(6, dtype=true_pos.dtype), torch.full((2,), 3.0)], [true_batch]
    )
    decoded = Decoded(decoded_pos, torch.zeros(5, dtype=torch.long), decoded_batch, 2, levels=((decoded_pos, decoded_batch),))
    return hierarchy, decoded


class Moved(torch.nn.Module):
    """The true points moved to a decoding, as a function of the two point sets."""

    def __init__(self, max_offset: float = 10.0):
        super().__init__()
        self.max_offset = max_offset

    def forward(self, true_pos, decoded_pos):
        hierarchy, decoded = one_level(true_pos, decoded_pos)
        return with_decoded_positions(hierarchy, decoded, torch.tensor([True, True]), self.max_offset).pos[0]


def test_matched_points_take_the_decoded_positions_and_the_rest_stay():
    true_pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 0, 0], [6, 0, 0], [5, 1, 0]])
    decoded_pos = torch.tensor([[0.0, 1.1, 0], [0.1, 0, 0], [2.0, 0, 0], [5, 0.9, 0], [6.1, 0, 0]])
    hierarchy, decoded = one_level(true_pos, decoded_pos)
    moved = with_decoded_positions(hierarchy, decoded, torch.tensor([True, True]), max_offset=0.5)
    expected = torch.tensor([[0.1, 0, 0], [1, 0, 0], [0, 1.1, 0], [5, 0, 0], [6.1, 0, 0], [5, 0.9, 0]])
    # [1, 0, 0] is matched with [2, 0, 0], 1 away: farther than 0.5, it stays; [5, 0, 0] is left over
    torch.testing.assert_close(moved.pos[0], expected)
    assert torch.equal(moved.pos[1], hierarchy.pos[1])  # the roots stay
    assert moved.parent is hierarchy.parent and moved.weight is hierarchy.weight
    second = Decoded(decoded_pos[3:], torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 1,
                     levels=((decoded_pos[3:], torch.zeros(2, dtype=torch.long)),))  # the second structure's decoding alone
    only_second = with_decoded_positions(hierarchy, second, torch.tensor([False, True]), max_offset=0.5)
    torch.testing.assert_close(only_second.pos[0], torch.cat([true_pos[:3], expected[3:]]))
    assert torch.equal(true_pos, hierarchy.pos[0])  # the input is not changed in place


def test_a_decoding_with_other_levels_is_refused():
    hierarchy, decoded = one_level(torch.zeros(6, 3), torch.rand(5, 3))
    with pytest.raises(ValueError, match="the decoding has 0 levels, the hierarchy 1"):
        with_decoded_positions(hierarchy, Decoded(decoded.pos, decoded.species, decoded.batch, 2), torch.tensor([True, True]), 0.5)


def test_moving_to_a_decoding_is_equivariant():
    torch.manual_seed(0)
    true_pos = torch.randn(NUM_TRUE, 3, dtype=torch.float64) * 2
    decoded_pos = true_pos[[2, 0, 1, 4, 3]] + 0.1 * torch.randn(NUM_DECODED, 3, dtype=torch.float64)
    assert_equivariant_both_dtypes(Moved, [true_pos, decoded_pos], ["cartesian_points", "cartesian_points"], "cartesian_points")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_moving_to_a_decoding_does_not_depend_on_the_decoded_points_order(dtype):
    torch.manual_seed(0)
    true_pos = torch.randn(NUM_TRUE, 3, dtype=dtype) * 2
    decoded_pos = true_pos[[2, 0, 1, 4, 3]] + 0.1 * torch.randn(NUM_DECODED, 3, dtype=dtype)
    order = torch.tensor([1, 2, 0, 4, 3])  # within each structure
    torch.testing.assert_close(Moved()(true_pos, decoded_pos[order]), Moved()(true_pos, decoded_pos), rtol=0, atol=0)


def test_own_positions_train_on_the_models_own_small_drift():
    """The shipped tetris model decodes within 0.02 of the truth: teacher forced on its own
    decoding, its loss is a little, not much, above the clean one, and nothing when no point
    may move."""
    torch.manual_seed(0)
    model = load("tetris")
    batch = model.as_batch(tetris())
    clean = model.loss(batch)
    pinned = model.loss(batch, own_positions=1.0, own_max_offset=0.0)
    assert all(torch.equal(pinned[k], v) for k, v in clean.items())
    own = model.loss(batch, own_positions=1.0)
    assert not torch.equal(own["signal"], clean["signal"])
    torch.testing.assert_close(own["loss"], clean["loss"], rtol=0, atol=0.05)
    own["loss"].backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.decoder.parameters() if p.requires_grad)


def test_own_positions_on_molecules_move_points_at_every_level_within_the_bound():
    model = load("qm9")
    batch = model.as_batch([molecule(name) for name in ["CH3OH", "CH3CN", "C6H6", "CH3COOH"]])
    hierarchy = model.hierarchy(batch)
    with torch.no_grad():
        decoded = model.decoder(model.encoder(model._species_index[batch.z], hierarchy))
    moved = with_decoded_positions(hierarchy, decoded, torch.ones(4, dtype=torch.bool), max_offset=0.5)
    for level in range(hierarchy.num_levels):
        offset = (moved.pos[level] - hierarchy.pos[level]).norm(dim=1)
        assert (offset > 0).any() and offset.max() <= 0.5, level
        for b in range(4):  # one to one: no more points move than either side has
            moves = int((offset[hierarchy.batch[level] == b] > 0).sum())
            assert moves <= min(int((hierarchy.batch[level] == b).sum()), int((decoded.levels[level][1] == b).sum()))
