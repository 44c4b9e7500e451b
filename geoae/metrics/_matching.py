"""Reconstruction errors: optimal one-to-one matching of atoms, no rotation alignment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch_geometric.utils import scatter

__all__ = ["ReconstructionErrors", "matched_rmsd", "reconstruction_errors"]


def matched_rmsd(pos_a: np.ndarray, species_a: np.ndarray, pos_b: np.ndarray, species_b: np.ndarray) -> float:
    """RMSD between two structures after the optimal one-to-one matching of atoms of the same
    species (Hungarian algorithm on squared distances); no rotation or translation alignment.
    ``inf`` when the compositions differ, 0 for two empty structures.

    >>> a = np.array([[0.0, 0, 0], [1, 0, 0]])
    >>> round(matched_rmsd(a, np.array([1, 8]), a[::-1] + [0, 0.1, 0], np.array([8, 1])), 6)
    0.1
    """
    if sorted(species_a.tolist()) != sorted(species_b.tolist()):
        return float("inf")
    if len(species_a) == 0:
        return 0.0
    total = 0.0
    for s in np.unique(species_a):
        a, b = pos_a[species_a == s], pos_b[species_b == s]
        cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        total += cost[rows, cols].sum()
    return float(np.sqrt(total / len(species_a)))


@dataclass(frozen=True)
class ReconstructionErrors:
    """Per structure: ``right_atoms`` (B,) bool, the atom count; ``right_composition`` (B,)
    bool, the multiset of species; ``rmsd`` (B,) float64, matched RMSD against the input
    centred on its centroid (``inf`` when the composition is wrong)."""

    right_atoms: torch.Tensor
    right_composition: torch.Tensor
    rmsd: torch.Tensor


def reconstruction_errors(decoded, batch, species: torch.Tensor) -> ReconstructionErrors:
    """Compare free-running decodings (:class:`geoae.model.Decoded`, centred on the centroid)
    with the input ``batch``; ``species`` (N,) are the input atoms' species indices."""
    centred = batch.pos - scatter(batch.pos, batch.batch, dim=0, reduce="mean")[batch.batch]
    true_pos, true_batch = centred.detach().double().cpu().numpy(), batch.batch.cpu().numpy()
    true_species = species.cpu().numpy()
    pos, out_batch = decoded.pos.detach().double().cpu().numpy(), decoded.batch.cpu().numpy()
    out_species = decoded.species.cpu().numpy()
    right_atoms, right_composition, rmsd = [], [], []
    for b in range(batch.num_graphs):
        t, o = true_batch == b, out_batch == b
        right_atoms.append(t.sum() == o.sum())
        right_composition.append(sorted(true_species[t].tolist()) == sorted(out_species[o].tolist()))
        rmsd.append(matched_rmsd(pos[o], out_species[o], true_pos[t], true_species[t]))
    return ReconstructionErrors(torch.tensor(right_atoms), torch.tensor(right_composition), torch.tensor(rmsd, dtype=torch.float64))
