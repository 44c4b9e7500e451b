"""Symmetric agglomerative clustering with Ward's linkage, batched over padded structures."""

import torch

__all__ = ["ward_labels"]


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

    The structures are padded to ``n = max(counts)`` points. Each round merges at least one
    pair per structure, so there are at most ``max(n_b - k_b)`` rounds, each of
    :math:`O(B n^2)` work plus :math:`O(B n^3)` per squaring of the components' boolean
    matrices (usually one, at most :math:`\log_2 n`); the structures that are done leave
    the batch.
    """
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
