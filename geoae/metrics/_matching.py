"""Reconstruction errors: optimal one-to-one matching of atoms, no rotation alignment.

One record per structure compares a decoded structure with its input (both centred on their
centroid, in the input's orientation: the model is equivariant, so no alignment is done):
atom count, composition, matched RMSD, and optionally (molecules) the bond graph under the
matching and EDM-style stability (:mod:`geoae.metrics._bonds`). Records of a batch, or of a
whole data set, are a :class:`ReconstructionErrors`; :func:`reconstruction_summary` turns them
into a JSON-serialisable dict of rates and RMSD quantiles, overall and by structure size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ._bonds import bond_orders, stable_atoms

__all__ = [
    "ReconstructionErrors",
    "compare_structures",
    "matched_rmsd",
    "reconstruction_errors",
    "reconstruction_summary",
]


def matched_rmsd(
    pos_a: np.ndarray, species_a: np.ndarray, pos_b: np.ndarray, species_b: np.ndarray, return_matching: bool = False
) -> float | tuple[float, np.ndarray | None]:
    """RMSD between two structures after the optimal one-to-one matching of atoms of the same
    species (Hungarian algorithm on squared distances); no rotation or translation alignment.
    ``inf`` when the compositions differ, 0 for two empty structures.

    Args:
        pos_a, pos_b: ``(N, 3)`` positions; species_a, species_b: ``(N,)`` species (any ints).
        return_matching: also return ``matching (N,)`` int64: atom ``i`` of ``a`` is matched
            with atom ``matching[i]`` of ``b`` (``None`` when the compositions differ).

    >>> a = np.array([[0.0, 0, 0], [1, 0, 0]])
    >>> round(matched_rmsd(a, np.array([1, 8]), a[::-1] + [0, 0.1, 0], np.array([8, 1])), 6)
    0.1
    >>> matched_rmsd(a, np.array([1, 8]), a[::-1], np.array([8, 1]), return_matching=True)
    (0.0, array([1, 0]))
    """
    species_a, species_b = np.asarray(species_a).reshape(-1), np.asarray(species_b).reshape(-1)
    if sorted(species_a.tolist()) != sorted(species_b.tolist()):
        return (float("inf"), None) if return_matching else float("inf")
    matching = np.zeros(len(species_a), dtype=np.int64)
    total = 0.0
    for s in np.unique(species_a):
        index_a, index_b = np.flatnonzero(species_a == s), np.flatnonzero(species_b == s)
        cost = ((pos_a[index_a][:, None, :] - pos_b[index_b][None, :, :]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        matching[index_a[rows]] = index_b[cols]
        total += cost[rows, cols].sum()
    rmsd = float(np.sqrt(total / len(species_a))) if len(species_a) else 0.0
    return (rmsd, matching) if return_matching else rmsd


def compare_structures(
    pos: np.ndarray,
    z: np.ndarray,
    pos_ref: np.ndarray,
    z_ref: np.ndarray,
    bonds: bool = False,
    rmsd_threshold: float = 0.1,
) -> dict:
    """Record of one decoded structure ``(pos (N, 3), z (N,))`` against its input
    ``(pos_ref (M, 3), z_ref (M,))``, both in the same frame (no alignment is done).

    Keys: ``num_atoms`` (M), ``num_atoms_decoded`` (N), ``right_atoms`` (N == M),
    ``right_composition`` (same multiset of ``z``), ``rmsd`` (matched RMSD, ``inf`` when the
    composition is wrong or a position is not finite), and ``exact``: right composition and
    ``rmsd <= rmsd_threshold`` (and, with ``bonds``, identical bond graphs).

    With ``bonds`` (``z`` are then atomic numbers, positions in angstrom): ``bonds_identical``,
    the decoded bond orders equal the input's under the optimal matching of :func:`matched_rmsd`
    (False when the composition is wrong); ``stable`` / ``stable_atoms``, the decoded structure
    is EDM-stable (every atom stable; an empty structure is not) / its number of stable atoms; ``input_stable`` / ``input_stable_atoms``, the
    same for the input.

    >>> water = np.array([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    >>> r = compare_structures(water[[2, 0, 1]] + [0.05, 0, 0], [1, 8, 1], water, [8, 1, 1], bonds=True)
    >>> round(r["rmsd"], 6), r["bonds_identical"], r["exact"]
    (0.05, True, True)
    """
    pos, pos_ref = np.asarray(pos, dtype=np.float64).reshape(-1, 3), np.asarray(pos_ref, dtype=np.float64).reshape(-1, 3)
    z, z_ref = np.asarray(z, dtype=np.int64).reshape(-1), np.asarray(z_ref, dtype=np.int64).reshape(-1)
    record = {
        "num_atoms": len(z_ref),
        "num_atoms_decoded": len(z),
        "right_atoms": len(z) == len(z_ref),
        "right_composition": sorted(z.tolist()) == sorted(z_ref.tolist()),
    }
    rmsd, matching = float("inf"), None
    if record["right_composition"] and np.isfinite(pos).all():
        rmsd, matching = matched_rmsd(pos, z, pos_ref, z_ref, return_matching=True)
    record["rmsd"] = rmsd
    record["exact"] = record["right_composition"] and rmsd <= rmsd_threshold
    if bonds:
        orders, orders_ref = bond_orders(pos, z), bond_orders(pos_ref, z_ref)
        stable, stable_ref = stable_atoms(z, orders), stable_atoms(z_ref, orders_ref)
        record["bonds_identical"] = matching is not None and np.array_equal(orders, orders_ref[np.ix_(matching, matching)])
        record["stable"], record["stable_atoms"] = bool(len(z) and stable.all()), int(stable.sum())
        record["input_stable"], record["input_stable_atoms"] = bool(len(z_ref) and stable_ref.all()), int(stable_ref.sum())
        record["exact"] = record["exact"] and record["bonds_identical"]
    return record


@dataclass(frozen=True)
class ReconstructionErrors:
    """Records of ``B`` structures (see :func:`compare_structures`), as tensors:

    - ``right_atoms``, ``right_composition``, ``exact``: ``(B,)`` bool;
    - ``rmsd``: ``(B,)`` float64, matched RMSD against the input centred on its centroid
      (``inf`` when the composition is wrong);
    - ``num_atoms``, ``num_atoms_decoded``: ``(B,)`` int64;
    - ``rmsd_threshold``: the RMSD under which (inclusive) a structure can be exact;
    - bond fields, ``None`` when bonds were not compared (e.g. tetris, where they mean
      nothing): ``bonds_identical``, ``stable``, ``input_stable`` ``(B,)`` bool;
      ``stable_atoms``, ``input_stable_atoms`` ``(B,)`` int64;
    - ``residual``: ``(B,)`` float64, each decoding's own latent residual
      (:func:`geoae.model.latent_residual`, set by refinement), a check that needs no input;
      ``None`` for decodings that carry none.
    """

    right_atoms: torch.Tensor
    right_composition: torch.Tensor
    rmsd: torch.Tensor
    num_atoms: torch.Tensor
    num_atoms_decoded: torch.Tensor
    exact: torch.Tensor
    rmsd_threshold: float
    bonds_identical: torch.Tensor | None = None
    stable: torch.Tensor | None = None
    stable_atoms: torch.Tensor | None = None
    input_stable: torch.Tensor | None = None
    input_stable_atoms: torch.Tensor | None = None
    residual: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rmsd)

    @property
    def has_bonds(self) -> bool:
        return self.bonds_identical is not None

    @classmethod
    def from_records(cls, records: Sequence[dict], rmsd_threshold: float) -> ReconstructionErrors:
        """Stack records of :func:`compare_structures` (all with bonds or all without)."""
        dtypes = {"rmsd": torch.float64, "num_atoms": torch.int64, "num_atoms_decoded": torch.int64,
                  "stable_atoms": torch.int64, "input_stable_atoms": torch.int64}
        columns = {}
        for f in fields(cls):
            if f.name == "rmsd_threshold" or (f.default is None and not (records and f.name in records[0])):
                continue
            columns[f.name] = torch.tensor([r[f.name] for r in records], dtype=dtypes.get(f.name, torch.bool))
        return cls(**columns, rmsd_threshold=rmsd_threshold)

    @classmethod
    def cat(cls, parts: Sequence[ReconstructionErrors]) -> ReconstructionErrors:
        """Concatenate the records of several batches (same threshold, all with bonds or none)."""
        if not parts:
            raise ValueError("no records to concatenate")
        columns = {}
        for f in fields(cls):
            if f.name != "rmsd_threshold" and getattr(parts[0], f.name) is not None:
                columns[f.name] = torch.cat([getattr(p, f.name) for p in parts])
        return cls(**columns, rmsd_threshold=parts[0].rmsd_threshold)

    def select(self, mask: torch.Tensor) -> ReconstructionErrors:
        """The records where ``mask (B,)`` (bool) holds."""
        columns = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rmsd_threshold"}
        return type(self)(**{k: (v[mask] if v is not None else None) for k, v in columns.items()}, rmsd_threshold=self.rmsd_threshold)


def _ranges(batch: np.ndarray, num: int) -> np.ndarray:
    """``(num + 1,)`` start offsets of each structure's atoms in a sorted ``batch``."""
    return np.searchsorted(batch, np.arange(num + 1))


def reconstruction_errors(
    decoded,
    batch,
    species: torch.Tensor,
    atomic_numbers: Sequence[int] | None = None,
    rmsd_threshold: float = 0.1,
) -> ReconstructionErrors:
    """Compare free-running decodings with their inputs, one record per structure.

    Args:
        decoded: :class:`geoae.model.Decoded` of the batch's latents (``pos (N', 3)``,
            ``species (N',)`` indices into the model's species, sorted ``batch (N',)``),
            centred on the centroid; its ``residual (B,)``, where refinement set one, is
            carried into the records.
        batch: the input PyG batch (``pos (N, 3)``, sorted ``batch (N,)``, ``num_graphs`` B);
            it is centred on each structure's centroid (float64) before comparing.
        species: ``(N,)`` the input atoms' species indices.
        atomic_numbers: the model's species (atomic number of each species index,
            ``model.species``). When given, bonds are compared too (molecules, angstrom);
            leave it out where bonds mean nothing (tetris blocks).
        rmsd_threshold: largest matched RMSD of an exact reconstruction.

    Returns:
        :class:`ReconstructionErrors` of the ``B`` structures.
    """
    pos = batch.pos.detach().double().cpu().numpy()
    true_batch, num = batch.batch.cpu().numpy(), batch.num_graphs
    true_ranges, out_ranges = _ranges(true_batch, num), _ranges(decoded.batch.cpu().numpy(), num)
    true_species, out_species = species.cpu().numpy(), decoded.species.cpu().numpy()
    if atomic_numbers is not None:
        lookup = np.asarray(atomic_numbers, dtype=np.int64)
        true_species, out_species = lookup[true_species], lookup[out_species]
    out_pos = decoded.pos.detach().double().cpu().numpy()
    records = []
    for b in range(num):
        t, o = slice(true_ranges[b], true_ranges[b + 1]), slice(out_ranges[b], out_ranges[b + 1])
        records.append(
            compare_structures(
                out_pos[o], out_species[o], pos[t] - pos[t].mean(0), true_species[t],
                bonds=atomic_numbers is not None, rmsd_threshold=rmsd_threshold,
            )
        )
    errors = ReconstructionErrors.from_records(records, rmsd_threshold)
    return errors if decoded.residual is None else replace(errors, residual=decoded.residual.detach().double().cpu())


def _rate(flags: torch.Tensor) -> float | None:
    return float(flags.double().mean()) if len(flags) else None


def _residual_summary(errors: ReconstructionErrors, threshold: float) -> dict:
    """How well ``residual <= threshold`` flags the exact reconstructions."""
    below = errors.residual <= threshold  # (B,)
    finite = errors.residual[torch.isfinite(errors.residual)].numpy()
    return {
        "threshold": threshold,
        "median": float(np.median(finite)) if len(finite) else None,
        "below_threshold": _rate(below),
        "exact_if_below": _rate(errors.exact[below]),
        "below_if_exact": _rate(below[errors.exact]),
    }


def _summary(errors: ReconstructionErrors, residual_threshold: float) -> dict:
    out = {"num_structures": len(errors)}
    for name in ("right_atoms", "right_composition", "bonds_identical", "exact", "stable", "input_stable"):
        if getattr(errors, name) is not None:
            out[name] = _rate(getattr(errors, name))
    if errors.has_bonds:
        decoded, inputs = int(errors.num_atoms_decoded.sum()), int(errors.num_atoms.sum())
        out["atom_stable"] = int(errors.stable_atoms.sum()) / decoded if decoded else None
        out["input_atom_stable"] = int(errors.input_stable_atoms.sum()) / inputs if inputs else None
    rmsd = errors.rmsd[torch.isfinite(errors.rmsd)].numpy()
    stats = {"median": np.median, "mean": np.mean, "q90": lambda r: np.quantile(r, 0.9),
             "q99": lambda r: np.quantile(r, 0.99), "max": np.max}
    out["rmsd"] = {"count": len(rmsd), **{k: (float(f(rmsd)) if len(rmsd) else None) for k, f in stats.items()}}
    if errors.residual is not None:
        out["residual"] = _residual_summary(errors, residual_threshold)
    return out


def reconstruction_summary(errors: ReconstructionErrors, residual_threshold: float = 0.05) -> dict:
    """JSON-serialisable summary of records, overall and by structure size.

    Keys: ``num_structures``, ``rmsd_threshold``; rates (fractions of structures, ``None``
    for none): ``right_atoms``, ``right_composition``, ``exact``, and with bonds
    ``bonds_identical``, ``stable``, ``input_stable`` (molecules whose atoms are all stable)
    and ``atom_stable``, ``input_atom_stable`` (fractions of all decoded / input atoms);
    ``rmsd``: ``count``, ``median``, ``mean``, ``q90``, ``q99``, ``max`` over the structures
    with a finite RMSD (right composition); with residuals (refined decodings), ``residual``:
    ``threshold`` (``residual_threshold``), the ``median`` residual, the share of structures
    ``below_threshold``, the share of those that are exact (``exact_if_below``) and of the
    exact ones that are below (``below_if_exact``): how far the residual, which needs no
    input, tells a right decoding; ``by_size``: the same (without ``by_size`` and
    ``rmsd_threshold``) for each input atom count, keyed by the count as a string, in
    increasing order.

    >>> r = compare_structures([[0.0, 0, 0]], [6], [[0.0, 0, 0]], [6])
    >>> s = reconstruction_summary(ReconstructionErrors.from_records([r, dict(r, rmsd=0.2, exact=False)], 0.1))
    >>> s["exact"], s["rmsd"]["max"], s["by_size"]["1"]["num_structures"]
    (0.5, 0.2, 2)
    """
    out = {"rmsd_threshold": errors.rmsd_threshold, **_summary(errors, residual_threshold)}
    sizes = torch.unique(errors.num_atoms).tolist()
    out["by_size"] = {str(n): _summary(errors.select(errors.num_atoms == n), residual_threshold) for n in sizes}
    return out
