"""The decoder: recursive unpooling of one point's features back into a structure."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from e3nn import o3
from torch_geometric.utils import scatter

from geoae.nn import GatedBlock, Linear, radius_graph
from geoae.sphere import find_counted_peaks, find_peaks, integral_count

from ._bloom import BloomHead
from ._encoder import Combine
from ._hierarchy import Hierarchy

__all__ = ["CHILD_COUNTS", "Decoder", "Decoded", "BloomPrediction", "flipped_counts"]

#: How a decoder reads a point's number of children off its signal (``child_count``).
CHILD_COUNTS = {
    "integral": "as many as the signal's integral counts (geoae.sphere.find_counted_peaks)",
    "peaks": "every peak above find_peaks' thresholds (geoae.sphere.find_peaks)",
}


@dataclass(frozen=True)
class BloomPrediction:
    """What one unpooling level predicts for its ``M`` parent points.

    Attributes:
        level: the level of the children (0: atoms).
        signal: ``(M, 2, (signal_lmax+1)**2)`` spherical signals of the children's offsets.
        centre_logit: ``(M,)`` logit of "a child sits at the parent itself".
        centre_vector: ``(M, 3)`` that child's small offset.
    """

    level: int
    signal: torch.Tensor
    centre_logit: torch.Tensor
    centre_vector: torch.Tensor


@dataclass(frozen=True)
class Decoded:
    """Decoded structures: ``pos (N, 3)``, ``species (N,)`` (index into the model's species),
    ``batch (N,)`` (sorted) and the number of structures ``num_structures``.

    ``levels[l]`` is ``(pos (N_l, 3), batch (N_l,))``, the points decoded at level ``l`` of the
    hierarchy (0: the atoms, the same as ``pos`` and ``batch``; the roots, at the origin, are
    not included): what a free-running decoding made of each level. ``parents[l]`` ``(N_l,)``
    is each level-``l`` point's parent among the points of level ``l + 1`` (for the last
    level, the roots: one per structure); a child merged from the children of several
    parents keeps the first. ``species_logits`` ``(N, num_species)``: the species head's
    logits of each atom (``species`` is their argmax). ``residual`` ``(B,)``, set by
    :meth:`Autoencoder.refine`: each structure's :func:`geoae.model.latent_residual` (zero
    for a right decoding).
    """

    pos: torch.Tensor
    species: torch.Tensor
    batch: torch.Tensor
    num_structures: int
    levels: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    parents: tuple[torch.Tensor, ...] = ()
    species_logits: torch.Tensor | None = None
    residual: torch.Tensor | None = None


def merge_duplicates(pos: torch.Tensor, batch: torch.Tensor, radius: float) -> tuple[torch.Tensor, int]:
    """Label points of one structure closer than ``radius`` (transitively) as one point.

    Returns ``label (N,)`` (numbered by each group's lowest index, so a sorted ``batch`` stays
    sorted) and the number of groups.

    >>> merge_duplicates(torch.tensor([[0.0, 0, 0], [0.01, 0, 0], [1, 0, 0]]), torch.zeros(3, dtype=torch.long), 0.1)
    (tensor([0, 0, 1]), 2)
    """
    edge_index = radius_graph(pos, radius, batch)  # (2, E)
    label = torch.arange(pos.shape[0], device=pos.device)
    while True:  # propagate the lowest index through each connected group
        new = label.scatter_reduce(0, edge_index[1], label[edge_index[0]], reduce="amin")
        if torch.equal(new, label):
            break
        label = new
    _, label = torch.unique(label, return_inverse=True)
    return label, int(label.max()) + 1 if label.numel() else 0


def _rank_within(score: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """Each entry's place ``(P,)`` among the entries of its structure (``batch`` (P,), any
    order) by decreasing ``score`` (P,) (ties: the first first).

    >>> _rank_within(torch.tensor([0.5, 2.0, 1.0, 3.0]), torch.tensor([0, 0, 0, 1]))
    tensor([2, 0, 1, 0])
    """
    counts = torch.bincount(batch)  # (B,)
    by_score = torch.sort(score, descending=True, stable=True).indices
    by_structure = by_score[torch.sort(batch[by_score], stable=True).indices]  # structure, then score
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(by_structure)
    rank[by_structure] = torch.arange(len(score), device=score.device) - starts[batch[by_structure]]
    return rank


def _strongest(score: torch.Tensor, batch: torch.Tensor, num_structures: int, cap: int) -> torch.Tensor:
    """Indices (sorted) of the points to keep: all of them, unless a structure has more than
    ``cap``; then only its ``cap`` highest ``score`` (P,) (``batch`` (P,) any order).

    >>> _strongest(torch.tensor([0.5, 2.0, 1.0, 3.0]), torch.tensor([0, 0, 0, 1]), 2, cap=2)
    tensor([1, 2, 3])
    """
    counts = torch.bincount(batch, minlength=num_structures)
    if counts.numel() == 0 or int(counts.max()) <= cap:
        return torch.arange(len(score), device=score.device)
    return (_rank_within(score, batch) < cap).nonzero().flatten()


def flipped_counts(integral: torch.Tensor, batch: torch.Tensor, flip: int) -> torch.Tensor:
    """Child counts ``(M,)`` (long) of ``M`` points from their signals' integrals ``(M,)``
    (:func:`geoae.sphere.integral_count`): rounded, except that in each structure (``batch``
    (M,)) the ``flip``-th most uncertain point (0: the one whose integral is nearest half way
    between two counts) is rounded the other way. An alternative decoding, for where the
    rounding guessed wrong. Points that cannot be rounded the other way (a count of zero with
    a negative integral: minus one child) rank after all the others, so each ``flip`` changes
    a count wherever the structure has ``flip + 1`` points that can change.

    >>> flipped_counts(torch.tensor([1.1, 2.4, 0.8, 3.45, -0.45]), torch.tensor([0, 0, 1, 1, 1]), flip=0)
    tensor([1, 3, 1, 4, 0])
    """
    rounded = integral.round().clamp(min=0)  # (M,)
    other = torch.where(integral > rounded, rounded + 1, rounded - 1)  # (M,), -1 where none
    can_flip = other >= 0  # (M,)
    uncertainty = torch.where(can_flip, (integral - rounded).abs(), -1.0)  # (M,)
    rank = _rank_within(uncertainty, batch)  # (M,)
    return torch.where((rank == flip) & can_flip, other, rounded).long()


class Decoder(torch.nn.Module):
    """Unpooling layers: at each level convolve the points, bloom each point's children
    through a spherical signal (:class:`BloomHead`, read by :func:`geoae.sphere.find_peaks`)
    plus a centre child, merge duplicates, and give the children features by a convolution
    from their origin (:class:`Combine`). At the last level, predict each atom's species.

    ``max_points[l]`` is the most points a structure has at level ``l`` (``max_atoms`` at
    level 0); a free-running decoding that blooms more than twice that many children at a
    level (an untrained model can) keeps the ones with the highest peak amplitude, so memory
    stays bounded.

    ``child_count`` (a key of :data:`CHILD_COUNTS`) is how many children a signal gives:
    ``"integral"`` (default) reads the count off the signal's integral
    (:func:`geoae.sphere.count_vectors`) and keeps that many peaks, completing the signal from
    what its peaks leave unexplained when too few stand out (:func:`geoae.sphere.find_counted_peaks`);
    ``"peaks"`` takes every peak above
    :func:`geoae.sphere.find_peaks`' thresholds. On a signal the network predicts well both
    agree; where it blurs a peak (it is unsure of the child's place), the peak's height falls
    under the threshold first, while the integral still counts the child.
    """

    def __init__(
        self,
        num_species: int,
        irreps_hidden,
        irreps_latent,
        num_levels: int,
        convs_per_level: int,
        r_max: float,
        signal_lmax: int,
        min_radius: float,
        merge_radius: float,
        max_points: list[int],
        child_count: str = "integral",
        **conv_kwargs,
    ):
        super().__init__()
        if child_count not in CHILD_COUNTS:
            valid = "; ".join(f"{k!r}: {v}" for k, v in CHILD_COUNTS.items())
            raise ValueError(f"unknown child_count={child_count!r}; valid: {valid}")
        self.child_count = child_count
        self.max_points = list(max_points)
        self.irreps_hidden, self.irreps_latent = o3.Irreps(irreps_hidden), o3.Irreps(irreps_latent)
        self.num_levels, self.r_max = num_levels, r_max
        self.min_radius, self.merge_radius = min_radius, merge_radius
        conv_kwargs = dict(conv_kwargs, r_max=r_max)
        self.unreadout = Linear(self.irreps_latent, self.irreps_hidden)
        # module [l] makes the points of level l from those of level l + 1
        self.convs = torch.nn.ModuleList(
            torch.nn.ModuleList(GatedBlock(self.irreps_hidden, self.irreps_hidden, **conv_kwargs) for _ in range(convs_per_level))
            for _ in range(num_levels + 1)  # [num_levels]: the atoms' convolution before species
        )
        self.blooms = torch.nn.ModuleList(BloomHead(self.irreps_hidden, signal_lmax) for _ in range(num_levels))
        self.combines = torch.nn.ModuleList(Combine(self.irreps_hidden, **conv_kwargs) for _ in range(num_levels))
        self.species = Linear(self.irreps_hidden, o3.Irreps(f"{num_species}x0e"))

    def _convolve(self, convs, h, pos, batch) -> torch.Tensor:
        edge_index = radius_graph(pos, self.r_max, batch)  # (2, E)
        edge_vec = pos[edge_index[0]] - pos[edge_index[1]]  # (E, 3)
        for conv in convs:
            h = conv(h, edge_index, edge_vec)
        return h

    def read_children(
        self, prediction: BloomPrediction, batch: torch.Tensor | None = None, flip: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The children one level's prediction decodes to: the peaks of each parent's signal
        (as many as ``child_count`` says) and a centre child where its logit is positive.
        With ``flip`` (``child_count="integral"`` only) and the parents' ``batch (M,)``, each
        structure's ``flip``-th most uncertain count is rounded the other way
        (:func:`flipped_counts`).

        Returns ``parent (P,)`` (index of each child's parent point), ``offset (P, 3)`` (from
        the parent) and ``score (P,)`` (peak amplitude; 1 for centre children).
        """
        if flip is not None and (self.child_count != "integral" or batch is None):
            raise ValueError(f"flip needs child_count='integral' (got {self.child_count!r}) and the parents' batch")
        if self.child_count == "integral":
            counts = None if flip is None else flipped_counts(integral_count(prediction.signal), batch, flip)  # None: rounded
            peaks = find_counted_peaks(prediction.signal, counts)
        else:
            peaks = find_peaks(prediction.signal)
        centre = (prediction.centre_logit > 0).nonzero().flatten()  # (M_c,)
        parent = torch.cat([peaks.index, centre])  # (P,)
        offset = torch.cat([peaks.vectors, prediction.centre_vector[centre]])  # (P, 3)
        score = torch.cat([peaks.amplitudes, peaks.amplitudes.new_ones(len(centre))])  # (P,)
        return parent, offset, score

    def teacher_forced(self, latent: torch.Tensor, hierarchy: Hierarchy) -> tuple[list[BloomPrediction], torch.Tensor]:
        """Decode on the encoder's hierarchy (its positions and parents at every level).

        Returns the predictions of every level (top level first) and the species logits of
        the atoms ``(N, num_species)``.
        """
        h = self.unreadout(latent)  # (B, hidden), at the roots
        predictions = []
        for level in reversed(range(self.num_levels)):
            pos, batch = hierarchy.pos[level + 1], hierarchy.batch[level + 1]
            h = self._convolve(self.convs[level], h, pos, batch)  # (M, hidden)
            predictions.append(BloomPrediction(level, *self.blooms[level](h)))
            h = self._combine_given(level, h, pos, hierarchy.pos[level], hierarchy.parent[level])  # (N_l, hidden)
        h = self._convolve(self.convs[self.num_levels], h, hierarchy.pos[0], hierarchy.batch[0])
        return predictions, self.species(h)

    def _combine_given(self, level: int, h: torch.Tensor, pos: torch.Tensor, children: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
        """Features ``(C, hidden)`` of given ``children (C, 3)`` of the points ``pos (M, 3)``
        (features ``h (M, hidden)``), each child under its ``parent (C,)``."""
        edges = torch.stack([parent, torch.arange(len(parent), device=parent.device)])  # (2, C)
        return self.combines[level](h, edges, pos[parent] - children, num_out=children.shape[0])

    def _bloom(
        self, level: int, h: torch.Tensor, pos: torch.Tensor, batch: torch.Tensor, num_structures: int, flip: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The children the points ``pos (M, 3)`` of ``batch (M,)`` (features ``h (M,
        hidden)``, convolved) bloom into at ``level``: their peaks and centre children
        (:meth:`read_children`), the strongest kept where there are too many, duplicates
        merged. Returns ``children (C, 3)``, ``child_batch (C,)`` (sorted) and ``edges (2,
        E)`` (parent point -> child, each once, sorted)."""
        prediction = BloomPrediction(level, *self.blooms[level](h))
        parent, offset, score = self.read_children(prediction, batch, flip)  # (P,), (P, 3), (P,)
        keep = _strongest(score, batch[parent], num_structures, 2 * self.max_points[level])
        parent, offset = parent[keep], offset[keep]
        order = torch.sort(batch[parent], stable=True).indices  # children sorted by structure
        parent, offset = parent[order], offset[order]
        child_batch = batch[parent]  # (P,)
        label, num_children = merge_duplicates(pos[parent] + offset, child_batch, self.merge_radius)
        children = scatter(pos[parent] + offset, label, dim=0, dim_size=num_children, reduce="mean")  # (C, 3)
        child_batch = scatter(child_batch, label, dim=0, dim_size=num_children, reduce="min")  # (C,)
        key = torch.unique(parent * num_children + label)  # (E,): each parent -> child edge once, sorted
        return children, child_batch, torch.stack([key // num_children, key % num_children])

    def forward(self, latent: torch.Tensor, flip: int | None = None, hierarchy: Hierarchy | None = None) -> Decoded:
        """Decode ``latent (B, irreps_latent.dim)`` from the latent alone (free running).

        Each structure's root sits at the origin, so decoded structures are centred on the
        centroid of their atoms (every point of the hierarchy is the centroid of its atoms).
        ``flip``: an alternative decoding, each structure's ``flip``-th most uncertain atom
        count (of one point of the level above the atoms) rounded the other way
        (:func:`flipped_counts`; ``child_count="integral"`` only).

        ``hierarchy``: a re-decoding. The points of every level above the atoms are placed as
        in ``hierarchy`` (its ``pos``, ``batch`` and ``parent`` of levels 1 and up; a
        structure without a root there decodes to no atom), and only the atoms bloom free
        from them: from a refined decoding's tree (:func:`geoae.model.decoded_hierarchy`),
        the atoms bloom from upper levels nearer the true ones than the decoder placed them.
        """
        num_structures = latent.shape[0]
        if hierarchy is None:
            batch = torch.arange(num_structures, device=latent.device)  # (B,)
            pos = latent.new_zeros(num_structures, 3)  # (B, 3)
        else:
            batch, pos = hierarchy.batch[-1], hierarchy.pos[-1]  # (B',), (B', 3): the roots
        h = self.unreadout(latent[batch])  # (B', hidden)
        levels, parents = [], []  # (pos, batch) of each level and each point's parent, from the top
        for level in reversed(range(self.num_levels)):
            h = self._convolve(self.convs[level], h, pos, batch)  # (M, hidden)
            if hierarchy is not None and level > 0:
                children, child_batch, parent = hierarchy.pos[level], hierarchy.batch[level], hierarchy.parent[level]  # (C, 3), (C,), (C,)
                h = self._combine_given(level, h, pos, children, parent)  # (C, hidden)
            else:
                children, child_batch, edges = self._bloom(level, h, pos, batch, num_structures, flip if level == 0 else None)
                h = self.combines[level](h, edges, pos[edges[0]] - children[edges[1]], num_out=children.shape[0])  # (C, hidden)
                parent = scatter(edges[0], edges[1], dim=0, dim_size=children.shape[0], reduce="min")  # (C,): the first
            parents.append(parent)
            pos, batch = children, child_batch
            levels.append((pos, batch))
        h = self._convolve(self.convs[self.num_levels], h, pos, batch)
        logits = self.species(h)  # (N, num_species)
        return Decoded(pos, logits.argmax(dim=-1), batch, num_structures, tuple(reversed(levels)), tuple(reversed(parents)), logits)
