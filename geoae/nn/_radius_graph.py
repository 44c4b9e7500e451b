"""Radius graph in pure torch (no pyg-lib / torch-cluster needed)."""

from typing import Optional

import torch

__all__ = ["radius_graph"]

# Largest number of (target, source) pairs held at once; the memory used is a small
# multiple of this (distances and masks): ~40 MB in float32.
_DEFAULT_MAX_PAIRS = 2**22


def radius_graph(
    pos: torch.Tensor,
    r_max: float,
    batch: Optional[torch.Tensor] = None,
    loop: bool = False,
    max_num_neighbors: Optional[int] = None,
    max_pairs: int = _DEFAULT_MAX_PAIRS,
) -> torch.Tensor:
    r"""Edges between points closer than ``r_max`` within the same structure.

    Pure torch, device-agnostic. Structures are padded into ``(B, Nmax, 3)`` blocks and the
    pairwise distances are computed per structure only (never across the whole batch), in
    chunks of at most ``max_pairs`` pairs; a single structure too large for one chunk is
    split by target rows.

    Convention (PyG): ``edge_index[0]`` is the source :math:`j`, ``edge_index[1]`` the target
    :math:`i`; an edge exists when :math:`|pos_j - pos_i| < r_{max}` (strict), both
    directions are present, self loops only if ``loop=True``. Edges are sorted by target,
    then source, so the output is deterministic.

    Parameters
    ----------
    pos : `torch.Tensor`
        positions, shape ``(num_nodes, 3)``.
    r_max : float
        cutoff radius.
    batch : `torch.Tensor`, optional
        structure index of each node, shape ``(num_nodes,)``, sorted (PyG convention: nodes of
        one structure are contiguous and structures are in increasing order). ``None``: one
        structure.
    loop : bool
        include self loops :math:`i \to i`.
    max_num_neighbors : int, optional
        keep at most this many sources per target: the nearest ones (ties broken by source
        index), so unlike PyG the choice does not depend on memory order. With a limit the
        graph may lose its symmetry. ``None``: no limit.
    max_pairs : int
        bound on the number of pairs computed at once (memory bound).

    Returns
    -------
    `torch.Tensor`
        ``edge_index``, shape ``(2, num_edges)``, dtype long, on ``pos.device``.

    Examples
    --------
    >>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 0.0, 0.0], [5.5, 0.0, 0.0]])
    >>> radius_graph(pos, 2.0, batch=torch.tensor([0, 0, 1, 1]))
    tensor([[1, 0, 3, 2],
            [0, 1, 2, 3]])
    """
    if pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos must have shape (num_nodes, 3), got {tuple(pos.shape)}")
    num_nodes = pos.shape[0]
    device = pos.device
    if batch is None:
        batch = torch.zeros(num_nodes, dtype=torch.long, device=device)
    if batch.shape != (num_nodes,):
        raise ValueError(f"batch must have shape ({num_nodes},), got {tuple(batch.shape)}")
    if num_nodes == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    if bool((batch[1:] < batch[:-1]).any()):
        raise ValueError(
            "radius_graph: batch must be sorted (nodes of one structure contiguous, structures in "
            "increasing order, as torch_geometric.data.Batch builds it); sort the nodes first, "
            "e.g. perm = batch.argsort(stable=True); pos, batch = pos[perm], batch[perm]"
        )

    with torch.no_grad():
        counts = torch.bincount(batch)  # (B,)
        ptr = torch.zeros(counts.shape[0] + 1, dtype=torch.long, device=device)
        torch.cumsum(counts, 0, out=ptr[1:])
        # position of each node inside its structure, (num_nodes,)
        local = torch.arange(num_nodes, device=device) - ptr[batch]
        r_max = float(r_max)

        pieces = []
        counts_list = counts.tolist()
        for s0, s1, nmax, row_block in _chunks(counts_list, max_pairs):
            a0, a1 = int(ptr[s0]), int(ptr[s1])
            if a0 == a1:
                continue
            nb = s1 - s0
            # pad the chunk: (nb, nmax, 3) and a validity mask (nb, nmax)
            padded = pos.new_zeros(nb, nmax, 3)
            valid = torch.zeros(nb, nmax, dtype=torch.bool, device=device)
            b_loc = batch[a0:a1] - s0
            padded[b_loc, local[a0:a1]] = pos[a0:a1].detach()
            valid[b_loc, local[a0:a1]] = True
            for t0 in range(0, nmax, row_block):
                t1 = min(t0 + row_block, nmax)
                # distances of pairs (structure, target t, source s): (nb, nt, nmax); computed
                # directly from differences, not through matrix products (exact near r_max)
                dist = torch.cdist(padded[:, t0:t1], padded, compute_mode="donot_use_mm_for_euclid_dist")
                mask = (dist < r_max) & valid[:, t0:t1, None] & valid[:, None, :]
                if not loop:
                    t = torch.arange(t0, t1, device=device)
                    mask[:, t - t0, t] = False
                if max_num_neighbors is not None and max_num_neighbors < nmax:
                    mask &= _nearest(dist, mask, max_num_neighbors)
                b, t, s = mask.nonzero(as_tuple=True)  # row-major: sorted by (b, t, s)
                offset = ptr[s0 + b]
                pieces.append(torch.stack([offset + s, offset + t + t0]))
    if not pieces:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


def _nearest(dist: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the ``k`` nearest allowed sources per target (last dim), ties by index."""
    dist = dist.masked_fill(~mask, float("inf"))
    order = torch.sort(dist, dim=-1, stable=True).indices[..., :k]
    keep = torch.zeros_like(mask)
    keep.scatter_(-1, order, True)
    return keep


def _chunks(counts: list, max_pairs: int):
    """Group consecutive structures so each padded chunk has at most ``max_pairs`` pairs.

    Yields ``(s0, s1, nmax, row_block)``: structures ``s0:s1`` padded to ``nmax`` nodes, whose
    target rows are processed ``row_block`` at a time (fewer than ``nmax`` only for a single
    structure bigger than ``max_pairs``).
    """
    s0, nmax = 0, 0
    for s, n in enumerate(counts):
        if s > s0 and (s + 1 - s0) * max(nmax, n) ** 2 > max_pairs:
            yield s0, s, nmax, max(1, min(nmax, max_pairs // max(nmax, 1)))
            s0, nmax = s, 0
        nmax = max(nmax, n)
    if s0 < len(counts):
        yield s0, len(counts), nmax, max(1, min(nmax, max_pairs // max(nmax, 1)))
