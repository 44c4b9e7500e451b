"""The autoencoder's training objective: teacher-forced losses of a batch, with the decoder
shown moved (noisy) or its own (scheduled sampling) upper levels."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch_geometric.data import Batch

from geoae.sphere import integral_count, project

from ._hierarchy import Hierarchy
from ._own import with_decoded_positions

if TYPE_CHECKING:
    from ._autoencoder import Autoencoder

__all__ = ["moved_hierarchy", "teacher_forced_loss"]


def moved_hierarchy(hierarchy: Hierarchy, noise: float, growth: float = 1.0) -> Hierarchy:
    """``hierarchy`` with its points below the roots moved by independent Gaussian noise:
    standard deviation per coordinate ``noise`` at the level under the roots, times
    ``growth`` at each level further down (``noise * growth**(num_levels - 1 - l)`` at
    level ``l``; level 0 the atoms). Parents and weights are unchanged.
    """
    top = hierarchy.num_levels - 1
    moved = [pos + noise * growth ** (top - level) * torch.randn_like(pos) for level, pos in enumerate(hierarchy.pos[:-1])]
    return dataclasses.replace(hierarchy, pos=moved + hierarchy.pos[-1:])


def teacher_forced_loss(
    model: Autoencoder,
    batch: Batch,
    *,
    position_noise: float = 0.0,
    count_weight: float = 0.0,
    noise_growth: float = 1.0,
    species_weight: float = 1.0,
    species_balance: float = 0.0,
    own_positions: float = 0.0,
    own_max_offset: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Teacher-forced losses of ``model`` on ``batch`` (:meth:`Autoencoder.loss`), each a
    scalar tensor; ``"loss"`` is ``signal + centre + centre_vector +
    species_weight * species + count_weight * count``.

    - ``signal``: squared error of each level's predicted children signals against
      :func:`geoae.sphere.project` of the true children's offsets (centre children left
      out), summed over coefficients, mean over parent points, summed over levels;
    - ``centre``: binary cross-entropy of "a child sits at the parent" (offset under
      ``min_radius``), mean over parents, summed over levels;
    - ``centre_vector``: squared error of that child's offset, mean over such parents;
    - ``species``: cross-entropy of the atoms' species (mean over atoms); ``species_weight``
      weighs it (a molecule's composition is right only if every atom's species is).
      With ``species_balance`` ``b > 0``, each atom weighs ``share ** -b`` in that mean,
      ``share`` being its species' share of the batch's atoms, so rare elements (N, O, F in
      QM9) count more: ``b = 1`` weighs every species present equally in all;
    - ``count``: squared error of each predicted signal's count of children (its integral
      in units of one vector, :func:`geoae.sphere.integral_count`, which decoding rounds),
      mean over parent points, summed over levels. ``signal`` holds the same error scaled
      by one Dirac's ``l = 0`` coefficient squared (``4 pi / (signal_lmax+1)**4``, 0.02 at
      ``signal_lmax=4``), too little for the rounded count to come out right;
      ``count_weight`` adds it in count units.

    ``position_noise`` (length units; standard deviation per coordinate): the decoder sees
    the hierarchy's points below the roots moved by Gaussian noise (see :func:`moved_hierarchy`), and
    its targets are the true children's offsets from the moved parents, so it learns to
    correct the errors of its own upper levels, as met in free-running decoding. Which
    children are centre children is decided on the true hierarchy. ``noise_growth``
    multiplies the noise at each level further down, as free-running drift grows.

    ``own_positions`` (a share, 0 to 1; scheduled sampling): that share of the batch's
    structures, drawn at random, is decoded free running (no gradient) and the decoder
    sees those structures' points where its own decoding put them
    (:func:`geoae.model.with_decoded_positions`: matched one to one with the true points
    of each level, at most ``own_max_offset`` away; the others keep the noise), so it
    learns to correct its own drift rather than Gaussian noise.
    """
    hierarchy = model.hierarchy(batch)
    species = model._species_index[batch.z]
    latent = model.encoder(species, hierarchy)
    seen = moved_hierarchy(hierarchy, position_noise, noise_growth) if position_noise > 0 else hierarchy
    if own_positions > 0:
        chosen = torch.rand(latent.shape[0], device=latent.device) < own_positions  # (B,)
        if chosen.any():
            with torch.no_grad():
                decoded = model.decoder(latent[chosen])  # only the chosen structures
            seen = with_decoded_positions(seen, decoded, chosen, own_max_offset)
    predictions, species_logits = model.decoder.teacher_forced(latent, seen)
    terms = {name: latent.new_zeros(()) for name in ("signal", "centre", "centre_vector", "count")}
    for p in predictions:
        parent = hierarchy.parent[p.level]  # (N_l,)
        is_centre = (hierarchy.pos[p.level] - hierarchy.pos[p.level + 1][parent]).norm(dim=1) < model.min_radius  # (N_l,)
        offset = hierarchy.pos[p.level] - seen.pos[p.level + 1][parent]  # (N_l, 3): from the parent the decoder saw
        num_parents = p.signal.shape[0]
        target = project(offset[~is_centre], parent[~is_centre], num_parents, model.signal_lmax)  # (M, 2, K)
        terms["signal"] = terms["signal"] + (p.signal - target).pow(2).sum(dim=(1, 2)).mean()
        terms["count"] = terms["count"] + (integral_count(p.signal) - integral_count(target)).pow(2).mean()
        has_centre = torch.zeros(num_parents, dtype=offset.dtype, device=offset.device)
        has_centre[parent[is_centre]] = 1.0
        terms["centre"] = terms["centre"] + torch.nn.functional.binary_cross_entropy_with_logits(p.centre_logit, has_centre)
        if is_centre.any():
            error = p.centre_vector[parent[is_centre]] - offset[is_centre]
            terms["centre_vector"] = terms["centre_vector"] + error.pow(2).sum(dim=1).mean()
    balance = None
    if species_balance > 0:
        share = torch.bincount(species, minlength=species_logits.shape[1]).clamp(min=1) / species.numel()  # (S,)
        balance = share.to(species_logits.dtype).pow(-species_balance)
    terms["species"] = torch.nn.functional.cross_entropy(species_logits, species, weight=balance)
    terms["loss"] = (
        terms["signal"] + terms["centre"] + terms["centre_vector"]
        + species_weight * terms["species"] + count_weight * terms["count"]
    )
    return terms
