"""Decodings regrouped: each structure taken from the candidate chosen for it, a subset of the structures, or both."""

from __future__ import annotations

import itertools

import torch

from ._decoder import Decoded

__all__ = ["regroup_structures", "select_structures", "take_structures"]


def _pick(batches: list[torch.Tensor], targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of the decodings' points concatenated (``batches[k]`` (N_k,): decoding ``k``'s), the
    ones kept (``kept`` (N',)), sorted by their structure in the result (``batch`` (N',)),
    and each point's index in that order (``index`` (sum N_k,); -1: left out)."""
    target = torch.cat([t[b] for t, b in zip(targets, batches)])  # (sum N_k,): each point's structure in the result
    kept = (target >= 0).nonzero().flatten()
    kept = kept[torch.sort(target[kept], stable=True).indices]  # (N',)
    index = torch.full_like(target, -1)
    index[kept] = torch.arange(len(kept), device=target.device)
    return kept, index, target[kept]


def regroup_structures(decodings: list[Decoded], targets: list[torch.Tensor], num_structures: int) -> Decoded:
    """The decoding of ``num_structures`` structures whose structure ``targets[k][b]`` is
    structure ``b`` of ``decodings[k]`` (``targets[k]`` ``(decodings[k].num_structures,)``
    long; -1: left out): its atoms, species (and logits, residual) and every level of its
    tree, the parents re-indexed. A structure no decoding gives has no atom (and, where the
    decodings have residuals, an infinite one, as :func:`geoae.model.latent_residual` gives
    a structure decoded to no atom); one that two give is an error.

    >>> pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    >>> a = Decoded(pos, torch.tensor([0, 1]), torch.tensor([0, 1]), 2)
    >>> regroup_structures([a], [torch.tensor([-1, 0])], 1).pos  # a's second structure alone
    tensor([[1., 0., 0.]])
    """
    if len(targets) != len(decodings) or any(t.shape != (d.num_structures,) for t, d in zip(targets, decodings)):
        shapes = [tuple(t.shape) for t in targets]
        raise ValueError(f"targets must be one (num_structures,) tensor per decoding {[(d.num_structures,) for d in decodings]}, got {shapes}")
    target = torch.cat(targets)  # (sum B_k,)
    given = target[target >= 0]
    if bool((given >= num_structures).any()) or len(given.unique()) < len(given):
        raise ValueError(f"targets must name structures 0..{num_structures - 1} (-1: left out), each at most once; got {target.tolist()}")
    first = decodings[0]

    def cat(field) -> torch.Tensor:
        """The decodings' tensors ``field(decoding)``, one after another."""
        return torch.cat([field(d) for d in decodings])

    atoms, _, batch = _pick([d.batch for d in decodings], targets)  # (N',)
    picks = [_pick([d.levels[l][1] for d in decodings], targets) for l in range(len(first.levels))]
    levels = tuple((cat(lambda d: d.levels[l][0])[kept], level_batch) for l, (kept, _, level_batch) in enumerate(picks))
    parents = []
    for l, parent in enumerate(zip(*(d.parents for d in decodings))):  # level l's parents, per decoding
        if l + 1 < len(picks):  # among the next level's points: shifted to the concatenation, then re-indexed
            offsets = itertools.accumulate([0] + [len(d.levels[l + 1][1]) for d in decodings[:-1]])
            parent = picks[l + 1][1][torch.cat([p + offset for p, offset in zip(parent, offsets)])]
        else:  # the roots: one per structure, renumbered as the structures
            parent = torch.cat([t[p] for t, p in zip(targets, parent)])
        parents.append(parent[picks[l][0]])
    logits = cat(lambda d: d.species_logits)[atoms] if all(d.species_logits is not None for d in decodings) else None
    residual = None
    if all(d.residual is not None for d in decodings):
        residual = first.pos.new_full((num_structures,), float("inf"))  # (B,)
        residual[given] = cat(lambda d: d.residual)[target >= 0]
    return Decoded(cat(lambda d: d.pos)[atoms], cat(lambda d: d.species)[atoms], batch, num_structures, levels, tuple(parents), logits, residual)


def select_structures(candidates: list[Decoded], choice: torch.Tensor) -> Decoded:
    """The decoding whose structure ``b`` is structure ``b`` of ``candidates[choice[b]]``
    (:func:`regroup_structures`). All candidates decode the same ``B`` structures;
    ``choice`` is ``(B,)`` long.

    >>> pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    >>> a = Decoded(pos, torch.tensor([0, 1]), torch.tensor([0, 1]), 2)
    >>> b = Decoded(pos[:1] + 5, torch.tensor([2]), torch.tensor([1]), 2)
    >>> select_structures([a, b], torch.tensor([0, 1])).pos
    tensor([[0., 0., 0.],
            [5., 5., 5.]])
    """
    num_structures = candidates[0].num_structures
    if choice.shape != (num_structures,):
        raise ValueError(f"choice must have shape ({num_structures},), got {tuple(choice.shape)}")
    structures = torch.arange(num_structures, device=choice.device)  # (B,)
    return regroup_structures(candidates, [torch.where(choice == k, structures, -1) for k in range(len(candidates))], num_structures)


def take_structures(decoded: Decoded, index: torch.Tensor) -> Decoded:
    """The decoding of structures ``index (K,)`` (long, distinct) of ``decoded``, in that
    order: structure ``i`` of the result is structure ``index[i]`` of ``decoded``
    (:func:`regroup_structures`)."""
    target = torch.full((decoded.num_structures,), -1, dtype=torch.long, device=index.device)  # (B,)
    target[index] = torch.arange(len(index), device=index.device)
    if len(target[target >= 0]) < len(index):
        raise ValueError(f"index must name distinct structures, got {index.tolist()}")
    return regroup_structures([decoded], [target], len(index))
