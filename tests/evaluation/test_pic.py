"""lib.evaluation.pic: PIC against a plain transcription of DeepCluster's, on blobs, duplicates and bad input."""

from __future__ import annotations

import math

import faiss  # noqa: F401  (before anything that may import torch)
import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from lib.evaluation.inputs import ClusterError
from lib.evaluation.metrics import ari, purity
from lib.evaluation.pca import l2_normalize
from lib.evaluation.pic import PICResult, pic
from tests.evaluation.data import IntArray


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
