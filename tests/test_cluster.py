"""lib.evaluation.cluster: metrics against independent computations, PCA and k-means against scikit-learn, faiss k-means
behaviour, PIC against a plain transcription of DeepCluster's, elbow / knee, silhouette and summaries."""

from __future__ import annotations

import itertools
import json
import math
import warnings

import faiss  # before anything that may import torch
import numpy as np
import numpy.typing as npt
import pytest
from scipy.special import comb
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, silhouette_score

import lib.evaluation.cluster as cluster
from lib.evaluation.cluster import (
    ClusterError,
    ElbowResult,
    PICResult,
    ari,
    cluster_accuracy,
    cluster_summary,
    contingency,
    elbow,
    elbow_ks,
    elbow_sweep,
    evaluate_embedding,
    faiss_num_gpus,
    fit_pca,
    kmeans,
    l2_normalize,
    nmi,
    pca,
    pic,
    purity,
    silhouette,
    suggest_k,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def blobs(
    n_per: int, k: int, d: int, *, spread: float = 20.0, seed: int = 0
) -> tuple[npt.NDArray[np.float32], IntArray]:
    """k well-separated isotropic Gaussian blobs (unit variance, centres ~spread apart)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread
    y = np.repeat(np.arange(k), n_per)
    x = centres[y] + rng.normal(size=(k * n_per, d))
    perm = rng.permutation(y.size)
    return x[perm].astype(np.float32), y[perm].astype(np.int64)


# ---------------------------------------------------------------------------------------------- metrics


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


# -------------------------------------------------------------------------------------------------- PCA


def _correlated(n: int, d: int, seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10.0, 0.1, d)  # distinct variances, so components are well defined
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (rng.normal(size=(n, d)) * scales) @ basis.T + rng.normal(size=d) * 3


@pytest.mark.parametrize(("n", "d", "dim"), [(400, 12, 5), (30, 200, 8), (50, 200, 60)])
def test_pca_agrees_with_sklearn(n: int, d: int, dim: int) -> None:
    """Covers both routes: covariance (D <= N) and row products (D > N); dim clipped to N - 1."""
    x = (
        _correlated(n, d, seed=n + d)
        if d <= n
        else np.random.default_rng(d).normal(size=(n, d)) * np.geomspace(5, 0.5, d)
    )
    x = x.astype(np.float32).astype(np.float64)  # the PCA works on float32 input: compare on the same data
    model = fit_pca(x, dim)
    r = min(dim, d, n - 1)
    assert model.components.shape == (r, d)
    ref = PCA(n_components=r, svd_solver="full").fit(x)
    dots = np.abs(np.sum(model.components * ref.components_, axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-6)
    np.testing.assert_allclose(model.explained_variance, ref.explained_variance_, rtol=1e-8)
    z = pca(x, dim)
    assert z.dtype == np.float32 and z.shape == (n, r)
    signs = np.sign(np.sum(model.components * ref.components_, axis=1))
    np.testing.assert_allclose(z, ref.transform(x) * signs, atol=1e-4 * np.abs(z).max())


@pytest.mark.parametrize(("n", "d", "dim"), [(300, 40, 6), (60, 300, 10)])
def test_pca_arpack_route_matches_lapack_and_sklearn(monkeypatch: pytest.MonkeyPatch, n: int, d: int, dim: int) -> None:
    """Wide eigenproblems go to ARPACK; force that route on small ones and compare with the dense one."""
    rng = np.random.default_rng(n * d)
    x = (rng.normal(size=(n, d)) * np.geomspace(6, 0.3, d)).astype(np.float32).astype(np.float64)
    dense = fit_pca(x, dim)
    calls: list[int] = []
    real_eigsh = cluster.eigsh

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real_eigsh(*args, **kwargs)

    monkeypatch.setattr(cluster, "eigsh", spy)
    monkeypatch.setattr(cluster, "_DENSE_EIG_MAX", 0)
    lanczos = fit_pca(x, dim)
    assert calls, "the ARPACK route was not taken"
    np.testing.assert_allclose(lanczos.explained_variance, dense.explained_variance, rtol=1e-10)
    np.testing.assert_allclose(lanczos.components, dense.components, atol=1e-8)  # same sign convention
    ref = PCA(n_components=dim, svd_solver="full").fit(x)
    np.testing.assert_allclose(lanczos.explained_variance, ref.explained_variance_, rtol=1e-8)
    # deterministic: fixed ARPACK start vector
    np.testing.assert_array_equal(fit_pca(x, dim).components, lanczos.components)


@pytest.mark.parametrize(("n", "d"), [(500, 10), (40, 300)])
def test_whitened_pca_has_identity_covariance(n: int, d: int) -> None:
    x = _correlated(n, d, seed=3) if d <= n else np.random.default_rng(4).normal(size=(n, d)) * np.geomspace(4, 1, d)
    z = pca(x, 6, whiten=True)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(6), atol=1e-3)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)


def test_pca_fit_on_one_set_transforms_another() -> None:
    x = _correlated(600, 10, seed=5)
    fit_part, other = x[:400], x[400:] + 0.5  # shifted: must be centred with the *fitted* mean
    model = fit_pca(fit_part, 4, whiten=True)
    z = model.transform(other)
    expected = (other - fit_part.mean(axis=0)) @ model.components.T / np.sqrt(model.explained_variance + 1e-5)
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.transform(fit_part), pca(fit_part, 4, whiten=True), atol=1e-6)
    # transforming a single row works; wrong width is refused
    assert model.transform(other[:1]).shape == (1, 4)
    with pytest.raises(ClusterError, match="columns"):
        model.transform(other[:, :5])


def test_pca_rank_deficient_input_is_finite() -> None:
    rng = np.random.default_rng(6)
    x = np.repeat(rng.normal(size=(3, 20)), 4, axis=0)  # 12 rows, only 3 distinct: rank 2 after centring
    for whiten, eps in ((False, 1e-5), (True, 1e-5), (True, 0.0)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no divide-by-zero on the null directions
            z = pca(x, 8, whiten=whiten, eps=eps)
        assert z.shape == (12, 8) and np.isfinite(z).all()
        np.testing.assert_allclose(z[:, 2:], 0.0, atol=1e-5)  # directions beyond the rank project to 0


def test_pca_rejects_bad_input() -> None:
    with pytest.raises(ClusterError, match="2-D"):
        pca(np.zeros(10), 2)
    with pytest.raises(ClusterError, match="NaN"):
        pca(np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), 1)
    with pytest.raises(ClusterError, match="dim"):
        pca(np.eye(3), 0)


def test_l2_normalize_rows_and_zero_rows() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])
    out = l2_normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], atol=1e-7)


# ---------------------------------------------------------------------------------------------- k-means


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_kmeans_recovers_separated_blobs(init: str) -> None:
    x, y = blobs(200, 6, 8)
    res = kmeans(x, 6, seed=0, restarts=3, init=init)  # type: ignore[arg-type]
    assert ari(y, res.labels) > 0.99
    assert res.labels.shape == (x.shape[0],) and res.labels.dtype == np.int64
    assert res.centroids.shape == (6, 8) and res.centroids.dtype == np.float32
    assert res.sizes.sum() == x.shape[0] and res.n_empty == 0
    assert res.restarts == 3 and 1 <= res.iterations <= 20
    # inertia is the sum of squared distances to the assigned centroid
    d2 = ((x.astype(np.float64) - res.centroids[res.labels].astype(np.float64)) ** 2).sum()
    assert res.inertia == pytest.approx(d2, rel=1e-9)
    # and every row is assigned to its nearest centroid
    all_d2 = ((x[:, None, :] - res.centroids[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(res.labels, all_d2.argmin(axis=1))


def test_kmeans_sklearn_kmeanspp_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Older faiss has no k-means++: the restart is then seeded by scikit-learn's kmeans_plusplus."""
    monkeypatch.setattr(cluster, "FAISS_HAS_KMEANS_PLUS_PLUS", False)
    x, y = blobs(150, 5, 6, seed=2)
    a = kmeans(x, 5, seed=3, restarts=2)
    b = kmeans(x, 5, seed=3, restarts=2)
    assert ari(y, a.labels) > 0.99
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_kmeans_spherical_on_normalised_directions() -> None:
    x, y = blobs(150, 4, 5, seed=7)
    xn = l2_normalize(x)
    res = kmeans(xn, 4, seed=0, restarts=2, spherical=True)
    assert ari(y, res.labels) > 0.99
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, atol=1e-5)


def test_kmeans_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2000, 6)).astype(np.float32)  # no structure: results depend on the seed
    a = kmeans(x, 7, seed=11, restarts=3)
    b = kmeans(x.copy(), 7, seed=11, restarts=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    assert a.inertia == b.inertia and a.seed == b.seed and a.restart_inertias == b.restart_inertias
    c = kmeans(x, 7, seed=500, restarts=3)
    assert not np.array_equal(a.centroids, c.centroids)


def test_kmeans_never_subsamples() -> None:
    """N = 30000 > 256 * k: faiss's default would train on 512 rows only; ours must use all of them."""
    x, _ = blobs(15000, 2, 4, spread=3.0, seed=9)
    res = kmeans(x, 2, seed=0, restarts=1, niter=50)
    assert res.labels.shape == (30000,) and res.sizes.sum() == 30000
    x64 = x.astype(np.float64)
    means = np.stack([x64[res.labels == j].mean(axis=0) for j in range(2)])
    np.testing.assert_allclose(res.centroids, means, atol=1e-3)

    # The check is sharp enough to see subsampling: faiss's defaults give centroids off the full means.
    km = faiss.Kmeans(4, 2, niter=50, seed=0)
    km.train(x)
    assert km.centroids is not None
    _, lab = km.assign(x)
    sub_means = np.stack([x64[lab == j].mean(axis=0) for j in range(2)])
    assert np.abs(km.centroids - sub_means).max() > 1e-2


def test_kmeans_keeps_the_restart_with_lowest_inertia() -> None:
    rng = np.random.default_rng(10)
    x = rng.random((600, 3)).astype(np.float32)  # uniform cube: many local minima
    singles = [kmeans(x, 9, seed=s, restarts=1) for s in range(20, 26)]
    inertias = [r.inertia for r in singles]
    assert len(set(inertias)) > 1, "restarts should land in different local minima"
    best = kmeans(x, 9, seed=20, restarts=6)
    assert best.restart_inertias == pytest.approx(inertias, rel=1e-12)
    assert best.inertia == pytest.approx(min(inertias), rel=1e-12)
    winner = int(np.argmin(inertias))
    assert best.seed == 20 + winner
    np.testing.assert_array_equal(best.labels, singles[winner].labels)


def test_kmeans_k_equal_to_n_and_input_types() -> None:
    x = np.arange(10, dtype=np.int32).reshape(5, 2) ** 2  # integer, distinct rows
    res = kmeans(x, 5, restarts=1)
    assert sorted(res.labels.tolist()) == [0, 1, 2, 3, 4]
    assert res.inertia == pytest.approx(0.0, abs=1e-6)
    # float64, non-contiguous input is accepted
    xf, y = blobs(50, 3, 4, seed=11)
    res2 = kmeans(np.asfortranarray(xf.astype(np.float64)), 3, restarts=1)
    assert ari(y, res2.labels) > 0.99


def test_kmeans_rejects_bad_input() -> None:
    x, _ = blobs(5, 2, 3)
    with pytest.raises(ClusterError, match="larger than the number of rows"):
        kmeans(x, 11)
    with pytest.raises(ClusterError, match=">= 2"):
        kmeans(x, 1)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ClusterError, match="NaN"):
        kmeans(bad, 2)
    bad[3, 1] = np.inf
    with pytest.raises(ClusterError, match="NaN/inf"):
        kmeans(bad, 2)
    with pytest.raises(ClusterError, match="2-D"):
        kmeans(x.ravel(), 2)
    with pytest.raises(ClusterError, match="at least 2"):
        kmeans(x[:1], 2)
    with pytest.raises(ClusterError, match="init"):
        kmeans(x, 2, init="afk")  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match="restarts"):
        kmeans(x, 2, restarts=0)
    with pytest.raises(ClusterError, match="seed"):
        kmeans(x, 2, seed=-1)
    assert issubclass(ClusterError, ValueError)


# ------------------------------------------------------------------------------------ evaluation, elbow


def test_evaluate_embedding_on_blobs() -> None:
    x, y = blobs(100, 5, 16, seed=12)
    scores = evaluate_embedding(x, y, k=5, pca_dim=64, restarts=2)
    assert set(scores) == {"nmi", "ari", "acc", "inertia"}
    assert scores["nmi"] > 0.99 and scores["ari"] > 0.99 and scores["acc"] > 0.99
    assert all(isinstance(v, float) for v in scores.values())


def test_evaluate_embedding_reduces_wide_features_with_pca() -> None:
    x, y = blobs(80, 4, 40, seed=13)
    scores = evaluate_embedding(x, y, k=4, pca_dim=6, seed=1, restarts=2)
    expected = kmeans(pca(x, 6), 4, seed=1, restarts=2)
    assert scores["inertia"] == pytest.approx(expected.inertia, rel=1e-9)
    assert scores["nmi"] == pytest.approx(nmi(y, expected.labels))


def test_evaluate_embedding_excludes_negative_labels_from_metrics_only() -> None:
    x, y = blobs(100, 4, 8, seed=14)
    rng = np.random.default_rng(15)
    unknown = rng.random(y.size) < 0.3
    y_partial = np.where(unknown, -1, y)
    scores = evaluate_embedding(x, y_partial, k=4, restarts=2)
    assert scores["nmi"] > 0.99 and scores["acc"] > 0.99  # -1 as a class would mix with all clusters
    res = kmeans(x, 4, seed=0, restarts=2)  # clustering is unchanged: all rows take part
    assert scores["inertia"] == pytest.approx(res.inertia, rel=1e-12)
    assert scores["ari"] == pytest.approx(ari(y[~unknown], res.labels[~unknown]))
    # scoring the -1 rows as a class would have been visibly worse
    assert nmi(y_partial, res.labels) < 0.9
    with pytest.raises(ClusterError, match="nothing to score"):
        evaluate_embedding(x, np.full(y.size, -1), k=4)
    with pytest.raises(ClusterError, match="rows"):
        evaluate_embedding(x, y[:-1], k=4)


def test_elbow_returns_inertia_per_k() -> None:
    x, _ = blobs(60, 4, 5, seed=16)
    curve = elbow(x, [2, 3, 4, 6], seed=0, restarts=2)
    assert [k for k, _ in curve] == [2, 3, 4, 6]
    assert curve[2][1] == pytest.approx(kmeans(x, 4, seed=0, restarts=2).inertia)
    inertias = [v for _, v in curve]
    assert inertias[0] > inertias[1] > inertias[2] > inertias[3]
    assert inertias[1] / inertias[2] > 5  # the elbow at the true k = 4
    assert math.isfinite(inertias[3])


def test_elbow_ks_default_range() -> None:
    assert elbow_ks(10) == list(range(2, 10))  # up to n_rows - 1
    assert elbow_ks(1000) == list(range(2, 21))  # up to k_max = 20, every k
    assert elbow_ks(3) == [2]
    wide = elbow_ks(1000, k_max=60)
    assert wide[:19] == list(range(2, 21)) and wide[-1] == 60
    steps = np.diff(wide)
    assert (steps >= 1).all() and steps[-1] > 1  # sparser above 20
    assert len(wide) < 40
    assert elbow_ks(30, k_max=60)[-1] == 29
    with pytest.raises(ClusterError, match="at least 3 rows"):
        elbow_ks(2)
    with pytest.raises(ClusterError, match="k_max"):
        elbow_ks(100, k_max=1)


def test_suggest_k_on_synthetic_curves() -> None:
    # a clear elbow at k = 4: steep drops before, a gentle slope after
    curve = [(2, 100.0), (3, 50.0), (4, 12.0), (5, 10.0), (6, 8.0), (7, 6.0), (8, 4.0)]
    assert suggest_k(curve) == 4
    assert suggest_k(list(reversed(curve))) == 4  # the order of the points does not matter
    # no knee: a straight line, a flat curve, too few points
    assert suggest_k([(k, 100.0 - 3.0 * k) for k in range(2, 15)]) is None
    assert suggest_k([(k, 5.0) for k in range(2, 10)]) is None
    assert suggest_k([(2, 10.0), (3, 1.0)]) is None
    assert suggest_k([]) is None
    with pytest.raises(ClusterError, match="repeated"):
        suggest_k([(2, 3.0), (2, 2.0), (4, 1.0)])
    with pytest.raises(ClusterError, match="not finite"):
        suggest_k([(2, 3.0), (3, float("nan")), (4, 1.0)])


def test_elbow_sweep_finds_the_number_of_blobs() -> None:
    x, _ = make_blobs(n_samples=160, centers=4, n_features=5, random_state=0)
    res = elbow_sweep(x, ks=[8, 2, 3, 4, 5, 6, 7], seed=0, restarts=1)
    assert isinstance(res, ElbowResult)
    assert res.ks == (2, 3, 4, 5, 6, 7, 8)
    assert res.inertias[2] == pytest.approx(kmeans(x, 4, seed=0, restarts=1).inertia)
    assert res.knee == 4
    assert suggest_k(list(zip(res.ks, res.inertias, strict=True))) == 4
    with pytest.raises(ClusterError, match="repeated"):
        elbow_sweep(x, ks=[2, 3, 3])


# ------------------------------------------------------------------------------ k-means vs scikit-learn, GPU


def test_kmeans_agrees_with_sklearn_on_separated_blobs() -> None:
    x, y = make_blobs(n_samples=300, centers=5, n_features=6, cluster_std=1.0, random_state=3)
    ours = kmeans(x, 5, seed=0, restarts=2)
    ref = SKKMeans(n_clusters=5, n_init=3, random_state=0).fit(x.astype(np.float64))
    assert adjusted_rand_score(ref.labels_, ours.labels) == 1.0
    assert adjusted_rand_score(y, ours.labels) == 1.0
    assert ours.inertia == pytest.approx(ref.inertia_, rel=1e-5)
    assert ours.device == "cpu"


@pytest.mark.skipif(faiss_num_gpus() > 0, reason="faiss sees a GPU here")
def test_kmeans_gpu_true_without_gpu_is_refused() -> None:
    x, _ = blobs(20, 3, 4)
    with pytest.raises(ClusterError, match="gpu=True"):
        kmeans(x, 3, gpu=True)
    assert kmeans(x, 3, restarts=1).device == "cpu"  # auto: CPU when there is no GPU
    assert kmeans(x, 3, restarts=1, gpu=False).device == "cpu"
    with pytest.raises(ClusterError, match="gpu must be"):
        kmeans(x, 3, gpu="yes")  # type: ignore[arg-type]


def test_kmeans_auto_uses_faiss_gpu_path_when_gpus_are_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend faiss has a GPU: the training index must go through ``index_cpu_to_all_gpus``."""
    x, y = blobs(40, 3, 4, seed=4)
    cpu = kmeans(x, 3, seed=0, restarts=2, gpu=False)
    moved: list[object] = []

    def fake_to_gpus(index: object, co: object = None, ngpu: int = -1) -> object:
        moved.append(index)
        return index  # stays a CPU index: the same arithmetic

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss.extra_wrappers, "get_num_gpus", lambda: 1, raising=False)  # what faiss.Kmeans calls
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", fake_to_gpus)
    auto = kmeans(x, 3, seed=0, restarts=2)
    assert auto.device == "gpu" and len(moved) == 2  # one GPU index per restart
    np.testing.assert_array_equal(auto.labels, cpu.labels)
    assert auto.inertia == cpu.inertia and ari(y, auto.labels) == 1.0
    forced_cpu = kmeans(x, 3, seed=0, restarts=2, gpu=False)
    assert forced_cpu.device == "cpu" and len(moved) == 2


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


# ------------------------------------------------------------------------------------------------------ PIC


def pic_reference(x: npt.NDArray[np.float32], nnn: int, sigma: float, alpha: float, n_iter: int) -> IntArray:
    """DeepCluster's PIC written out with dense matrices and loops (kNN by brute force in float64)."""
    n = x.shape[0]
    xd = x.astype(np.float64)
    d2 = ((xd[:, None, :] - xd[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(d2, np.inf)
    knn = np.argsort(d2, axis=1, kind="stable")[:, :nnn]
    a = np.zeros((n, n))
    for i in range(n):
        for j in knn[i]:
            a[i, j] = math.exp(-d2[i, j] / sigma**2)
    w = a + a.T
    v = np.full(n, 1.0 / n)
    for _ in range(n_iter):
        v = alpha * (w.T @ v) + (1 - alpha) / n
        v = v / v.sum()
    pointer = list(range(n))
    for i in range(n):
        best = 0.0
        for j in range(n):  # increasing j: ties go to the lowest index
            if w[i, j] > 0 and w[i, j] * (v[j] - v[i]) > best:
                best, pointer[i] = w[i, j] * (v[j] - v[i]), j
    root = []
    for i in range(n):
        r = i
        while pointer[r] != r:
            r = pointer[r]
        root.append(r)
    size = {r: root.count(r) for r in set(root)}
    final = list(root)
    for s in range(n):
        if size[root[s]] == 1:
            for j in knn[s]:
                if size[root[j]] > 1:
                    final[s] = root[j]
                    break
    return np.asarray(final, dtype=np.int64)


@pytest.mark.parametrize(
    ("d", "l2", "sigma", "nnn"),
    [
        (3, False, 0.3, 5),
        (3, True, 0.2, 4),
        (30, False, 0.3, 2),  # a few basins of one row, which join a neighbour's cluster
        (3, False, 0.3, 1),  # mutual nearest pairs with equal v: singletons that have nowhere to go
    ],
)
def test_pic_matches_a_plain_transcription(d: int, l2: bool, sigma: float, nnn: int) -> None:
    x = np.random.default_rng(20).random((150, d)).astype(np.float32)  # no structure: many local maxima
    res = pic(x, n_neighbors=nnn, sigma=sigma, alpha=0.001, n_iter=200, l2=l2)
    ref = pic_reference(l2_normalize(x) if l2 else x, nnn, sigma, 0.001, 200)
    assert res.n_clusters == np.unique(ref).size > 3
    assert adjusted_rand_score(ref, res.labels) == 1.0


def test_pic_finds_separated_blobs_and_is_deterministic() -> None:
    x, y = make_blobs(n_samples=240, centers=4, n_features=8, center_box=(-20, 20), random_state=1)
    res = pic(x, n_neighbors=20)
    assert isinstance(res, PICResult)
    assert res.n_clusters == 4
    assert ari(y, res.labels) >= 0.95
    assert res.labels.dtype == np.int64 and res.labels.shape == (240,)
    assert sorted(set(res.labels.tolist())) == [0, 1, 2, 3]
    np.testing.assert_array_equal(res.sizes, np.bincount(res.labels))
    assert (np.diff(res.sizes) <= 0).all()  # numbered by decreasing size
    again = pic(x.copy(), n_neighbors=20)
    np.testing.assert_array_equal(again.labels, res.labels)


def test_pic_default_graph_oversegments_but_never_mixes_blobs() -> None:
    """With 5 neighbours the density has several local maxima per blob, but no edge crosses blobs."""
    x, y = make_blobs(n_samples=240, centers=4, n_features=8, center_box=(-20, 20), random_state=1)
    res = pic(x)
    assert res.n_clusters > 4
    assert purity(y, res.labels) == 1.0
    assert (res.sizes > 1).all()  # singletons went to a neighbour's cluster
    np.testing.assert_array_equal(pic(x).labels, res.labels)
    kept = pic(x, distribute_singletons=False)
    assert kept.n_clusters >= res.n_clusters and purity(y, kept.labels) == 1.0


def test_pic_duplicates_and_bad_input() -> None:
    base = np.random.default_rng(21).normal(size=(10, 3)).astype(np.float32)
    x = np.concatenate([base, base, base])  # every row has two exact duplicates
    res = pic(x, n_neighbors=3)
    assert res.labels.shape == (30,) and res.sizes.sum() == 30
    for i in range(10):  # duplicates always end up together
        assert res.labels[i] == res.labels[i + 10] == res.labels[i + 20]
    with pytest.raises(ClusterError, match="n_neighbors"):
        pic(x, n_neighbors=30)
    with pytest.raises(ClusterError, match="n_neighbors"):
        pic(x, n_neighbors=0)
    with pytest.raises(ClusterError, match="sigma"):
        pic(x, sigma=0.0)
    with pytest.raises(ClusterError, match="alpha"):
        pic(x, alpha=0.0)
    with pytest.raises(ClusterError, match="n_iter"):
        pic(x, n_iter=0)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ClusterError, match="NaN"):
        pic(bad)


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


def test_whitened_model_equals_fitting_with_whitening() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 6))
    x[:, 5] = x[:, 4]  # a rank-deficient direction: projects to 0 either way
    plain = fit_pca(x, 6)
    np.testing.assert_array_equal(plain.whitened(1e-5).scale, fit_pca(x, 6, whiten=True, eps=1e-5).scale)
    np.testing.assert_array_equal(plain.whitened().transform(x), fit_pca(x, 6, whiten=True).transform(x))
    assert plain.whitened().scale[-1] == 0.0
    with pytest.raises(ClusterError, match="eps"):
        plain.whitened(-1.0)


def test_small_kmeans_runs_on_one_thread_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small problems run faiss on one thread (its per-iteration thread team costs more than it saves): the
    result must not depend on it, and faiss's thread count is restored afterwards."""
    x, _ = make_blobs(600, n_features=16, centers=5, random_state=3)
    before = faiss.omp_get_max_threads()
    seen: list[int] = []
    real = cluster._restarts

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(faiss.omp_get_max_threads())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cluster, "_restarts", spy)
    small = kmeans(x, 5, seed=4, restarts=4)
    assert seen == [1] and faiss.omp_get_max_threads() == before
    monkeypatch.setattr(cluster, "SMALL_KMEANS_TERMS", 0)  # every problem "large": all threads
    large = kmeans(x, 5, seed=4, restarts=4)
    assert seen[-1] == before
    np.testing.assert_array_equal(small.labels, large.labels)
    assert small.restart_inertias == pytest.approx(large.restart_inertias, rel=1e-6) and small.seed == large.seed
