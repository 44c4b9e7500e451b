"""A near-uniform grid on the sphere with its neighbour lists, built once and cached."""

import functools
import math
from typing import NamedTuple

import numpy as np
import torch
from scipy.spatial import ConvexHull

from ._harmonics import spherical_harmonics


class SphereGrid(NamedTuple):
    r"""Grid on the sphere used to look for peaks.

    Attributes:
        points: ``(G, 3)`` unit vectors (a Fibonacci lattice: no poles, no seam).
        neighbors: ``(G, D)`` indices of each point's Delaunay neighbours, padded with the
            point itself (the relation is symmetric).
        harmonics: ``(G, (lmax+1)**2)`` spherical harmonics at the points.
        spacing: typical angle between neighbours, radians.
    """

    points: torch.Tensor
    neighbors: torch.Tensor
    harmonics: torch.Tensor
    spacing: float


def default_resolution(lmax: int) -> int:
    r"""Default number of grid points: about 5 degrees apart at lmax 6, finer as lmax grows.

    >>> default_resolution(6)
    1960
    """
    return 40 * (lmax + 1) ** 2


@functools.lru_cache(maxsize=None)
def _topology(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(resolution) + 0.5
    z = 1 - 2 * i / resolution
    phi = math.pi * (1 + math.sqrt(5)) * i
    r = np.sqrt(1 - z * z)
    points = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)  # [G, 3]
    simplices = ConvexHull(points).simplices  # [T, 3]: the Delaunay triangulation
    edges = np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [2, 0]]])
    edges = np.unique(np.concatenate([edges, edges[:, ::-1]]), axis=0)  # [E, 2], both ways
    degree = np.bincount(edges[:, 0], minlength=resolution)
    neighbors = np.repeat(np.arange(resolution)[:, None], degree.max(), axis=1)  # [G, D]
    slot = np.arange(len(edges)) - np.repeat(np.cumsum(degree) - degree, degree)
    neighbors[edges[:, 0], slot] = edges[:, 1]
    return points, neighbors


@functools.lru_cache(maxsize=None)
def _grid_cached(lmax: int, resolution: int, dtype: torch.dtype, device: torch.device) -> SphereGrid:
    points, neighbors = _topology(resolution)
    points = torch.from_numpy(points)  # [G, 3] float64
    return SphereGrid(
        points=points.to(dtype=dtype, device=device),
        neighbors=torch.from_numpy(neighbors).to(device=device),
        harmonics=spherical_harmonics(points, lmax).to(dtype=dtype, device=device),
        spacing=math.sqrt(4 * math.pi / resolution),
    )


def sphere_grid(lmax: int, resolution: int | None = None, dtype: torch.dtype = torch.float32, device=None) -> SphereGrid:
    r"""The cached grid for ``(lmax, resolution, dtype, device)``.

    Args:
        lmax: largest degree of the signals evaluated on it.
        resolution: number of points; ``default_resolution(lmax)`` when ``None``.

    >>> grid = sphere_grid(2, 100, torch.float64)
    >>> grid.points.shape, grid.harmonics.shape
    (torch.Size([100, 3]), torch.Size([100, 9]))
    >>> grid is sphere_grid(2, 100, torch.float64)
    True
    """
    if resolution is None:
        resolution = default_resolution(lmax)
    return _grid_cached(lmax, resolution, dtype, torch.device(device or "cpu"))
