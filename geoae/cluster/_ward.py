"""Symmetric agglomerative clustering with Ward's linkage, batched over padded structures."""

import math

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

    The structures are padded to ``n = max(counts)`` points: each merge round costs
    :math:`O(B n^2)` work (plus :math:`O(B n^3 \log n)` for the components, as boolean
    matrix products) and there are at most ``n - 1`` rounds, usually about ``n - k``.
    """
    num_structures, n = counts.shape[0], int(counts.max())
    device = pos.device
    ptr = torch.cumsum(counts, 0) - counts
    batch = torch.repeat_interleave(torch.arange(num_structures, device=device), counts)
    local = torch.arange(pos.shape[0], device=device) - ptr[batch]
    slots = torch.arange(n, device=device)
    valid = slots < counts[:, None]  # (B, n) real points
    w = pos.new_zeros(num_structures, n)
    w[batch, local] = weight
    x = pos.new_zeros(num_structures, n, 3)
    x[batch, local] = pos
    # centred per structure, so a translation changes nothing but rounding
    total = w.sum(1)
    x = torch.where(valid[..., None], x - ((w[..., None] * x).sum(1) / total[:, None])[:, None], 0)
    wx = w[..., None] * x
    inertia = (wx * x).sum((1, 2))  # k-means cost of one cluster, (B,)
    # owner[b, p]: slot (lowest point) of the cluster of point p; padding owns nothing
    owner = torch.where(valid, slots, n)
    eye = torch.eye(n, dtype=torch.bool, device=device)
    squarings = max(0, math.ceil(math.log2(max(n - 1, 1))))
    for _ in range(n - 1):
        member = (owner[:, None, :] == slots[:, None]).to(pos.dtype)  # (B, slot, point)
        cluster_w = member @ w[..., None]  # (B, n, 1), zero for a slot owning nothing
        active = cluster_w[..., 0] > 0
        running = active.sum(1) > num_clusters  # (B,)
        if not bool(running.any()):
            break
        centre = (member @ wx) / cluster_w.clamp(min=1e-300)  # (B, n, 3)
        d2 = (centre[:, :, None] - centre[:, None]).pow(2).sum(-1)  # (B, n, n)
        w_a, w_b = cluster_w, cluster_w.transpose(1, 2)
        pair = active[:, :, None] & active[:, None] & ~eye & running[:, None, None]
        cost = torch.where(pair, w_a * w_b / (w_a + w_b).clamp(min=1e-300) * d2, math.inf)
        best = cost.flatten(1).amin(1)
        tol = torch.where(running, best * (1 + rtol) + atol * inertia, -1.0)
        linked = (cost <= tol[:, None, None]) | (eye & active[:, :, None])
        # transitive closure by repeated squaring: paths have at most n - 1 links
        reach = linked.to(pos.dtype)
        for _ in range(squarings):
            reach = ((reach @ reach) > 0).to(pos.dtype)
        root = torch.where(reach > 0, slots, n).amin(-1)  # lowest slot of the component
        root = torch.where(active, root, slots)
        owner = torch.where(valid, root.gather(1, owner.clamp(max=n - 1)), n)
    return ptr[batch] + owner[batch, local]
