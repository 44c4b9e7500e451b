"""One decoding made of several: each structure taken from the candidate chosen for it."""

from __future__ import annotations

import itertools

import torch

from ._decoder import Decoded

__all__ = ["select_structures"]


def _pick(batches: list[torch.Tensor], choice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Of the candidates' points concatenated (``batches[k]`` (N_k,): candidate ``k``'s), the
    ones of the chosen candidates, sorted by structure (``kept`` (N',)), and each point's index
    in that order (``index`` (sum N_k,); -1: not kept)."""
    batch = torch.cat(batches)  # (sum N_k,)
    candidate = torch.cat([torch.full_like(b, k) for k, b in enumerate(batches)])  # (sum N_k,)
    kept = (choice[batch] == candidate).nonzero().flatten()
    kept = kept[torch.sort(batch[kept], stable=True).indices]  # (N',)
    index = torch.full_like(batch, -1)
    index[kept] = torch.arange(len(kept), device=batch.device)
    return kept, index


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

    def cat(field) -> torch.Tensor:
        """The candidates' tensors ``field(candidate)``, one after another."""
        return torch.cat([field(c) for c in candidates])

    atoms, _ = _pick([c.batch for c in candidates], choice)  # (N',)
    picks = [_pick([c.levels[l][1] for c in candidates], choice) for l in range(len(first.levels))]
    levels = tuple((cat(lambda c: c.levels[l][0])[kept], cat(lambda c: c.levels[l][1])[kept]) for l, (kept, _) in enumerate(picks))
    parents = []
    for l, parent in enumerate(zip(*(c.parents for c in candidates))):  # level l's parents, per candidate
        if l + 1 < len(picks):  # among the next level's points: shifted to the concatenation, then re-indexed
            offsets = itertools.accumulate([0] + [len(c.levels[l + 1][1]) for c in candidates[:-1]])
            parent = picks[l + 1][1][torch.cat([p + offset for p, offset in zip(parent, offsets)])]
        else:  # the roots: one per structure, unchanged
            parent = torch.cat(parent)
        parents.append(parent[picks[l][0]])
    logits = cat(lambda c: c.species_logits)[atoms] if all(c.species_logits is not None for c in candidates) else None
    residual = None
    if all(c.residual is not None for c in candidates):
        residual = torch.stack([c.residual for c in candidates])[choice, torch.arange(num_structures, device=choice.device)]
    return Decoded(
        cat(lambda c: c.pos)[atoms], cat(lambda c: c.species)[atoms], cat(lambda c: c.batch)[atoms],
        num_structures, levels, tuple(parents), logits, residual,
    )
