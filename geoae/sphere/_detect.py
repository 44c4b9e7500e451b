"""Candidate peaks of spherical signals on a grid: local maxima, padding, greedy merging."""

import functools
import math
from typing import NamedTuple

import torch

from ._grid import SphereGrid, sphere_grid


class _Detection(NamedTuple):
    grid: SphereGrid
    table: torch.Tensor  # [M, G]: the grid's harmonics, transposed, contiguous
    offsets: torch.Tensor  # [D, G]: each point's neighbours minus the point's own index
    cos_merge: float  # peaks closer than 2.5 grid spacings are one: the cosine of that angle


@functools.lru_cache(maxsize=None)
def _detection(lmax: int, resolution: int | None, dtype: torch.dtype, device: torch.device) -> _Detection:
    grid = sphere_grid(lmax, resolution, dtype, device)
    own = torch.arange(len(grid.neighbors), device=grid.neighbors.device)[:, None]
    offsets = (grid.neighbors - own).T.contiguous()
    return _Detection(grid, grid.harmonics.T.contiguous(), offsets, math.cos(2.5 * grid.spacing))


def _local_maxima(values: torch.Tensor, detection: _Detection, cut: torch.Tensor):
    r"""Grid points above ``cut`` and not below any neighbour. ``values``: ``(S, G)``, ``cut``: ``(S,)``.

    Returns ``(signal, direction, height)``: ``(C,)``, ``(C, 3)``, ``(C,)``.
    """
    width = values.shape[1]
    flat = values.reshape(-1)
    place = (values > cut[:, None]).reshape(-1).nonzero().squeeze(1)  # [C]: signal * G + point
    height = flat[place]  # [C]
    for offsets in detection.offsets:  # one neighbour at a time, on the survivors: most fall at the first ones
        keep = height >= flat[place + offsets[place % width]]
        place, height = place[keep], height[keep]
    return place // width, detection.grid.points[place % width], height


def _rank(index: torch.Tensor, num_signals: int) -> torch.Tensor:
    r"""Each entry's place ``(C,)`` among the entries of its signal, for a sorted ``index`` ``(C,)``."""
    counts = torch.bincount(index, minlength=num_signals)  # [S]
    return torch.arange(len(index), device=index.device) - (counts.cumsum(0) - counts)[index]


def _pad(signal: torch.Tensor, directions: torch.Tensor, height: torch.Tensor, num_signals: int):
    r"""Ragged candidates to ``(S, K, 3)`` directions and ``(S, K)`` heights and mask, highest first."""
    order = torch.sort(height, descending=True, stable=True).indices
    order = order[torch.sort(signal[order], stable=True).indices]  # by signal, then height
    signal, directions, height = signal[order], directions[order], height[order]
    rank = _rank(signal, num_signals)  # [C]
    width = int(rank.max()) + 1 if len(signal) else 0
    padded = directions.new_zeros(num_signals, width, 3)
    padded[..., 2] = 1  # masked slots hold a valid unit vector
    padded[signal, rank] = directions
    heights = height.new_zeros(num_signals, width)
    heights[signal, rank] = height
    mask = torch.zeros(num_signals, width, dtype=torch.bool, device=signal.device)
    mask[signal, rank] = True
    return padded, heights, mask


def _suppress(directions: torch.Tensor, score: torch.Tensor, mask: torch.Tensor, cos_merge: float) -> torch.Tensor:
    r"""Greedy merging: drop a peak within the merge angle of a kept peak of higher score.

    ``directions``: ``(S, K, 3)``; ``score``, ``mask``: ``(S, K)``. Returns the kept ``(S, K)`` mask.
    """
    order = torch.where(mask, score, -math.inf).argsort(dim=1, descending=True, stable=True)  # [S, K]
    sorted_directions = directions.gather(1, order[..., None].expand_as(directions))  # [S, K, 3]
    close = sorted_directions @ sorted_directions.transpose(1, 2) > cos_merge  # [S, K, K]
    keep = mask.gather(1, order)  # [S, K]
    for rank in range(1, keep.shape[1]):
        keep[:, rank] &= ~(close[:, rank, :rank] & keep[:, :rank]).any(dim=1)
    return torch.zeros_like(mask).scatter(1, order, keep)
