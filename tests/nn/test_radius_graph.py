import pytest
import torch

from geoae.nn import radius_graph


def brute_force(pos, r_max, batch, loop=False):
    """All pairs of the whole batch with a same-structure mask: (2, E) sorted by (target, source)."""
    dist = torch.cdist(pos, pos, compute_mode="donot_use_mm_for_euclid_dist")  # [target, source]
    mask = (dist < r_max) & (batch[None, :] == batch[:, None])
    if not loop:
        mask.fill_diagonal_(False)
    target, source = mask.nonzero(as_tuple=True)
    return torch.stack([source, target])


def random_batch(num_structures, max_atoms, dtype, generator, min_atoms=0):
    counts = torch.randint(min_atoms, max_atoms + 1, (num_structures,), generator=generator)
    batch = torch.repeat_interleave(torch.arange(num_structures), counts)
    pos = 2.0 * torch.randn(len(batch), 3, generator=generator, dtype=torch.float64).to(dtype)
    return pos, batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("max_pairs", [2**22, 200, 7])  # one chunk, many chunks, split rows
def test_matches_brute_force(dtype, loop, max_pairs):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        # sizes 0..25: empty structures, single atoms, structures with no neighbour in range
        pos, batch = random_batch(30, 25, dtype, g)
        edge_index = radius_graph(pos, 1.5, batch, loop=loop, max_pairs=max_pairs)
        assert edge_index.dtype == torch.long
        assert torch.equal(edge_index, brute_force(pos, 1.5, batch, loop))


def test_small_cases():
    # one atom: no edge, or only its loop
    pos = torch.zeros(1, 3)
    assert radius_graph(pos, 1.0).shape == (2, 0)
    assert radius_graph(pos, 1.0, loop=True).tolist() == [[0], [0]]
    # no atom
    assert radius_graph(torch.zeros(0, 3), 1.0).shape == (2, 0)
    # atoms all out of range of each other
    pos = torch.tensor([[0.0, 0, 0], [3.0, 0, 0], [0, 3.0, 0]])
    assert radius_graph(pos, 1.0, torch.tensor([0, 0, 1])).shape == (2, 0)
    # structures never connect, however close
    pos = torch.zeros(4, 3)
    edge_index = radius_graph(pos, 1.0, torch.tensor([0, 0, 1, 1]))
    assert edge_index.tolist() == [[1, 0, 3, 2], [0, 1, 2, 3]]


def test_symmetric_and_no_self_loops():
    g = torch.Generator().manual_seed(1)
    pos, batch = random_batch(10, 20, torch.float64, g)
    src, dst = radius_graph(pos, 2.0, batch)
    assert not bool((src == dst).any())
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert pairs == {(j, i) for i, j in pairs}
    assert bool((batch[src] == batch[dst]).all())


def test_max_num_neighbors_keeps_nearest():
    g = torch.Generator().manual_seed(2)
    pos, batch = random_batch(8, 20, torch.float64, g, min_atoms=1)
    full = brute_force(pos, 3.0, batch)
    k = 3
    src, dst = radius_graph(pos, 3.0, batch, max_num_neighbors=k)
    for i in range(len(pos)):
        all_src = full[0, full[1] == i]
        kept = src[dst == i]
        assert len(kept) == min(k, len(all_src))
        dist = (pos[all_src] - pos[i]).norm(dim=-1)
        expected = all_src[torch.sort(dist, stable=True).indices[:k]].sort().values
        assert torch.equal(kept, expected)


def test_unsorted_batch_raises():
    pos = torch.randn(4, 3)
    with pytest.raises(ValueError, match="batch must be sorted"):
        radius_graph(pos, 1.0, torch.tensor([0, 1, 0, 1]))


def test_ignores_gradient():
    pos = torch.randn(6, 3, requires_grad=True)
    edge_index = radius_graph(pos, 10.0)
    assert edge_index.shape == (2, 30)
    assert not edge_index.requires_grad
