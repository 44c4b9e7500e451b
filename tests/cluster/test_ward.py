"""The scalable method "ward"; the properties shared with "exact" are in test_kmeans.py."""

import itertools

import pytest
import torch

from geoae.cluster import symmetric_kmeans
from geoae.cluster._ward import _size_groups
from tests.cluster.test_kmeans import (
    SYMMETRIC,
    TETRIS,
    member_sets,
    random_orthogonal,
    single,
)


def molecule_like(n, generator):
    """``n`` points ~1-1.6 apart in a random branched chain, none closer than 0.9."""
    points = [torch.zeros(3, dtype=torch.float64)]
    while len(points) < n:
        anchor = points[int(torch.randint(len(points), (1,), generator=generator))]
        step = torch.randn(3, generator=generator, dtype=torch.float64)
        length = 1 + 0.6 * torch.rand(1, generator=generator, dtype=torch.float64)
        candidate = anchor + step / step.norm() * length
        if min(float((candidate - p).norm()) for p in points) > 0.9:
            points.append(candidate)
    return torch.stack(points)


def test_one_merge_is_exact():
    """With k = n - 1 the cheapest merges are the optimal partitions: both methods agree."""
    generator = torch.Generator().manual_seed(10)
    shapes = [torch.tensor(p, dtype=torch.float64) for p in TETRIS.values()]
    shapes += list(SYMMETRIC.values()) + [torch.randn(n, 3, generator=generator) for n in (2, 5, 8)]
    for pos in shapes:
        n = pos.shape[0]
        weight = torch.rand(n, generator=generator, dtype=torch.float64) + 0.5
        for w in (None, weight):
            ward = member_sets(single(pos, n - 1, weight=w, method="ward"))
            assert ward == member_sets(single(pos, n - 1, weight=w, method="exact"))


def test_k_one_and_k_n():
    generator = torch.Generator().manual_seed(11)
    for pos in [molecule_like(29, generator), SYMMETRIC["cube"], torch.ones(5, 3)]:
        n = pos.shape[0]
        assert member_sets(single(pos, 1, method="ward")) == {frozenset(range(n))}
        # k = n: nothing to merge, even for coinciding points
        assert single(pos, n, method="ward").cluster.tolist() == list(range(n))


def test_at_most_k_and_ties_merge():
    generator = torch.Generator().manual_seed(12)
    for n in (3, 10, 29):
        pos = molecule_like(n, generator)
        for k in range(1, n + 1):
            assert single(pos, k, method="ward").num_clusters <= k
    # a chain of equal links merges as a whole (exact: {01}{23}): greedy ties overshoot
    line = torch.tensor(TETRIS["line"], dtype=torch.float64)
    assert member_sets(single(line, 2, method="ward")) == {frozenset(range(4))}
    # coinciding points merge at no cost
    assert member_sets(single(torch.ones(4, 3), 3, method="ward")) == {frozenset(range(4))}


def test_blobs():
    """Well separated blobs of different sizes and weights are recovered."""
    generator = torch.Generator().manual_seed(13)
    centres = 20 * torch.randn(5, 3, generator=generator, dtype=torch.float64)
    sizes = [1, 3, 6, 8, 11]
    pos = torch.cat([c + torch.randn(s, 3, generator=generator) for c, s in zip(centres, sizes)])
    perm = torch.randperm(pos.shape[0], generator=generator)
    blob = torch.repeat_interleave(torch.arange(5), torch.tensor(sizes))[perm]
    expected = {frozenset((blob == b).nonzero().flatten().tolist()) for b in range(5)}
    weight = torch.rand(pos.shape[0], generator=generator, dtype=torch.float64) + 0.5
    for w in (None, weight):
        assert member_sets(single(pos[perm], 5, weight=w, method="ward")) == expected


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_molecule_like_invariance(dtype):
    """29-point structures: rotation, inversion, translation, permutation, determinism."""
    generator = torch.Generator().manual_seed(14)
    for _ in range(3):
        pos = molecule_like(29, generator)
        weight = torch.randint(1, 4, (29,), generator=generator).double()
        moved = pos @ random_orthogonal(generator).T + 10 * torch.randn(3, generator=generator)
        perm = torch.randperm(29, generator=generator)
        for k in (1, 2, 5, 15, 28, 29):
            before = single(pos.to(dtype), k, weight=weight, method="ward")
            assert torch.equal(before.cluster, single(pos.to(dtype), k, weight=weight, method="ward").cluster)
            assert member_sets(before) == member_sets(single(moved.to(dtype), k, weight=weight, method="ward"))
            after = member_sets(single(pos[perm].to(dtype), k, weight=weight[perm], method="ward"))
            assert {frozenset(perm[i].item() for i in m) for m in after} == member_sets(before)


def test_symmetric_large():
    """24 points with the cube's 48 symmetries (corners pushed out along each axis)."""
    cube = SYMMETRIC["cube"] - 0.5
    pos = torch.cat([cube + 0.3 * cube * torch.eye(3, dtype=torch.float64)[a] for a in range(3)])
    ops = [
        torch.diag(torch.tensor(signs, dtype=torch.float64))[list(axes)]
        for axes in itertools.permutations(range(3))
        for signs in itertools.product([1.0, -1.0], repeat=3)
    ]
    for k in (23, 12, 6, 3):
        c = single(pos, k, method="ward")
        clusters = member_sets(c)
        assert c.num_clusters <= k
        for op in ops:
            distance, image = torch.cdist(pos @ op.T, pos).min(1)
            assert distance.max() < 1e-12 and len(set(image.tolist())) == 24
            assert {frozenset(image[i].item() for i in m) for m in clusters} == clusters


def assert_batch_clusters_as_alone(pieces, ks):
    """The structures ``pieces`` clustered in one batch get the clusters each gets alone."""
    sizes = torch.tensor([len(pos) for pos in pieces])
    batch = torch.repeat_interleave(torch.arange(len(pieces)), sizes)
    c = symmetric_kmeans(torch.cat(pieces), batch, torch.tensor(ks), method="ward")
    offset, first = 0, 0
    for pos, k in zip(pieces, ks):
        alone = single(pos, k, method="ward")
        assert torch.equal(c.cluster[offset : offset + len(pos)] - first, alone.cluster)
        offset, first = offset + len(pos), first + alone.num_clusters
    assert first == c.num_clusters


def test_batched_molecules():
    generator = torch.Generator().manual_seed(15)
    sizes = [29, 1, 7, 18, 29, 2]
    pieces = [molecule_like(n, generator) for n in sizes]
    ks = [15, 1, 4, 9, 1, 1]
    assert_batch_clusters_as_alone(pieces, ks)


def test_size_groups_cluster_as_alone():
    # enough structures of mixed sizes (shuffled) for the batch to be clustered in several
    # size groups; each structure still gets the clusters it gets alone
    generator = torch.Generator().manual_seed(16)
    sizes = torch.tensor([4, 6, 9, 12, 16, 20, 24, 29]).repeat(12)[torch.randperm(96, generator=generator)].tolist()
    pieces = [molecule_like(n, generator) for n in sizes]
    ks = [max(1, n // 2) for n in sizes]
    assert len(_size_groups(torch.tensor(sizes))) > 1
    assert_batch_clusters_as_alone(pieces, ks)


def test_max_points():
    pos = torch.randn(40, 3)
    batch = torch.zeros(40, dtype=torch.long)
    assert single(pos, 3, method="ward").num_clusters <= 3  # no limit by default
    with pytest.raises(ValueError, match=r"method='ward'\): structure 0 has n=40 points, more than max_points=30"):
        symmetric_kmeans(pos, batch, torch.tensor([3]), max_points=30, method="ward")
