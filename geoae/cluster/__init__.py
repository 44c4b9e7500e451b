"""Symmetric clustering for recursive pooling: clusters that never break a symmetry."""

from ._centroids import cluster_centroids
from ._kmeans import CLUSTER_METHODS, Clustering, check_cluster_method, symmetric_kmeans
from ._partitions import set_partitions

__all__ = ["CLUSTER_METHODS", "Clustering", "check_cluster_method", "cluster_centroids", "set_partitions", "symmetric_kmeans"]
