"""3D tetris: the 8 shapes of e3nn's example, as structures."""

from __future__ import annotations

import torch
from e3nn import o3
from torch_geometric.data import Data

from ._structures import BLOCK_Z

__all__ = ["TETRIS_SHAPES", "tetris"]

TETRIS_SHAPES: dict[str, list[list[float]]] = {
    "chiral_1": [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 1, 0]],
    "chiral_2": [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, -1, 0]],
    "square": [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]],
    "line": [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3]],
    "corner": [[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]],
    "L": [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0]],
    "T": [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 1]],
    "zigzag": [[0, 0, 0], [1, 0, 0], [1, 1, 0], [2, 1, 0]],
}
"""Block coordinates (unit blocks, 4 each) of e3nn's tetris example; the two chiral shapes
are mirror images of each other."""


def tetris(
    rotations: int = 0,
    mirror: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> list[Data]:
    """The 8 tetris shapes as structures ``Data(pos (4, 3), z (4,), name, source)``.

    Args:
        rotations: 0 for the shapes in their fixed orientation, else this many random
            rotations of each shape (reproducible from ``seed``).
        mirror: also add the mirror image (``pos -> -pos``) of every structure, named
            ``"<shape>_mirror"``.
        seed: seed of the random rotations.
        dtype: dtype of ``pos``.

    >>> len(tetris()), len(tetris(rotations=3, mirror=True))
    (8, 48)
    >>> tetris()[2].name, tetris()[2].pos.shape
    ('square', torch.Size([4, 3]))
    """
    generator = torch.Generator().manual_seed(seed)
    out = []
    for name, coords in TETRIS_SHAPES.items():
        pos = torch.tensor(coords, dtype=torch.float64)
        if rotations == 0:
            frames = [pos]
        else:
            # Uniform random rotations from uniform random quaternions.
            quaternions = torch.randn(rotations, 4, generator=generator, dtype=torch.float64)
            matrices = o3.quaternion_to_matrix(quaternions / quaternions.norm(dim=1, keepdim=True))
            frames = [pos @ matrix.T for matrix in matrices]
        for i, frame in enumerate(frames):
            variants = [(name, frame)] + ([(f"{name}_mirror", -frame)] if mirror else [])
            for label, p in variants:
                out.append(
                    Data(
                        pos=p.to(dtype),
                        z=torch.full((len(p),), BLOCK_Z, dtype=torch.long),
                        name=label,
                        source=f"tetris:{label}" + (f"[rotation {i}]" if rotations else ""),
                    )
                )
    return out
