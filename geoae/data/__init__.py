"""Structures, their files, and data sets.

The structure convention (documented once, in :mod:`geoae.data._structures`): a structure is
``Data(pos (N, 3) float, z (N,) long, batch (N,) long)``; :class:`ase.Atoms` is what users
hand in and get back.
"""

from ._datamodule import FileDataModule, StructureDataModule, TetrisDataModule
from ._io import StructureFileError, read_structures, structure_files, write_structures
from ._structures import BLOCK_Z, StructureError, check_structure, from_atoms, to_atoms
from ._tetris import TETRIS_SHAPES, tetris

__all__ = [
    "BLOCK_Z",
    "TETRIS_SHAPES",
    "FileDataModule",
    "StructureDataModule",
    "StructureError",
    "StructureFileError",
    "TetrisDataModule",
    "check_structure",
    "from_atoms",
    "read_structures",
    "structure_files",
    "tetris",
    "to_atoms",
    "write_structures",
]
