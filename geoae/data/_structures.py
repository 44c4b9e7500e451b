"""The one structure convention of geoae, on PyG ``Data``.

A structure is a :class:`torch_geometric.data.Data` with

=========  ==================  ====================================================
key        shape, dtype        meaning
=========  ==================  ====================================================
``pos``    ``(N, 3)`` float    positions (angstrom for molecules, block units for
                               tetris)
``z``      ``(N,)`` long       atomic numbers; tetris blocks use :data:`BLOCK_Z`
``batch``  ``(N,)`` long       structure index of each atom, added by ``Batch`` /
                               ``DataLoader`` (sorted, PyG convention)
``name``   ``str``             optional, a label (tetris shape, chemical formula)
``source`` ``str``             optional, where it came from (``file.xyz[3]``)
=========  ==================  ====================================================

:class:`ase.Atoms` is the public structure type users hand in and get back;
:func:`from_atoms` and :func:`to_atoms` convert. Every structure that enters geoae goes
through :func:`check_structure`, which raises :class:`StructureError` naming the
structure's source and the problem.
"""

from __future__ import annotations

import ase
import numpy as np
import torch
from ase.data import chemical_symbols
from torch_geometric.data import Data

__all__ = ["BLOCK_Z", "StructureError", "check_structure", "from_atoms", "to_atoms"]

BLOCK_Z = 6
"""Atomic number given to tetris blocks (one fixed species: carbon)."""

MIN_DISTANCE = 1e-3
"""Two atoms closer than this (in the structure's length unit) are "at the same position"."""


class StructureError(ValueError):
    """A structure geoae cannot use; the message names its source and the problem."""


def check_structure(pos: torch.Tensor, z: torch.Tensor, source: str = "structure") -> None:
    """Raise :class:`StructureError` unless ``pos`` (N, 3) and ``z`` (N,) are a usable structure.

    >>> check_structure(torch.zeros(1, 3), torch.tensor([1]))
    >>> try:
    ...     check_structure(torch.zeros(2, 3), torch.tensor([1, 1]), "water.xyz[0]")
    ... except StructureError as error:
    ...     print(error)
    water.xyz[0]: atoms 0 and 1 are at the same position (distance 0)
    """
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise StructureError(f"{source}: positions must have shape (N, 3), got {tuple(pos.shape)}")
    if z.shape != pos.shape[:1]:
        raise StructureError(f"{source}: {pos.shape[0]} positions but {z.numel()} atomic numbers")
    if pos.shape[0] == 0:
        raise StructureError(f"{source}: empty structure (no atoms)")
    bad = ~torch.isfinite(pos).all(dim=1)
    if bad.any():
        raise StructureError(
            f"{source}: non-finite coordinates (NaN or infinite) for atoms {bad.nonzero().flatten().tolist()}"
        )
    unknown = (z < 1) | (z >= len(chemical_symbols))
    if unknown.any():
        raise StructureError(f"{source}: unknown atomic numbers {sorted(set(z[unknown].tolist()))}")
    if pos.shape[0] > 1:
        dist = torch.cdist(pos.double(), pos.double())
        dist.fill_diagonal_(float("inf"))
        i, j = divmod(int(dist.argmin()), pos.shape[0])
        if dist[i, j] < MIN_DISTANCE:
            raise StructureError(
                f"{source}: atoms {min(i, j)} and {max(i, j)} are at the same position "
                f"(distance {dist[i, j].item():.3g})"
            )


def from_atoms(atoms: ase.Atoms, source: str | None = None, dtype: torch.dtype = torch.float32) -> Data:
    """Convert :class:`ase.Atoms` to a checked structure ``Data(pos, z, name, source)``.

    >>> data = from_atoms(ase.Atoms("H2O", positions=[[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]]))
    >>> data.pos.shape, data.z.tolist(), data.name
    (torch.Size([3, 3]), [1, 1, 8], 'H2O')
    """
    source = source or atoms.info.get("source", "structure")
    pos = torch.as_tensor(np.asarray(atoms.get_positions()), dtype=dtype)
    z = torch.as_tensor(np.asarray(atoms.get_atomic_numbers()), dtype=torch.long)
    check_structure(pos, z, source)
    name = atoms.info.get("name", atoms.get_chemical_formula())
    return Data(pos=pos, z=z, name=str(name), source=str(source))


def to_atoms(data: Data, num_structures: int | None = None) -> list[ase.Atoms]:
    """Convert a structure or a batch of structures to a list of :class:`ase.Atoms`, one per
    structure of ``data.batch`` (``num_structures`` of them: structures with no atoms come
    out empty; default: up to the largest index), each with its atoms in their order in
    ``data``.

    >>> [a.get_chemical_formula() for a in to_atoms(Data(pos=torch.zeros(1, 3), z=torch.tensor([8])))]
    ['O']
    >>> batch = Data(pos=torch.zeros(3, 3), z=torch.tensor([8, 1, 1]), batch=torch.tensor([1, 0, 1]))
    >>> [a.get_chemical_formula() for a in to_atoms(batch, num_structures=3)]
    ['H', 'HO', '']
    """
    pos = data.pos.detach().cpu().double().numpy()
    z = data.z.detach().cpu().numpy()
    batch = data.batch.cpu().numpy() if getattr(data, "batch", None) is not None else np.zeros(len(z), dtype=int)
    if num_structures is None:
        num_structures = int(batch.max()) + 1 if len(batch) else 0
    if num_structures == 0:
        return []
    order = np.argsort(batch, kind="stable")  # atoms by structure, each structure's in their order
    ends = np.cumsum(np.bincount(batch, minlength=num_structures))[:-1]
    names = getattr(data, "name", None)
    if isinstance(names, str):
        names = [names]
    out = []
    for b, (numbers, positions) in enumerate(zip(np.split(z[order], ends), np.split(pos[order], ends))):
        atoms = ase.Atoms(numbers=numbers, positions=positions)
        if names is not None:
            atoms.info["name"] = names[b]
        out.append(atoms)
    return out
