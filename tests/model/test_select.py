"""Choosing each structure among candidate decodings (geoae/model/_select.py)."""

import dataclasses

import pytest
import torch
from ase.build import molecule

from geoae.model import (
    Decoded,
    decoded_hierarchy,
    decoded_tree,
    feedback_latent,
    latent_residual,
    load,
    regroup_structures,
    select_structures,
    take_structures,
)

MOLECULES = ["CH3OH", "CH3CN", "C6H6", "CH3COOH", "HCOOCH3", "CH3CH2OH"]


@pytest.fixture(scope="module")
def qm9_candidates():
    """The shipped qm9 model's latents of a few molecules and two decodings: plain, and with
    each molecule's most uncertain atom count rounded the other way."""
    model = load("qm9")
    with torch.no_grad():
        latent = model.encode([molecule(name) for name in MOLECULES])
        return model, latent, [model.decoder(latent), model.decoder(latent, flip=0)]


def leaves(value) -> list:
    """The tensors of a Decoded field, nested tuples flattened."""
    return [leaf for item in value for leaf in leaves(item)] if isinstance(value, tuple) else [value]


def assert_same(a: Decoded, b: Decoded) -> None:
    """Every field of two decodings equal."""
    for field in dataclasses.fields(Decoded):
        x, y = leaves(getattr(a, field.name)), leaves(getattr(b, field.name))
        assert len(x) == len(y), field.name
        for u, v in zip(x, y):
            assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v, field.name


def structure(decoded: Decoded, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    mask = decoded.batch == b
    return decoded.pos[mask], decoded.species[mask]


@pytest.mark.parametrize("k", [0, 1])
def test_choosing_one_candidate_everywhere_gives_it_back(qm9_candidates, k):
    _, _, candidates = qm9_candidates
    assert_same(select_structures(candidates, torch.full((len(MOLECULES),), k)), candidates[k])


def test_mixed_choice_takes_each_structure_and_its_tree_from_its_candidate(qm9_candidates):
    model, latent, candidates = qm9_candidates
    assert any(len(structure(candidates[0], b)[0]) != len(structure(candidates[1], b)[0]) for b in range(len(MOLECULES)))
    choice = torch.tensor([0, 1, 1, 0, 1, 0])
    chosen = select_structures(candidates, choice)
    assert torch.equal(chosen.batch, torch.sort(chosen.batch).values)
    for b, k in enumerate(choice.tolist()):
        for x, y in zip(structure(chosen, b), structure(candidates[k], b)):
            assert torch.equal(x, y)
    # the parents were re-indexed right: the residual through each structure's tree is its candidate's
    expected = torch.stack([latent_residual(model.encoder, latent, c) for c in candidates])[choice, torch.arange(len(MOLECULES))]
    # float32, torch's default tolerances: recomputed in another batch, a residual differs by the
    # CPU kernels' round-off (1.2e-6 relative seen on an AMD EPYC), a wrong tree by far more
    torch.testing.assert_close(latent_residual(model.encoder, latent, chosen), expected)
    parents, batches = decoded_tree(chosen)
    for level in range(len(parents)):
        assert torch.equal(batches[level + 1][parents[level]], batches[level])


def test_choice_must_name_every_structure(qm9_candidates):
    _, _, candidates = qm9_candidates
    with pytest.raises(ValueError, match=r"choice must have shape \(6,\)"):
        select_structures(candidates, torch.zeros(5, dtype=torch.long))


def test_decoding_with_candidates_keeps_the_smallest_residual(qm9_candidates):
    model, latent, _ = qm9_candidates
    with torch.no_grad():
        separately = [model.refine(latent, model.decoder(latent, flip), steps=5) for flip in (None, 0, 1)]
        chosen = model.decode_tensors(latent, refine_steps=5, candidates=3)
    smallest = torch.stack([r.residual for r in separately]).min(dim=0).values
    torch.testing.assert_close(chosen.residual, smallest)
    torch.testing.assert_close(latent_residual(model.encoder, latent, chosen), smallest)  # tolerance: as above
    assert (smallest < separately[0].residual).any()  # a flipped count won somewhere: the choice is not trivial


def test_screened_candidates_refine_the_one_of_smallest_residual_after_the_screen(qm9_candidates):
    model, latent, _ = qm9_candidates
    with torch.no_grad():
        decodings = [model.decoder(latent, flip) for flip in (None, 0, 1)]
        screen = torch.stack([model.refine(latent, d, steps=3).residual for d in decodings])  # (3, B)
        full = [model.refine(latent, d, steps=8) for d in decodings]
        chosen = model.decode_tensors(latent, refine_steps=8, candidates=3, screen_steps=3)
    choice = screen.argmin(dim=0)
    assert (choice > 0).any()  # a flipped count won the screen somewhere: the choice is not trivial
    expected = select_structures(full, choice)  # structures are refined independently of each other
    torch.testing.assert_close(chosen.residual, expected.residual, atol=1e-6, rtol=1e-5)
    assert torch.equal(chosen.batch, expected.batch) and torch.equal(chosen.species, expected.species)
    torch.testing.assert_close(chosen.pos, expected.pos, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="screen_steps must be at least 1"):
        model.decode_tensors(latent, refine_steps=8, candidates=3, screen_steps=0)


@pytest.mark.parametrize("candidates, steps", [(0, 5), (2, 0), (-1, 0)])
def test_candidates_need_refinement(qm9_candidates, candidates, steps):
    model, latent, _ = qm9_candidates
    with pytest.raises(ValueError, match="candidates must be 1, or more with refine_steps > 0"):
        model.decode_tensors(latent, refine_steps=steps, candidates=candidates)


def test_rounds_decode_the_atoms_again_from_the_refined_tree_and_keep_the_smaller_residual(qm9_candidates):
    model, latent, _ = qm9_candidates
    with torch.no_grad():
        first = model.refine(latent, model.decoder(latent), steps=5)
        again = model.refine(latent, model.decoder(latent, hierarchy=decoded_hierarchy(first)), steps=5)
        chosen = model.decode_tensors(latent, refine_steps=5, rounds=1, settled=0.0)
    assert (again.residual < first.residual).any()  # the round won somewhere: the choice is not trivial
    expected = select_structures([first, again], (again.residual < first.residual).long())
    torch.testing.assert_close(chosen.residual, torch.minimum(first.residual, again.residual))
    assert torch.equal(chosen.batch, expected.batch) and torch.equal(chosen.species, expected.species)
    torch.testing.assert_close(chosen.pos, expected.pos)


def test_feedback_rounds_decode_the_atoms_from_the_latent_plus_what_the_decoding_misses(qm9_candidates):
    model, latent, _ = qm9_candidates
    with torch.no_grad():
        first = model.decode_tensors(latent, refine_steps=5)
        hierarchy = decoded_hierarchy(first)
        again = model.refine(latent, model.decoder(feedback_latent(model.encoder, latent, first, 1.0), hierarchy=hierarchy), steps=5)
        plain = model.refine(latent, model.decoder(latent, hierarchy=hierarchy), steps=5)
        chosen = model.decode_tensors(latent, refine_steps=5, feedback_rounds=1, feedback=1.0, settled=0.0)
    assert (again.residual != plain.residual).any()  # the decoder read something else than in a plain round
    assert (again.residual < first.residual).any()  # and it won somewhere: the choice is not trivial
    expected = select_structures([first, again], (again.residual < first.residual).long())
    torch.testing.assert_close(chosen.residual, torch.minimum(first.residual, again.residual))
    assert torch.equal(chosen.batch, expected.batch) and torch.equal(chosen.species, expected.species)
    torch.testing.assert_close(chosen.pos, expected.pos)


@pytest.mark.parametrize("name", ["rounds", "feedback_rounds"])
@pytest.mark.parametrize("value, steps", [(-1, 5), (1, 0)])
def test_rounds_need_refinement(qm9_candidates, name, value, steps):
    model, latent, _ = qm9_candidates
    with pytest.raises(ValueError, match=f"{name} must be 0, or more with refine_steps > 0"):
        model.decode_tensors(latent, refine_steps=steps, **{name: value})


@pytest.fixture(scope="module")
def refined(qm9_candidates):
    """A refined decoding (with residuals) of the molecules' latents, its structures of differing sizes."""
    model, latent, _ = qm9_candidates
    with torch.no_grad():
        return model.refine(latent, model.decoder(latent, flip=0), steps=3)


def test_taking_structures_keeps_each_with_its_tree_and_residual(qm9_candidates, refined):
    model, latent, _ = qm9_candidates
    index = torch.tensor([4, 1, 2])
    part = take_structures(refined, index)
    assert part.num_structures == 3 and torch.equal(part.batch, torch.sort(part.batch).values)
    for i, b in enumerate(index.tolist()):
        for x, y in zip(structure(part, i), structure(refined, b)):
            assert torch.equal(x, y)
    torch.testing.assert_close(part.residual, refined.residual[index])
    # the tree came along, re-indexed: through it the encoder gives each structure's residual again
    torch.testing.assert_close(latent_residual(model.encoder, latent[index], part), refined.residual[index])


def test_structures_taken_in_any_order_and_put_back_give_the_decoding_back(refined):
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    assert_same(regroup_structures([take_structures(refined, order)], [order], len(order)), refined)


def test_structures_given_by_no_decoding_have_no_atom_and_an_infinite_residual(refined):
    index = torch.tensor([2, 4])
    placed = regroup_structures([take_structures(refined, index)], [index], 6)
    assert set(placed.batch.tolist()) == {2, 4}
    assert torch.equal(placed.residual.isinf(), torch.tensor([True, True, False, True, False, True]))
    assert_same(take_structures(placed, index), take_structures(refined, index))


@pytest.mark.parametrize(
    "targets, match",
    [
        ([torch.tensor([0, 1, 2, 3, 4, 4])], "each at most once"),
        ([torch.tensor([0, 1, 2, 3, 4, 6])], r"must name structures 0..5"),
        ([torch.tensor([0, 1, 2])], r"one \(num_structures,\) tensor per decoding"),
    ],
)
def test_regrouping_errors(refined, targets, match):
    with pytest.raises(ValueError, match=match):
        regroup_structures([refined], targets, 6)
    with pytest.raises(ValueError, match="distinct structures"):
        take_structures(refined, torch.tensor([1, 1]))


def test_rounds_leave_settled_structures_alone(qm9_candidates):
    model, latent, _ = qm9_candidates
    with torch.no_grad():
        first = model.decode_tensors(latent, refine_steps=5)
        settled = float(first.residual.median())  # half the structures settled
        every = model.decode_tensors(latent, refine_steps=5, rounds=1, settled=0.0)
        chosen = model.decode_tensors(latent, refine_steps=5, rounds=1, settled=settled)
    left = first.residual <= settled  # (B,)
    assert left.any() and (~left).any() and (every.residual < first.residual)[left].any()  # a round would have changed one
    expected = select_structures([every, first], left.long())  # structures refine independently of each other
    torch.testing.assert_close(chosen.residual, expected.residual, atol=1e-6, rtol=1e-5)
    assert torch.equal(chosen.batch, expected.batch) and torch.equal(chosen.species, expected.species)
    torch.testing.assert_close(chosen.pos, expected.pos, atol=1e-5, rtol=0)
    assert_same(take_structures(chosen, left.nonzero().flatten()), take_structures(first, left.nonzero().flatten()))
