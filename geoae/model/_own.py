"""Scheduled sampling: the hierarchy's points replaced by the model's own free-running decoding."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ._decoder import Decoded
from ._hierarchy import Hierarchy

__all__ = ["with_decoded_positions"]


def _match(true: np.ndarray, decoded: np.ndarray, max_offset: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of ``true (n, 3)`` and ``decoded (m, 3)`` points (Hungarian, squared
    distances; ``min(n, m)`` pairs), the pairs farther apart than ``max_offset`` dropped.
    Returns the indices ``(K,)`` of the matched true and decoded points."""
    cost = ((true[:, None, :] - decoded[None, :, :]) ** 2).sum(-1)  # (n, m)
    rows, cols = linear_sum_assignment(cost)
    near = cost[rows, cols] <= max_offset**2
    return rows[near], cols[near]


def with_decoded_positions(
    hierarchy: Hierarchy, decoded: Decoded, structures: torch.Tensor, max_offset: float
) -> Hierarchy:
    """``hierarchy`` with the points of ``structures`` moved to where their free-running
    decoding put them, for training the decoder on its own drift instead of Gaussian noise (scheduled
    sampling).

    At every level below the roots, each chosen structure's true points are matched one to
    one with its decoded points of that level (:attr:`Decoded.levels`; Hungarian on squared
    distances, no alignment: the model is equivariant and both are centred on the same
    centroid); a matched true point takes its decoded point's position. Points left unmatched
    (the decoding made too few points there) or matched farther than ``max_offset`` keep
    ``hierarchy``'s position. Parents and weights are unchanged.

    Args:
        hierarchy: the true hierarchy of ``B`` structures (possibly already moved by noise).
        decoded: a free-running decoding of the chosen structures only, in order (its
            structure ``k`` is the ``k``-th chosen one; ``levels`` set), so that no other
            structure is decoded for nothing.
        structures: ``(B,)`` bool, the structures to move.
        max_offset: the farthest a true point is moved (length units).

    >>> from geoae.model import Hierarchy
    >>> pos = [torch.tensor([[0.0, 0, 0], [1.0, 0, 0]]), torch.tensor([[0.5, 0, 0]])]
    >>> h = Hierarchy(pos, [torch.zeros(2, dtype=torch.long), torch.zeros(1, dtype=torch.long)], [torch.ones(2), torch.ones(1) * 2], [torch.zeros(2, dtype=torch.long)])
    >>> d = Decoded(pos[0], torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 1,
    ...             levels=((torch.tensor([[1.1, 0, 0], [0.0, 0.1, 0]]), torch.zeros(2, dtype=torch.long)),))
    >>> with_decoded_positions(h, d, torch.tensor([True]), max_offset=0.5).pos[0]
    tensor([[0.0000, 0.1000, 0.0000],
            [1.1000, 0.0000, 0.0000]])
    """
    if len(decoded.levels) != hierarchy.num_levels:
        raise ValueError(f"the decoding has {len(decoded.levels)} levels, the hierarchy {hierarchy.num_levels}")
    chosen = structures.nonzero().flatten().tolist()
    if decoded.num_structures != len(chosen):
        raise ValueError(f"the decoding has {decoded.num_structures} structures, {len(chosen)} are chosen")
    moved = []
    for level in range(hierarchy.num_levels):
        pos = hierarchy.pos[level].clone()  # (N_l, 3)
        true_pos, true_batch = pos.detach().cpu().numpy(), hierarchy.batch[level].cpu().numpy()
        decoded_pos, decoded_batch = (t.detach().cpu().numpy() for t in decoded.levels[level])
        targets, sources = [], []
        for k, b in enumerate(chosen):  # decoded structure k is the hierarchy's structure b
            true_index, decoded_index = np.flatnonzero(true_batch == b), np.flatnonzero(decoded_batch == k)
            rows, cols = _match(true_pos[true_index], decoded_pos[decoded_index], max_offset)
            targets.append(true_index[rows])
            sources.append(decoded_index[cols])
        if chosen:
            target = torch.as_tensor(np.concatenate(targets), device=pos.device)
            source = torch.as_tensor(np.concatenate(sources), device=pos.device)
            pos[target] = decoded.levels[level][0][source].to(pos.dtype)
        moved.append(pos)
    return dataclasses.replace(hierarchy, pos=moved + list(hierarchy.pos[-1:]))
