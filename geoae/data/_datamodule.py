"""Lightning data modules over lists of structures."""

from __future__ import annotations

import os
from collections.abc import Sequence

import lightning as L
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from ._io import read_structures, structure_files
from ._structures import StructureError
from ._tetris import tetris

__all__ = ["StructureDataModule", "TetrisDataModule", "FileDataModule"]


class StructureDataModule(L.LightningDataModule):
    """Train / validation / test lists of structures behind PyG data loaders.

    Every structure must have ``z`` among ``species``; a structure that does not raises
    :class:`StructureError` naming it, before any training starts.

    Args:
        train, val, test: lists of structures (``Data(pos, z, ...)``); ``test`` defaults to ``val``.
        species: the atomic numbers the model knows, in the order of its species channels.
        max_atoms: largest structure allowed (the model's depth follows from it).
        showcase: a few structures to draw beside their reconstructions (default: the
            first 8 test structures).
        batch_size: structures per batch.
        shuffle: shuffle the training structures every epoch.
        num_workers: data loader workers.
    """

    def __init__(
        self,
        train: Sequence[Data],
        val: Sequence[Data],
        species: Sequence[int],
        max_atoms: int,
        test: Sequence[Data] | None = None,
        showcase: Sequence[Data] | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
        num_workers: int = 0,
    ):
        super().__init__()
        self.shuffle = shuffle
        self.species, self.max_atoms = [int(s) for s in species], max_atoms
        self.train_set, self.val_set = list(train), list(val)
        self.test_set = list(test) if test is not None else self.val_set
        self.showcase = list(showcase) if showcase is not None else self.test_set[:8]
        self.batch_size, self.num_workers = batch_size, num_workers
        known = torch.tensor(self.species)
        for data in self.train_set + self.val_set + self.test_set:
            unknown = ~torch.isin(data.z, known)
            if unknown.any():
                raise StructureError(
                    f"{data.source}: atomic numbers {sorted(set(data.z[unknown].tolist()))} "
                    f"are not among the configured species {self.species}"
                )
            if data.num_nodes > max_atoms:
                raise StructureError(f"{data.source}: {data.num_nodes} atoms, more than max_atoms={max_atoms}")

    def _loader(self, dataset: list[Data], shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


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
        val_fraction, test_fraction: fractions of the structures held out, chosen by ``seed``.
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
        )
