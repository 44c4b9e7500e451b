"""Where a decoding goes wrong: each unpooling level judged on its own (teacher forced), and
each level of a free-running decoding against the encoder's hierarchy (drift)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from geoae.metrics import matched_rmsd
from geoae.model import Autoencoder

__all__ = ["free_running_level_errors", "level_errors"]


def _error_figures(errors: torch.Tensor) -> dict:
    """Median, 90th percentile and fraction under 0.1 of ``errors (n,)`` (``None`` if empty)."""
    if len(errors) == 0:
        return {"median": None, "q90": None, "under_0.1": None}
    return {"median": float(errors.median()), "q90": float(errors.quantile(0.9)), "under_0.1": float((errors < 0.1).double().mean())}


@torch.no_grad()
def level_errors(model: Autoencoder, batches) -> dict:
    """Judge every unpooling level on its own: the decoder runs teacher forced (on the
    encoder's hierarchy, as in training), and each parent's predicted children (as decoding
    reads them, :meth:`geoae.model.Decoder.read_children`: the peaks of its signal, plus the centre
    child when its logit is positive) are compared with its true children.

    A free-running decoding is right only if every level is; the level where the rate of
    right parents drops first is where reconstructions break.

    Args:
        model: the autoencoder.
        batches: checked batches (:meth:`Autoencoder.as_batch`).

    Returns:
        ``{"levels": [...], "species_accuracy", "species_recall", "structures_species_right"}``.
        Levels from the root down; each ``{"level", "parents", "right_count",
        "child_error_median", "child_error_q90", "child_error_under_0.1"}``: the number of
        parents, the fraction whose predicted children number exactly their true children, and
        the distance (length units of the data) from each true child offset to the nearest
        predicted one of the same parent (parents with the right count): median, 90th
        percentile and fraction under 0.1. The atoms' level (0) adds ``"child_error_by_species"``,
        the same three figures per true atomic number (``{"6": {"atoms", "median", "q90",
        "under_0.1"}, ...}``, species present only). Species, on the true atoms: the fraction
        predicted right, the same per true atomic number (``{"6": 0.99, ...}``, ``None`` for a
        species absent from the batches), and the fraction of structures with every atom's
        species right (a bound on the rate of right compositions, free running).
    """
    model.eval()
    totals: dict[int, dict] = defaultdict(lambda: {"parents": 0, "right": 0, "errors": [], "z": []})
    num_species = len(model.species)
    per_species = torch.zeros(num_species, 2, dtype=torch.long)  # per true species: atoms, atoms predicted right
    structures_right, structures = 0, 0
    for batch in batches:
        hierarchy = model.hierarchy(batch)
        species = model._species_index[batch.z]  # (N,)
        latent = model.encoder(species, hierarchy)  # (B, latent)
        predictions, logits = model.decoder.teacher_forced(latent, hierarchy)
        species_right = logits.argmax(dim=-1) == species  # (N,)
        per_species[:, 0] += torch.bincount(species, minlength=num_species).cpu()
        per_species[:, 1] += torch.bincount(species[species_right], minlength=num_species).cpu()
        wrong = torch.bincount(batch.batch[~species_right], minlength=batch.num_graphs)  # (B,)
        structures_right += int((wrong == 0).sum())
        structures += batch.num_graphs
        for p in predictions:
            parent = hierarchy.parent[p.level]  # (N_l,)
            offset = hierarchy.pos[p.level] - hierarchy.pos[p.level + 1][parent]  # (N_l, 3)
            is_centre = offset.norm(dim=1) < model.min_radius  # (N_l,)
            num_parents = p.signal.shape[0]
            predicted_parent, predicted, _ = model.decoder.read_children(p)  # (P,), (P, 3)
            true_count = torch.bincount(parent, minlength=num_parents)  # (M,), centre children included
            found = torch.bincount(predicted_parent, minlength=num_parents)  # (M,)
            has_centre = torch.zeros(num_parents, dtype=torch.bool, device=parent.device)
            has_centre[parent[is_centre]] = True
            right = (found == true_count) & ((p.centre_logit > 0) == has_centre)  # (M,)
            # nearest predicted child of the same parent, for each true child of a right parent
            judged = right[parent]  # (N_l,)
            same = parent[judged][:, None] == predicted_parent[None, :]  # (N_j, P)
            distance = torch.cdist(offset[judged], predicted).masked_fill(~same, float("inf"))  # (N_j, P)
            total = totals[p.level]
            total["parents"] += num_parents
            total["right"] += int(right.sum())
            if distance.numel():
                total["errors"].append(distance.min(dim=1).values)
                if p.level == 0:  # the atoms: keep each judged child's element
                    total["z"].append(batch.z[judged])
    levels = []
    for level in sorted(totals, reverse=True):
        total = totals[level]
        errors = torch.cat(total["errors"]).double().cpu() if total["errors"] else torch.zeros(0, dtype=torch.float64)
        entry = {"level": level, "parents": total["parents"], "right_count": total["right"] / max(total["parents"], 1)}
        entry.update({f"child_error_{k}": v for k, v in _error_figures(errors).items()})
        if level == 0:
            z = torch.cat(total["z"]).cpu() if total["z"] else torch.zeros(0, dtype=torch.long)
            entry["child_error_by_species"] = {
                str(s): {"atoms": int((z == s).sum()), **_error_figures(errors[z == s])} for s in model.species if (z == s).any()
            }
        levels.append(entry)
    recall = {str(z): (right / atoms if atoms else None) for z, (atoms, right) in zip(model.species, per_species.tolist())}
    return {
        "levels": levels,
        "species_accuracy": int(per_species[:, 1].sum()) / max(int(per_species[:, 0].sum()), 1),
        "species_recall": recall,
        "structures_species_right": structures_right / max(structures, 1),
    }


@torch.no_grad()
def free_running_level_errors(model: Autoencoder, batches) -> dict:
    """Compare every level of free-running decodings (:attr:`geoae.model.Decoded.levels`,
    from the latent alone) with the same level of the encoder's hierarchy: how far the
    decoding has drifted by each level.

    Unlike :func:`level_errors`, each level here is decoded from the levels the decoder made
    itself, so errors add up on the way down. A structure's decoded points are matched
    one-to-one to its true points of that level (optimal matching, no species, no alignment)
    when their numbers agree.

    Args:
        model: the autoencoder.
        batches: checked batches (:meth:`Autoencoder.as_batch`).

    Returns:
        ``{"levels": [...]}``, from the root down; each ``{"level", "structures",
        "right_count", "rmsd_median", "rmsd_q90", "rmsd_under_0.1"}``: the number of
        structures, the fraction with as many decoded points as true ones at that level, and
        the matched RMSD of those (length units of the data; ``None`` without any), its 90th
        percentile and the fraction under 0.1.
    """
    model.eval()
    totals: dict[int, dict] = defaultdict(lambda: {"structures": 0, "right": 0, "rmsd": []})
    for batch in batches:
        hierarchy = model.hierarchy(batch)
        decoded = model.decoder(model.encoder(model._species_index[batch.z], hierarchy))
        for level, (pos, index) in enumerate(decoded.levels):
            true_pos, true_index = hierarchy.pos[level].double().cpu().numpy(), hierarchy.batch[level].cpu().numpy()
            pos, index = pos.double().cpu().numpy(), index.cpu().numpy()
            total = totals[level]
            for b in range(batch.num_graphs):
                a, d = true_pos[true_index == b], pos[index == b]
                total["structures"] += 1
                if len(a) == len(d):
                    total["right"] += 1
                    total["rmsd"].append(matched_rmsd(a, np.zeros(len(a)), d, np.zeros(len(d))))
    levels = []
    for level in sorted(totals, reverse=True):
        total = totals[level]
        rmsd = np.asarray(total["rmsd"])
        levels.append(
            {
                "level": level,
                "structures": total["structures"],
                "right_count": total["right"] / max(total["structures"], 1),
                "rmsd_median": float(np.median(rmsd)) if len(rmsd) else None,
                "rmsd_q90": float(np.quantile(rmsd, 0.9)) if len(rmsd) else None,
                "rmsd_under_0.1": float((rmsd < 0.1).mean()) if len(rmsd) else None,
            }
        )
    return {"levels": levels}
