"""Lightning data modules over lists of structures and over QM9."""

from __future__ import annotations

import os
from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from ._io import read_structures, structure_files
from ._qm9 import QM9Dataset, load_qm9, qm9_split
from ._structures import StructureError
from ._tetris import tetris

__all__ = ["StructureDataModule", "TetrisDataModule", "FileDataModule", "QM9DataModule"]


class StructureDataModule(L.LightningDataModule):
    """Train / validation / test structures behind PyG data loaders.

    Every structure must have ``z`` among ``species`` and at most ``max_atoms`` atoms; a
    structure that does not raises :class:`StructureError` naming it, before any training
    starts (one vectorised check over all atoms, :func:`check_species_and_size`).

    Args:
        train, val, test: structures (``Data(pos, z, ...)``), as lists or as a torch
            ``Dataset`` such as :class:`geoae.data.QM9Dataset`; ``test`` defaults to ``val``.
        species: the atomic numbers the model knows, in the order of its species channels.
        max_atoms: largest structure allowed (the model's depth follows from it).
        showcase: a few structures to draw beside their reconstructions (default: the
            first 8 test structures).
        batch_size: structures per batch.
        shuffle: shuffle the training structures every epoch.
        num_workers: data loader workers.
        seed: seed of the training shuffle (None: torch's global generator).
    """

    def __init__(
        self,
        train: Sequence[Data] | Dataset,
        val: Sequence[Data] | Dataset,
        species: Sequence[int],
        max_atoms: int,
        test: Sequence[Data] | Dataset | None = None,
        showcase: Sequence[Data] | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
        num_workers: int = 0,
        seed: int | None = None,
    ):
        super().__init__()
        self.shuffle, self.seed = shuffle, seed
        self.species, self.max_atoms = [int(s) for s in species], max_atoms
        self.train_set, self.val_set = _as_dataset(train), _as_dataset(val)
        self.test_set = _as_dataset(test) if test is not None else self.val_set
        self.showcase = list(showcase) if showcase is not None else [self.test_set[i] for i in range(min(8, len(self.test_set)))]
        self.batch_size, self.num_workers = batch_size, num_workers
        for dataset in (self.train_set, self.val_set) + ((self.test_set,) if test is not None else ()):
            check_species_and_size(dataset, self.species, max_atoms)

    def _loader(self, dataset: Sequence[Data] | Dataset, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle and self.seed is not None else None
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers, generator=generator
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


def _as_dataset(structures: Sequence[Data] | Dataset) -> list[Data] | Dataset:
    return structures if isinstance(structures, Dataset) else list(structures)


def check_species_and_size(structures: Sequence[Data] | Dataset, species: Sequence[int], max_atoms: int) -> None:
    """Raise :class:`StructureError` naming the first structure with an atomic number not in
    ``species`` or more than ``max_atoms`` atoms, checking all atoms at once (a dataset with a
    ``flat_atoms()`` method, like :class:`geoae.data.QM9Dataset`, gives them without building
    its structures).

    >>> try:
    ...     check_species_and_size([Data(pos=torch.zeros(2, 3), z=torch.tensor([6, 1]), source="a.xyz[0]")], [1, 6], 1)
    ... except StructureError as error:
    ...     print(error)
    a.xyz[0]: 2 atoms, more than max_atoms=1
    """
    if hasattr(structures, "flat_atoms"):
        z, counts = structures.flat_atoms()
    else:
        z = torch.cat([data.z for data in structures]) if len(structures) else torch.zeros(0, dtype=torch.long)
        counts = torch.tensor([data.num_nodes for data in structures], dtype=torch.long)
    known = torch.tensor([int(s) for s in species], dtype=z.dtype)
    unknown = torch.zeros(len(counts), dtype=torch.bool)
    unknown[torch.repeat_interleave(torch.arange(len(counts)), counts)[~torch.isin(z, known)]] = True
    bad = (unknown | (counts > max_atoms)).nonzero().flatten()
    if len(bad) == 0:
        return
    i = int(bad[0])
    data = structures[i]
    source = getattr(data, "source", None) or f"structure {i}"
    if unknown[i]:
        numbers = sorted(set(data.z[~torch.isin(data.z, known)].tolist()))
        raise StructureError(f"{source}: atomic numbers {numbers} are not among the configured species {list(species)}")
    raise StructureError(f"{source}: {int(counts[i])} atoms, more than max_atoms={max_atoms}")


class TetrisDataModule(StructureDataModule):
    """The 8 tetris shapes (:func:`geoae.data.tetris`).

    Trains on ``rotations`` random rotations of each shape (0: the fixed orientation),
    optionally with mirror images, each listed ``repeat`` times per epoch, unshuffled, so a
    batch of 8 holds every shape once (random batches of repeated shapes trained several
    times slower); validates on ``val_rotations`` other random rotations of
    every shape and of its mirror image, so validation measures what equivariance promises.
    """

    def __init__(
        self,
        species: Sequence[int],
        max_atoms: int = 4,
        rotations: int = 0,
        mirror: bool = False,
        val_rotations: int = 4,
        repeat: int = 1,
        seed: int = 0,
        batch_size: int = 8,
        num_workers: int = 0,
    ):
        super().__init__(
            train=tetris(rotations=rotations, mirror=mirror, seed=seed) * repeat,
            val=tetris(rotations=val_rotations, mirror=True, seed=seed + 1),
            species=species,
            max_atoms=max_atoms,
            showcase=tetris(),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
        )


class FileDataModule(StructureDataModule):
    """Structures from a file or a folder of files that ASE reads, split at random.

    Args:
        path: a file (all its structures) or a folder (every non-hidden file under it).
        val_fraction, test_fraction: fractions of the structures held out, chosen by ``seed``
            (which also seeds the training shuffle).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        species: Sequence[int],
        max_atoms: int,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
    ):
        structures = [data for file in structure_files(path) for data in read_structures(file)]
        order = torch.randperm(len(structures), generator=torch.Generator().manual_seed(seed)).tolist()
        num_val, num_test = int(val_fraction * len(order)), int(test_fraction * len(order))
        pick = lambda idx: [structures[i] for i in idx]  # noqa: E731
        super().__init__(
            train=pick(order[num_val + num_test :]),
            val=pick(order[:num_val]),
            test=pick(order[num_val : num_val + num_test]),
            species=species,
            max_atoms=max_atoms,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
        )


class QM9DataModule(StructureDataModule):
    """QM9 (:mod:`geoae.data._qm9`, ``pip install "geoae[qm9]"``) in its fixed split.

    Training, validation and test sets are the 100,000 / 10,000 / 20,831 molecules of
    :func:`geoae.data.qm9_split` (fixed; ``seed`` only shuffles the training set), as
    :class:`geoae.data.QM9Dataset` (each ``Data`` built when a batch asks for it). The
    showcase is the first 8 test molecules. ``split_indices`` holds the QM9 indices of each
    set, ``{"train", "val", "test"}``, after ``limit``.

    Args:
        species, max_atoms: see :class:`StructureDataModule`; checked on all atoms at once.
        batch_size: molecules per batch.
        limit: keep only the first ``limit`` molecules of each set (a quick run); None: all.
        cache_dir: folder of the parsed-QM9 cache (default: ``$GEOAE_CACHE``, else
            ``~/.cache/geoae``), see :func:`geoae.data.load_qm9`.
        num_workers: data loader workers.
        shuffle: shuffle the training set every epoch.
        seed: seed of the training shuffle.
        files: CSV files in qm9pack's format instead of qm9pack's own.
    """

    def __init__(
        self,
        species: Sequence[int] = (1, 6, 7, 8, 9),
        max_atoms: int = 29,
        batch_size: int = 32,
        limit: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        num_workers: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        files: Sequence[str | os.PathLike] | None = None,
    ):
        qm9 = load_qm9(cache_dir, files)
        self.split_indices = {part: indices[:limit] for part, indices in qm9_split(qm9["index"]).items()}
        train, val, test = (QM9Dataset(qm9, self.split_indices[part]) for part in ("train", "val", "test"))
        super().__init__(
            train=train,
            val=val,
            test=test,
            species=species,
            max_atoms=max_atoms,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=num_workers,
            seed=seed,
        )
