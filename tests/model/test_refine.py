"""Refinement of a decoding through the encoder (geoae/model/_refine.py)."""

import dataclasses

import pytest
import torch
from ase.build import molecule
from torch_geometric.data import Batch

from geoae.data import tetris
from geoae.metrics import matched_rmsd
from geoae.model import (
    Autoencoder,
    Decoded,
    decoded_hierarchy,
    decoded_tree,
    feedback_latent,
    latent_residual,
    load,
    refine_decoding,
)
from tests.utils.equivariance import assert_equivariant_both_dtypes
from tests.utils.model import SMALL


def true_decoding(model: Autoencoder, batch: Batch) -> Decoded:
    """A "decoding" that is the encoder's own hierarchy of ``batch``: its atoms, levels and parents."""
    h = model.hierarchy(batch)
    levels = tuple((h.pos[level], h.batch[level]) for level in range(h.num_levels))
    return Decoded(h.pos[0], model._species_index[batch.z], h.batch[0], batch.num_graphs, levels, tuple(h.parent))


def test_decoded_tree_of_the_encoders_hierarchy_is_that_hierarchy():
    model = Autoencoder(**SMALL)
    batch = Batch.from_data_list(tetris(dtype=torch.float64))
    h = model.hierarchy(batch)
    parents, batches = decoded_tree(true_decoding(model, batch))
    assert len(parents) == h.num_levels and len(batches) == h.num_levels + 1
    for level in range(h.num_levels):
        assert torch.equal(parents[level], h.parent[level])
    for level in range(h.num_levels + 1):
        assert torch.equal(batches[level], h.batch[level])


def test_decoded_hierarchy_of_the_encoders_hierarchy_is_that_hierarchy():
    """The atoms pooled through the tree give back every level's points (centroids) and weights."""
    model = Autoencoder(**SMALL).double()
    batch = Batch.from_data_list(tetris(dtype=torch.float64))
    h = model.hierarchy(batch)
    pooled = decoded_hierarchy(true_decoding(model, batch))
    for level in range(h.num_levels + 1):
        torch.testing.assert_close(pooled.pos[level], h.pos[level], atol=1e-12, rtol=0)
        torch.testing.assert_close(pooled.weight[level], h.weight[level], atol=0, rtol=0)
        assert torch.equal(pooled.batch[level], h.batch[level])


def test_decoded_tree_drops_points_without_children():
    """Two atoms under points 0 and 2 of level 1; point 1 (no child) goes, point 2 becomes 1."""
    pos = torch.zeros(2, 3)
    decoded = Decoded(
        pos, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 1,
        levels=((pos, torch.zeros(2, dtype=torch.long)), (torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))),
        parents=(torch.tensor([0, 2]), torch.tensor([0, 0, 0])),
    )
    parents, batches = decoded_tree(decoded)
    assert [p.tolist() for p in parents] == [[0, 1], [0, 0]]
    assert [b.tolist() for b in batches] == [[0, 0], [0, 0], [0]]


def test_free_running_decoding_records_each_points_parent():
    model = load("tetris")
    batch = model.as_batch(tetris())
    with torch.no_grad():
        decoded = model.decode_tensors(model.encode(batch))
    assert len(decoded.parents) == model.num_levels
    above = [len(pos) for pos, _ in decoded.levels[1:]] + [decoded.num_structures]
    for level, parent in enumerate(decoded.parents):
        assert parent.shape == decoded.levels[level][1].shape
        assert int(parent.max()) < above[level]
        # a child belongs to its parent's structure
        parent_batch = decoded.levels[level + 1][1] if level + 1 < model.num_levels else torch.arange(decoded.num_structures)
        assert torch.equal(parent_batch[parent], decoded.levels[level][1])


def test_refining_the_true_structure_leaves_it_in_place():
    """The true atoms map onto their own latent: zero gradient, no step."""
    model = Autoencoder(**SMALL).double()
    batch = Batch.from_data_list(tetris(dtype=torch.float64))
    decoded = true_decoding(model, batch)
    with torch.no_grad():
        latent = model.encode(batch)
    refined = refine_decoding(model.encoder, latent, decoded, steps=20, lr=0.05)
    torch.testing.assert_close(refined.pos, decoded.pos, atol=1e-10, rtol=0)
    torch.testing.assert_close(refined.residual, torch.zeros(8, dtype=torch.float64), atol=1e-20, rtol=0)


def test_refining_moves_perturbed_tetris_back_with_the_shipped_model():
    """Atoms moved by 0.05 per coordinate come back much closer to the truth (the tree kept)."""
    model = load("tetris").double()
    batch = Batch.from_data_list(tetris(dtype=torch.float64))
    truth = true_decoding(model, batch)
    with torch.no_grad():
        latent = model.encode(batch)
    moved = Decoded(truth.pos + 0.05 * torch.randn(truth.pos.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                    truth.species, truth.batch, truth.num_structures, truth.levels, truth.parents)
    refined = refine_decoding(model.encoder, latent, moved, steps=100, lr=0.02)
    before = (moved.pos - truth.pos).pow(2).sum(1).mean().sqrt()
    after = (refined.pos - truth.pos).pow(2).sum(1).mean().sqrt()
    assert after < 0.3 * before, (float(before), float(after))
    residual_before, residual_after = latent_residual(model.encoder, latent, moved), refined.residual
    assert (residual_before > 0).all() and (residual_after < 0.1 * residual_before).all(), (residual_before, residual_after)


def test_residual_is_infinite_for_a_structure_decoded_to_no_atom():
    """One structure of two decoded to no atom, then both."""
    model = Autoencoder(**SMALL).double()
    batch = Batch.from_data_list(tetris(dtype=torch.float64)[:1])
    first = true_decoding(model, batch)
    two = Decoded(first.pos, first.species, first.batch, 2, first.levels, first.parents)  # structure 1: no atom
    with torch.no_grad():
        latent = torch.cat([model.encode(batch), torch.zeros(1, model.latent_irreps.dim, dtype=torch.float64)])
    residual = latent_residual(model.encoder, latent, two)
    assert float(residual[0]) < 1e-20 and residual[1] == float("inf")
    levels = tuple((pos[:0], level_batch[:0]) for pos, level_batch in first.levels)
    none = Decoded(first.pos[:0], first.species[:0], first.batch[:0], 2, levels, tuple(p[:0] for p in first.parents))
    infinite = torch.full((2,), float("inf"), dtype=torch.float64)
    assert torch.equal(latent_residual(model.encoder, latent, none), infinite)
    assert torch.equal(refine_decoding(model.encoder, latent, none, steps=2, lr=0.01).residual, infinite)
    assert torch.equal(feedback_latent(model.encoder, latent, none, 2.0), latent)


def test_feedback_latent_adds_what_the_decoding_misses_of_the_latent():
    """The latent itself for the true atoms and for a structure decoded to no atom; else the
    latent plus ``gain`` times its difference from the decoding's encoding, whose squared norm
    is the residual."""
    model = Autoencoder(**SMALL).double()
    batch = Batch.from_data_list(tetris(dtype=torch.float64)[:3])
    truth = true_decoding(model, batch)
    with torch.no_grad():
        latent = model.encode(batch)
    torch.testing.assert_close(feedback_latent(model.encoder, latent, truth, 5.0), latent, atol=1e-12, rtol=0)
    noise = 0.1 * torch.randn(truth.pos.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    moved = dataclasses.replace(truth, pos=truth.pos + noise, num_structures=4)  # structure 3: no atom
    latent = torch.cat([latent, torch.ones(1, latent.shape[1], dtype=torch.float64)])
    once, twice = (feedback_latent(model.encoder, latent, moved, gain) for gain in (1.0, 2.0))
    torch.testing.assert_close(twice - latent, 2 * (once - latent))
    torch.testing.assert_close((once - latent).pow(2).sum(dim=1)[:3], latent_residual(model.encoder, latent, moved)[:3])
    assert ((once - latent)[:3].norm(dim=1) > 1e-3).all() and torch.equal(once[3], latent[3])


def test_refined_decoding_of_shipped_tetris_is_closer():
    model = load("tetris")
    structures = tetris()
    batch = model.as_batch(structures)
    with torch.no_grad():
        latent = model.encode(batch)
        plain, refined = model.decode(latent), model.decode(latent, refine_steps=50)
    def rmsd(decoded):
        return torch.tensor([
            matched_rmsd(a.positions, a.numbers, (s.pos - s.pos.mean(0)).double().numpy(), s.z.numpy())
            for a, s in zip(decoded, structures)
        ])
    assert rmsd(refined).median() < 0.5 * rmsd(plain).median(), (rmsd(plain), rmsd(refined))


class _Refine(torch.nn.Module):
    """``(latent, pos, species logits) -> refined pos and logits`` on the tetris hierarchy's
    tree, for the equivariance check (a model of two species, so the logits move)."""

    def __init__(self):
        super().__init__()
        self.model = Autoencoder(**dict(SMALL, species=[6, 7]))
        batch = Batch.from_data_list(tetris(dtype=torch.get_default_dtype()))
        self.decoded = true_decoding(self.model, batch)

    def forward(self, latent, pos, logits):
        decoded = Decoded(pos, self.decoded.species, self.decoded.batch, self.decoded.num_structures,
                          self.decoded.levels, self.decoded.parents, species_logits=logits)
        out = refine_decoding(self.model.encoder, latent, decoded, steps=10, lr=0.05, species_lr=0.1)
        return out.pos, out.species_logits


def test_refining_is_equivariant():
    module = _Refine()
    latent = torch.randn(module.decoded.num_structures, module.model.latent_irreps.dim)
    pos = module.decoded.pos + 0.1 * torch.randn(module.decoded.pos.shape)
    logits = torch.randn(len(pos), 2)
    assert_equivariant_both_dtypes(
        _Refine, [latent, pos, logits], [module.model.latent_irreps, "1o", "2x0e"], ["1o", "2x0e"],
        tolerances={torch.float64: 1e-9, torch.float32: 1e-3},
    )


def test_refining_is_per_structure_and_permutation_equivariant():
    """Structures refine independently (batched equals one by one) and relabelling atoms
    within the tree relabels the result."""
    torch.manual_seed(0)
    model = Autoencoder(**SMALL).double()
    structures = tetris(dtype=torch.float64)
    batch = Batch.from_data_list(structures)
    truth = true_decoding(model, batch)
    latent = torch.randn(batch.num_graphs, model.latent_irreps.dim, dtype=torch.float64)
    truth = Decoded(truth.pos, truth.species, truth.batch, truth.num_structures, truth.levels, truth.parents,
                    species_logits=torch.randn(len(truth.pos), 1, dtype=torch.float64))
    together = refine_decoding(model.encoder, latent, truth, steps=10, lr=0.05, species_lr=0.1).pos
    for i, s in enumerate(structures):
        one = Batch.from_data_list([s])
        alone = refine_decoding(model.encoder, latent[i : i + 1], dataclasses.replace(
            true_decoding(model, one), species_logits=truth.species_logits[truth.batch == i]), steps=10, lr=0.05, species_lr=0.1).pos
        torch.testing.assert_close(alone, together[truth.batch == i], atol=1e-10, rtol=0)
    perm = torch.randperm(len(truth.pos))
    perm = perm[torch.argsort(truth.batch[perm], stable=True)]  # atoms stay sorted by structure
    permuted = Decoded(truth.pos[perm], truth.species[perm], truth.batch[perm], truth.num_structures,
                       ((truth.pos[perm], truth.batch[perm]),) + truth.levels[1:], (truth.parents[0][perm],) + truth.parents[1:],
                       species_logits=truth.species_logits[perm])
    moved = refine_decoding(model.encoder, latent, permuted, steps=10, lr=0.05, species_lr=0.1).pos
    torch.testing.assert_close(moved, together[perm], atol=1e-10, rtol=0)


@pytest.mark.parametrize("steps", [0, 3])
def test_decode_tensors_refines_only_when_asked(steps):
    model = load("tetris")
    batch = model.as_batch(tetris()[:2])
    with torch.no_grad():
        latent = model.encode(batch)
        plain, out = model.decode_tensors(latent), model.decode_tensors(latent, refine_steps=steps)
    assert torch.equal(out.species, plain.species) and torch.equal(out.batch, plain.batch)
    assert torch.equal(out.pos, plain.pos) == (steps == 0)
    assert torch.equal(out.levels[0][0], out.pos)
    assert (out.residual is None) == (steps == 0)
    if steps:
        assert out.residual.shape == (2,) and (out.residual >= 0).all()


@pytest.mark.parametrize("name", ["CH3OH", "CH3CN"])
def test_relaxing_species_puts_right_a_wrong_species(name):
    """A molecule's atoms in place but its heteroatom's species leaning wrong (logits favour
    fluorine): relaxing the species with the shipped model gives every species back, and the
    residual falls to near zero; keeping them (species_lr=0) leaves it wrong."""
    model = load("qm9").double()
    batch = model.as_batch([molecule(name)])
    truth = true_decoding(model, batch)
    with torch.no_grad():
        latent = model.encode(batch)
    hetero = int((batch.z > 6).nonzero()[0])
    logits = 3.0 * torch.nn.functional.one_hot(truth.species, len(model.species)).double()
    logits[hetero] = torch.tensor([0.0, 0.0, 1.0, 1.0, 2.0], dtype=torch.float64)[: len(model.species)]  # H C N O F: F first
    wrong = dataclasses.replace(truth, species=logits.argmax(dim=-1), species_logits=logits)
    kept = refine_decoding(model.encoder, latent, wrong, steps=100, lr=0.0, species_lr=0.0)
    relaxed = refine_decoding(model.encoder, latent, wrong, steps=100, lr=0.0, species_lr=0.1)
    assert not torch.equal(kept.species, truth.species)
    assert torch.equal(relaxed.species, truth.species)
    assert float(relaxed.residual[0]) < 0.01 * float(kept.residual[0]), (relaxed.residual, kept.residual)


def test_refining_with_gradients_enabled_keeps_no_graph():
    model = Autoencoder(**SMALL).double()
    batch = Batch.from_data_list(tetris(dtype=torch.float64)[:2])
    truth = true_decoding(model, batch)
    latent = torch.randn(2, model.latent_irreps.dim, dtype=torch.float64)
    out = refine_decoding(model.encoder, latent, truth, steps=3, lr=0.05)
    assert not out.pos.requires_grad and out.pos.grad_fn is None and not out.residual.requires_grad
