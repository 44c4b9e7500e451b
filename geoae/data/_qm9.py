"""QM9: 130,831 small organic molecules (H, C, N, O, F; 3 to 29 atoms, hydrogens kept), cached,
split and served as structures. The CSV files they come from are read by :mod:`geoae.data._qm9_csv`.

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

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch_geometric.data import Data

from geoae._atomic import atomic_path
from geoae._segments import gather_atoms

from ._qm9_csv import qm9_csv_files, read_qm9_csv

__all__ = ["QM9_SPLIT_SIZES", "QM9Dataset", "load_qm9", "qm9_split"]

QM9_SPLIT_SIZES: tuple[int, int] = (100_000, 10_000)
"""Training and validation sizes of the fixed split; the test set is the rest (20,831)."""

_SPLIT_SEED = 0
_CACHE_NAME = "qm9-v1"


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
        return self.qm9["z"][gather_atoms(ptr, self.rows)].long(), ptr[self.rows + 1] - ptr[self.rows]
