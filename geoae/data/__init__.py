"""Structures, their files, and data sets.

The structure convention (documented once, in :mod:`geoae.data._structures`): a structure is
``Data(pos (N, 3) float, z (N,) long, batch (N,) long)``; :class:`ase.Atoms` is what users
hand in and get back. QM9 is read from the ``qm9pack`` package's CSV files
(:mod:`geoae.data._qm9_csv`, ``pip install "geoae[qm9]"``), cached as flat tensors and served in
a fixed split (:mod:`geoae.data._qm9`).
"""

from ._datamodule import FileDataModule, QM9DataModule, StructureDataModule, TetrisDataModule, check_species_and_size
from ._io import StructureFileError, read_structures, structure_files, write_structures
from ._qm9 import QM9_SPLIT_SIZES, QM9Dataset, load_qm9, qm9_split
from ._qm9_csv import QM9_PROPERTIES, qm9_csv_files, read_qm9_csv
from ._structures import BLOCK_Z, StructureError, check_structure, from_atoms, to_atoms
from ._tetris import TETRIS_SHAPES, tetris

__all__ = [
    "BLOCK_Z",
    "QM9_PROPERTIES",
    "QM9_SPLIT_SIZES",
    "TETRIS_SHAPES",
    "FileDataModule",
    "QM9DataModule",
    "QM9Dataset",
    "StructureDataModule",
    "StructureError",
    "StructureFileError",
    "TetrisDataModule",
    "check_species_and_size",
    "check_structure",
    "from_atoms",
    "load_qm9",
    "qm9_csv_files",
    "qm9_split",
    "read_qm9_csv",
    "read_structures",
    "structure_files",
    "tetris",
    "to_atoms",
    "write_structures",
]
