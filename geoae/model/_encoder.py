"""The encoder: recursive pooling of a structure into the features of one point."""

from __future__ import annotations

import torch
from e3nn import o3
from torch_geometric.utils import scatter

from geoae.nn import GatedBlock, Linear, radius_graph

from ._hierarchy import Hierarchy

__all__ = ["Encoder", "Combine"]


class Combine(torch.nn.Module):
    """Features of new points by a convolution from their points of origin.

    Used by pooling (members -> their cluster's point) and by unpooling (a point -> its
    children). Each target's self-connection features are the mean of its sources' features.

    Shapes: ``forward(x (N_src, irreps.dim), edge_index (2, E), edge_vec (E, 3), num_out)``
    returns ``(num_out, irreps.dim)``; ``edge_vec`` is ``pos_source - pos_target``.
    """

    def __init__(self, irreps, **conv_kwargs) -> None:
        super().__init__()
        self.block = GatedBlock(irreps, irreps, **conv_kwargs)
        self.irreps_in, self.irreps_out = self.block.irreps_in, self.block.irreps_out

    def forward(self, x, edge_index, edge_vec, num_out: int) -> torch.Tensor:
        x_out = scatter(x[edge_index[0]], edge_index[1], dim=0, dim_size=num_out, reduce="mean")  # (num_out, dim)
        return self.block(x, edge_index, edge_vec, num_nodes_out=num_out, x_out=x_out)


class Encoder(torch.nn.Module):
    """Pooling layers: at each level convolve the points, then combine each cluster's members
    into the cluster's point (:class:`Combine`); the features of the last point are read out
    as the latent by a linear map.

    The clusters themselves come from the parameter-free :func:`build_hierarchy` ("bloom"
    then "cluster" in the talk): each point blooms to its own position and the bloomed points
    are clustered by symmetric k-means. A learned bloom would get no gradient through the
    discrete clustering, so the hierarchy is geometric and the learning is in the features.

    Shapes: ``forward(species (N,) long or (N, num_species) float, hierarchy)`` returns
    ``(B, irreps_latent.dim)``.
    """

    def __init__(self, num_species: int, irreps_hidden, irreps_latent, num_levels: int, convs_per_level: int, r_max: float, **conv_kwargs):
        super().__init__()
        self.irreps_hidden, self.irreps_latent = o3.Irreps(irreps_hidden), o3.Irreps(irreps_latent)
        self.r_max = r_max
        conv_kwargs = dict(conv_kwargs, r_max=r_max)
        self.embed = Linear(o3.Irreps(f"{num_species}x0e"), self.irreps_hidden)
        self.num_species = num_species
        self.convs = torch.nn.ModuleList(
            torch.nn.ModuleList(GatedBlock(self.irreps_hidden, self.irreps_hidden, **conv_kwargs) for _ in range(convs_per_level))
            for _ in range(num_levels)
        )
        self.combines = torch.nn.ModuleList(Combine(self.irreps_hidden, **conv_kwargs) for _ in range(num_levels))
        self.readout = Linear(self.irreps_hidden, self.irreps_latent)

    def forward(self, species: torch.Tensor, hierarchy: Hierarchy) -> torch.Tensor:
        """Latents ``(B, irreps_latent.dim)`` of the atoms of ``hierarchy``, their species
        ``(N,)`` long (indices) or ``(N, num_species)`` float (weights of each species, e.g.
        probabilities: the species' embeddings are mixed linearly)."""
        if species.is_floating_point():
            onehot = species.to(hierarchy.pos[0].dtype)  # (N, S)
        else:
            onehot = torch.nn.functional.one_hot(species, self.num_species).to(hierarchy.pos[0].dtype)  # (N, S)
        h = self.embed(onehot)  # (N_0, hidden)
        for level in range(hierarchy.num_levels):
            pos, batch = hierarchy.pos[level], hierarchy.batch[level]
            edge_index = radius_graph(pos, self.r_max, batch)  # (2, E)
            edge_vec = pos[edge_index[0]] - pos[edge_index[1]]  # (E, 3)
            for conv in self.convs[level]:
                h = conv(h, edge_index, edge_vec)  # (N_l, hidden)
            parent = hierarchy.parent[level]  # (N_l,)
            members = torch.stack([torch.arange(len(parent), device=parent.device), parent])  # (2, N_l)
            up = hierarchy.pos[level + 1]
            h = self.combines[level](h, members, pos - up[parent], num_out=up.shape[0])  # (N_{l+1}, hidden)
        return self.readout(h)  # (B, latent)
