"""Scores of a partition: NMI, ARI, accuracy, purity and silhouette, and a JSON-able summary of it.

NMI (arithmetic mean normalisation) and ARI are scikit-learn's; clustering accuracy is the best one-to-one
matching of clusters to classes (Hungarian algorithm on the contingency table), which also works when the
number of clusters differs from the number of classes: unmatched clusters count as wrong. Purity is the
share of rows in their cluster's majority class (not chance-corrected: one cluster per row scores 1). The
silhouette is scikit-learn's ``silhouette_score`` (Euclidean, on the float32 features) on at most
``sample_size`` rows drawn without replacement with ``numpy.random.default_rng(seed)`` (its cost is
quadratic); it is None where it is undefined (fewer than 3 rows, or fewer than 2 clusters or as many
clusters as rows in the sample).

``cluster_summary`` describes any partition (k-means, PIC, ...) with plain Python types only (JSON-able):
sizes, the within-cluster inertia about each cluster's *mean* (float64; equal to the k-means inertia when
the partition is a converged k-means one), the silhouette and, given true labels, NMI / ARI / accuracy /
purity and the contingency table over the rows whose label is >= 0. Its columns are all clusters (a cluster
holding only unknown rows gets a column of zeros).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

from lib.evaluation.inputs import (
    _BLOCK_ELEMENTS,
    F32,
    I64,
    ClusterError,
    _as_labels,
    _label_pair,
    _scored_labels,
    as_features,
)

__all__ = ["ari", "cluster_accuracy", "cluster_summary", "contingency", "nmi", "purity", "silhouette"]


def contingency(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> I64:
    """Counts: rows are the sorted distinct true classes, columns the sorted distinct predicted clusters."""
    t, p = _label_pair(labels_true, labels_pred)
    classes, ti = np.unique(t, return_inverse=True)
    clusters, pi = np.unique(p, return_inverse=True)
    flat = np.bincount(ti.ravel() * clusters.size + pi.ravel(), minlength=classes.size * clusters.size)
    return flat.reshape(classes.size, clusters.size).astype(np.int64)


def nmi(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> float:
    """Normalised mutual information, normalised by the arithmetic mean of the two entropies."""
    t, p = _label_pair(labels_true, labels_pred)
    return float(normalized_mutual_info_score(t, p, average_method="arithmetic"))


def ari(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> float:
    """Adjusted Rand index."""
    t, p = _label_pair(labels_true, labels_pred)
    return float(adjusted_rand_score(t, p))


def cluster_accuracy(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> float:
    """Fraction of rows right under the best one-to-one cluster -> class matching (Hungarian).

    With more clusters than classes the extra clusters match nothing and all their rows count as wrong;
    with fewer, the unmatched classes are wrong.
    """
    table = contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def purity(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> float:
    """Fraction of rows in their cluster's majority class: sum over clusters of the largest class count / N.

    Not chance-corrected: it reaches 1 with one cluster per row, so read it next to NMI / ARI.
    """
    table = contingency(labels_true, labels_pred)
    return float(table.max(axis=0).sum() / table.sum())


def silhouette(
    x: npt.ArrayLike, labels: npt.ArrayLike, *, sample_size: int | None = 2000, seed: int = 0
) -> float | None:
    """Mean silhouette coefficient (Euclidean), scikit-learn's ``silhouette_score``.

    With more than ``sample_size`` rows it is computed on ``sample_size`` rows drawn without replacement by
    ``numpy.random.default_rng(seed)`` (``sample_size=None``: all rows; the cost is quadratic). None where
    the silhouette is undefined: fewer than 3 rows, or fewer than 2 clusters, or as many clusters as rows,
    in the (sampled) rows.
    """
    xf = as_features(x, name="x", min_rows=1)
    y = _as_labels(labels, "labels")
    if y.shape[0] != xf.shape[0]:
        raise ClusterError(f"x has {xf.shape[0]} rows but labels has {y.shape[0]}")
    if sample_size is not None:
        if isinstance(sample_size, bool) or not isinstance(sample_size, int | np.integer) or sample_size < 3:
            raise ClusterError(f"sample_size must be an integer >= 3 or None, got {sample_size!r}")
        if seed < 0:
            raise ClusterError(f"seed must be >= 0, got {seed}")
    n = xf.shape[0]
    if sample_size is not None and n > sample_size:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=int(sample_size), replace=False))
        xf, y = xf[idx], y[idx]
        n = int(sample_size)
    n_labels = np.unique(y).size
    if n < 3 or not 2 <= n_labels <= n - 1:
        return None
    return float(silhouette_score(xf, y, metric="euclidean"))


def _within_inertia(xf: F32, inverse: I64, n_clusters: int) -> float:
    """Sum of squared distances of the rows to the mean of their cluster (float64, two passes in blocks)."""
    n, d = xf.shape
    sums = np.zeros((n_clusters, d), dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // d)
    for s in range(0, n, step):
        block = xf[s : s + step].astype(np.float64)
        lab = inverse[s : s + step]
        onehot = scipy.sparse.csr_matrix((np.ones(lab.size), (lab, np.arange(lab.size))), shape=(n_clusters, lab.size))
        sums += onehot @ block
    means = sums / np.bincount(inverse, minlength=n_clusters)[:, None]
    total = 0.0
    for s in range(0, n, step):
        diff = xf[s : s + step].astype(np.float64) - means[inverse[s : s + step]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def cluster_summary(
    x: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    labels_true: npt.ArrayLike | None = None,
    sample_size: int | None = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """A JSON-able description of a partition ``labels`` of the rows of ``x``.

    Always: ``n_rows``, ``n_clusters``, ``clusters`` (the sorted distinct labels), ``sizes`` (rows per
    cluster, in that order), ``inertia`` (sum of squared distances to each cluster's mean, float64) and
    ``silhouette`` (see ``silhouette``; None where undefined). With integer ``labels_true`` (< 0 =
    unknown): ``n_scored`` (rows with a known class), ``nmi``, ``ari``, ``acc``, ``purity`` over those
    rows, ``classes`` (sorted known classes) and ``contingency`` (rows = ``classes``, columns =
    ``clusters``; a cluster holding only unknown rows has a column of zeros). Unknown rows take part in
    everything but the label metrics.
    """
    xf = as_features(x, min_rows=1)
    y = _as_labels(labels, "labels")
    if y.shape[0] != xf.shape[0]:
        raise ClusterError(f"x has {xf.shape[0]} rows but labels has {y.shape[0]}")
    clusters, inverse, sizes = np.unique(y, return_inverse=True, return_counts=True)
    inverse = inverse.ravel().astype(np.int64)
    out: dict[str, Any] = {
        "n_rows": int(xf.shape[0]),
        "n_clusters": int(clusters.size),
        "clusters": clusters.tolist(),
        "sizes": [int(c) for c in sizes],
        "inertia": _within_inertia(xf, inverse, int(clusters.size)),
        "silhouette": silhouette(xf, y, sample_size=sample_size, seed=seed),
    }
    if labels_true is None:
        return out

    t, known = _scored_labels(labels_true, xf.shape[0], "labels_true")
    tk, pk = t[known], y[known]
    classes, class_idx = np.unique(tk, return_inverse=True)
    flat = np.bincount(class_idx.ravel() * clusters.size + inverse[known], minlength=classes.size * clusters.size)
    table = flat.reshape(classes.size, clusters.size)
    out.update(
        n_scored=int(known.sum()),
        nmi=nmi(tk, pk),
        ari=ari(tk, pk),
        acc=cluster_accuracy(tk, pk),
        purity=purity(tk, pk),
        classes=classes.tolist(),
        contingency=table.tolist(),
    )
    return out
