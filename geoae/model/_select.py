"""One decoding made of several: each structure taken from the candidate chosen for it."""

from __future__ import annotations

import torch

from ._decoder import Decoded

__all__ = ["select_structures"]


def _gather(tensors: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t[m] for t, m in zip(tensors, masks)])


def select_structures(candidates: list[Decoded], choice: torch.Tensor) -> Decoded:
    """The decoding whose structure ``b`` is structure ``b`` of ``candidates[choice[b]]``:
    its atoms, species (and logits, residual) and every level of its tree, the parents
    re-indexed. All candidates decode the same ``B`` structures; ``choice`` is ``(B,)`` long.

    >>> pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    >>> a = Decoded(pos, torch.tensor([0, 1]), torch.tensor([0, 1]), 2)
    >>> b = Decoded(pos[:1] + 5, torch.tensor([2]), torch.tensor([1]), 2)
    >>> select_structures([a, b], torch.tensor([0, 1])).pos
    tensor([[0., 0., 0.],
            [5., 5., 5.]])
    """
    first = candidates[0]
    num_structures = first.num_structures
    if choice.shape != (num_structures,):
        raise ValueError(f"choice must have shape ({num_structures},), got {tuple(choice.shape)}")
    picked = [choice == k for k in range(len(candidates))]  # (B,) each

    def kept(batch_of: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """Each candidate's mask of kept points, the order sorting the kept ones by structure,
        and each candidate's map from its points to their index in the result (-1: dropped)."""
        masks = [p[batch] for p, batch in zip(picked, batch_of)]
        order = torch.sort(_gather(batch_of, masks), stable=True).indices  # (N',)
        new = torch.empty_like(order)
        new[order] = torch.arange(len(order), device=order.device)
        maps, start = [], 0
        for mask in masks:
            index = torch.full_like(mask, -1, dtype=torch.long)
            index[mask] = new[start : start + int(mask.sum())]
            maps.append(index)
            start += int(mask.sum())
        return masks, order, maps

    def take(tensors: list[torch.Tensor], masks: list[torch.Tensor], order: torch.Tensor) -> torch.Tensor:
        return _gather(tensors, masks)[order]

    num_levels = len(first.levels)
    per_level = [kept([c.levels[l][1] for c in candidates]) for l in range(num_levels)]  # (masks, order, maps)
    masks, order, _ = kept([c.batch for c in candidates])  # the atoms
    levels = tuple(
        (take([c.levels[l][0] for c in candidates], *per_level[l][:2]), take([c.levels[l][1] for c in candidates], *per_level[l][:2]))
        for l in range(num_levels)
    )
    parents = []
    for l in range(len(first.parents)):
        if l + 1 < num_levels:  # parents among the next level's points: re-indexed
            remapped = [per_level[l + 1][2][k][c.parents[l]] for k, c in enumerate(candidates)]
        else:  # the roots: one per structure, unchanged
            remapped = [c.parents[l] for c in candidates]
        parents.append(take(remapped, *per_level[l][:2]))
    logits = (
        take([c.species_logits for c in candidates], masks, order)
        if all(c.species_logits is not None for c in candidates) else None
    )
    residual = None
    if all(c.residual is not None for c in candidates):
        residual = torch.stack([c.residual for c in candidates])[choice, torch.arange(num_structures, device=choice.device)]
    return Decoded(
        take([c.pos for c in candidates], masks, order),
        take([c.species for c in candidates], masks, order),
        take([c.batch for c in candidates], masks, order),
        num_structures, levels, tuple(parents), logits, residual,
    )
