"""Symmetric agglomerative clustering with Ward's linkage, batched over padded structures."""

import torch

from geoae._segments import gather_atoms, size_groups

__all__ = ["ward_labels"]


# Fixed cost of one round of a group of structures, in padded point pairs (B n^2) of work:
# ~30 tensor operations of ~5 us each against ~16 ns per point pair (one CPU thread, float64).
_ROUND_OVERHEAD = 10_000


def ward_labels(
    pos: torch.Tensor,
    counts: torch.Tensor,
    num_clusters: torch.Tensor,
    weight: torch.Tensor,
    rtol: float,
    atol: float,
) -> torch.Tensor:
    r"""Ward method: labels (N,) (lowest point of the cluster) from float64 inputs.

    Every point starts as its own cluster. While a structure has more than ``k`` clusters,
    the Ward cost of merging each pair of its clusters,
    :math:`W_a W_b / (W_a + W_b) |c_a - c_b|^2` (the increase of the weighted k-means
    cost), is computed; every pair whose cost is within ``rtol`` (relative, plus ``atol``
    times the structure's inertia) of the cheapest is merged at once, the connected
    components of these pairs becoming the new clusters. A structure stops as soon as it has
    at most ``k`` clusters.

    The structures are clustered in groups of similar size (:func:`_size_groups`), each
    padded to its largest ``n``: for a batch of 512 QM9 molecules (3 to 29 atoms) that is half
    the time of padding all of them to 29 points. Each round merges at least one pair per
    structure, so a group takes at most ``max(n_b - k_b)`` rounds, each of :math:`O(B n^2)`
    work plus :math:`O(B n^3)` per squaring of the components' boolean matrices (usually one,
    at most :math:`\log_2 n`); the structures that are done leave the group. Each structure's
    clusters depend on its own points only.

    >>> pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [5, 0, 0], [0, 0, 0], [1, 0, 0], [2.5, 0, 0]], dtype=torch.float64)
    >>> ward_labels(pos, torch.tensor([3, 3]), torch.tensor([2, 2]), torch.ones(6, dtype=torch.float64), 1e-4, 1e-12)
    tensor([0, 0, 2, 3, 3, 5])
    """
    groups = _size_groups(counts)
    if len(groups) == 1:
        return _ward_padded(pos, counts, num_clusters, weight, rtol, atol)
    ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])  # (B + 1,)
    labels = torch.empty(pos.shape[0], dtype=torch.long, device=pos.device)
    for structures in groups:
        points = gather_atoms(ptr, structures)  # the group's points, (N_g,)
        group_labels = _ward_padded(pos[points], counts[structures], num_clusters[structures], weight[points], rtol, atol)
        labels[points] = points[group_labels]
    return labels


def _size_groups(counts: torch.Tensor) -> list:
    """Structures (indices into ``counts`` (B,)) in groups of similar size
    (:func:`geoae._segments.size_groups`), modelling a group's work as
    ``n_g * (_ROUND_OVERHEAD + B_g * n_g ** 2)`` for ``B_g`` structures padded to ``n_g``
    points (about ``n_g`` rounds).

    >>> [g.tolist() for g in _size_groups(torch.tensor([29, 28, 27, 3]))]  # too few to split
    [[0, 1, 2, 3]]
    >>> [len(g) for g in _size_groups(torch.cat([torch.full((200,), 12), torch.full((200,), 24)]))]
    [200, 200]
    """
    return size_groups(counts, lambda structures, n: n * (_ROUND_OVERHEAD + structures * n * n))


def _ward_padded(
    pos: torch.Tensor,
    counts: torch.Tensor,
    num_clusters: torch.Tensor,
    weight: torch.Tensor,
    rtol: float,
    atol: float,
) -> torch.Tensor:
    """:func:`ward_labels` of structures all padded to ``n = max(counts)`` points."""
    num_structures, n = counts.shape[0], int(counts.max())
    device, dtype = pos.device, pos.dtype
    ptr = torch.cumsum(counts, 0) - counts
    batch = torch.repeat_interleave(torch.arange(num_structures, device=device), counts)
    local = torch.arange(pos.shape[0], device=device) - ptr[batch]
    # padded (B, n): padding points have weight 0 and stay alone in their own empty slot
    w = pos.new_zeros(num_structures, n)
    w[batch, local] = weight
    x = pos.new_zeros(num_structures, n, 3)
    x[batch, local] = pos
    # centred per structure, so a translation changes nothing but rounding
    x = x - ((w[..., None] * x).sum(1) / w.sum(1)[:, None])[:, None]
    wx = w[..., None] * x
    inertia = (wx * x).sum((1, 2))  # k-means cost of one cluster, (B,)
    slots = torch.arange(n, device=device)
    owner = slots.repeat(num_structures, 1)  # slot (lowest point) of each point's cluster
    eye = torch.eye(n, dtype=torch.bool, device=device)
    done = owner.clone()  # final owners, written when a structure stops merging
    index = torch.arange(num_structures, device=device)  # the structures still merging
    # CPU note: torch.where and masked_fill are much slower there than arithmetic on masks
    for _ in range(n - 1):
        member = w.new_zeros(w.shape[0], n, n).scatter_(1, owner[:, None], 1.0)  # (B, slot, point)
        cluster_w = member @ w[..., None]  # (B, n, 1), zero for a slot owning nothing
        active = cluster_w[..., 0] > 0
        running = active.sum(1) > num_clusters  # (B,)
        if not bool(running.all()):  # drop the structures that are done
            done[index] = owner
            keep = running.nonzero()[:, 0]
            if keep.numel() == 0:
                break
            index, w, wx, owner, inertia, num_clusters = (
                t[keep] for t in (index, w, wx, owner, inertia, num_clusters)
            )
            member, cluster_w, active = member[keep], cluster_w[keep], active[keep]
        centre = (member @ wx) / cluster_w.clamp(min=1e-300)  # (B, n, 3)
        w_a, w_b = cluster_w, cluster_w.transpose(1, 2)
        cost = w_a * w_b / (w_a + w_b).clamp(min=1e-300) * _squared_distances(centre)
        pair = active[:, :, None] & active[:, None] & ~eye
        best = (cost + (~pair).to(dtype) * 1e300).flatten(1).amin(1)
        tol = best * (1 + rtol) + atol * inertia
        linked = (cost <= tol[:, None, None]) & pair | eye
        # lowest slot of each component (reach is symmetric: reduce over the faster dim)
        reach = _closure(linked)
        root = (n - (n - slots[:, None]) * reach).amin(1).long()
        owner = root.gather(1, owner)
    done[index] = owner
    return ptr[batch] + done[batch, local]


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    """|x_i - x_j|^2 of (B, n, 3) points, (B, n, n), from coordinate differences (no
    cancellation: coinciding points give exactly 0)."""
    out = None
    for xa in x.transpose(1, 2).contiguous().unbind(1):  # (B, n) each, contiguous
        diff = xa[:, :, None] - xa[:, None]
        out = diff * diff if out is None else out.addcmul_(diff, diff)
    return out


def _closure(linked: torch.Tensor) -> torch.Tensor:
    """Transitive closure of the reflexive symmetric relations ``linked`` (B, n, n), as
    float32 0/1, by repeated squaring until nothing changes (paths of n - 1 links need
    log2(n) squarings; tied merges mostly form pairs, done after one)."""
    reach = linked.to(torch.float32)  # products count paths, exact up to 2**24
    while True:
        longer = ((reach @ reach) > 0).to(torch.float32)
        if torch.equal(longer, reach):
            return reach
        reach = longer
