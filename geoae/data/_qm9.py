"""QM9: 130,831 small organic molecules (H, C, N, O, F; 3 to 29 atoms, hydrogens kept).

**Source.** The CSV files of the PyPI package ``qm9pack`` (``pip install "geoae[qm9]"``),
``qm9pack/data/qm9_part{1,2,3}.csv``, read without importing ``qm9pack`` (its import fails
with setuptools >= 82). They hold every molecule of QM9 but the 3,054 that failed QM9's
consistency check; positions are in angstrom, energies in hartree.

**Cache.** The first :func:`load_qm9` parses the CSVs (a few seconds, vectorised) into flat
tensors and saves them with :func:`torch.save` to ``<cache_dir>/qm9-v1.pt``; ``cache_dir``
defaults to ``$GEOAE_CACHE``, else ``~/.cache/geoae``. Later loads read that file (a fraction of
a second). The file is written to a temporary file in the same folder and renamed into place,
so a crash never leaves a half-written cache; delete it to parse the CSVs again.

**Split** (fixed, the same for every run; the training seed does not change it): the
molecules sorted by QM9 index are permuted by ``torch.randperm`` with
``torch.Generator().manual_seed(0)``; the first 100,000 are the training set, the next 10,000
the validation set, the remaining 20,831 the test set. :func:`qm9_split` gives the QM9 indices
of each part.

**Structures.** :class:`QM9Dataset` builds each molecule's ``Data`` only when it is asked for,
from the flat tensors.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import operator
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers
from torch_geometric.data import Data

from geoae._atomic import atomic_path

from ._io import StructureFileError

__all__ = ["QM9_PROPERTIES", "QM9_SPLIT_SIZES", "QM9Dataset", "load_qm9", "qm9_csv_files", "qm9_split", "read_qm9_csv"]

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

QM9_SPLIT_SIZES: tuple[int, int] = (100_000, 10_000)
"""Training and validation sizes of the fixed split; the test set is the rest (20,831)."""

_SPLIT_SEED = 0
_CACHE_NAME = "qm9-v1"
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
    atoms = _gather_atoms(torch.from_numpy(ptr), torch.from_numpy(order)).numpy()
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


def _gather_atoms(ptr: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Indices of the atoms of structures ``rows`` (R,), in that order, given the offsets
    ``ptr`` (M + 1,) of flat per-atom tensors.

    >>> _gather_atoms(torch.tensor([0, 2, 3, 6]), torch.tensor([2, 0])).tolist()
    [3, 4, 5, 0, 1]
    """
    starts, counts = ptr[rows], ptr[rows + 1] - ptr[rows]
    offsets = torch.cumsum(counts, 0) - counts  # where each structure starts in the output
    return torch.arange(int(counts.sum())) + torch.repeat_interleave(starts - offsets, counts)


def load_qm9(cache_dir: str | os.PathLike | None = None, files: Sequence[str | os.PathLike] | None = None) -> dict:
    """QM9 as the flat tensors of :func:`read_qm9_csv`, parsed once and then read from a cache.

    Args:
        cache_dir: folder of the cache file (default: ``$GEOAE_CACHE``, else ``~/.cache/geoae``).
        files: CSV files in qm9pack's format (default: qm9pack's, :func:`qm9_csv_files`);
            other files get a cache file of their own, named by their paths, sizes and times.
    """
    folder = Path(cache_dir or os.environ.get("GEOAE_CACHE") or Path.home() / ".cache" / "geoae").expanduser()
    name = _CACHE_NAME
    if files is not None:
        stamp = "\n".join(f"{Path(f).resolve()} {os.stat(f).st_size} {os.stat(f).st_mtime_ns}" for f in files)
        name += "-" + hashlib.sha1(stamp.encode()).hexdigest()[:16]
    cache = folder / f"{name}.pt"
    if cache.is_file():
        try:
            qm9 = torch.load(cache, weights_only=True)
            return {**qm9, "smiles": qm9["smiles"].split("\n")}
        except Exception as error:  # noqa: BLE001 (any unreadable cache is parsed again)
            warnings.warn(f"{cache}: cannot read the cache ({error}); parsing the CSV files again", stacklevel=2)
    qm9 = read_qm9_csv(qm9_csv_files() if files is None else files)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:  # SMILES saved as one string: a list of 130k loads 50x slower
        torch.save({**qm9, "smiles": "\n".join(qm9["smiles"])}, tmp)
    return qm9


def qm9_split(index: torch.Tensor | Sequence[int], sizes: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """The fixed split of QM9: QM9 indices ``{"train", "val", "test"}``, each ``(n,)`` long.

    ``index`` (M,) are the QM9 indices of all molecules (``load_qm9()["index"]``); they are
    sorted, permuted by ``torch.randperm`` with ``torch.Generator().manual_seed(0)`` (fixed,
    whatever the training seed), and cut into ``sizes`` (training, validation; default
    :data:`QM9_SPLIT_SIZES`, 100,000 and 10,000) and the rest (test). Each part is in the
    permuted order, so its first ``n`` molecules are a random subset.

    >>> {part: len(ids) for part, ids in qm9_split(range(1, 11), sizes=(6, 2)).items()}
    {'train': 6, 'val': 2, 'test': 2}
    """
    index = torch.as_tensor(index, dtype=torch.long).sort().values
    num_train, num_val = sizes or QM9_SPLIT_SIZES
    if (index.diff() == 0).any():
        raise ValueError("qm9_split: the QM9 indices repeat")
    if num_train + num_val > len(index):
        raise ValueError(f"qm9_split: {len(index)} molecules, fewer than {num_train} + {num_val}")
    order = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(_SPLIT_SEED))]
    return {"train": order[:num_train], "val": order[num_train : num_train + num_val], "test": order[num_train + num_val :]}


class QM9Dataset(torch.utils.data.Dataset):
    """QM9 molecules as structures, each ``Data`` built only when it is asked for.

    Item ``i`` is ``Data(pos (n, 3) float32, z (n,) long, y (1, P) float64, qm9_id int,
    smiles str, name str, source str)``: positions in angstrom, the :data:`QM9_PROPERTIES`, the
    QM9 index (``qm9_id``, not ``qm9_index``: PyG adds the atom offset to any key holding
    "index" when it batches), ``name`` the SMILES and ``source`` ``"qm9[<QM9 index>]"``.

    Args:
        qm9: the flat tensors of :func:`load_qm9`.
        indices: QM9 indices of the molecules, in the dataset's order (default: all).

    >>> qm9 = {"pos": torch.zeros(5, 3), "z": torch.tensor([6, 1, 1, 8, 8], dtype=torch.uint8),
    ...        "ptr": torch.tensor([0, 3, 5]), "index": torch.tensor([7, 9]),
    ...        "properties": torch.zeros(2, 1, dtype=torch.float64), "smiles": ["[CH2]", "O=O"]}
    >>> data = QM9Dataset(qm9, indices=[9, 7])[0]
    >>> data.source, data.z.tolist(), data.pos.shape
    ('qm9[9]', [8, 8], torch.Size([2, 3]))
    """

    def __init__(self, qm9: dict, indices: torch.Tensor | Sequence[int] | None = None):
        self.qm9 = qm9
        all_indices = qm9["index"]
        if indices is None:
            self.rows = torch.arange(len(all_indices))
        else:
            indices = torch.as_tensor(indices, dtype=torch.long)
            rows = torch.searchsorted(all_indices, indices).clamp(max=len(all_indices) - 1)
            absent = all_indices[rows] != indices
            if absent.any():
                raise KeyError(f"QM9 has no molecule with index {int(indices[absent][0])}")
            self.rows = rows
        self._ptr = qm9["ptr"].tolist()

    @property
    def indices(self) -> torch.Tensor:
        """QM9 indices of the molecules, ``(len(self),)`` long."""
        return self.qm9["index"][self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Data:
        row = int(self.rows[i])
        start, end = self._ptr[row], self._ptr[row + 1]
        index, smiles = int(self.qm9["index"][row]), self.qm9["smiles"][row]
        return Data(
            pos=self.qm9["pos"][start:end],
            z=self.qm9["z"][start:end].long(),
            y=self.qm9["properties"][row : row + 1],
            qm9_id=index,
            smiles=smiles,
            name=smiles,
            source=f"qm9[{index}]",
        )

    def flat_atoms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Atomic numbers of all the dataset's atoms, ``(N,)`` long, molecule after molecule,
        and each molecule's atom count, ``(len(self),)`` long (for checks over all atoms at once)."""
        ptr = self.qm9["ptr"]
        return self.qm9["z"][_gather_atoms(ptr, self.rows)].long(), ptr[self.rows + 1] - ptr[self.rows]
