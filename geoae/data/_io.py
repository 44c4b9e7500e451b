"""Reading and writing structures in any format ASE knows (xyz, extxyz, pdb, cif, sdf, ...)."""

from __future__ import annotations

import os
from pathlib import Path

import ase
import ase.io
from torch_geometric.data import Data

from geoae._atomic import atomic_path

from ._structures import StructureError, from_atoms, to_atoms

__all__ = ["StructureFileError", "read_structures", "write_structures", "structure_files"]


class StructureFileError(StructureError):
    """A file that does not hold usable structures; the message names the file."""


def read_structures(path: str | os.PathLike, format: str | None = None) -> list[Data]:
    """Read every structure of a file ``ase.io.read`` can read into checked ``Data``.

    Each structure's ``source`` is ``"path[i]"`` (``i`` its index in the file), and every
    error names it: a file ASE cannot read, an empty structure, non-finite coordinates, two
    atoms at the same position, an unknown element. Nothing is silently dropped.

    >>> import tempfile, ase.io
    >>> path = tempfile.mkdtemp() + "/h2.xyz"
    >>> ase.io.write(path, [ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])] * 2)
    >>> [(d.name, d.source.endswith("h2.xyz[1]")) for d in read_structures(path)][1]
    ('H2', True)
    """
    path = Path(path)
    if not path.is_file():
        raise StructureFileError(f"{path}: no such file")
    try:
        images = ase.io.read(path, index=":", format=format)
    except Exception as error:  # ase raises many types; all mean "cannot read"
        raise StructureFileError(f"{path}: ASE cannot read this file ({type(error).__name__}: {error})") from error
    if isinstance(images, ase.Atoms):
        images = [images]
    if not images:
        raise StructureFileError(f"{path}: the file holds no structure")
    return [from_atoms(atoms, source=f"{path}[{i}]") for i, atoms in enumerate(images)]


def structure_files(path: str | os.PathLike) -> list[Path]:
    """The structure files under ``path``: the file itself, or every non-hidden file of a
    folder (recursively, sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise StructureFileError(f"{path}: no such file or folder")
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise StructureFileError(f"{path}: the folder holds no file")
    return files


def write_structures(path: str | os.PathLike, structures: list[ase.Atoms] | Data, format: str | None = None) -> None:
    """Write structures (a list of :class:`ase.Atoms`, or a ``Data``/``Batch``) to ``path``.

    The file is written to a temporary file beside ``path`` and renamed into place, so an
    existing file is never left half-written.
    """
    path = Path(path)
    images = to_atoms(structures) if isinstance(structures, Data) else list(structures)
    format = format or ase.io.formats.filetype(path, read=False)
    with atomic_path(path) as tmp:
        ase.io.write(tmp, images, format=format)
