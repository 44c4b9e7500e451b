"""evaluate_molecules: free-running reconstruction of molecules, summary, records and figures."""

import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from torch_geometric.loader import DataLoader
from torch_geometric.utils import scatter

from geoae.data import StructureDataModule, from_atoms, tetris
from geoae.evaluation import evaluate_molecules, free_running_level_errors, level_errors, reconstruct_molecules
from geoae.model import Autoencoder, BloomPrediction, Decoded, load
from geoae.sphere import project

NAMES = ["CH4", "H2O", "NH3", "C2H2", "HCN"]  # 5, 3, 4, 4, 3 atoms
SUMMARY_KEYS = {"num_structures", "rmsd_threshold", "right_atoms", "right_composition", "bonds_identical", "exact",
                "stable", "atom_stable", "input_stable", "input_atom_stable", "rmsd", "by_size"}
RMSD_KEYS = {"count", "median", "mean", "q90", "q99", "max"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = Autoencoder(species=[1, 6, 7, 8, 9], max_atoms=5, lmax=1, mul=2, latent_lmax=1, latent_mul=2, signal_lmax=2)
    with torch.no_grad():  # draw zero-initialised heads at random, so that the decoder decodes something
        for parameter in model.parameters():
            if parameter.numel() and not parameter.any():
                parameter.normal_()
    return model


@pytest.fixture
def molecules():
    return [molecule(name) for name in NAMES]


def test_random_model_runs_and_report_has_the_documented_keys(model, molecules, tmp_path):
    summary = evaluate_molecules(model, molecules, output_dir=tmp_path, batch_size=2, num_examples=3, progress=False)
    assert set(summary) == SUMMARY_KEYS | {"teacher_forced", "free_running"} and set(summary["rmsd"]) == RMSD_KEYS
    for diagnosis in ("teacher_forced", "free_running"):
        assert [level["level"] for level in summary[diagnosis]["levels"]] == list(reversed(range(model.num_levels)))
    assert summary["num_structures"] == 5 and summary["input_stable"] == 1.0 and summary["input_atom_stable"] == 1.0
    assert {k: v["num_structures"] for k, v in summary["by_size"].items()} == {"3": 2, "4": 2, "5": 1}
    assert set(summary["by_size"]["4"]) == SUMMARY_KEYS - {"by_size", "rmsd_threshold"}
    written = json.loads((tmp_path / "molecules.json").read_text())
    assert written["summary"] == summary
    assert written["records"]["num_atoms"] == [5, 3, 4, 4, 3] and len(written["records"]["exact"]) == 5
    for name in ("molecules_by_size.png", "molecules_rmsd.png", "molecules_examples.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def _fake_decoder(monkeypatch, model, shift=0.0, residual=None):
    """Make ``model`` decode each input exactly (centred, atoms in reverse order), plus ``shift``;
    ``residual``: give each structure this residual, as refinement does."""
    seen = {}

    def encode(batch):
        seen["batch"] = batch
        return torch.zeros(batch.num_graphs, model.latent_irreps.dim)

    def decode_tensors(latent, **options):
        for name, value in options.items():
            seen.setdefault(name, []).append(value)
        batch = seen["batch"]
        mean = scatter(batch.pos, batch.batch, dim=0, reduce="mean")
        pos = batch.pos - mean[batch.batch] + torch.tensor([shift, 0.0, 0.0], dtype=batch.pos.dtype)
        order = torch.from_numpy(np.lexsort((-np.arange(batch.num_nodes), batch.batch.numpy())))
        return Decoded(pos[order], model._species_index[batch.z][order], batch.batch[order], batch.num_graphs,
                       residual=None if residual is None else torch.full((batch.num_graphs,), residual))

    monkeypatch.setattr(model, "encode", encode)
    monkeypatch.setattr(model, "decode_tensors", decode_tensors)
    return seen


@pytest.mark.parametrize("wrap", ["atoms", "data", "loader", "datamodule"])
def test_perfect_decoder_is_exact_whatever_the_input_form(model, molecules, monkeypatch, wrap):
    _fake_decoder(monkeypatch, model)
    for atoms in molecules:
        atoms.positions += np.random.default_rng(0).normal(size=3) * 5  # off the origin: the input is centred
    data = [from_atoms(a) for a in molecules]
    if wrap == "datamodule":
        dm = StructureDataModule(train=data, val=data, species=model.species, max_atoms=5, batch_size=2)
        summary = evaluate_molecules(model, datamodule=dm, progress=False)
    else:
        source = {"atoms": molecules, "data": data, "loader": DataLoader(data, batch_size=2)}[wrap]
        summary = evaluate_molecules(model, source, batch_size=3, progress=False)
    assert summary["num_structures"] == 5
    assert summary["exact"] == summary["bonds_identical"] == summary["right_composition"] == 1.0
    assert summary["rmsd"]["max"] < 1e-5


def test_shifted_decoder_is_never_exact(model, molecules, monkeypatch):
    _fake_decoder(monkeypatch, model, shift=0.2)
    errors, examples = reconstruct_molecules(model, molecules, batch_size=4, num_examples=2, progress=False)
    assert errors.exact.tolist() == [False] * 5 and errors.bonds_identical.all()
    assert errors.rmsd.numpy() == pytest.approx(0.2, abs=1e-5)
    assert [a.get_chemical_formula() for a, _ in examples] == ["CH4", "H2O"]
    original, decoded = examples[1]
    assert np.allclose(decoded.positions[::-1] - original.positions, [0.2, 0, 0], atol=1e-5)


def test_needs_data_or_datamodule(model):
    with pytest.raises(ValueError, match="needs data or a datamodule"):
        evaluate_molecules(model)


def test_split_chooses_the_datamodules_structures(model, molecules):
    data = [from_atoms(a) for a in molecules]
    dm = StructureDataModule(train=data, val=data[:2], test=data[2:], species=model.species, max_atoms=5, batch_size=2)
    sizes = {split: evaluate_molecules(model, datamodule=dm, split=split, diagnose=0, progress=False)["num_structures"]
             for split in ("train", "val", "test")}
    assert sizes == {"train": 5, "val": 2, "test": 3}
    with pytest.raises(ValueError, match=r"unknown split='valid'; valid: \['test', 'val', 'train'\]"):
        evaluate_molecules(model, datamodule=dm, split="valid")


@pytest.mark.parametrize("signal_lmax", [4, 6])
def test_level_errors_of_perfect_predictions_are_zero(molecules, monkeypatch, signal_lmax):
    # lmax 2 resolves only children more than 85 degrees apart: too coarse for these molecules
    model = Autoencoder(species=[1, 6, 7, 8, 9], max_atoms=5, lmax=signal_lmax // 2, mul=2, latent_lmax=1, latent_mul=2,
                        signal_lmax=signal_lmax)

    def perfect(latent, hierarchy):  # each level predicts exactly its true children
        predictions = []
        for level in reversed(range(hierarchy.num_levels)):
            parent = hierarchy.parent[level]
            offset = hierarchy.pos[level] - hierarchy.pos[level + 1][parent]
            is_centre = offset.norm(dim=1) < model.min_radius
            num_parents = hierarchy.pos[level + 1].shape[0]
            signal = project(offset[~is_centre], parent[~is_centre], num_parents, model.signal_lmax)
            logit = torch.full((num_parents,), -5.0, dtype=offset.dtype)
            logit[parent[is_centre]] = 5.0
            vector = torch.zeros(num_parents, 3, dtype=offset.dtype)
            vector[parent[is_centre]] = offset[is_centre]
            predictions.append(BloomPrediction(level, signal, logit, vector))
        return predictions, torch.nn.functional.one_hot(model._species_index[hierarchy_z["z"]], 5).double()

    hierarchy_z = {}
    batch = model.as_batch(molecules)
    hierarchy_z["z"] = batch.z
    monkeypatch.setattr(model.decoder, "teacher_forced", perfect)
    report = level_errors(model, [batch])
    assert report["species_accuracy"] == 1.0 and report["structures_species_right"] == 1.0
    present = {str(z) for z in batch.z.tolist()}
    assert report["species_recall"] == {str(z): 1.0 if str(z) in present else None for z in model.species}
    assert [level["right_count"] for level in report["levels"]] == [1.0] * model.num_levels
    assert all(level["child_error_q90"] < 1e-3 and level["child_error_under_0.1"] == 1.0 for level in report["levels"])
    by_species = report["levels"][-1]["child_error_by_species"]  # the atoms' level
    atoms = model.hierarchy(batch).pos[0].shape[0]
    assert set(by_species) == present and sum(figures["atoms"] for figures in by_species.values()) == atoms
    assert all(figures["q90"] < 1e-3 and figures["under_0.1"] == 1.0 for figures in by_species.values())
    assert sum(level["parents"] for level in report["levels"]) == sum(len(p) for p in model.hierarchy(batch).pos[1:])


def test_free_running_levels_of_the_shipped_tetris_model_follow_its_hierarchy():
    model = load("tetris")
    structures = [model.as_batch(tetris())]
    report = free_running_level_errors(model, structures)
    assert [level["level"] for level in report["levels"]] == list(reversed(range(model.num_levels)))
    for level in report["levels"]:  # it reconstructs every shape: each level lands on the hierarchy's points
        assert level["structures"] == 8 and level["right_count"] == 1.0
        assert level["rmsd_q90"] < 0.05 and level["rmsd_under_0.1"] == 1.0
    untrained = Autoencoder(species=[6], max_atoms=4, lmax=2, mul=4, latent_lmax=2, latent_mul=4, signal_lmax=4)
    report = free_running_level_errors(untrained, [untrained.as_batch(tetris())])
    assert report["levels"][-1]["right_count"] < 1.0  # an untrained model does not: the check can fail


def test_level_errors_count_species_per_element_and_per_structure(molecules, monkeypatch):
    model = Autoencoder(species=[1, 6, 7, 8, 9], max_atoms=5, lmax=1, mul=2, latent_lmax=1, latent_mul=2, signal_lmax=2)
    batch = model.as_batch(molecules)
    species = model._species_index[batch.z]
    teacher_forced = model.decoder.teacher_forced

    def first_atom_wrong(latent, hierarchy):  # every species right but the first atom's (of structure 0)
        predictions, _ = teacher_forced(latent, hierarchy)
        predicted = species.clone()
        predicted[0] = (species[0] + 1) % len(model.species)
        return predictions, torch.nn.functional.one_hot(predicted, len(model.species)).double()

    monkeypatch.setattr(model.decoder, "teacher_forced", first_atom_wrong)
    report = level_errors(model, [batch])
    assert report["structures_species_right"] == (batch.num_graphs - 1) / batch.num_graphs
    assert report["species_accuracy"] == (batch.num_nodes - 1) / batch.num_nodes
    z0 = str(batch.z[0].item())
    atoms_z0 = int((batch.z == batch.z[0]).sum())
    assert report["species_recall"][z0] == (atoms_z0 - 1) / atoms_z0
    assert all(r == 1.0 for z, r in report["species_recall"].items() if z != z0 and r is not None)


def test_every_refinement_option_reaches_every_decoding(model, molecules, monkeypatch):
    seen = _fake_decoder(monkeypatch, model)
    options = dict(refine_steps=7, candidates=3, screen_steps=4, rounds=2, settled=0.02, feedback_rounds=1, feedback=0.5)
    evaluate_molecules(model, molecules, batch_size=2, progress=False, diagnose=0, **options)
    for name, value in options.items():
        assert seen[name] == [value] * 3, name  # 5 molecules, batches of 2


def test_refined_decodings_write_their_residuals_and_how_well_they_flag_exact_ones(model, molecules, monkeypatch, tmp_path):
    _fake_decoder(monkeypatch, model, shift=0.2, residual=0.03)  # confident, yet never exact
    summary = evaluate_molecules(model, molecules, output_dir=tmp_path, batch_size=2, progress=False, diagnose=0,
                                 refine_steps=5, residual_threshold=0.05)
    assert summary["residual"] == pytest.approx(dict(threshold=0.05, median=0.03, below_threshold=1.0, exact_if_below=0.0,
                                                     below_if_exact=None))
    assert json.loads((tmp_path / "molecules.json").read_text())["records"]["residual"] == pytest.approx([0.03] * 5)
    assert evaluate_molecules(model, molecules, progress=False, diagnose=0, refine_steps=5, residual_threshold=0.01)["residual"][
        "below_threshold"] == 0.0
