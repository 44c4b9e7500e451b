"""The pooling hierarchy: recursive symmetric clustering of a batch of structures to one point each."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from geoae.cluster import cluster_centroids, symmetric_kmeans

__all__ = ["Hierarchy", "build_hierarchy", "level_sizes", "num_levels_for"]


@dataclass(frozen=True)
class Hierarchy:
    """Points of every level of a batch of ``B`` structures, and who pools into whom.

    Every point sits at the centroid of the atoms it stands for, so the root of a structure
    (the one point of the last level) is the centroid of its atoms.

    Attributes:
        pos: ``num_levels + 1`` tensors ``(N_l, 3)``: level 0 the atoms, the last level the
            ``B`` roots (one per structure, in structure order).
        batch: ``num_levels + 1`` tensors ``(N_l,)``: structure of each point (sorted).
        weight: ``num_levels + 1`` tensors ``(N_l,)``: number of atoms each point stands for.
        parent: ``num_levels`` tensors ``(N_l,)``: index of each level-``l`` point's cluster
            among the points of level ``l + 1``.
    """

    pos: list[torch.Tensor]
    batch: list[torch.Tensor]
    weight: list[torch.Tensor]
    parent: list[torch.Tensor]

    @property
    def num_levels(self) -> int:
        return len(self.parent)


def num_levels_for(max_atoms: int, ratio: float) -> int:
    """Levels of pooling that bring ``max_atoms`` points to one when each level keeps
    ``ceil(ratio * n)`` clusters.

    >>> num_levels_for(4, 0.5), num_levels_for(29, 0.5), num_levels_for(1, 0.5)
    (2, 5, 1)
    """
    n, levels = max_atoms, 0
    while n > 1 or levels == 0:
        n, levels = math.ceil(ratio * n), levels + 1
    return levels


def level_sizes(max_atoms: int, ratio: float) -> list[int]:
    """The most points a structure has at each level, atoms first, root last.

    >>> level_sizes(29, 0.5)
    [29, 15, 8, 4, 2, 1]
    """
    sizes = [max_atoms]
    for _ in range(num_levels_for(max_atoms, ratio) - 1):
        sizes.append(math.ceil(ratio * sizes[-1]))
    return sizes + [1]


def build_hierarchy(
    pos: torch.Tensor, batch: torch.Tensor, num_levels: int, ratio: float, method: str = "exact"
) -> Hierarchy:
    """Pool ``pos`` (N, 3) of structures ``batch`` (N,) ``num_levels`` times.

    Each level clusters the current points of each structure into ``ceil(ratio * n)``
    clusters (one at the last level) with :func:`geoae.cluster.symmetric_kmeans` (its
    ``method``), weighted by the number of atoms each point stands for; degenerate optima merge, so a symmetric
    structure pools faster and is never cut arbitrarily. A structure already at one point
    stays there (its one point is its own cluster).
    """
    levels_pos, levels_batch = [pos], [batch]
    levels_weight, parents = [pos.new_ones(pos.shape[0])], []
    for level in range(num_levels):
        counts = torch.bincount(levels_batch[-1])
        k = torch.ones_like(counts) if level == num_levels - 1 else torch.ceil(ratio * counts).long().clamp(min=1)
        clustering = symmetric_kmeans(levels_pos[-1], levels_batch[-1], k, weight=levels_weight[-1], method=method)
        centres, weight = cluster_centroids(
            levels_pos[-1], clustering.cluster, clustering.num_clusters, levels_weight[-1]
        )
        parents.append(clustering.cluster)
        levels_pos.append(centres)
        levels_batch.append(clustering.cluster_batch)
        levels_weight.append(weight)
    return Hierarchy(levels_pos, levels_batch, levels_weight, parents)
