"""lib.evaluation.score: one embedding scored the benchmark's way (k fixed, no sweep, no PIC) and the report's
way (k from the classes or the knee, metrics per split, PIC on the whitened PCA)."""

from __future__ import annotations

import faiss  # noqa: F401  (before anything that may import torch)
import numpy as np
import numpy.typing as npt
import pytest

from lib.errors import VoxclustError
from lib.evaluation.inputs import ClusterError
from lib.evaluation.kmeans import elbow_ks, elbow_sweep, kmeans
from lib.evaluation.metrics import ari, cluster_summary, nmi
from lib.evaluation.pca import fit_pca, pca
from lib.evaluation.pic import pic
from lib.evaluation.score import ScoreConfig, ScoreError, score_embedding
from tests.evaluation.data import blobs


def evaluate_embedding(
    features: npt.ArrayLike, labels: npt.ArrayLike, k: int = 10, *, pca_dim: int = 64, seed: int = 0, restarts: int = 5
) -> dict[str, float]:
    """What the quality benchmark reads: the "all" metrics and the k-means objective, k fixed, no elbow sweep,
    no PIC, no splits."""
    config = ScoreConfig(k=k, pca_dim=pca_dim, seed=seed, restarts=restarts, elbow_k_max=None, pic=False)
    score = score_embedding(features, labels, config=config)
    assert score.elbow is None and score.pic is None and list(score.metrics) == ["all"]
    m = score.metrics["all"]
    return {"nmi": m["nmi"], "ari": m["ari"], "acc": m["acc"], "inertia": score.kmeans.inertia}


# -------------------------------------------------------------------------------- the benchmark's scoring


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
    # no known label: clustered and summarised, nothing to score against
    config = ScoreConfig(k=4, elbow_k_max=None, pic=False)
    assert "nmi" not in score_embedding(x, np.full(y.size, -1), config=config).metrics["all"]
    with pytest.raises(ClusterError, match="rows"):
        evaluate_embedding(x, y[:-1], k=4)


# ----------------------------------------------------------------------------------- the report's scoring


def test_k_is_the_class_count_then_the_knee_then_ten() -> None:
    x, y = blobs(30, 4, 5, seed=30)
    labelled = score_embedding(x, y, config=ScoreConfig(pic=False))
    assert labelled.k == 4 and labelled.kmeans.labels.max() == 3
    assert score_embedding(x, y, config=ScoreConfig(pic=False), n_classes=6).k == 6  # e.g. the store's classes
    assert score_embedding(x, y, config=ScoreConfig(k=3, pic=False)).k == 3
    unlabelled = score_embedding(x, np.full(y.size, -1), config=ScoreConfig(pic=False))
    assert unlabelled.elbow is not None and unlabelled.k == unlabelled.elbow.knee == 4
    expected = elbow_sweep(x, elbow_ks(len(x), 20), seed=0)
    assert unlabelled.elbow.ks == expected.ks and unlabelled.elbow.inertias == expected.inertias
    no_sweep = score_embedding(x, np.full(y.size, -1), config=ScoreConfig(elbow_k_max=None, pic=False))
    assert no_sweep.elbow is None and no_sweep.k == 10
    assert score_embedding(x[:5], y[:5], config=ScoreConfig(elbow_k_max=None, pic=False), n_classes=1).k == 4


def test_metrics_per_split_and_pic() -> None:
    x, y = blobs(30, 3, 80, seed=31)  # wider than pca_dim: PCA to 64 first
    splits = np.array(["test", "train", ""] * 30, dtype=object)
    score = score_embedding(x, y, splits, ScoreConfig(seed=2, min_test_items=30))
    assert list(score.metrics) == ["train", "test", "all"] and score.scored_split == "test"
    small_test = score_embedding(x, y, splits, ScoreConfig(seed=2, pic=False))  # 30 test items < 100: all
    assert small_test.scored_split == "all" and small_test.metrics["test"]["n_items"] == 30
    model = fit_pca(x, 64)
    np.testing.assert_array_equal(score.feats, model.transform(x))
    km = kmeans(score.feats, 3, seed=2, restarts=5)
    np.testing.assert_array_equal(score.kmeans.labels, km.labels)
    sel = splits == "train"
    expected = cluster_summary(score.feats[sel], km.labels[sel], labels_true=y[sel], sample_size=2000, seed=2)
    assert score.metrics["train"] == {**expected, "n_items": 30}
    assert score.metrics["all"]["n_items"] == 90 and score.metrics["all"]["nmi"] == pytest.approx(1.0)
    res = pic(model.whitened().transform(x), l2=True)
    assert score.pic == {
        "n_clusters": res.n_clusters,
        "largest": int(res.sizes.max()),
        "nmi": nmi(y, res.labels),
        "ari": ari(y, res.labels),
    }
    assert score_embedding(x, y, np.array(["train"] * 89 + ["test"]), ScoreConfig(pic=False)).scored_split == "all"
    unlabelled = score_embedding(x, np.full(90, -1), config=ScoreConfig(k=3))
    assert unlabelled.pic is not None and set(unlabelled.pic) == {"n_clusters", "largest"}
    assert score_embedding(x[:10], y[:10], config=ScoreConfig(k=2)).pic is None  # PIC wants more than 10 rows


def test_score_errors() -> None:
    x, y = blobs(5, 2, 3, seed=32)
    with pytest.raises(ScoreError, match=r"only 2 embedded item\(s\); at least 3 needed"):
        score_embedding(x[:2], y[:2])
    bad = x.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ScoreError, match="the embedding has NaN/inf values in 1 of 10 items"):
        score_embedding(bad, y)
    with pytest.raises(ScoreError, match=r"k=11 is larger than the number of items \(10\)"):
        score_embedding(x, y, config=ScoreConfig(k=11))
    with pytest.raises(ClusterError, match="splits"):
        score_embedding(x, y, ["train"] * 9)
    assert issubclass(ScoreError, ClusterError)
    assert issubclass(ClusterError, VoxclustError) and issubclass(ClusterError, ValueError)
