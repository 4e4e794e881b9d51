"""Spectral clustering on the k-NN graph of an embedding (scikit-learn's ``SpectralClustering``), a second
partition beside k-means: it follows the neighbourhood graph, so it can separate groups that are connected
but not round, which k-means cannot.

Settings: ``affinity="nearest_neighbors"`` (a symmetrised, unweighted graph of each row's ``n_neighbors``
nearest rows), ``assign_labels="cluster_qr"`` (deterministic, no k-means on the spectral embedding), seeded
eigen-solver. A graph that falls apart into more pieces than k is still partitioned (scikit-learn warns that
the graph is not fully connected; that warning is silenced here and the pieces are what the partition shows).
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
from sklearn.cluster import SpectralClustering

from lib.evaluation.inputs import I64, ClusterError, as_features


def spectral(x: npt.ArrayLike, k: int, n_neighbors: int = 10, seed: int = 0) -> I64:
    """A k-way spectral partition of the rows of ``x`` on their k-NN graph; (N,) int64 labels."""
    f = as_features(x, min_rows=3)
    n = len(f)
    if not 2 <= k < n:
        raise ClusterError(f"spectral clustering needs 2 <= k < rows, got k={k} for {n} rows")
    model = SpectralClustering(
        n_clusters=k,
        affinity="nearest_neighbors",
        n_neighbors=min(n_neighbors, n - 1),
        assign_labels="cluster_qr",
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        # said of any square input, which an embedding of N items in N dimensions can be
        warnings.filterwarnings("ignore", message="The spectral clustering API has changed")
        labels = model.fit_predict(f)
    return np.asarray(labels, dtype=np.int64)
