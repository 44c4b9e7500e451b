"""Refinement of a decoding: move its atoms (and relax their species) until the encoder maps them onto the latent."""

from __future__ import annotations

import dataclasses

import torch
from torch_geometric.utils import scatter

from geoae.cluster import cluster_centroids

from ._decoder import Decoded
from ._encoder import Encoder
from ._hierarchy import Hierarchy

__all__ = ["decoded_hierarchy", "decoded_tree", "feedback_latent", "latent_residual", "refine_decoding"]


def decoded_tree(decoded: Decoded) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The pooling tree a free-running decoding made: ``parents[l] (N_l,)``, each level-``l``
    point's parent among the points of level ``l + 1``, and ``batches[l] (N_l,)``, for the
    ``num_levels + 1`` levels (0: the atoms, last: the roots), with decoded points that have
    no child dropped (they stand for no atom).

    Where decoding was right, this is the encoder's hierarchy up to the order of its points:
    the encoder's own clustering of the decoded atoms can differ from it wherever two
    clusterings are nearly as good (a methyl group's hydrogens), by any small error.
    """
    parents, batches = [], [decoded.batch]
    kept = torch.arange(len(decoded.batch), device=decoded.batch.device)  # the level's points kept
    for level, parent in enumerate(decoded.parents):  # (N_l,)
        used, parent = torch.unique(parent[kept], return_inverse=True)  # (N_{l+1}',), (N_l',)
        above = decoded.levels[level + 1][1] if level + 1 < len(decoded.levels) else torch.arange(
            decoded.num_structures, device=parent.device
        )  # (N_{l+1},)
        parents.append(parent)
        batches.append(above[used])
        kept = used
    return parents, batches


def _tree_hierarchy(pos: torch.Tensor, parents: list[torch.Tensor], batches: list[torch.Tensor]) -> Hierarchy:
    """The hierarchy of atoms ``pos (N, 3)`` pooled through a fixed tree (:func:`decoded_tree`):
    every point the weighted centroid of its children, differentiable in ``pos``."""
    levels, weights = [pos], [pos.new_ones(pos.shape[0])]
    for level, parent in enumerate(parents):
        centre, weight = cluster_centroids(levels[-1], parent, len(batches[level + 1]), weights[-1])  # (N_{l+1}, 3)
        levels.append(centre)
        weights.append(weight)
    return Hierarchy(levels, batches, weights, parents)


def decoded_hierarchy(decoded: Decoded) -> Hierarchy:
    """The hierarchy of ``decoded``'s atoms pooled through the tree its decoding made
    (:func:`decoded_tree`): every point of every level the centroid of its atoms. Of a
    refined decoding, the upper levels as refinement moved them, to decode its atoms again
    from (:meth:`geoae.model.Decoder.forward`'s ``hierarchy``)."""
    return _tree_hierarchy(decoded.pos, *decoded_tree(decoded))


def latent_residual(encoder: Encoder, latent: torch.Tensor, decoded: Decoded) -> torch.Tensor:
    """``(B,)`` squared distance ``|encoder(atoms) - latent|**2`` of each structure of
    ``decoded`` (its positions and species), the atoms pooled through the tree the decoding
    made (:func:`decoded_tree`); ``inf`` for a structure decoded to no atom. Zero for a right
    decoding: a check of a decoding that needs no reference structure.
    """
    return _residual(encoder, latent, decoded, *decoded_tree(decoded))


def feedback_latent(encoder: Encoder, latent: torch.Tensor, decoded: Decoded, gain: float) -> torch.Tensor:
    """``latent + gain * (latent - encoder(atoms))`` ``(B, latent)``: each structure's latent
    with what ``decoded`` misses of it (the encoder pooling its atoms through the tree the
    decoding made, :func:`decoded_tree`) added ``gain`` times; ``latent`` itself for a
    structure decoded to no atom. For the decoder to read instead of ``latent``: its counts
    and species pushed towards what the decoding lacks (:meth:`geoae.model.Autoencoder.decode_tensors`'
    ``feedback_rounds``). Equivariant like the latent; ``latent`` for a right decoding.
    """
    guide = latent.clone()  # (B, latent)
    encoded, roots = _encoded(encoder, decoded, *decoded_tree(decoded))  # (B', latent), (B',)
    guide[roots] += gain * (latent[roots] - encoded)
    return guide


def _encoded(encoder: Encoder, decoded: Decoded, parents: list[torch.Tensor], batches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's latents ``(B', latent)`` of ``decoded``'s atoms pooled through its tree
    (``parents``, ``batches``: :func:`decoded_tree`; no gradient), and the structures
    ``(B',)`` they belong to (those decoded to at least one atom; none when no atom was)."""
    with torch.no_grad():
        return encoder(decoded.species, _tree_hierarchy(decoded.pos, parents, batches)), batches[-1]


def _residual(encoder: Encoder, latent: torch.Tensor, decoded: Decoded, parents: list[torch.Tensor], batches: list[torch.Tensor]) -> torch.Tensor:
    """:func:`latent_residual` with the decoding's tree already at hand."""
    residual = latent.new_full((decoded.num_structures,), float("inf"))  # (B,)
    encoded, roots = _encoded(encoder, decoded, parents, batches)  # (B', latent), (B',)
    residual[roots] = (encoded - latent[roots]).pow(2).sum(dim=1)
    return residual


class _AtomAdam:
    """Adam on per-atom tensors ``(N, C)`` with one second moment per atom (the squared norm of
    its gradient): a step rotates, mirrors and permutes with the atoms, and structures do not
    interact. The step size falls linearly from ``lr`` to zero over ``steps``."""

    def __init__(self, value: torch.Tensor, lr: float, steps: int, betas: tuple[float, float] = (0.9, 0.999)):
        self.value, self.lr, self.steps, self.betas, self.step_count = value, lr, steps, betas, 0
        self.moment = torch.zeros_like(value)  # (N, C)
        self.square = value.new_zeros(value.shape[0], 1)  # (N, 1)

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> torch.Tensor:
        beta1, beta2 = self.betas
        self.step_count += 1
        self.moment.mul_(beta1).add_(grad, alpha=1 - beta1)
        self.square.mul_(beta2).add_(grad.pow(2).sum(dim=1, keepdim=True), alpha=1 - beta2)
        size = self.lr * (1 - (self.step_count - 1) / self.steps)
        update = (self.moment / (1 - beta1**self.step_count)) / ((self.square / (1 - beta2**self.step_count)).sqrt() + 1e-12)
        self.value = self.value - size * update
        return self.value


def refine_decoding(
    encoder: Encoder, latent: torch.Tensor, decoded: Decoded, steps: int, lr: float, species_lr: float = 0.0
) -> Decoded:
    """``decoded`` with its atoms moved to minimise, for each structure,
    ``|encoder(atoms) - latent|**2``, the encoder pooling the atoms through the tree the
    decoding made (:func:`decoded_tree`); the true structure has zero loss.

    ``steps`` steps of Adam with one second moment per atom (so every step rotates, mirrors and
    permutes with the atoms, and structures do not interact), the step size falling linearly
    from ``lr`` (length units) to zero. With ``species_lr > 0`` and the decoding's
    ``species_logits``, the species are relaxed too: the encoder reads ``softmax(logits)``
    instead of a one-hot species, the logits (from the species head's) take the same kind of
    steps from ``species_lr``, and each atom ends with its largest logit's species. Each
    structure stays centred on its centroid; counts and the upper levels stay as decoded.
    Returns the refined decoding with its :func:`latent_residual`.

    Args:
        encoder: the autoencoder's encoder (its parameters get no gradient).
        latent: ``(B, irreps_latent.dim)``; decoded: its free-running decoding.
    """
    parents, batches = decoded_tree(decoded)
    target = latent.detach()[batches[-1]]  # (B', latent): structures decoded to no atom have no root
    relax = species_lr > 0 and decoded.species_logits is not None
    pos = _AtomAdam(decoded.pos.detach(), lr, steps)  # (N, 3)
    logits = _AtomAdam(decoded.species_logits.detach(), species_lr, steps) if relax else None  # (N, S)
    for _ in range(steps):
        with torch.enable_grad():
            x = pos.value.requires_grad_(True)
            species = logits.value.requires_grad_(True).softmax(dim=-1) if relax else decoded.species  # (N, S) or (N,)
            loss = (encoder(species, _tree_hierarchy(x, parents, batches)) - target).pow(2).sum()
            grads = torch.autograd.grad(loss, [x, logits.value] if relax else [x])
        pos.step(grads[0])
        if relax:
            logits.step(grads[1])
    moved = pos.value - scatter(pos.value, decoded.batch, dim=0, reduce="mean")[decoded.batch]  # (N, 3)
    levels = ((moved, decoded.batch),) + decoded.levels[1:] if decoded.levels else ()
    out = dataclasses.replace(decoded, pos=moved, levels=levels)
    if relax:
        out = dataclasses.replace(out, species=logits.value.argmax(dim=-1), species_logits=logits.value)
    return dataclasses.replace(out, residual=_residual(encoder, latent, out, parents, batches))
