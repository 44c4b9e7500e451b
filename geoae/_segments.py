"""Index arithmetic on flat per-atom tensors of several structures (PyG's layout), and the
grouping of rows of different sizes for padded batched work."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["gather_atoms", "size_groups"]


def gather_atoms(ptr: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Indices of the atoms of structures ``rows`` (R,), in that order, given the offsets
    ``ptr`` (M + 1,) of flat per-atom tensors.

    >>> gather_atoms(torch.tensor([0, 2, 3, 6]), torch.tensor([2, 0])).tolist()
    [3, 4, 5, 0, 1]
    """
    starts, counts = ptr[rows], ptr[rows + 1] - ptr[rows]
    offsets = torch.cumsum(counts, 0) - counts  # where each structure starts in the output
    return torch.arange(int(counts.sum()), device=ptr.device) + torch.repeat_interleave(starts - offsets, counts)


def size_groups(sizes: torch.Tensor, cost: Callable[[int, int], float]) -> list[torch.Tensor]:
    """Rows (indices into ``sizes`` (R,)) in groups of consecutive sizes, for work done on
    each group at once, padded to its largest size: the partition of the distinct sizes into
    ranges that minimises the summed ``cost(rows, largest)`` of the groups (a group's fixed
    overhead against the padding of its smaller rows), by dynamic programming over the
    distinct sizes. Groups come smallest sizes first; ties go to fewer, wider groups.

    >>> sizes = torch.tensor([1, 3, 3, 2, 1])
    >>> [g.tolist() for g in size_groups(sizes, lambda rows, largest: 2.0 + rows * largest**2)]
    [[0, 4], [3], [1, 2]]
    >>> [g.tolist() for g in size_groups(sizes, lambda rows, largest: 100.0 + rows * largest**2)]  # one group, padded to 3
    [[0, 1, 2, 3, 4]]
    """
    values, number = torch.unique(sizes, return_counts=True)  # ascending
    values, up_to = values.tolist(), torch.cumsum(number, 0).tolist()  # up_to[i]: rows of sizes values[: i + 1]
    # best[i]: least cost for the sizes values[:i]; cut[i]: where its last group starts
    best, cut = [0.0], [0]
    for i in range(1, len(values) + 1):
        options = [(best[j] + cost(up_to[i - 1] - (up_to[j - 1] if j else 0), values[i - 1]), j) for j in range(i)]
        total, j = min(options)
        best.append(total)
        cut.append(j)
    bounds, i = [], len(values)
    while i > 0:
        bounds.append((values[cut[i]], values[i - 1]))
        i = cut[i]
    return [((sizes >= low) & (sizes <= high)).nonzero()[:, 0] for low, high in reversed(bounds)]
