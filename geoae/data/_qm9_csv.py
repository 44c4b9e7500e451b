"""QM9's CSV files, as the PyPI package ``qm9pack`` ships them, parsed into flat tensors.

**Source.** ``qm9pack/data/qm9_part{1,2,3}.csv`` (``pip install "geoae[qm9]"``), found and read
without importing ``qm9pack`` (its import fails with setuptools >= 82). They hold every molecule
of QM9 (H, C, N, O, F; 3 to 29 atoms, hydrogens kept) but the 3,054 that failed QM9's
consistency check; positions are in angstrom, energies in hartree. :func:`read_qm9_csv` parses
all 130,831 rows at once (vectorised; coordinates written as ``0.`` are numbers) and names the
file and line of any row it cannot read. Caching, the split and the dataset are in
:mod:`geoae.data._qm9`.
"""

from __future__ import annotations

import csv
import importlib.util
import operator
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers

from geoae._segments import gather_atoms

from ._io import StructureFileError

__all__ = ["QM9_PROPERTIES", "qm9_csv_files", "read_qm9_csv"]

QM9_PROPERTIES: tuple[str, ...] = (
    "RotA_GHz",
    "RotB_GHz",
    "RotC_GHz",
    "Dipole_debye",
    "Polarizability_bohr3",
    "HOMO_au",
    "LUMO_au",
    "HOMO_LUMO_gap_au",
    "R2_bohr2",
    "ZPVE_au",
    "InternalEnergy_0K_au",
    "InternalEnergy_298K_au",
    "Enthalphy_298K_au",
    "GibbsFreeEnergy_298K_au",
    "Heatcapacity_Cv_cal_mol_K",
)
"""The scalar properties kept, named as the CSV columns (units in the names; ``au``: hartree
or bohr-based atomic units), in the order of the columns of ``properties`` and ``Data.y``."""

_CSV_NAMES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_COLUMNS = ("Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang", *QM9_PROPERTIES)


def qm9_csv_files() -> list[Path]:
    """The QM9 CSV files of the installed ``qm9pack`` package (found without importing it)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None:
        raise ModuleNotFoundError(
            'QM9 is read from the qm9pack package, which is not installed: pip install "geoae[qm9]"',
            name="qm9pack",
        )
    folders = list(spec.submodule_search_locations or [Path(spec.origin).parent])
    files = [Path(folder, "data", name) for folder in folders for name in _CSV_NAMES]
    files = [file for file in files if file.is_file()]
    if len(files) != len(_CSV_NAMES):
        raise FileNotFoundError(f"qm9pack in {folders}: missing {_CSV_NAMES} under data/; reinstall it")
    return files


def read_qm9_csv(files: Sequence[str | os.PathLike]) -> dict:
    """Parse QM9 CSV files (qm9pack's format) into flat tensors, molecules sorted by QM9 index.

    Returns a dict with ``M`` molecules and ``N`` atoms in all:

    - ``pos``: ``(N, 3)`` float32, positions in angstrom; molecule ``i`` is
      ``pos[ptr[i]:ptr[i + 1]]``
    - ``z``: ``(N,)`` uint8, atomic numbers
    - ``ptr``: ``(M + 1,)`` long, offsets of the molecules' atoms
    - ``index``: ``(M,)`` long, QM9 indices (increasing)
    - ``properties``: ``(M, P)`` float64, the columns :data:`QM9_PROPERTIES`
    - ``property_names``: the ``P`` names, ``list(QM9_PROPERTIES)``
    - ``smiles``: ``M`` SMILES strings

    A row that cannot be read raises :class:`StructureFileError` naming the file and line.
    """
    rows: list[tuple[str, ...]] = []
    parts: list[tuple[Path, int]] = []  # (file, its first row's position in rows)
    for path in map(Path, files):
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            missing = [column for column in _COLUMNS if column not in header]
            if missing:
                raise StructureFileError(f"{path}: not a QM9 CSV file, the header lacks the columns {missing}")
            file_rows = list(reader)
        short = next((i for i, row in enumerate(file_rows) if len(row) != len(header)), None)
        if short is not None:
            raise StructureFileError(
                f"{path}, line {short + 2}: {len(file_rows[short])} fields, the header has {len(header)}"
            )
        parts.append((path, len(rows)))
        rows.extend(map(operator.itemgetter(*map(header.index, _COLUMNS)), file_rows))
    if not rows:
        raise StructureFileError(f"{', '.join(map(str, files)) or 'no file'}: no molecule")

    def where(row: int) -> str:
        path, start = next((path, start) for path, start in reversed(parts) if start <= row)
        return f"{path}, line {row - start + 2}"

    columns = dict(zip(_COLUMNS, zip(*rows)))
    index = _numbers(columns["Index"], np.int64, "Index", where)
    num_atoms = _numbers(columns["N_atoms"], np.int64, "N_atoms", where)
    properties = np.stack([_numbers(columns[name], np.float64, name, where) for name in QM9_PROPERTIES], axis=1)

    elements = columns["Elements"]
    counts = _count(elements, ",") + 1
    _check_rows(counts != num_atoms, where, lambda i: f"{counts[i]} elements but N_atoms={num_atoms[i]}")
    symbols = ",".join(elements).translate(str.maketrans("", "", "[]' ")).split(",")
    number = {symbol: atomic_numbers.get(symbol, 0) for symbol in set(symbols)}
    z = np.array([number[symbol] for symbol in symbols], dtype=np.uint8)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    atom_row = np.repeat(np.arange(len(counts)), counts)
    _check_rows(np.isin(np.arange(len(counts)), atom_row[z == 0]), where, lambda i: f"unknown element in {elements[i]}")

    xyz = columns["XYZ_Ang"]
    wrong_shape = (_count(xyz, ",") != 3 * counts - 1) | (_count(xyz, "[") != counts + 1)
    _check_rows(wrong_shape, where, lambda i: f"XYZ_Ang is not a list of {counts[i]} [x, y, z] positions")
    pos = _floats(",".join(xyz))
    if pos is None or len(pos) != 3 * ptr[-1]:  # find the row that does not parse
        parsed = [_floats(row) for row in xyz]
        bad = np.array([row is None or len(row) != 3 * n for row, n in zip(parsed, counts)])
        _check_rows(bad, where, lambda i: f"XYZ_Ang {xyz[i]} is not a list of {counts[i]} [x, y, z] numbers")
        pos = np.concatenate(parsed)
    pos = pos.reshape(-1, 3)
    _check_rows(np.isin(np.arange(len(counts)), atom_row[~np.isfinite(pos).all(1)]), where, lambda i: "non-finite XYZ_Ang")

    order = np.argsort(index, kind="stable")
    repeated = np.flatnonzero(np.diff(index[order]) == 0)
    if len(repeated):
        first, second = sorted(order[repeated[0] : repeated[0] + 2])
        raise StructureFileError(f"{where(second)}: Index {index[second]} already used at {where(first)}")
    atoms = gather_atoms(torch.from_numpy(ptr), torch.from_numpy(order)).numpy()
    return {
        "pos": torch.from_numpy(pos[atoms]).float(),
        "z": torch.from_numpy(z[atoms]),
        "ptr": torch.from_numpy(np.concatenate([[0], np.cumsum(counts[order])])),
        "index": torch.from_numpy(index[order]),
        "properties": torch.from_numpy(properties[order]),
        "property_names": list(QM9_PROPERTIES),
        "smiles": [columns["SMILES"][i] for i in order],
    }


def _count(strings: Sequence[str], char: str) -> np.ndarray:
    """How often ``char`` occurs in each string, ``(len(strings),)`` long."""
    return np.fromiter((s.count(char) for s in strings), dtype=np.int64, count=len(strings))


def _floats(text: str) -> np.ndarray | None:
    """The comma-separated numbers of ``text`` (brackets and spaces ignored), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # older numpy only warns on unparsed text
            return np.fromstring(text.translate(str.maketrans("", "", "[] ")), sep=",")
    except (ValueError, DeprecationWarning):
        return None


def _numbers(column: Sequence[str], dtype: type, name: str, where) -> np.ndarray:
    """A column of numbers, ``(len(column),)``; a bad entry raises naming its row."""
    try:
        return np.array(column, dtype=dtype)
    except ValueError:
        bad = np.array([not _parses(s, dtype) for s in column])
        _check_rows(bad, where, lambda i: f"{name} {column[i]!r} is not {'an integer' if dtype is np.int64 else 'a number'}")
        raise


def _parses(text: str, dtype: type) -> bool:
    try:
        np.array(text, dtype=dtype)
        return True
    except ValueError:
        return False


def _check_rows(bad: np.ndarray, where, reason) -> None:
    """Raise :class:`StructureFileError` for the first row where ``bad`` (rows,) is true."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise StructureFileError(f"{where(row)}: {reason(row)}")
