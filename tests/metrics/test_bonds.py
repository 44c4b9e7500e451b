"""Bond orders from distances by the element-pair tables, and EDM-style stability."""

import numpy as np
import pytest
from ase.build import molecule

from geoae.metrics import BOND_LENGTHS_PM, BOND_MARGINS_PM, VALENCES, bond_list, bond_orders, stable_atoms
from tests.metrics.molecules import MOLECULES


@pytest.mark.parametrize("name", sorted(MOLECULES))
def test_textbook_molecules_get_their_bond_orders_and_are_stable(name):
    pos, z, expected = MOLECULES[name]
    orders = bond_orders(pos, z)
    assert orders.shape == (len(z), len(z)) and orders.dtype == np.int64
    assert np.array_equal(orders, orders.T) and not orders.diagonal().any()
    assert bond_list(orders).tolist() == [list(b) for b in expected]
    assert stable_atoms(z, orders).all()


@pytest.mark.parametrize("name", sorted(MOLECULES))
def test_bond_orders_follow_the_atoms_under_permutation(name):
    pos, z, _ = MOLECULES[name]
    perm = np.random.default_rng(0).permutation(len(z))
    assert np.array_equal(bond_orders(pos[perm], z[perm]), bond_orders(pos, z)[np.ix_(perm, perm)])


@pytest.mark.parametrize(
    "pair, distance, order",
    [
        ((6, 6), 1.6399, 1), ((6, 6), 1.64, 0),  # single: 154 + 10 pm, strict
        ((6, 6), 1.3899, 2), ((6, 6), 1.39, 1),  # double: 134 + 5
        ((6, 6), 1.2299, 3), ((6, 6), 1.23, 2),  # triple: 120 + 3
        ((7, 6), 1.18, 3), ((6, 8), 1.24, 2), ((6, 8), 1.26, 1), ((8, 8), 1.25, 2), ((8, 8), 1.30, 1),
        ((1, 1), 0.83, 1), ((1, 1), 0.85, 0), ((1, 9), 1.01, 1), ((9, 9), 1.40, 1),
        ((1, 8), 1.05, 1), ((1, 8), 1.07, 0),
    ],
)
def test_thresholds_are_table_plus_margin(pair, distance, order):
    assert bond_orders([[0.0, 0, 0], [0, distance, 0]], pair)[0, 1] == order
    assert bond_orders([[0.0, 0, 0], [0, distance, 0]], pair[::-1])[0, 1] == order


def test_tables_are_edms_for_the_qm9_elements():
    single = {frozenset(p): v for p, v in BOND_LENGTHS_PM[1].items()}
    assert single[frozenset(("C", "H"))] == 109 and single[frozenset(("N", "O"))] == 140 and single[frozenset(("F",))] == 142
    assert len(single) == len(BOND_LENGTHS_PM[1])  # no pair listed twice
    qm9 = ["H", "C", "N", "O", "F"]
    assert all(frozenset((a, b)) in single for a in qm9 for b in qm9)
    assert BOND_MARGINS_PM == {1: 10, 2: 5, 3: 3}
    assert {z: VALENCES[z] for z in (1, 6, 7, 8, 9)} == {1: (1,), 6: (4,), 7: (3,), 8: (2,), 9: (1,)}


def test_elements_off_the_tables_never_bond_and_are_never_stable():
    pos = [[0.0, 0, 0], [0.5, 0, 0], [1.0, 0, 0], [1.5, 0, 0]]
    orders = bond_orders(pos, [2, 6, 118, 0])  # He, C, Og, 0
    assert not orders.any()
    assert stable_atoms([2, 6, 118, 0], orders).tolist() == [False, False, False, False]


def test_radical_and_benzene_are_unstable_by_the_tables():
    pos, z, _ = MOLECULES["ethane"]
    orders = bond_orders(pos[:-1], z[:-1])  # one H removed: a radical carbon
    assert stable_atoms(z[:-1], orders).tolist() == [True, False] + [True] * 5
    benzene = molecule("C6H6")  # aromatic C-C 1.395 A: single by the tables (139.5 >= 134 + 5)
    orders = bond_orders(benzene.positions, benzene.numbers)
    carbons = benzene.numbers == 6
    assert set(orders[np.ix_(carbons, carbons)].ravel().tolist()) == {0, 1}
    assert stable_atoms(benzene.numbers, orders).tolist() == [False] * 6 + [True] * 6


def test_empty_and_single_atom():
    assert bond_orders(np.zeros((0, 3)), []).shape == (0, 0)
    assert bond_list(bond_orders(np.zeros((0, 3)), [])).shape == (0, 3)
    assert stable_atoms([1], bond_orders([[0.0, 0, 0]], [1])).tolist() == [False]
