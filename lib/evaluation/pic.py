"""Power iteration clustering (PIC) as in DeepCluster: a k-NN graph, a diffusion, basins of its maxima; no k.

As in DeepCluster's ``clustering.py`` (``PIC`` class with ``make_graph`` / ``make_adjacencyW`` / ``run_pic`` /
``find_maxima_cluster``):

1. rows are L2-normalised when ``l2=True`` (DeepCluster runs PIC on PCA-whitened, L2-normalised features;
   the PCA is left to the caller);
2. each row's ``n_neighbors`` exact nearest other rows, by squared L2 distance ``d`` (faiss ``IndexFlatL2``
   on the CPU). DeepCluster drops the first of ``n_neighbors + 1`` results as "self"; here the row itself
   is dropped wherever it appears (with duplicate rows it need not be first);
3. edge weights ``exp(-d / sigma^2)``, ``W = A + A^T`` (an edge found in both directions counts twice), as a
   ``scipy.sparse`` CSR matrix. ``W`` is *not* row-normalised, as in the original;
4. ``v`` starts uniform; ``n_iter`` times ``v <- alpha * W^T v + (1 - alpha) / N`` then ``v <- v / sum(v)``,
   exactly the original's update. With the default ``alpha = 0.001``, ``alpha`` is the weight of the
   propagation, not a restart probability, so ``v`` is close to uniform plus ``alpha`` x weighted degree
   (plus smaller multi-hop terms): a local density. Computed in float64 (the original used float32);
5. each row points to the graph neighbour ``j`` with the largest ``W_ij * (v_j - v_i)`` if that is > 0
   (ties to the lowest ``j``, as the original's scan), else to itself; ``v`` strictly increases along
   pointers, so following them always ends at a local maximum, and a cluster is the basin of one;
6. ``distribute_singletons=True`` (the default of DeepCluster's ``PIC``): a one-row basin joins the basin of
   its nearest k-NN neighbour (in k-NN order) that is not itself one row, if any;
7. clusters are numbered by decreasing size (ties: lowest first row).

The number of clusters is set by the graph, not asked for: with 5 neighbours even well separated blobs split
into several basins each (no basin ever crosses a gap that no k-NN edge spans), while denser graphs (e.g. 20
to 30 neighbours for blobs of 60 rows) give one per blob. ``sigma`` must suit the scale of ``d`` (in [0, 4]
for unit rows): weights that underflow to 0 leave every row alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt
import scipy.sparse

from lib.evaluation.inputs import F32, I64, ClusterError, as_features
from lib.evaluation.pca import l2_normalize

__all__ = ["PICResult", "pic"]


@dataclass(frozen=True, eq=False)
class PICResult:
    """A PIC partition: ``labels`` in 0 .. n_clusters - 1, numbered by decreasing size (ties: the cluster
    holding the lowest row index first), ``sizes[c]`` the number of rows in cluster ``c``."""

    labels: I64
    n_clusters: int
    sizes: I64


def _knn(xf: F32, n_neighbors: int) -> tuple[I64, F32]:
    """Exact k nearest neighbours of every row among the others (faiss ``IndexFlatL2``), nearest first.

    Returns (indices, squared L2 distances), both (N, n_neighbors). The row itself is left out wherever it
    comes back among its own n_neighbors + 1 results (with duplicate rows it need not come first); where it
    does not, the farthest result is dropped instead.
    """
    n = xf.shape[0]
    index = faiss.IndexFlatL2(xf.shape[1])
    index.add(xf)
    dist, nn = index.search(xf, n_neighbors + 1)
    if nn.min() < 0:  # cannot happen with n > n_neighbors and finite input
        raise ClusterError("faiss returned fewer neighbours than asked for")
    is_self = nn == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), n_neighbors)
    keep = np.ones(nn.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    nn_k = nn[keep].reshape(n, n_neighbors).astype(np.int64)
    dist_k = np.maximum(dist[keep].reshape(n, n_neighbors), 0.0)  # float32 rounding can go below 0
    return nn_k, dist_k


def pic(
    x: npt.ArrayLike,
    *,
    n_neighbors: int = 5,
    sigma: float = 0.2,
    alpha: float = 0.001,
    n_iter: int = 200,
    l2: bool = True,
    distribute_singletons: bool = True,
) -> PICResult:
    """Power iteration clustering as in DeepCluster (``clustering.PIC``); needs no k.

    Graph: each row's ``n_neighbors`` nearest other rows (exact squared L2, faiss), edge weight
    ``exp(-d / sigma**2)``, symmetrised ``W = A + A^T``. Diffusion: ``v`` starts uniform and ``n_iter`` times
    ``v <- alpha * W^T v + (1 - alpha) / N``, then ``v /= sum(v)``. Each row then points to the graph
    neighbour ``j`` with the largest ``W_ij * (v_j - v_i)`` if that is > 0 (else to itself); clusters are
    the sets of rows whose pointer chains end at the same row. With ``distribute_singletons`` each
    one-row cluster joins the cluster of its nearest k-NN neighbour that is not itself a singleton. ``l2``
    scales rows to unit norm first (DeepCluster runs PIC on PCA-whitened, L2-normalised features).
    """
    for name, value, low in (("n_neighbors", n_neighbors, 1), ("n_iter", n_iter, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ClusterError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ClusterError(f"sigma must be a finite number > 0, got {sigma}")
    if not (np.isfinite(alpha) and 0 < alpha <= 1):
        raise ClusterError(f"alpha must lie in (0, 1], got {alpha}")
    xf = as_features(x)
    if l2:
        xf = l2_normalize(xf)
    n = xf.shape[0]
    if n_neighbors >= n:
        raise ClusterError(f"n_neighbors = {n_neighbors} needs more than {n_neighbors} rows, got {n}")

    nn, dist = _knn(xf, int(n_neighbors))
    weights = np.exp(-dist.astype(np.float64) / (float(sigma) ** 2))
    indptr = np.arange(n + 1, dtype=np.int64) * int(n_neighbors)
    a = scipy.sparse.csr_matrix((weights.ravel(), nn.ravel(), indptr), shape=(n, n))
    w = scipy.sparse.csr_matrix(a + a.T)  # symmetric, so W^T v = W v
    w.sum_duplicates()
    w.sort_indices()

    v = np.full(n, 1.0 / n)
    for _ in range(int(n_iter)):
        v = alpha * (w @ v) + (1.0 - alpha) / n
        v /= v.sum()

    # Pointers: per row, the neighbour with the largest positive W_ij (v_j - v_i); ties to the lowest j.
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(w.indptr))
    cols = w.indices.astype(np.int64)
    gain = w.data * (v[cols] - v[rows])
    up = gain > 0
    rows, cols, gain = rows[up], cols[up], gain[up]
    order = np.lexsort((cols, -gain, rows))
    first = np.unique(rows[order], return_index=True)[1]
    pointer = np.arange(n, dtype=np.int64)
    pointer[rows[order][first]] = cols[order][first]
    # v strictly increases along pointers, so there are no cycles: jump until every row points at a root.
    while True:
        nxt = pointer[pointer]
        if np.array_equal(nxt, pointer):
            break
        pointer = nxt
    root = pointer

    if distribute_singletons:
        size_of_root = np.bincount(root, minlength=n)
        singles = np.flatnonzero(size_of_root[root] == 1)
        if singles.size:
            target_ok = size_of_root[root[nn[singles]]] > 1  # (S, n_neighbors), nearest neighbour first
            has = target_ok.any(axis=1)
            pick = nn[singles, target_ok.argmax(axis=1)]
            root = root.copy()
            root[singles[has]] = root[pick[has]]

    roots, first_row, inverse, counts = np.unique(root, return_index=True, return_inverse=True, return_counts=True)
    rank = np.empty(roots.size, dtype=np.int64)
    rank[np.lexsort((first_row, -counts))] = np.arange(roots.size, dtype=np.int64)
    labels = rank[inverse.ravel()]
    sizes = np.bincount(labels, minlength=roots.size).astype(np.int64)
    return PICResult(labels=labels, n_clusters=int(roots.size), sizes=sizes)
