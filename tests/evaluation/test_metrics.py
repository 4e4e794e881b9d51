"""lib.evaluation.metrics: NMI / ARI / accuracy against independent computations, purity, silhouette against
scikit-learn, and cluster summaries."""

from __future__ import annotations

import itertools
import json

import faiss  # noqa: F401  (before anything that may import torch)
import numpy as np
import pytest
from scipy.special import comb
from sklearn.datasets import make_blobs
from sklearn.metrics import silhouette_score

from lib.evaluation.inputs import ClusterError
from lib.evaluation.metrics import ari, cluster_accuracy, cluster_summary, contingency, nmi, purity, silhouette
from tests.evaluation.data import FloatArray, IntArray, blobs


def _entropy(counts: FloatArray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi_by_hand(t: IntArray, p: IntArray) -> float:
    classes, clusters = np.unique(t), np.unique(p)
    table = np.array([[np.sum((t == a) & (p == b)) for b in clusters] for a in classes], dtype=np.float64)
    n = table.sum()
    pij = table / n
    pi, pj = pij.sum(axis=1, keepdims=True), pij.sum(axis=0, keepdims=True)
    nz = pij > 0
    mi = float((pij[nz] * np.log(pij[nz] / (pi @ pj)[nz])).sum())
    h_t, h_p = _entropy(table.sum(axis=1)), _entropy(table.sum(axis=0))
    return mi / ((h_t + h_p) / 2)


def ari_by_pairs(t: IntArray, p: IntArray) -> float:
    classes, clusters = np.unique(t), np.unique(p)
    table = np.array([[np.sum((t == a) & (p == b)) for b in clusters] for a in classes])
    sum_ij = float(comb(table, 2).sum())
    sum_a = float(comb(table.sum(axis=1), 2).sum())
    sum_b = float(comb(table.sum(axis=0), 2).sum())
    expected = sum_a * sum_b / float(comb(t.size, 2))
    return (sum_ij - expected) / ((sum_a + sum_b) / 2 - expected)


def accuracy_brute_force(t: IntArray, p: IntArray) -> float:
    """Best injective matching between clusters and classes, by enumerating all of them."""
    classes, clusters = list(np.unique(t)), list(np.unique(p))
    best = 0
    if len(clusters) <= len(classes):
        for targets in itertools.permutations(classes, len(clusters)):
            best = max(best, sum(int(np.sum((p == c) & (t == a))) for c, a in zip(clusters, targets, strict=True)))
    else:
        for sources in itertools.permutations(clusters, len(classes)):
            best = max(best, sum(int(np.sum((p == c) & (t == a))) for c, a in zip(sources, classes, strict=True)))
    return best / t.size


@pytest.mark.parametrize("seed", range(5))
def test_nmi_and_ari_match_independent_computations(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 300))
    t = rng.integers(0, int(rng.integers(2, 8)), size=n)
    # partly informative predictions with a different number of clusters
    p = np.where(rng.random(n) < 0.6, t * 2 % 5, rng.integers(0, int(rng.integers(2, 9)), size=n))
    assert nmi(t, p) == pytest.approx(nmi_by_hand(t, p), abs=1e-12)
    assert ari(t, p) == pytest.approx(ari_by_pairs(t, p), abs=1e-12)


def test_metrics_are_label_permutation_invariant_and_perfect_on_relabelling() -> None:
    rng = np.random.default_rng(1)
    t = rng.integers(0, 4, size=200)
    p = np.array([7, 3, 11, 5])[t]  # same partition, other names
    assert nmi(t, p) == pytest.approx(1.0)
    assert ari(t, p) == pytest.approx(1.0)
    assert cluster_accuracy(t, p) == 1.0


@pytest.mark.parametrize(("n_classes", "n_clusters"), [(4, 4), (4, 3), (3, 5), (4, 6)])
@pytest.mark.parametrize("seed", range(3))
def test_cluster_accuracy_matches_brute_force(n_classes: int, n_clusters: int, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    t = rng.integers(0, n_classes, size=120)
    p = np.where(rng.random(120) < 0.5, t % n_clusters, rng.integers(0, n_clusters, size=120))
    assert cluster_accuracy(t, p) == pytest.approx(accuracy_brute_force(t, p), abs=1e-12)


def test_cluster_accuracy_more_clusters_than_classes_counts_unmatched_as_wrong() -> None:
    t = [0, 0, 0, 1, 1, 1]
    p = [0, 0, 1, 2, 2, 3]  # 4 clusters, 2 classes: best is 0->0 (2 right), 2->1 (2 right); 1 and 3 unmatched
    assert cluster_accuracy(t, p) == pytest.approx(4 / 6)
    # every row its own cluster: only one row per class can be matched
    assert cluster_accuracy(t, list(range(6))) == pytest.approx(2 / 6)


def test_contingency_orders_rows_and_columns_by_sorted_label() -> None:
    t = np.array([5, 5, -1, 2, 2, 2])
    p = np.array([1, 0, 0, 9, 9, 1])
    expected = np.array(
        [
            [1, 0, 0],  # class -1: clusters 0, 1, 9
            [0, 1, 2],  # class 2
            [1, 1, 0],  # class 5
        ]
    )
    table = contingency(t, p)
    assert table.dtype == np.int64
    np.testing.assert_array_equal(table, expected)


def test_metrics_reject_mismatched_or_bad_labels() -> None:
    with pytest.raises(ClusterError, match="length"):
        nmi([0, 1, 1], [0, 1])
    with pytest.raises(ClusterError, match="1-D"):
        ari(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ClusterError, match="empty"):
        cluster_accuracy([], [])


# ------------------------------------------------------------------------------------------ purity, silhouette


def test_purity_by_hand() -> None:
    t = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    p = [5, 5, 7, 7, 7, 7, 9, 9, 9, 9]
    # cluster 5: {0, 0} -> 2; cluster 7: {0, 1, 1, 2} -> 2 (class 1); cluster 9: {2, 2, 2, 2} -> 4
    assert purity(t, p) == pytest.approx((2 + 2 + 4) / 10)
    # the other way round: class 0 -> clusters {5, 5, 7} -> 2; class 1 -> {7, 7} -> 2; class 2 -> {7, 9 x4} -> 4
    assert purity(p, t) == pytest.approx(8 / 10)
    assert purity(t, [0] * 10) == pytest.approx(5 / 10)  # one cluster: the largest class
    assert purity(t, list(range(10))) == 1.0  # singletons are trivially pure
    assert purity(["a", "b", "b"], ["x", "x", "y"]) == pytest.approx(2 / 3)
    with pytest.raises(ClusterError, match="differ in length"):
        purity(t, p[:-1])


def test_silhouette_matches_sklearn_without_sampling() -> None:
    x, y = make_blobs(n_samples=90, centers=3, n_features=4, cluster_std=2.0, random_state=5)
    labels = np.where(np.arange(90) % 10 == 0, (y + 1) % 3, y)  # a few misplaced rows
    expected = silhouette_score(x.astype(np.float32).astype(np.float64), labels)
    assert silhouette(x, labels) == pytest.approx(expected, rel=1e-5)
    assert silhouette(x, labels, sample_size=None) == pytest.approx(expected, rel=1e-5)
    # undefined cases
    assert silhouette(x, np.zeros(90, dtype=int)) is None  # one cluster
    assert silhouette(x, np.arange(90)) is None  # one row per cluster
    assert silhouette(x[:2], [0, 1]) is None  # fewer than 3 rows
    bad = x.copy()
    bad[4, 0] = np.nan
    with pytest.raises(ClusterError, match="NaN"):
        silhouette(bad, labels)
    with pytest.raises(ClusterError, match="rows"):
        silhouette(x, labels[:-1])
    with pytest.raises(ClusterError, match="sample_size"):
        silhouette(x, labels, sample_size=2)


def test_silhouette_samples_deterministically() -> None:
    x, y = make_blobs(n_samples=400, centers=3, n_features=3, cluster_std=2.0, random_state=6)
    full = silhouette(x, y, sample_size=None)
    a = silhouette(x, y, sample_size=150, seed=1)
    assert full is not None and a is not None
    assert a == silhouette(x, y, sample_size=150, seed=1)
    assert a != silhouette(x, y, sample_size=150, seed=2)
    assert abs(a - full) < 0.05


# ------------------------------------------------------------------------------------------ cluster_summary


def test_cluster_summary_fields() -> None:
    x, y = blobs(30, 3, 4, seed=22)
    labels = np.array([10, 20, 30])[y]
    s = cluster_summary(x, labels)
    json.dumps(s)  # JSON-able as is
    assert set(s) == {"n_rows", "n_clusters", "clusters", "sizes", "inertia", "silhouette"}
    assert s["n_rows"] == 90 and s["n_clusters"] == 3
    assert s["clusters"] == [10, 20, 30] and s["sizes"] == [30, 30, 30]
    x64 = x.astype(np.float64)
    by_hand = sum(float(((x64[labels == c] - x64[labels == c].mean(axis=0)) ** 2).sum()) for c in (10, 20, 30))
    assert s["inertia"] == pytest.approx(by_hand, rel=1e-10)
    assert s["silhouette"] == pytest.approx(silhouette_score(x64, labels), rel=1e-5)
    assert cluster_summary(x, np.zeros(90, dtype=int))["silhouette"] is None


def test_cluster_summary_with_labels_and_unknown_rows() -> None:
    x, y = blobs(30, 3, 4, seed=23)
    pred = y.copy()
    pred[:6] = 3  # a fourth cluster
    truth = y.copy()
    truth[pred == 3] = -1  # ... holding only unknown rows
    truth[6:12] = -1
    s = cluster_summary(x, pred, labels_true=truth)
    json.dumps(s)
    known = truth >= 0
    assert s["n_scored"] == int(known.sum()) == 78
    assert s["nmi"] == pytest.approx(nmi(truth[known], pred[known]))
    assert s["ari"] == pytest.approx(ari(truth[known], pred[known]))
    assert s["acc"] == pytest.approx(cluster_accuracy(truth[known], pred[known]))
    assert s["purity"] == pytest.approx(purity(truth[known], pred[known]))
    assert s["nmi"] == pytest.approx(1.0) and s["purity"] == 1.0
    assert s["classes"] == [0, 1, 2] and s["clusters"] == [0, 1, 2, 3]
    table = np.array(s["contingency"])
    assert table.shape == (3, 4) and table.sum() == 78
    np.testing.assert_array_equal(table[:, 3], 0)  # the all-unknown cluster
    np.testing.assert_array_equal(table[:, :3], contingency(truth[known], pred[known]))
    assert s["sizes"] == np.bincount(pred).tolist()  # sizes count every row, unknown ones included
    with pytest.raises(ClusterError, match="nothing to score"):
        cluster_summary(x, pred, labels_true=np.full(90, -1))
    with pytest.raises(ClusterError, match="integers"):
        cluster_summary(x, pred, labels_true=truth.astype(float))


def test_cluster_summary_rejects_nan_and_mismatch() -> None:
    x, y = blobs(10, 2, 3, seed=24)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ClusterError, match="NaN"):
        cluster_summary(bad, y)
    with pytest.raises(ClusterError, match="rows"):
        cluster_summary(x, y[:-1])
    with pytest.raises(ClusterError, match="rows"):
        cluster_summary(x, y, labels_true=y[:-1])
