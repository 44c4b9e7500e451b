"""Index arithmetic on flat per-atom tensors of several structures (PyG's layout)."""

from __future__ import annotations

import torch

__all__ = ["gather_atoms"]


def gather_atoms(ptr: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Indices of the atoms of structures ``rows`` (R,), in that order, given the offsets
    ``ptr`` (M + 1,) of flat per-atom tensors.

    >>> gather_atoms(torch.tensor([0, 2, 3, 6]), torch.tensor([2, 0])).tolist()
    [3, 4, 5, 0, 1]
    """
    starts, counts = ptr[rows], ptr[rows + 1] - ptr[rows]
    offsets = torch.cumsum(counts, 0) - counts  # where each structure starts in the output
    return torch.arange(int(counts.sum()), device=ptr.device) + torch.repeat_interleave(starts - offsets, counts)
