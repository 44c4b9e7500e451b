"""Small molecules with textbook bond lengths (angstrom), built here so that the expected bond
orders follow from the lengths alone. Each is ``(positions (N, 3), atomic numbers (N,))``."""

import numpy as np

__all__ = ["MOLECULES", "tetrahedral_cap"]

TETRAHEDRAL = np.degrees(np.arccos(-1 / 3))  # 109.47 degrees


def tetrahedral_cap(centre, axis: int, length: float) -> np.ndarray:
    """Three positions at ``length`` from ``centre``, each at the tetrahedral angle from the
    direction ``axis * z`` (``axis`` +1 or -1: where the fourth neighbour is)."""
    theta = np.radians(TETRAHEDRAL)
    phis = np.radians([0, 120, 240])
    dirs = np.stack([np.sin(theta) * np.cos(phis), np.sin(theta) * np.sin(phis), np.full(3, np.cos(theta))], 1)
    dirs[:, 2] *= axis
    return np.asarray(centre, dtype=float) + length * dirs


def _ethane():
    c1, c2 = np.zeros(3), np.array([0, 0, 1.54])
    return np.vstack([c1, c2, tetrahedral_cap(c1, 1, 1.09), tetrahedral_cap(c2, -1, 1.09)]), np.array([6, 6, 1, 1, 1, 1, 1, 1])


def _ethylene():
    a = np.radians(121.5)  # H-C=C angle
    h = 1.09 * np.array([np.sin(a), np.cos(a)])
    pos = [[0, 0, 0], [0, 0, 1.34], [h[0], 0, h[1]], [-h[0], 0, h[1]], [h[0], 0, 1.34 - h[1]], [-h[0], 0, 1.34 - h[1]]]
    return np.array(pos, dtype=float), np.array([6, 6, 1, 1, 1, 1])


def _water():
    a = np.radians(104.5 / 2)
    return np.array([[0, 0, 0], [0.96 * np.sin(a), 0, 0.96 * np.cos(a)], [-0.96 * np.sin(a), 0, 0.96 * np.cos(a)]]), np.array([8, 1, 1])


def _fluoromethane():
    c = np.zeros(3)
    return np.vstack([c, [0, 0, 1.39], tetrahedral_cap(c, 1, 1.09)]), np.array([6, 9, 1, 1, 1])


#: name -> (positions, atomic numbers, expected bonds as sorted (i, j, order) rows, i < j)
MOLECULES = {
    "ethane": (*_ethane(), [(0, 1, 1), (0, 2, 1), (0, 3, 1), (0, 4, 1), (1, 5, 1), (1, 6, 1), (1, 7, 1)]),
    "ethylene": (*_ethylene(), [(0, 1, 2), (0, 2, 1), (0, 3, 1), (1, 4, 1), (1, 5, 1)]),
    "acetylene": (np.array([[0, 0, -1.06], [0, 0, 0], [0, 0, 1.20], [0, 0, 2.26]]), np.array([1, 6, 6, 1]),
                  [(0, 1, 1), (1, 2, 3), (2, 3, 1)]),
    "water": (*_water(), [(0, 1, 1), (0, 2, 1)]),
    "hydrogen cyanide": (np.array([[0, 0, -1.07], [0, 0, 0], [0, 0, 1.16]]), np.array([1, 6, 7]), [(0, 1, 1), (1, 2, 3)]),
    "fluoromethane": (*_fluoromethane(), [(0, 1, 1), (0, 2, 1), (0, 3, 1), (0, 4, 1)]),
}
