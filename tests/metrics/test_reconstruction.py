"""Per-structure reconstruction records (count, composition, matched RMSD, bonds, exactness),
their batched form and their summary."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from geoae.metrics import (
    ReconstructionErrors,
    compare_structures,
    matched_rmsd,
    reconstruction_errors,
    reconstruction_summary,
)
from geoae.model import Decoded
from tests.metrics.molecules import MOLECULES

BOND_KEYS = {"bonds_identical", "stable", "stable_atoms", "input_stable", "input_stable_atoms"}


def _shuffled(name, seed=0):
    pos, z, _ = MOLECULES[name]
    perm = np.random.default_rng(seed).permutation(len(z))
    return pos[perm], z[perm], pos, z


@pytest.mark.parametrize("name", sorted(MOLECULES))
def test_molecule_against_itself_permuted_is_exact(name):
    pos, z, pos_ref, z_ref = _shuffled(name)
    r = compare_structures(pos, z, pos_ref, z_ref, bonds=True)
    assert r == dict(num_atoms=len(z), num_atoms_decoded=len(z), right_atoms=True, right_composition=True, rmsd=0.0,
                     exact=True, bonds_identical=True, stable=True, stable_atoms=len(z), input_stable=True,
                     input_stable_atoms=len(z))


def test_matching_undoes_the_permutation():
    pos, z, _ = MOLECULES["ethane"]
    perm = np.random.default_rng(1).permutation(len(z))
    rmsd, matching = matched_rmsd(pos[perm], z[perm], pos, z, return_matching=True)
    assert rmsd == 0.0 and matching.tolist() == perm.tolist()
    assert matched_rmsd(pos, z, pos[:-1], z[:-1], return_matching=True) == (math.inf, None)


def test_stretched_bond_breaks_the_graph_though_rmsd_is_small():
    pos, z, _ = MOLECULES["ethane"]
    moved = pos.copy()
    moved[2] = pos[0] + (pos[2] - pos[0]) * 1.25 / 1.09  # C-H 1.25 A: past 109 + 10 pm
    r = compare_structures(moved, z, pos, z, bonds=True)
    assert r["rmsd"] == pytest.approx(0.16 / np.sqrt(8)) and r["rmsd"] <= 0.1
    assert r["right_composition"] and not r["bonds_identical"] and not r["exact"]
    assert not r["stable"] and r["stable_atoms"] == 6 and r["input_stable"]  # C and the H lose their bond


def test_bond_order_change_breaks_the_graph():
    pos, z, _ = MOLECULES["ethylene"]
    moved = pos.copy()
    moved[[0, 2, 3], 2] -= 0.06  # C=C 1.34 -> 1.46: single
    r = compare_structures(moved, z, pos, z, bonds=True)
    assert r["rmsd"] < 0.1 and not r["bonds_identical"] and not r["exact"]


def test_shifted_copy_has_rmsd_of_the_shift_and_is_not_exact():
    pos, z, pos_ref, z_ref = _shuffled("fluoromethane")
    r = compare_structures(pos + [0.0, 0.2, 0.0], z, pos_ref, z_ref, bonds=True)
    assert r["rmsd"] == pytest.approx(0.2, abs=1e-12)
    assert r["bonds_identical"] and not r["exact"]
    assert compare_structures(pos + [0.0, 0.09, 0.0], z, pos_ref, z_ref, bonds=True)["exact"]


def test_wrong_composition_and_wrong_count():
    pos, z, _ = MOLECULES["ethane"]
    swapped = z.copy()
    swapped[2] = 9  # H -> F: same count, other composition
    r = compare_structures(pos, swapped, pos, z, bonds=True)
    assert r["right_atoms"] and not r["right_composition"] and r["rmsd"] == math.inf
    assert not r["bonds_identical"] and not r["exact"]
    r = compare_structures(pos[:-1], z[:-1], pos, z, bonds=True)
    assert (r["num_atoms"], r["num_atoms_decoded"]) == (8, 7)
    assert not r["right_atoms"] and not r["right_composition"] and not r["exact"]
    r = compare_structures(np.zeros((0, 3)), [], pos, z, bonds=True)
    assert not r["right_atoms"] and not r["stable"] and r["stable_atoms"] == 0


def test_non_finite_decoding_is_not_exact():
    pos, z, _ = MOLECULES["water"]
    r = compare_structures(np.full_like(pos, np.nan), z, pos, z)
    assert r["right_composition"] and r["rmsd"] == math.inf and not r["exact"]


def test_without_bonds_there_are_no_bond_fields():
    pos, z, _ = MOLECULES["water"]
    r = compare_structures(pos + 0.05, z, pos, z)
    assert not BOND_KEYS & set(r) and r["exact"]


def _batch(names, offsets):
    data = [Data(pos=torch.tensor(MOLECULES[n][0] + o), z=torch.tensor(MOLECULES[n][1])) for n, o in zip(names, offsets)]
    return Batch.from_data_list(data)


SPECIES = [1, 6, 7, 8, 9]
INDEX = {z: i for i, z in enumerate(SPECIES)}


def _species(z):
    return torch.tensor([INDEX[int(a)] for a in z])


def test_batched_errors_centre_the_input_and_keep_each_structure_apart():
    names = ["ethane", "water", "hydrogen cyanide"]
    batch = _batch(names, offsets=[[5.0, -3, 2], [0.0, 0, 0], [-1.0, 7, 0]])
    pos, species, index = [], [], []
    for b, name in enumerate(names):  # the decoder's output: each molecule centred, atoms reversed
        p, z, _ = MOLECULES[name]
        p = p - p.mean(0)
        if b == 1:
            p = p + [0.0, 0.0, 0.3]
        pos.append(torch.tensor(p[::-1].copy()))
        species.append(_species(z[::-1]))
        index.append(torch.full((len(z),), b))
    decoded = Decoded(torch.cat(pos).float(), torch.cat(species), torch.cat(index), 3)
    errors = reconstruction_errors(decoded, batch, _species(batch.z), atomic_numbers=SPECIES)
    assert len(errors) == 3 and errors.has_bonds
    assert errors.exact.tolist() == [True, False, True]
    assert errors.rmsd[[0, 2]].max() < 1e-6 and errors.rmsd[1].item() == pytest.approx(0.3, abs=1e-6)
    assert errors.bonds_identical.tolist() == [True, True, True]
    assert errors.num_atoms.tolist() == [8, 3, 3] and errors.right_atoms.all()

    plain = reconstruction_errors(decoded, batch, _species(batch.z))  # tetris-style: no bonds
    assert not plain.has_bonds and plain.stable is None
    assert torch.equal(plain.rmsd, errors.rmsd) and plain.exact.tolist() == [True, False, True]
    assert not BOND_KEYS & set(reconstruction_summary(plain))
    assert errors.residual is None and "residual" not in reconstruction_summary(errors)

    residual = torch.tensor([0.001, 0.5, float("inf")])  # a refined decoding carries its residuals into the records
    refined = reconstruction_errors(dataclasses.replace(decoded, residual=residual), batch, _species(batch.z))
    assert refined.residual.dtype == torch.float64 and refined.residual.tolist() == pytest.approx(residual.tolist())


def test_decoded_structure_with_no_atoms():
    batch = _batch(["water", "water"], offsets=[[0.0, 0, 0], [1.0, 0, 0]])
    p, z, _ = MOLECULES["water"]
    decoded = Decoded(torch.tensor(p - p.mean(0)).float(), _species(z), torch.ones(3, dtype=torch.long), 2)
    errors = reconstruction_errors(decoded, batch, _species(batch.z), atomic_numbers=SPECIES)
    assert errors.num_atoms_decoded.tolist() == [0, 3] and errors.exact.tolist() == [False, True]


def _records():
    """12 records: sizes 3 (4 of them) and 8 (8), known RMSDs, one wrong composition."""
    records = []
    for i, rmsd in enumerate([0.01, 0.05, 0.2, math.inf]):
        records.append(dict(num_atoms=3, num_atoms_decoded=3 if i < 3 else 2, right_atoms=i < 3, right_composition=i < 3,
                            rmsd=rmsd, exact=rmsd <= 0.1, bonds_identical=i < 3, stable=i < 3,
                            stable_atoms=3 if i < 3 else 0, input_stable=True, input_stable_atoms=3))
    for i in range(8):
        rmsd = 0.01 * (i + 1)
        records.append(dict(num_atoms=8, num_atoms_decoded=8, right_atoms=True, right_composition=True, rmsd=rmsd,
                            exact=i % 2 == 0, bonds_identical=i % 2 == 0, stable=True, stable_atoms=8,
                            input_stable=i > 0, input_stable_atoms=8 if i > 0 else 7))
    return records


def test_summary_rates_quantiles_and_sizes():
    errors = ReconstructionErrors.from_records(_records(), rmsd_threshold=0.1)
    s = reconstruction_summary(errors)
    json.dumps(s, allow_nan=False)
    assert s["num_structures"] == 12 and s["rmsd_threshold"] == 0.1
    assert s["right_atoms"] == pytest.approx(11 / 12) and s["exact"] == pytest.approx(6 / 12)
    assert s["bonds_identical"] == pytest.approx(7 / 12) and s["stable"] == pytest.approx(11 / 12)
    assert s["atom_stable"] == pytest.approx(73 / 75) and s["input_atom_stable"] == pytest.approx(75 / 76)
    finite = np.array([0.01, 0.05, 0.2] + [0.01 * (i + 1) for i in range(8)])
    assert s["rmsd"] == pytest.approx(dict(count=11, median=np.median(finite), mean=finite.mean(),
                                           q90=np.quantile(finite, 0.9), q99=np.quantile(finite, 0.99), max=0.2))
    assert list(s["by_size"]) == ["3", "8"]
    small, large = s["by_size"]["3"], s["by_size"]["8"]
    assert small["num_structures"] == 4 and small["exact"] == 0.5 and small["right_composition"] == 0.75
    assert small["rmsd"]["count"] == 3 and small["rmsd"]["max"] == 0.2
    assert small["atom_stable"] == pytest.approx(9 / 11)
    assert large["exact"] == 0.5 and large["rmsd"]["median"] == pytest.approx(0.045) and large["input_stable"] == 7 / 8
    assert set(large) == set(s) - {"by_size", "rmsd_threshold"}


def test_sizes_are_in_numeric_order_and_empty_rmsd_is_null():
    records = [dict(r, num_atoms=n) for r, n in zip(_records()[:4], [12, 3, 12, 9])]
    s = reconstruction_summary(ReconstructionErrors.from_records(records[3:], 0.1))
    assert s["rmsd"] == dict(count=0, median=None, mean=None, q90=None, q99=None, max=None)
    s = reconstruction_summary(ReconstructionErrors.from_records(records, 0.1))
    assert list(s["by_size"]) == ["3", "9", "12"]


def test_cat_and_select_keep_every_field():
    records = _records()
    whole = ReconstructionErrors.from_records(records, 0.1)
    parts = ReconstructionErrors.cat([ReconstructionErrors.from_records(records[:5], 0.1),
                                      ReconstructionErrors.from_records(records[5:], 0.1)])
    for name in ("rmsd", "exact", "stable_atoms", "input_stable", "num_atoms_decoded"):
        assert torch.equal(getattr(parts, name), getattr(whole, name))
    chosen = whole.select(whole.num_atoms == 3)
    assert len(chosen) == 4 and chosen.stable_atoms.tolist() == [3, 3, 3, 0] and chosen.rmsd_threshold == 0.1
    with pytest.raises(ValueError, match="no records"):
        ReconstructionErrors.cat([])


def test_residual_summary_says_how_well_the_residual_flags_exact_reconstructions():
    errors = ReconstructionErrors.from_records(_records(), rmsd_threshold=0.1)  # exact: 0, 1 and 4, 6, 8, 10
    residual = torch.tensor([0.01, 0.2, 0.01, math.inf, 0.0, 0.03, 0.04, 0.5, 0.3, 0.02, 0.01, 0.9], dtype=torch.float64)
    errors = dataclasses.replace(errors, residual=residual)
    s = reconstruction_summary(errors, residual_threshold=0.05)
    json.dumps(s, allow_nan=False)
    below = residual <= 0.05  # 0, 2, 4, 5, 6, 9, 10: of them 0, 4, 6, 10 exact; exact 1 and 8 above
    assert errors.exact.nonzero().flatten().tolist() == [0, 1, 4, 6, 8, 10] and int(below.sum()) == 7
    assert s["residual"] == pytest.approx(dict(threshold=0.05, median=float(np.median(residual[:3].tolist() + residual[4:].tolist())),
                                               below_threshold=7 / 12, exact_if_below=4 / 7, below_if_exact=4 / 6))
    assert s["by_size"]["3"]["residual"]["below_threshold"] == 0.5 and s["by_size"]["3"]["residual"]["exact_if_below"] == 0.5
    assert reconstruction_summary(errors, residual_threshold=1.0)["residual"]["below_if_exact"] == 1.0
    whole = ReconstructionErrors.cat([errors.select(torch.arange(12) < 5), errors.select(torch.arange(12) >= 5)])
    assert torch.equal(whole.residual, residual)
