"""Weighted centroids of clusters."""

from typing import Optional, Tuple

import torch
from torch_geometric.utils import scatter

__all__ = ["cluster_centroids"]


def cluster_centroids(
    pos: torch.Tensor,
    cluster: torch.Tensor,
    num_clusters: int,
    weight: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Weighted centroid and total weight of each cluster.

    Differentiable with respect to ``pos`` (and ``weight``).

    Parameters
    ----------
    pos : `torch.Tensor`
        positions, shape ``(N, 3)``.
    cluster : `torch.Tensor`
        cluster id of each point, shape ``(N,)``, dtype long, values in ``[0, C)``; every
        cluster has at least one point.
    num_clusters : int
        number of clusters ``C``.
    weight : `torch.Tensor`, optional
        positive weight of each point, shape ``(N,)``. ``None``: all ones.

    Returns
    -------
    centres : `torch.Tensor`
        :math:`\sum_{i \in c} w_i x_i / W_c`, shape ``(C, 3)``, dtype of ``pos``.
    weight_out : `torch.Tensor`
        :math:`W_c = \sum_{i \in c} w_i`, shape ``(C,)``, dtype of ``pos``.

    Examples
    --------
    >>> pos = torch.tensor([[0.0, 0, 0], [2, 0, 0], [5, 0, 0]])
    >>> cluster_centroids(pos, torch.tensor([0, 0, 1]), 2, weight=torch.tensor([1.0, 3, 2]))
    (tensor([[1.5000, 0.0000, 0.0000],
            [5.0000, 0.0000, 0.0000]]), tensor([4., 2.]))
    """
    weight = pos.new_ones(pos.shape[0]) if weight is None else weight.to(pos.dtype)
    weight_out = scatter(weight, cluster, dim=0, dim_size=num_clusters)
    weighted_pos = scatter(pos * weight[:, None], cluster, dim=0, dim_size=num_clusters)
    return weighted_pos / weight_out[:, None], weight_out
