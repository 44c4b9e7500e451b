"""Bonds from inter-atomic distances, by element-pair bond-length tables (the field's rule).

The tables, margins and valences are those of EDM (Hoogeboom et al. 2022,
``qm9/bond_analyze.py`` of ``ehoogeboom/e3_diffusion_for_molecules``), which QM9 generation
and reconstruction results are reported with: a pair of atoms at distance ``d`` (picometres)
has bond order

- 0 if ``d >= single + 10`` (no bond), else
- 3 if ``d < double + 5`` and ``d < triple + 3``, else
- 2 if ``d < double + 5``, else 1,

where ``single``, ``double`` and ``triple`` are the pair's typical bond lengths (a pair with
no double or triple length in the tables never gets that order; a pair with no single length,
or an element not in the tables, never bonds). An atom is *stable* when its bond orders sum to
one of its element's valences (H 1, C 4, N 3, O 2, F 1, ...); a structure is stable when all
its atoms are.

One difference from EDM's code: there the C=S double length is found only for the pair
ordered (C, S), so a C-S pair's order depends on the atoms' order; here the tables are
symmetric (C=S at 160 pm either way). Every other pair gives EDM's order (checked on random
geometries of all the tables' elements).
"""

from __future__ import annotations

import numpy as np
from ase.data import atomic_numbers

__all__ = ["BOND_LENGTHS_PM", "BOND_MARGINS_PM", "VALENCES", "bond_orders", "bond_list", "stable_atoms"]

#: Typical bond lengths in picometres, by order (1 single, 2 double, 3 triple), then element
#: pair (each pair listed once; the tables are symmetric).
BOND_LENGTHS_PM: dict[int, dict[tuple[str, str], float]] = {
    1: {
        ("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92, ("H", "B"): 119,
        ("H", "Si"): 148, ("H", "P"): 144, ("H", "As"): 152, ("H", "S"): 134, ("H", "Cl"): 127, ("H", "Br"): 141,
        ("H", "I"): 161,
        ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135, ("C", "Si"): 185, ("C", "P"): 184,
        ("C", "S"): 182, ("C", "Cl"): 177, ("C", "Br"): 194, ("C", "I"): 214,
        ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136, ("N", "Cl"): 175, ("N", "Br"): 214, ("N", "S"): 168,
        ("N", "I"): 222, ("N", "P"): 177,
        ("O", "O"): 148, ("O", "F"): 142, ("O", "Br"): 172, ("O", "S"): 151, ("O", "P"): 163, ("O", "Si"): 163,
        ("O", "Cl"): 164, ("O", "I"): 194,
        ("F", "F"): 142, ("F", "S"): 158, ("F", "Si"): 160, ("F", "Cl"): 166, ("F", "Br"): 178, ("F", "P"): 156,
        ("F", "I"): 187,
        ("B", "Cl"): 175,
        ("Si", "Si"): 233, ("Si", "S"): 200, ("Si", "Cl"): 202, ("Si", "Br"): 215, ("Si", "I"): 243,
        ("Cl", "Cl"): 199, ("Cl", "P"): 203, ("Cl", "S"): 207, ("Cl", "Br"): 214,
        ("S", "S"): 204, ("S", "Br"): 225, ("S", "P"): 210, ("S", "I"): 234,
        ("Br", "Br"): 228, ("Br", "P"): 222,
        ("P", "P"): 221,
        ("I", "I"): 266,
    },
    2: {
        ("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("C", "S"): 160,
        ("N", "N"): 125, ("N", "O"): 121,
        ("O", "O"): 121, ("O", "P"): 150,
        ("P", "S"): 186,
    },
    3: {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110},
}

#: Margins added to the lengths of each order, picometres (EDM's, tuned so that QM9's own
#: molecules come out stable).
BOND_MARGINS_PM: dict[int, float] = {1: 10, 2: 5, 3: 3}

#: Bond-order sums that make an atom stable, by atomic number.
VALENCES: dict[int, tuple[int, ...]] = {
    atomic_numbers[symbol]: valences
    for symbol, valences in {
        "H": (1,), "C": (4,), "N": (3,), "O": (2,), "F": (1,), "B": (3,), "Al": (3,), "Si": (4,), "P": (3, 5),
        "S": (4,), "Cl": (1,), "As": (3,), "Br": (1,), "I": (1,), "Hg": (1, 2), "Bi": (3, 5),
    }.items()
}


def _thresholds() -> np.ndarray:
    """``(3, Z, Z)`` distance thresholds (pm, length + margin) of orders 1, 2, 3 by atomic
    numbers; ``-inf`` where the pair has no such order."""
    size = max(atomic_numbers[s] for table in BOND_LENGTHS_PM.values() for pair in table for s in pair) + 1
    out = np.full((3, size, size), -np.inf)
    for order, table in BOND_LENGTHS_PM.items():
        for (a, b), length in table.items():
            za, zb = atomic_numbers[a], atomic_numbers[b]
            out[order - 1, za, zb] = out[order - 1, zb, za] = length + BOND_MARGINS_PM[order]
    return out


_THRESHOLDS = _thresholds()


def bond_orders(pos, z) -> np.ndarray:
    """Bond orders of every pair of atoms of one structure, from their distances.

    Args:
        pos: ``(N, 3)`` positions in angstrom (numpy or CPU torch).
        z: ``(N,)`` atomic numbers.

    Returns:
        ``(N, N)`` int64, symmetric, zero diagonal: 0 no bond, 1 single, 2 double, 3 triple.

    >>> bond_orders([[0.0, 0, 0], [1.20, 0, 0], [2.9, 0, 0]], [6, 6, 1])  # C#C then H far away
    array([[0, 3, 0],
           [3, 0, 0],
           [0, 0, 0]])
    """
    pos, z = np.asarray(pos, dtype=np.float64).reshape(-1, 3), np.asarray(z, dtype=np.int64).reshape(-1)
    size = _THRESHOLDS.shape[1]
    index = np.where((z >= 0) & (z < size), z, 0)  # elements off the tables never bond (row 0 is -inf)
    d = 100 * np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)  # (N, N) pm
    t = _THRESHOLDS[:, index[:, None], index[None, :]]  # (3, N, N)
    single, double, triple = d < t[0], d < t[1], d < t[2]
    orders = single * (1 + double * (1 + triple))
    np.fill_diagonal(orders, 0)
    return orders.astype(np.int64)


def bond_list(orders: np.ndarray) -> np.ndarray:
    """The bonds of an ``(N, N)`` order matrix as ``(E, 3)`` rows ``(i, j, order)``, ``i < j``,
    sorted.

    >>> bond_list(bond_orders([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], [8, 1, 1]))  # water
    array([[0, 1, 1],
           [0, 2, 1]])
    """
    i, j = np.nonzero(np.triu(orders, 1))
    return np.stack([i, j, orders[i, j]], axis=1).astype(np.int64).reshape(-1, 3)


def stable_atoms(z, orders: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: each atom's bond orders (``orders (N, N)``) sum to one of its valences
    (:data:`VALENCES`; an element without one is never stable).

    >>> stable_atoms([8, 1, 1], bond_orders([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], [8, 1, 1]))
    array([ True,  True,  True])
    """
    total = np.asarray(orders).sum(axis=1)
    return np.array([int(n) in VALENCES.get(int(zi), ()) for zi, n in zip(np.asarray(z).reshape(-1), total)], dtype=bool)
