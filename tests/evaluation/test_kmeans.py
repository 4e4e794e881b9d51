"""lib.evaluation.kmeans: faiss k-means behaviour and against scikit-learn, the GPU path, and the elbow / knee."""

from __future__ import annotations

import math

import faiss  # before anything that may import torch
import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

import lib.evaluation.kmeans as kmeans_module
from lib.evaluation.inputs import ClusterError
from lib.evaluation.kmeans import ElbowResult, elbow, elbow_ks, elbow_sweep, faiss_num_gpus, kmeans, suggest_k
from lib.evaluation.metrics import ari
from lib.evaluation.pca import l2_normalize
from tests.evaluation.data import blobs

# ---------------------------------------------------------------------------------------------- k-means


@pytest.mark.parametrize("init", ["kmeans++", "faiss-kmeans++", "random"])
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


def test_kmeans_plus_plus_is_sklearns_greedy_seeding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Init "kmeans++" seeds every restart with scikit-learn's greedy k-means++ on float64 rows, with the restart's
    seed; "faiss-kmeans++" is faiss's own (scikit-learn's only where faiss lacks it)."""
    x, y = blobs(150, 5, 6, seed=2)
    calls: list[tuple[np.dtype, int]] = []
    real = kmeans_module.kmeans_plusplus

    def spy(rows: np.ndarray, k: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append((rows.dtype, random_state))
        return real(rows, k, random_state=random_state)

    monkeypatch.setattr(kmeans_module, "kmeans_plusplus", spy)
    a = kmeans(x, 5, seed=3, restarts=2)
    b = kmeans(x, 5, seed=3, restarts=2)
    assert calls == [(np.dtype(np.float64), 3), (np.dtype(np.float64), 4)] * 2
    assert ari(y, a.labels) > 0.99
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    calls.clear()
    assert ari(y, kmeans(x, 5, seed=3, restarts=2, init="faiss-kmeans++").labels) > 0.99
    assert calls == [] if kmeans_module.FAISS_HAS_KMEANS_PLUS_PLUS else len(calls) == 2
    monkeypatch.setattr(kmeans_module, "FAISS_HAS_KMEANS_PLUS_PLUS", False)  # an older faiss
    assert ari(y, kmeans(x, 5, seed=3, restarts=2, init="faiss-kmeans++").labels) > 0.99
    assert len(calls) == 2


def test_kmeans_plus_plus_seeds_large_inputs_on_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above max(40 k, 10,000) rows the greedy seeding sees a seeded uniform sample of that many rows (it
    reads every row once per centre); the iterations still use every row."""
    x, y = blobs(6000, 2, 4, seed=5)  # 12,000 rows
    seen: list[np.ndarray] = []
    real = kmeans_module.kmeans_plusplus

    def spy(rows: np.ndarray, k: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
        seen.append(rows)
        return real(rows, k, random_state=random_state)

    monkeypatch.setattr(kmeans_module, "kmeans_plusplus", spy)
    res = kmeans(x, 2, seed=0, restarts=2)
    assert [len(r) for r in seen] == [10_000, 10_000]
    assert not np.array_equal(seen[0], seen[1])  # each restart its own sample
    rows = {tuple(r) for r in x.astype(np.float64)}
    assert all(tuple(r) in rows for r in seen[0][:50])  # rows of x, not synthetic points
    assert res.sizes.sum() == 12_000 and ari(y, res.labels) > 0.99
    first = list(seen)
    seen.clear()
    kmeans(x, 2, seed=0, restarts=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, seen, strict=True))  # the same seeds, the same samples


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


# ------------------------------------------------------------------------------------------------ elbow


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


def test_kmeans_matches_sklearn_inertia_on_many_overlapping_clusters() -> None:
    """Where seeding decides the local minimum (many overlapping clusters), the greedy k-means++ seeding
    brings faiss to scikit-learn's inertia with the same restarts once converged (faiss's plain k-means++ stays
    about 0.5% higher)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (60, 16))
    x = (centres[rng.integers(0, 60, 3000)] + rng.normal(0, 1, (3000, 16))).astype(np.float32)
    ours = [kmeans(x, 60, seed=s, restarts=1, niter=50).inertia for s in range(3)]
    ref = [SKKMeans(n_clusters=60, n_init=1, random_state=s).fit(x).inertia_ for s in range(3)]
    assert np.mean(ours) / np.mean(ref) < 1.002


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


def test_small_kmeans_runs_on_one_thread_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small problems run faiss on one thread (its per-iteration thread team costs more than it saves): the
    result must not depend on it, and faiss's thread count is restored afterwards."""
    x, _ = make_blobs(600, n_features=16, centers=5, random_state=3)
    before = faiss.omp_get_max_threads()
    seen: list[int] = []
    real = kmeans_module._restarts

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(faiss.omp_get_max_threads())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kmeans_module, "_restarts", spy)
    small = kmeans(x, 5, seed=4, restarts=4)
    assert seen == [1] and faiss.omp_get_max_threads() == before
    monkeypatch.setattr(kmeans_module, "SMALL_KMEANS_TERMS", 0)  # every problem "large": all threads
    large = kmeans(x, 5, seed=4, restarts=4)
    assert seen[-1] == before
    np.testing.assert_array_equal(small.labels, large.labels)
    assert small.restart_inertias == pytest.approx(large.restart_inertias, rel=1e-6) and small.seed == large.seed
