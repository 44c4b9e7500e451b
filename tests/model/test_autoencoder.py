"""The autoencoder through the model-test mixin, plus its own checks."""

import importlib.util

import ase
import numpy as np
import pytest
import torch
from ase.build import molecule
from e3nn import o3

from geoae.data import tetris
from geoae.metrics import matched_rmsd
from geoae.model import PRETRAINED, Autoencoder, build_hierarchy, load, merge_duplicates, save
from tests.utils.equivariance import default_dtype
from tests.utils.model import SMALL, ModelTests


class TestAutoencoder(ModelTests):
    def make_model(self):
        return Autoencoder(**SMALL)

    def make_structures(self, dtype):
        return tetris(dtype=dtype)


def test_hierarchy_pools_tetris_to_one_point_each():
    structures = tetris(dtype=torch.float64)
    from torch_geometric.data import Batch

    batch = Batch.from_data_list(structures)
    h = build_hierarchy(batch.pos, batch.batch, num_levels=2, ratio=0.5)
    assert h.pos[-1].shape == (8, 3)
    torch.testing.assert_close(h.pos[-1], torch.stack([s.pos.mean(0) for s in structures]))
    assert torch.equal(h.weight[-1], torch.full((8,), 4.0, dtype=torch.float64))


def test_merge_duplicates_is_transitive_and_per_structure():
    pos = torch.tensor([[0.0, 0, 0], [0.2, 0, 0], [0.4, 0, 0], [0.0, 0, 0.1], [5, 0, 0]])
    batch = torch.tensor([0, 0, 0, 1, 1])
    label, num = merge_duplicates(pos, batch, radius=0.25)
    assert label.tolist() == [0, 0, 0, 1, 2] and num == 3


def test_signal_lmax_beyond_quadratic_reach_is_refused():
    with pytest.raises(ValueError, match="signal_lmax=6 exceeds 2 \\* lmax = 4"):
        Autoencoder(species=[6], max_atoms=4, lmax=2, signal_lmax=6)


@pytest.mark.parametrize(
    "atoms, message",
    [
        (ase.Atoms("C5", positions=[[i, 0, 0] for i in range(5)]), "5 atoms, more than the model's max_atoms=4"),
        (ase.Atoms("N", positions=[[0, 0, 0]]), "atomic numbers \\[7\\] are not among the model's species \\[6\\]"),
        (ase.Atoms("C2", positions=[[0, 0, 0], [0, 0, 0]]), "atoms 0 and 1 are at the same position"),
    ],
)
def test_bad_structures_are_refused_with_reason(atoms, message):
    with pytest.raises(ValueError, match=message):
        Autoencoder(**SMALL).encode([atoms])


@pytest.mark.parametrize("n", [1, 2, 3])
def test_small_and_collinear_structures_encode(n):
    model = Autoencoder(**SMALL)
    z = model.encode([ase.Atoms(f"C{n}", positions=[[0, 0, 1.3 * i] for i in range(n)])])
    assert z.shape == (1, model.latent_irreps.dim) and torch.isfinite(z).all()


@pytest.mark.parametrize(
    "latent, message",
    [
        (torch.zeros(2, 7), "latent must have shape \\(B, "),
        (torch.zeros(2), "latent must have shape \\(B, "),
        (torch.zeros(2, 50, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_latents_are_refused(latent, message):
    model = Autoencoder(**SMALL)
    if latent.dim() == 2 and latent.shape[1] == 50:
        latent = torch.zeros(2, model.latent_irreps.dim, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        model.decode(latent)


def test_loading_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("hello")
    with pytest.raises(ValueError, match="notes.ckpt: not a geoae checkpoint"):
        load(path)
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="other.ckpt: not a geoae checkpoint"):
        load(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match="missing.ckpt: no such checkpoint"):
        load(tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match=r"qm8: no such checkpoint file, and not a pretrained model; pretrained models: \['qm9', 'tetris'\]"):
        load("qm8")


def test_save_then_load_gives_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = Autoencoder(**SMALL)
    for p in model.parameters():  # zero-initialised weights too, so no check passes on zeros
        torch.nn.init.normal_(p, std=0.1)
    save(model, tmp_path / "model.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left
    again = load(tmp_path / "model.pt")
    structures = tetris()
    assert torch.equal(again.encode(structures), model.encode(structures))


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_pretrained_models_load_by_name_and_decode(name):
    model = load(name)
    if name == "tetris":
        structures = tetris()
    else:
        assert (model.species, model.max_atoms, model.cluster) == ([1, 6, 7, 8, 9], 29, "ward")
        structures = [molecule(formula) for formula in ("CH4", "H2O", "CH3OH", "C6H6")]
    decoded = model.reconstruct(structures)
    assert len(decoded) == len(structures)
    if name == "tetris":  # the shipped tetris model reconstructs every shape
        for data, atoms in zip(structures, decoded):
            assert len(atoms) == data.num_nodes
            assert matched_rmsd(atoms.positions, atoms.numbers, data.pos.double().numpy(), data.z.numpy()) < 0.05
    else:  # (the shipped QM9 model reconstructs few molecules exactly: README gives its figures)
        rotation = o3.angles_to_matrix(*torch.tensor([0.3, 1.1, -2.0], dtype=torch.float64))
        rotated = structures[2].copy()
        rotated.positions = rotated.positions @ rotation.numpy().T
        D = model.latent_irreps.D_from_matrix(rotation.float())
        torch.testing.assert_close(model.encode([rotated]), model.encode([structures[2]]) @ D.T, atol=1e-4, rtol=1e-4)


def test_pretrained_qm9_refuses_what_it_was_not_trained_on():
    model = load("qm9")
    with pytest.raises(ValueError, match=r"structure 0: atomic numbers \[16\] are not among the model's species"):
        model.encode([molecule("CH3SH")])
    with pytest.raises(ValueError, match="structure 0: 30 atoms, more than the model's max_atoms=29"):
        model.encode([ase.Atoms("C10H20", positions=[[1.6 * (i % 5), 1.6 * (i // 5), 0] for i in range(30)])])


def test_latent_has_both_parities_and_mirror_images_differ_in_invariants():
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        model = Autoencoder(**SMALL)
    assert {ir.p for _, ir in model.latent_irreps} == {1, -1}
    z = model.encode(tetris(mirror=True, dtype=torch.float64)[:2])  # chiral_1 and its mirror image
    D = model.latent_irreps.D_from_matrix(-torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(z[1], D @ z[0], atol=1e-9, rtol=0)
    pseudo = torch.cat([torch.zeros(mul * ir.dim, dtype=torch.bool) if ir.p == (-1) ** ir.l else torch.ones(mul * ir.dim, dtype=torch.bool) for mul, ir in model.latent_irreps])
    assert z[0][pseudo].abs().max() > 1e-6  # pseudotensor channels are used, and flip sign
    assert o3.Irreps(model.latent_irreps).dim == z.shape[1]


def _random_molecules(num: int, num_atoms: int, seed: int = 0) -> list[ase.Atoms]:
    """``num`` random structures of ``num_atoms`` H/C/N/O atoms at least 1 A apart."""
    generator = torch.Generator().manual_seed(seed)
    molecules = []
    while len(molecules) < num:
        pos = 4 * torch.rand(num_atoms, 3, generator=generator, dtype=torch.float64)
        if torch.pdist(pos).min() > 1.0 or num_atoms == 1:
            numbers = torch.tensor([1, 6, 7, 8])[torch.randint(4, (num_atoms,), generator=generator)]
            molecules.append(ase.Atoms(numbers=numbers.numpy(), positions=pos.numpy()))
    return molecules


def test_deep_model_keeps_its_features_and_loss_in_scale_at_initialisation():
    # five levels (29 atoms): unscaled residuals grew the features ~1.5x per block, 250x after
    # the 21 blocks, and the loss at initialisation was ~1e5
    torch.manual_seed(0)
    model = Autoencoder(
        species=[1, 6, 7, 8], max_atoms=29, lmax=1, mul=4, latent_lmax=1, latent_mul=4, signal_lmax=2, cluster="ward"
    )
    assert model.num_levels == 5
    terms = model.loss(model.as_batch(_random_molecules(4, 12)))
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["loss"] < 50, {k: float(v) for k, v in terms.items()}


def test_free_running_decoding_of_an_untrained_model_stays_bounded():
    torch.manual_seed(0)
    model = Autoencoder(
        species=[1, 6], max_atoms=8, lmax=1, mul=4, latent_lmax=1, latent_mul=4, signal_lmax=2, cluster="ward"
    )
    latent = 30 * torch.randn(6, model.latent_irreps.dim)  # far off any trained latent
    decoded = model.decode_tensors(latent)
    assert decoded.pos.shape[0] > 0
    assert torch.bincount(decoded.batch, minlength=6).max() <= 2 * model.max_atoms


def test_cluster_method_is_checked_at_construction():
    with pytest.raises(ValueError, match="valid methods: \\['auto', 'exact', 'ward'\\]"):
        Autoencoder(**dict(SMALL, cluster="kmeans"))
    with pytest.raises(ValueError, match="at most 10 points per structure, not 29"):
        Autoencoder(**dict(SMALL, max_atoms=29, cluster="exact"))
    assert Autoencoder(**dict(SMALL, max_atoms=29)).cluster == "ward"  # auto
    assert Autoencoder(**SMALL).cluster == "exact"


def test_child_count_is_checked_at_construction():
    with pytest.raises(ValueError, match="unknown child_count='sum'; valid: 'integral': .*; 'peaks': "):
        Autoencoder(**dict(SMALL, child_count="sum"))
    with pytest.raises(ValueError, match="unknown child_count='sum'"):
        load("tetris", child_count="sum")


def test_child_count_rules_agree_on_the_shipped_tetris_model_and_differ_on_qm9():
    latent = load("tetris").encode(tetris())
    integral, peaks = (load("tetris", child_count=rule).decode_tensors(latent) for rule in ("integral", "peaks"))
    assert load("tetris").decoder.child_count == "integral"  # the default, for checkpoints that name none
    assert torch.equal(integral.species, peaks.species) and torch.equal(integral.batch, peaks.batch)
    torch.testing.assert_close(integral.pos, peaks.pos, atol=1e-5, rtol=0)  # round-off: frames from other batches
    # the QM9 model's blurred signals: thresholds lose children that the integral counts
    structures = [molecule(formula) for formula in ("CH3OH", "C6H6", "CH3CH2OH", "CH3COOH")]
    latent = load("qm9").encode(structures)
    counts = {rule: len(load("qm9", child_count=rule).decode_tensors(latent).pos) for rule in ("integral", "peaks")}
    assert counts["integral"] > counts["peaks"]


def qm9_test_molecules(num: int) -> list[ase.Atoms]:
    """The first ``num`` molecules of QM9's test split (DFT geometries: no exact symmetry)."""
    from geoae.data import QM9DataModule, to_atoms

    test_set = QM9DataModule(batch_size=num).test_set
    return [to_atoms(test_set[i])[0] for i in range(num)]


def moved_round_trips(model, structures, matrix, shift, **options):
    """Per structure, ``R decode(encode(x), **options)`` and ``decode(encode(R x + t), **options)``
    (options: :meth:`Autoencoder.decode`'s refinement), both centred."""
    moved = [atoms.copy() for atoms in structures]
    for atoms in moved:
        atoms.positions = atoms.positions @ matrix.numpy().T + shift
    with torch.no_grad():
        first = model.decode(model.encode(structures), **options)
        second = model.decode(model.encode(moved), **options)
    for atoms in first:
        atoms.positions = atoms.positions @ matrix.numpy().T
    return first, second


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason='needs qm9pack (pip install "geoae[qm9]")')
# float32: round-off of ~1e-6 in the latent moves a decoded atom by up to ~0.02 A (measured)
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-8), (torch.float32, 0.05)], ids=["float64", "float32"])
@pytest.mark.parametrize("parity", [1, -1], ids=["rotation", "rotoinversion"])
def test_shipped_qm9_round_trip_is_equivariant_as_point_sets(parity, dtype, tolerance):
    """decode(encode(R x + t)) = R decode(encode(x)) for QM9 test molecules: the decoder's
    discrete choices (children counted, peaks found on a grid, duplicates merged) follow the
    molecule's orientation. (A molecule with an exact symmetry whose decoding breaks it, which
    its signals allow, breaks it one way or another as round-off decides: docs/sphere.md.)"""
    with default_dtype(dtype):
        model = load("qm9")
        q = torch.tensor([0.5, -0.3, 0.7, 0.4], dtype=torch.float64)
        matrix = parity * o3.quaternion_to_matrix(q / q.norm())
    structures = qm9_test_molecules(64)
    first, second = moved_round_trips(model, structures, matrix, shift=[1.0, -2.0, 0.5])
    assert sum(len(a) for a in first) > 64 * 10  # whole molecules decoded, not a trivial pass
    for i, a, b in zip(range(len(first)), first, second):
        assert matched_rmsd(a.positions, a.numbers, b.positions, b.numbers) < tolerance, f"test molecule {i}"


def test_encoder_reads_species_as_indices_or_as_weights():
    """One-hot weights give the indices' latent; mixed weights mix the species' embeddings."""
    model = Autoencoder(**dict(SMALL, species=[1, 6], max_atoms=5)).double()
    batch = model.as_batch([molecule("CH4")])
    hierarchy, species = model.hierarchy(batch), model._species_index[batch.z]
    onehot = torch.nn.functional.one_hot(species, 2).double()
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(onehot, hierarchy), model.encoder(species, hierarchy), atol=1e-12, rtol=0)
        mixed = model.encoder(0.5 * torch.ones(5, 2, dtype=torch.float64), hierarchy)
    assert not torch.allclose(mixed, model.encoder(species, hierarchy))


@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None, reason='needs qm9pack (pip install "geoae[qm9]")')
@pytest.mark.parametrize(
    "candidates, screen_steps, rounds, feedback_rounds",
    [(1, 50, 0, 0), (3, 50, 0, 0), (3, 4, 0, 0), (1, 50, 1, 0), (1, 50, 0, 1)],
    ids=["one", "all-refined", "screened", "round", "feedback-round"],
)
def test_shipped_qm9_refined_round_trip_is_equivariant_as_point_sets(candidates, screen_steps, rounds, feedback_rounds):
    """Refined decoding (positions and species; with candidates, the one of smallest residual,
    every candidate refined fully or screened first; with a round, the atoms decoded again from
    the refined tree; with a feedback round, decoded again reading the feedback latent) keeps
    decode(encode(R x + t)) = R decode(encode(x))."""
    with default_dtype(torch.float64):
        model = load("qm9")
        q = torch.tensor([0.2, 0.9, -0.3, 0.1], dtype=torch.float64)
        matrix = -o3.quaternion_to_matrix(q / q.norm())
    structures = qm9_test_molecules(16)
    options = dict(refine_steps=10, candidates=candidates, screen_steps=screen_steps, rounds=rounds, feedback_rounds=feedback_rounds)
    first, second = moved_round_trips(model, structures, matrix, [0.5, 1.0, -1.5], **options)
    plain = model.decode(model.encode(structures))
    decoded = model.decode(model.encode(structures), **options)
    assert any(len(a) != len(b) or not np.allclose(a.positions, b.positions) for a, b in zip(decoded, plain))
    for i, a, b in zip(range(len(first)), first, second):
        assert a.get_chemical_formula() == b.get_chemical_formula(), f"test molecule {i}"
        assert matched_rmsd(a.positions, a.numbers, b.positions, b.numbers) < 1e-8, f"test molecule {i}"
