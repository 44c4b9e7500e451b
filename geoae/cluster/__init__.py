"""Symmetric clustering for recursive pooling: clusters that never break a symmetry."""

from ._centroids import cluster_centroids
from ._kmeans import Clustering, symmetric_kmeans
from ._partitions import set_partitions

__all__ = ["Clustering", "cluster_centroids", "set_partitions", "symmetric_kmeans"]
