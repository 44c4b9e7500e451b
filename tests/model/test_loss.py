"""The teacher-forced training loss: its terms, weights, noise and species balance."""

import torch

from geoae.data import tetris
from geoae.model import Autoencoder, moved_hierarchy
from geoae.sphere import project
from tests.utils.model import SMALL


def test_position_noise_moves_what_the_decoder_sees_and_nothing_else():
    torch.manual_seed(0)
    model = Autoencoder(**SMALL)
    batch = model.as_batch(tetris())
    clean = model.loss(batch)
    assert all(torch.equal(clean[k], v) for k, v in model.loss(batch, position_noise=0.0).items())
    tiny = model.loss(batch, position_noise=1e-9)  # continuous: centre children are decided on the true hierarchy
    assert all(torch.allclose(tiny[k], v, atol=1e-5) for k, v in clean.items())
    noisy = model.loss(batch, position_noise=0.1)
    assert noisy["loss"].isfinite() and not torch.allclose(noisy["signal"], clean["signal"])
    noisy["loss"].backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.decoder.parameters() if p.requires_grad)


def test_moved_noise_grows_by_level_from_the_roots_down():
    torch.manual_seed(0)
    model = Autoencoder(**SMALL)
    hierarchy = model.hierarchy(model.as_batch(tetris() * 64))
    moved = moved_hierarchy(hierarchy, 0.1, growth=2.0)
    top = hierarchy.num_levels - 1
    for level, (pos, seen) in enumerate(zip(hierarchy.pos, moved.pos)):
        if level == hierarchy.num_levels:  # the roots stay
            assert torch.equal(seen, pos)
            continue
        std = (seen - pos).std()  # over at least 64 * 8 points' coordinates
        assert abs(std / (0.1 * 2.0 ** (top - level)) - 1) < 0.15, (level, std)
    assert moved.parent is hierarchy.parent and moved.weight is hierarchy.weight


def test_count_loss_is_the_squared_error_of_each_signals_children_count():
    torch.manual_seed(0)
    model = Autoencoder(**SMALL)
    batch = model.as_batch(tetris())
    hierarchy = model.hierarchy(batch)
    latent = model.encoder(model._species_index[batch.z], hierarchy)
    predictions, _ = model.decoder.teacher_forced(latent, hierarchy)
    expected = 0.0
    for p in predictions:  # the count as count_vectors reads it, before rounding, against the true non-centre children
        parent = hierarchy.parent[p.level]
        is_centre = (hierarchy.pos[p.level] - hierarchy.pos[p.level + 1][parent]).norm(dim=1) < model.min_radius
        true = torch.bincount(parent[~is_centre], minlength=p.signal.shape[0])
        read = p.signal[:, 0, 0] / project(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([0]), 1, model.signal_lmax)[0, 0, 0]
        expected = expected + (read - true).pow(2).mean()
    plain, weighted = model.loss(batch), model.loss(batch, count_weight=3.0)
    torch.testing.assert_close(plain["count"], expected)
    torch.testing.assert_close(weighted["loss"], plain["loss"] + 3.0 * expected)
    assert all(torch.equal(plain[k], weighted[k]) for k in plain if k != "loss")
    weighted["loss"].backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.decoder.blooms.parameters())


def test_species_weight_scales_only_the_species_term():
    torch.manual_seed(0)
    model = Autoencoder(**dict(SMALL, species=[1, 6]))
    batch = model.as_batch(tetris())
    batch.z[::2] = 1  # two species, so the species cross-entropy is not zero
    plain, weighted = model.loss(batch), model.loss(batch, species_weight=3.0)
    assert plain["species"] > 0
    torch.testing.assert_close(weighted["loss"], plain["loss"] + 2.0 * plain["species"])
    assert all(torch.equal(plain[k], weighted[k]) for k in plain if k != "loss")


def test_species_balance_weighs_each_atom_by_its_species_share():
    torch.manual_seed(0)
    model = Autoencoder(**dict(SMALL, species=[1, 6, 8]))
    batch = model.as_batch(tetris())
    batch.z[:] = 6
    batch.z[:5] = 1  # shares: H 5/N, C the rest, O absent
    species = model._species_index[batch.z]
    plain, balanced = model.loss(batch), model.loss(batch, species_balance=0.5)
    # the per-atom cross-entropy, as the loss computes it (same seed, no noise: same logits)
    logits = model.decoder.teacher_forced(model.encoder(species, model.hierarchy(batch)), model.hierarchy(batch))[1]
    per_atom = torch.nn.functional.cross_entropy(logits, species, reduction="none")
    share = torch.bincount(species, minlength=3).float() / species.numel()
    weight = share[species].pow(-0.5)
    torch.testing.assert_close(plain["species"], per_atom.mean())
    torch.testing.assert_close(balanced["species"], (weight * per_atom).sum() / weight.sum())
    assert not torch.allclose(balanced["species"], plain["species"])
    assert all(torch.equal(plain[k], balanced[k]) for k in plain if k not in ("species", "loss"))
