"""Symmetric k-means: clusters that never break a symmetry, exact (all optimal partitions) or
greedy (Ward's agglomeration with tied merges taken together)."""

import dataclasses
import functools
from typing import Callable, Dict, Optional

import torch

from ._partitions import cached_set_partitions
from ._ward import ward_labels

__all__ = ["CLUSTER_METHODS", "Clustering", "check_cluster_method", "symmetric_kmeans"]

# Largest structure the exact method enumerates by default: S(10, 5) = 42525 partitions.
_EXACT_MAX_POINTS = 10
# Absolute tolerance on the cost, in units of the structure's total inertia (its cost with
# one cluster), so it is scale-free; it matters only when the optimal cost is zero.
_ATOL = 1e-12
# Bound on the number of (structure, partition, block) terms evaluated at once: memory is a
# few float64 tensors of this many elements (~32 MB each).
_MAX_TERMS = 2**22


@dataclasses.dataclass(frozen=True)
class Clustering:
    """Clusters of a batch of structures.

    Attributes
    ----------
    cluster : `torch.Tensor`
        global cluster id of each point, shape ``(N,)``, dtype long. Ids are contiguous per
        structure and increase with the structure; within a structure they follow the lowest
        point index of each cluster.
    num_clusters : int
        total number of clusters ``C``.
    cluster_batch : `torch.Tensor`
        structure of each cluster, shape ``(C,)``, dtype long, sorted.
    """

    cluster: torch.Tensor
    num_clusters: int
    cluster_batch: torch.Tensor


def symmetric_kmeans(
    pos: torch.Tensor,
    batch: torch.Tensor,
    num_clusters: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    rtol: float = 1e-4,
    max_points: Optional[int] = None,
    method: str = "exact",
) -> Clustering:
    r"""Cluster each structure into at most ``k`` clusters without breaking a symmetry.

    With ``method="exact"`` the clusters are the union of the optimal k-means partitions. The
    weighted k-means cost of a partition is the weighted within-cluster sum of squared
    distances to the weighted centroid, written with pairwise distances only,
    :math:`\sum_c \frac{1}{W_c} \sum_{i<j \in c} w_i w_j |x_i - x_j|^2`, and evaluated in
    float64. Every partition into exactly ``k`` clusters whose cost is within ``rtol``
    (relative, plus a tiny absolute tolerance) of the minimum is optimal; two points are
    linked when some optimal partition puts them together, and the clusters are the connected
    components of these links. Degenerate optima of a symmetric structure therefore merge
    instead of one being picked arbitrarily (a square with ``k=2`` gives one cluster of 4),
    so the result may have fewer than ``k`` clusters.

    With ``method="ward"`` (for larger structures) every point starts as its own cluster and
    clusters merge greedily by Ward's linkage: each round merges the pair whose merge raises
    the k-means cost least, :math:`\frac{W_a W_b}{W_a + W_b} |c_a - c_b|^2`, together with
    every pair within ``rtol`` of it (connected components, so tied merges of a symmetric
    structure happen together), until at most ``k`` clusters are left. It is not always
    optimal, and ties overshoot: a chain or ring of equal links merges as a whole in one
    round (a straight line of four equally spaced points with ``k=2`` gives one cluster,
    where ``"exact"`` gives two pairs). With ``k = n - 1`` both methods agree. On QM9 about
    6% of the molecules end the first level one cluster short, as the two mirror-image
    hydrogens left of a methyl group join it together; clusters there hold 1 to 4 atoms.

    Either way the clustering is invariant under rotations, inversion and translations,
    equivariant under permutations of the points, and deterministic; it is computed in
    float64 and no gradient flows through it.

    Parameters
    ----------
    pos : `torch.Tensor`
        positions, shape ``(N, 3)``, float32 or float64.
    batch : `torch.Tensor`
        structure of each point, shape ``(N,)``, dtype long, sorted (PyG convention);
        ``B = batch.max() + 1`` structures, each with at least one point.
    num_clusters : `torch.Tensor`
        number of clusters ``k`` of each structure, shape ``(B,)``, ``1 <= k <= n_b``.
    weight : `torch.Tensor`, optional
        positive weight of each point (e.g. the number of atoms it stands for), shape
        ``(N,)``. ``None``: all ones.
    rtol : float
        relative tolerance under which a partition counts as optimal (``"exact"``) or a
        merge as tied with the cheapest (``"ward"``).
    max_points : int, optional
        largest structure accepted; ``None``: the method's own limit (10 for ``"exact"``,
        none for ``"ward"``).
    method : str
        ``"exact"`` enumerates all set partitions into ``k`` blocks (:math:`S(n, k)` of
        them, e.g. 42525 for ``n=10, k=5``); ``"ward"`` pads the structures of each group
        of similar size to its largest ``n`` and does at most ``max(n - k)`` rounds of
        :math:`O(B n^2)` work (plus :math:`O(B n^3)` for the components), one Python
        iteration per round for the whole group: ~8 ms for the first, slowest level of 64
        QM9 molecules (~1150 atoms) on one CPU thread, ~13 ms for the five levels to one
        point (``benchmarks/cluster.py``).

    Returns
    -------
    `Clustering`
        ``cluster`` ``(N,)``, ``num_clusters`` ``C`` and ``cluster_batch`` ``(C,)``.

    Examples
    --------
    A square and a straight line of four points, two clusters asked for each:

    >>> pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0],
    ...                     [0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3]])
    >>> batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    >>> c = symmetric_kmeans(pos, batch, num_clusters=torch.tensor([2, 2]))
    >>> c.cluster, c.num_clusters, c.cluster_batch
    (tensor([0, 0, 0, 0, 1, 1, 2, 2]), 3, tensor([0, 1, 1]))
    >>> symmetric_kmeans(pos, batch, num_clusters=torch.tensor([2, 2]), method="ward").cluster
    tensor([0, 0, 0, 0, 1, 1, 1, 1])
    """
    if method not in _METHODS:
        raise ValueError(
            f"symmetric_kmeans: unknown method {method!r}, valid methods: {sorted(_METHODS)}"
        )
    num_points = pos.shape[0]
    if pos.dim() != 2 or pos.shape[1] != 3 or num_points == 0:
        raise ValueError(f"pos must have shape (N, 3) with N >= 1, got {tuple(pos.shape)}")
    if batch.shape != (num_points,):
        raise ValueError(f"batch must have shape ({num_points},), got {tuple(batch.shape)}")
    if bool((batch[1:] < batch[:-1]).any()) or int(batch[0]) < 0:
        raise ValueError("batch must be sorted and non-negative (PyG convention)")
    counts = torch.bincount(batch)
    num_clusters = num_clusters.to(device=batch.device, dtype=torch.long)
    if num_clusters.shape != counts.shape:
        raise ValueError(
            f"num_clusters must have shape ({counts.shape[0]},) (one k per structure), "
            f"got {tuple(num_clusters.shape)}"
        )
    bad = ((num_clusters < 1) | (num_clusters > counts)).nonzero().flatten()
    if bad.numel() > 0:
        b = int(bad[0])
        raise ValueError(
            f"num_clusters must satisfy 1 <= k <= n for each structure; structure {b} has "
            f"n={int(counts[b])} points and k={int(num_clusters[b])}"
        )
    if weight is not None:
        if weight.shape != (num_points,):
            raise ValueError(f"weight must have shape ({num_points},), got {tuple(weight.shape)}")
        if not bool((weight > 0).all()):
            raise ValueError("weight must be positive")
    limit = _METHODS[method].max_points if max_points is None else max_points
    if limit is not None and int(counts.max()) > limit:
        b = int((counts > limit).nonzero()[0])
        raise ValueError(
            f"symmetric_kmeans(method={method!r}): structure {b} has n={int(counts[b])} "
            f"points, more than max_points={limit}{_METHODS[method].limit_reason}"
        )

    with torch.no_grad():
        pos64 = pos.detach().to(torch.float64)
        w64 = (
            torch.ones(num_points, dtype=torch.float64, device=pos.device)
            if weight is None
            else weight.detach().to(torch.float64)
        )
        labels = _METHODS[method].labels(pos64, counts, num_clusters, w64, rtol, _ATOL)
        return _number_clusters(labels, batch)


def _number_clusters(labels: torch.Tensor, batch: torch.Tensor) -> Clustering:
    """Number the clusters given by equal ``labels`` (N,) by their lowest point index."""
    num_points = labels.shape[0]
    index = torch.arange(num_points, device=labels.device)
    _, inverse = torch.unique(labels, return_inverse=True)
    lowest = torch.full((num_points,), num_points, dtype=torch.long, device=labels.device)
    lowest = lowest.scatter_reduce(0, inverse, index, reduce="amin")[inverse]  # (N,)
    is_lowest = lowest == index
    cluster_of_lowest = torch.cumsum(is_lowest, 0) - 1
    return Clustering(
        cluster=cluster_of_lowest[lowest],
        num_clusters=int(is_lowest.sum()),
        cluster_batch=batch[is_lowest],
    )


def _exact(
    pos: torch.Tensor,
    counts: torch.Tensor,
    num_clusters: torch.Tensor,
    weight: torch.Tensor,
    rtol: float,
    atol: float,
) -> torch.Tensor:
    """Exact method: labels (N,) (lowest point of the cluster) from float64 inputs."""
    ptr = torch.cumsum(counts, 0) - counts  # first point of each structure
    labels = torch.empty(pos.shape[0], dtype=torch.long, device=pos.device)
    groups, group_of = torch.unique(
        torch.stack([counts, num_clusters], 1), dim=0, return_inverse=True
    )  # structures with the same (n, k) are evaluated together
    for g, (n, k) in enumerate(groups.tolist()):
        structures = (group_of == g).nonzero().flatten()
        chunk = max(1, _MAX_TERMS // (cached_set_partitions(n, k).shape[0] * k))
        for s in structures.split(chunk):
            index = ptr[s, None] + torch.arange(n, device=pos.device)  # (G, n)
            lowest = _optimal_components(pos[index], weight[index], k, rtol, atol)
            labels[index] = ptr[s, None] + lowest
    return labels


def _optimal_components(
    pos: torch.Tensor, weight: torch.Tensor, k: int, rtol: float, atol: float
) -> torch.Tensor:
    """Lowest point of each point's component, shape (G, n), for G structures of n points."""
    num_structures, n, _ = pos.shape
    onehot, pair_block, i, j = _tables(n, k, pos.device)
    # pair terms w_i w_j |x_i - x_j|^2, (G, pairs)
    x = weight[:, i] * weight[:, j] * (pos[:, i] - pos[:, j]).pow(2).sum(-1)
    block_weight = weight @ onehot  # (G, P k)
    block_sum = x @ pair_block  # (G, P k): sum of the pair terms inside each block
    cost = (block_sum / block_weight).view(num_structures, -1, k).sum(-1)  # (G, P)
    inertia = x.sum(-1) / weight.sum(-1)  # cost of a single cluster, (G,)
    best = cost.min(-1).values
    optimal = cost <= (best * (1 + rtol) + atol * inertia)[:, None]
    # pairs together in some optimal partition, (G, pairs)
    linked = (optimal.to(x.dtype).repeat_interleave(k, 1) @ pair_block.T) > 0
    adjacency = torch.eye(n, dtype=torch.bool, device=pos.device).repeat(num_structures, 1, 1)
    adjacency[:, i, j] = linked
    adjacency[:, j, i] = linked
    # connected components: propagate the lowest index; paths have at most n - 1 links
    lowest = torch.arange(n, device=pos.device).expand(num_structures, n)
    for _ in range(n - 1):
        lowest = torch.where(adjacency, lowest[:, None, :], n).amin(-1)
    return lowest


@functools.lru_cache(maxsize=16)
def _tables(n: int, k: int, device: torch.device):
    """Float64 tables of the P partitions of n points into k blocks, on ``device``.

    ``onehot`` (n, P k): point i is in block c of partition p; ``pair_block`` (pairs, P k):
    both points of pair (i, j) are in block c of partition p; the pairs ``i < j``, (pairs,)
    each. ~76 MB for n=10, k=5.
    """
    partitions = cached_set_partitions(n, k).to(device)
    onehot = torch.nn.functional.one_hot(partitions, k).to(torch.float64)  # (P, n, k)
    i, j = torch.triu_indices(n, n, 1, device=device)
    pair_block = onehot[:, i] * onehot[:, j]  # (P, pairs, k)
    size = partitions.shape[0] * k
    return (
        onehot.transpose(0, 1).reshape(n, size),
        pair_block.transpose(0, 1).reshape(len(i), size),
        i,
        j,
    )


@dataclasses.dataclass(frozen=True)
class _Method:
    # labels(pos64 (N, 3), counts (B,), num_clusters (B,), weight64 (N,), rtol, atol) returns
    # labels (N,): equal for the points of one cluster, and a cluster never spans two
    # structures.
    labels: Callable[..., torch.Tensor]
    max_points: Optional[int]  # default limit on a structure's size; None: no limit
    limit_reason: str = ""


_METHODS: Dict[str, _Method] = {
    "exact": _Method(
        _exact,
        _EXACT_MAX_POINTS,
        "; exact enumeration of the S(n, k) set partitions grows too fast beyond that",
    ),
    "ward": _Method(ward_labels, None),
}


CLUSTER_METHODS: tuple[str, ...] = tuple(sorted(_METHODS))
"""Names of the ``method`` of :func:`symmetric_kmeans`."""


def check_cluster_method(method: str, max_points: int) -> str:
    """The clustering method for structures of up to ``max_points`` points: ``method`` itself,
    or for ``"auto"`` the first that takes them (``"exact"`` up to 10 points, else ``"ward"``).
    Raises ``ValueError`` if ``method`` is not a method or cannot cluster that many points (for
    models to fail at construction, not at the first large structure).

    >>> check_cluster_method("auto", 4), check_cluster_method("auto", 29)
    ('exact', 'ward')
    >>> check_cluster_method("exact", 29)
    Traceback (most recent call last):
    ...
    ValueError: cluster method 'exact' takes at most 10 points per structure, not 29; exact enumeration of the S(n, k) set partitions grows too fast beyond that (use 'ward')
    """
    if method == "auto":
        return next(m for m in ("exact", "ward") if (_METHODS[m].max_points or max_points) >= max_points)
    if method not in _METHODS:
        raise ValueError(f"unknown cluster method {method!r}; valid methods: {['auto', *CLUSTER_METHODS]}")
    limit = _METHODS[method].max_points
    if limit is not None and max_points > limit:
        reason = _METHODS[method].limit_reason.lstrip("; ")
        raise ValueError(
            f"cluster method {method!r} takes at most {limit} points per structure, not {max_points}; {reason} (use 'ward')"
        )
    return method
