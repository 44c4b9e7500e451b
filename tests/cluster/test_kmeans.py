import itertools
import math

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
import torch

from geoae.cluster import Clustering, cluster_centroids, set_partitions, symmetric_kmeans

TETRIS = {
    "chiral_1": [(0, 0, 0), (0, 0, 1), (1, 0, 0), (1, 1, 0)],
    "chiral_2": [(0, 0, 0), (0, 0, 1), (1, 0, 0), (1, -1, 0)],
    "square": [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0)],
    "line": [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3)],
    "corner": [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0)],
    "L": [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0)],
    "T": [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 1)],
    "zigzag": [(0, 0, 0), (1, 0, 0), (1, 1, 0), (2, 1, 0)],
}
# k=2, worked out by hand (costs: sum over clusters of the squared distances to the centroid)
TETRIS_K2 = {
    "chiral_1": [[0, 1], [2, 3]],  # a path: {01}{23} costs 1, every other split >= 4/3
    "chiral_2": [[0, 1], [2, 3]],  # its mirror image
    "square": [[0, 1, 2, 3]],  # two pairings of cost 1
    "line": [[0, 1], [2, 3]],
    "corner": [[0, 1, 2, 3]],  # three splits {centre + 2 arms}{arm} of cost 4/3
    "L": [[0, 3], [1, 2]],  # cost 1, the next best is 4/3
    "T": [[0, 1, 2, 3]],  # {0}{123} and {2}{013}, mirror images, cost 4/3
    "zigzag": [[0, 1], [2, 3]],
}


def _hexagon():
    angles = torch.arange(6, dtype=torch.float64) * math.pi / 3
    return torch.stack([angles.cos(), angles.sin(), torch.zeros(6, dtype=torch.float64)], 1)


def _prism():
    triangle = _hexagon()[::2]
    return torch.cat([triangle, triangle + torch.tensor([0.0, 0, 3], dtype=torch.float64)])


SYMMETRIC = {
    "square": torch.tensor(TETRIS["square"], dtype=torch.float64),
    "rectangle": torch.tensor([(0, 0, 0), (2, 0, 0), (0, 1, 0), (2, 1, 0)], dtype=torch.float64),
    "tetrahedron": torch.tensor(
        [(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)], dtype=torch.float64
    ),
    "octahedron": torch.cat([torch.eye(3), -torch.eye(3)]).double(),
    "hexagon": _hexagon(),
    "prism": _prism(),
    "cube": torch.tensor(list(itertools.product([0, 1], repeat=3)), dtype=torch.float64),
}


METHODS = ["exact", "ward"]


def member_sets(clustering: Clustering) -> set:
    """The clusters as a set of frozensets of point indices."""
    out = {}
    for point, c in enumerate(clustering.cluster.tolist()):
        out.setdefault(c, set()).add(point)
    return {frozenset(m) for m in out.values()}


def single(pos, k, **kwargs):
    """Cluster one structure."""
    batch = torch.zeros(pos.shape[0], dtype=torch.long)
    return symmetric_kmeans(pos, batch, torch.tensor([k]), **kwargs)


def brute_force(pos, k, weight=None, rtol=1e-4):
    """Reference: every partition from itertools, cost from centroids, scipy components."""
    pos = np.asarray(pos, dtype=np.float64)
    n = len(pos)
    weight = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)

    def partitions(points):
        if not points:
            yield []
            return
        first, rest = points[0], points[1:]
        for p in partitions(rest):
            for b in range(len(p)):
                yield p[:b] + [[first] + p[b]] + p[b + 1 :]
            yield [[first]] + p

    def cost(p):
        total = 0.0
        for block in p:
            w, x = weight[block], pos[block]
            centre = (w[:, None] * x).sum(0) / w.sum()
            total += (w * ((x - centre) ** 2).sum(1)).sum()
        return total

    candidates = [p for p in partitions(list(range(n))) if len(p) == k]
    costs = np.array([cost(p) for p in candidates])
    adjacency = np.eye(n, dtype=bool)
    for p, c in zip(candidates, costs):
        if c <= costs.min() * (1 + rtol) + 1e-12:
            for block in p:
                adjacency[np.ix_(block, block)] = True
    _, labels = scipy.sparse.csgraph.connected_components(scipy.sparse.csr_matrix(adjacency))
    return {frozenset(np.flatnonzero(labels == c).tolist()) for c in set(labels.tolist())}


def symmetry_permutations(pos):
    """Permutations of the points that preserve all distances (the symmetry operations)."""
    n = pos.shape[0]
    perms = torch.tensor(list(itertools.permutations(range(n))))
    d = torch.cdist(pos, pos)
    keep = torch.isclose(d[perms[:, :, None], perms[:, None, :]], d, atol=1e-9).flatten(1).all(1)
    return perms[keep]


def random_orthogonal(generator, dtype=torch.float64):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return (-q).to(dtype)  # a rotation times the inversion (or the reverse)


def stirling2(n, k):
    if n == k:
        return 1
    if k == 0 or k > n:
        return 0
    return k * stirling2(n - 1, k) + stirling2(n - 1, k - 1)


@pytest.mark.parametrize("n", range(1, 9))
def test_set_partitions(n):
    for k in range(1, n + 1):
        p = set_partitions(n, k)
        assert p.shape == (stirling2(n, k), n) and p.dtype == torch.long
        assert p.unique(dim=0).shape[0] == p.shape[0]
        assert (p.max(1).values == k - 1).all()
        # restricted growth: each label at most 1 + the largest label before it
        running_max = torch.cummax(p, 1).values
        assert (p[:, 0] == 0).all() and (p[:, 1:] <= running_max[:, :-1] + 1).all()


def test_set_partitions_large():
    assert set_partitions(10, 5).shape == (42525, 10)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        set_partitions(3, 4)


def test_shapes():
    shapes = [torch.tensor(TETRIS[name], dtype=torch.float32) for name in ("line", "L", "square")]
    pos = torch.cat(shapes + [torch.randn(3, 3)])
    batch = torch.tensor([0] * 4 + [1] * 4 + [2] * 4 + [3] * 3)
    c = symmetric_kmeans(pos, batch, torch.tensor([2, 2, 2, 3]))
    assert c.cluster.shape == (15,) and c.cluster.dtype == torch.long
    assert c.num_clusters == 2 + 2 + 1 + 3
    assert c.cluster_batch.tolist() == [0, 0, 1, 1, 2, 3, 3, 3]
    # ids contiguous per structure, following the lowest member of each cluster
    assert c.cluster.tolist() == [0, 0, 1, 1, 2, 3, 3, 2, 4, 4, 4, 4, 5, 6, 7]
    assert (c.cluster_batch[c.cluster] == batch).all()


@pytest.mark.parametrize("name", TETRIS)
def test_tetris(name):
    pos = torch.tensor(TETRIS[name], dtype=torch.float64)
    expected = {frozenset(m) for m in TETRIS_K2[name]}
    assert member_sets(single(pos, 2)) == expected == brute_force(pos, 2)
    for k in (1, 3, 4):
        assert member_sets(single(pos, k)) == brute_force(pos, k)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", SYMMETRIC)
def test_symmetry_preserved(name, method):
    pos = SYMMETRIC[name]
    perms = symmetry_permutations(pos)
    assert perms.shape[0] > 1
    for k in range(1, pos.shape[0] + 1):
        c = single(pos, k, method=method)
        assert c.num_clusters <= k
        clusters = member_sets(c)
        for perm in perms.tolist():
            assert {frozenset(perm[i] for i in m) for m in clusters} == clusters, (name, k, perm)


def test_symmetric_expected():
    assert member_sets(single(SYMMETRIC["rectangle"], 2)) == {frozenset({0, 2}), frozenset({1, 3})}
    prism = {frozenset({0, 1, 2}), frozenset({3, 4, 5})}
    assert member_sets(single(SYMMETRIC["prism"], 2)) == prism
    # coinciding points: every partition costs 0
    assert member_sets(single(torch.ones(4, 3), 2)) == {frozenset(range(4))}
    for name in ("square", "tetrahedron", "octahedron", "hexagon"):
        assert member_sets(single(SYMMETRIC[name], 2)) == {frozenset(range(len(SYMMETRIC[name])))}


def test_brute_force_random():
    generator = torch.Generator().manual_seed(0)
    for n in range(1, 7):
        for k in range(1, n + 1):
            pos = torch.randn(n, 3, generator=generator, dtype=torch.float64)
            weight = torch.rand(n, generator=generator, dtype=torch.float64) + 0.2
            assert member_sets(single(pos, k)) == brute_force(pos, k)
            assert member_sets(single(pos, k, weight=weight)) == brute_force(pos, k, weight)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_e3_invariance_random(dtype, method):
    generator = torch.Generator().manual_seed(1)
    for n in range(2, 9):
        pos = torch.randn(n, 3, generator=generator, dtype=torch.float64).to(dtype)
        shift = 10 * torch.randn(3, generator=generator).to(dtype)
        moved = pos @ random_orthogonal(generator, dtype).T + shift
        for k in range(1, n + 1):
            before = member_sets(single(pos, k, method=method))
            assert before == member_sets(single(moved, k, method=method)), (n, k)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_e3_invariance_symmetric(dtype, method):
    generator = torch.Generator().manual_seed(2)
    tetris = [torch.tensor(p, dtype=torch.float64) for p in TETRIS.values()]
    for pos in list(SYMMETRIC.values()) + tetris:
        shift = 10 * torch.randn(3, generator=generator, dtype=torch.float64)
        moved = pos @ random_orthogonal(generator).T + shift
        for k in range(1, pos.shape[0] + 1):
            before = member_sets(single(pos.to(dtype), k, method=method))
            assert before == member_sets(single(moved.to(dtype), k, method=method))


@pytest.mark.parametrize("method", METHODS)
def test_permutation_equivariance(method):
    generator = torch.Generator().manual_seed(3)
    for pos in [torch.randn(7, 3, generator=generator, dtype=torch.float64), SYMMETRIC["hexagon"]]:
        n = pos.shape[0]
        weight = torch.rand(n, generator=generator, dtype=torch.float64) + 0.5
        perm = torch.randperm(n, generator=generator)
        for k in range(1, n + 1):
            before = member_sets(single(pos, k, weight=weight, method=method))
            after = member_sets(single(pos[perm], k, weight=weight[perm], method=method))
            # point i of the permuted input is point perm[i] of the original
            assert {frozenset(perm[i].item() for i in m) for m in after} == before


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_single(method):
    generator = torch.Generator().manual_seed(4)
    sizes = [4, 6, 1, 6, 3, 4, 6]
    ks = [2, 3, 1, 3, 2, 4, 2]
    pieces = [torch.randn(n, 3, generator=generator, dtype=torch.float64) for n in sizes]
    pieces[2] = SYMMETRIC["hexagon"][:1]
    pieces[3] = SYMMETRIC["hexagon"]
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    weight = torch.rand(sum(sizes), generator=generator, dtype=torch.float64) + 0.5
    c = symmetric_kmeans(torch.cat(pieces), batch, torch.tensor(ks), weight=weight, method=method)
    offset, first_cluster = 0, 0
    for b, (pos, k) in enumerate(zip(pieces, ks)):
        alone = single(pos, k, weight=weight[offset : offset + len(pos)], method=method)
        assert (c.cluster[offset : offset + len(pos)] - first_cluster == alone.cluster).all()
        assert (c.cluster_batch[first_cluster : first_cluster + alone.num_clusters] == b).all()
        offset += len(pos)
        first_cluster += alone.num_clusters
    assert first_cluster == c.num_clusters == len(c.cluster_batch)


def test_weights():
    line = torch.tensor([(0.0, 0, 0), (1, 0, 0), (2, 0, 0)])
    # {0}{12} and {01}{2} tie: one cluster; a heavy end point makes {0}{12} cheaper (0.5 < 0.75)
    assert member_sets(single(line, 2)) == {frozenset({0, 1, 2})}
    heavy = single(line, 2, weight=torch.tensor([3.0, 1, 1]))
    assert member_sets(heavy) == {frozenset({0}), frozenset({1, 2})}
    # a pair costs w_i w_j d^2 / (w_i + w_j): with heavy 0 and 1, {02}{13} (4/3) beats {01}{23}
    # (3/2); with heavy 0 and 3 the two pairings tie (4/3 each) and merge
    square = torch.tensor(TETRIS["square"], dtype=torch.float64)
    for weight, expected in [
        ([2.0, 2, 1, 1], {frozenset({0, 2}), frozenset({1, 3})}),
        ([2.0, 1, 1, 2], {frozenset(range(4))}),
    ]:
        clusters = member_sets(single(square, 2, weight=torch.tensor(weight)))
        assert clusters == brute_force(square, 2, weight) == expected


def test_rtol():
    rectangle = torch.tensor([(0, 0, 0), (1, 0, 0), (0, 1.001, 0), (1, 1.001, 0)]).double()
    assert member_sets(single(rectangle, 2)) == {frozenset({0, 1}), frozenset({2, 3})}
    assert member_sets(single(rectangle, 2, rtol=1e-2)) == {frozenset(range(4))}


def test_no_grad_needed():
    pos = torch.randn(5, 3, requires_grad=True)
    c = single(pos, 2)
    assert not c.cluster.requires_grad


def test_errors():
    pos = torch.randn(15, 3)
    batch = torch.tensor([0] * 4 + [1] * 11)
    with pytest.raises(ValueError, match=r"structure 1 has n=11 points, more than max_points=10"):
        symmetric_kmeans(pos, batch, torch.tensor([2, 5]))
    with pytest.raises(ValueError, match=r"structure 1 has n=11 points, more than max_points=6"):
        symmetric_kmeans(pos, batch, torch.tensor([2, 5]), max_points=6)
    with pytest.raises(ValueError, match=r"method 'nope', valid methods: \['exact', 'ward'\]"):
        symmetric_kmeans(pos, batch, torch.tensor([2, 5]), method="nope")
    with pytest.raises(ValueError, match=r"structure 0 has n=4 points and k=5"):
        symmetric_kmeans(pos, batch, torch.tensor([5, 5]))
    with pytest.raises(ValueError, match="num_clusters must have shape"):
        symmetric_kmeans(pos, batch, torch.tensor([2]))
    with pytest.raises(ValueError, match="sorted"):
        symmetric_kmeans(pos, batch.flip(0), torch.tensor([2, 5]))
    with pytest.raises(ValueError, match="positive"):
        symmetric_kmeans(pos, batch, torch.tensor([2, 5]), weight=-torch.ones(15))


def test_cluster_centroids():
    generator = torch.Generator().manual_seed(5)
    pos = torch.randn(6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([1.0, 2, 3, 1, 1, 4], dtype=torch.float64)
    cluster = torch.tensor([0, 1, 0, 2, 1, 1])
    centres, total = cluster_centroids(pos, cluster, 3, weight)
    assert centres.shape == (3, 3) and total.tolist() == [4.0, 7.0, 1.0]
    assert torch.allclose(centres[0], (pos[0] + 3 * pos[2]) / 4)
    assert torch.allclose(centres[1], (2 * pos[1] + pos[4] + 4 * pos[5]) / 7)
    assert torch.equal(centres[2], pos[3])
    centres.sum().backward()
    assert pos.grad is not None
    centres, total = cluster_centroids(pos.detach().float(), cluster, 3)
    assert centres.dtype == total.dtype == torch.float32 and total.tolist() == [2.0, 3.0, 1.0]


@pytest.mark.parametrize("method", METHODS)
def test_pooling_to_one_point(method):
    """Recursive pooling with the clusters' centroids and weights reaches one point."""
    generator = torch.Generator().manual_seed(6)
    pos = torch.randn(17, 3, generator=generator)
    batch = torch.tensor([0] * 9 + [1] * 8)
    weight = torch.ones(17)
    for _ in range(10):
        counts = torch.bincount(batch)
        if (counts == 1).all():
            break
        c = symmetric_kmeans(pos, batch, (counts + 1) // 2, weight=weight, method=method)
        pos, weight = cluster_centroids(pos, c.cluster, c.num_clusters, weight)
        batch = c.cluster_batch
    assert (torch.bincount(batch) == 1).all()
    assert weight.tolist() == [9.0, 8.0]
