"""Refinement of decoded positions: move the atoms until the encoder maps them onto the latent."""

from __future__ import annotations

import dataclasses

import torch
from torch_geometric.utils import scatter

from geoae.cluster import cluster_centroids

from ._decoder import Decoded
from ._encoder import Encoder
from ._hierarchy import Hierarchy

__all__ = ["decoded_tree", "latent_residual", "refine_positions", "refined"]


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


def latent_residual(encoder: Encoder, species: torch.Tensor, latent: torch.Tensor, decoded: Decoded) -> torch.Tensor:
    """``(B,)`` squared distance ``|encoder(atoms) - latent|**2`` of each structure of
    ``decoded``, its atoms pooled through the tree the decoding made (:func:`decoded_tree`);
    ``inf`` for a structure decoded to no atom. Zero for a right decoding: a check of a
    decoding that needs no reference structure.
    """
    parents, batches = decoded_tree(decoded)
    residual = latent.new_full((decoded.num_structures,), float("inf"))  # (B,)
    if decoded.pos.shape[0]:
        with torch.no_grad():
            encoded = encoder(species, _tree_hierarchy(decoded.pos, parents, batches))  # (B', latent)
        residual[batches[-1]] = (encoded - latent[batches[-1]]).pow(2).sum(dim=1)
    return residual


def refine_positions(encoder: Encoder, species: torch.Tensor, latent: torch.Tensor, decoded: Decoded, steps: int, lr: float) -> torch.Tensor:
    """Positions ``(N, 3)`` of ``decoded``'s atoms moved to minimise, for each structure,
    ``|encoder(atoms) - latent|**2``, the encoder pooling the atoms through the tree the
    decoding made (:func:`decoded_tree`); the true structure has zero loss.

    ``steps`` steps of Adam with one second moment per atom (its gradient's squared norm, so
    every step rotates, mirrors and permutes with the atoms, and structures do not interact),
    the step size falling linearly from ``lr`` (length units) to zero. Each structure stays
    centred on its centroid.

    Args:
        encoder: the autoencoder's encoder (its parameters are left without gradients).
        species: ``(N,)`` the atoms' species indices; latent: ``(B, irreps_latent.dim)``.
    """
    parents, batches = decoded_tree(decoded)
    pos = decoded.pos.detach().clone()  # (N, 3)
    if pos.shape[0] == 0:
        return pos
    latent = latent.detach()[batches[-1]]  # (B', latent): structures decoded to no atom have no root
    moment = torch.zeros_like(pos)  # (N, 3)
    square = pos.new_zeros(pos.shape[0], 1)  # (N, 1)
    beta1, beta2 = 0.9, 0.999
    for step in range(1, steps + 1):
        with torch.enable_grad():
            pos.requires_grad_(True)
            loss = (encoder(species, _tree_hierarchy(pos, parents, batches)) - latent).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, pos)  # (N, 3)
        pos = pos.detach()
        moment.mul_(beta1).add_(grad, alpha=1 - beta1)
        square.mul_(beta2).add_(grad.pow(2).sum(dim=1, keepdim=True), alpha=1 - beta2)
        step_size = lr * (1 - (step - 1) / steps)
        update = (moment / (1 - beta1**step)) / ((square / (1 - beta2**step)).sqrt() + 1e-12)  # (N, 3)
        pos = pos - step_size * update
    return pos - scatter(pos, decoded.batch, dim=0, reduce="mean")[decoded.batch]


def refined(decoded: Decoded, pos: torch.Tensor, residual: torch.Tensor | None = None) -> Decoded:
    """``decoded`` with its atoms at ``pos`` (and its ``residual``); the upper levels stay as decoded."""
    levels = ((pos, decoded.batch),) + decoded.levels[1:] if decoded.levels else ()
    return dataclasses.replace(decoded, pos=pos, levels=levels, residual=residual)
