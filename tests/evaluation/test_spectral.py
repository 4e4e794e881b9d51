"""lib.evaluation.spectral: spectral clustering on the k-NN graph finds groups k-means cannot."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_moons

from lib.evaluation.inputs import ClusterError
from lib.evaluation.kmeans import kmeans
from lib.evaluation.metrics import nmi
from lib.evaluation.score import ScoreConfig, score_embedding
from lib.evaluation.spectral import spectral


def test_spectral_separates_two_moons_where_kmeans_cannot() -> None:
    x, y = make_moons(300, noise=0.04, random_state=0)
    part = spectral(x, 2, n_neighbors=10)
    assert part.dtype == np.int64 and nmi(y, part) > 0.95
    assert nmi(y, kmeans(x.astype(np.float32), 2, seed=0).labels) < 0.5
    np.testing.assert_array_equal(part, spectral(x, 2, n_neighbors=10))  # deterministic
    with pytest.raises(ClusterError, match="k=300"):
        spectral(x, 300)


def test_score_embedding_reports_the_spectral_partition() -> None:
    x, y = make_moons(200, noise=0.04, random_state=1)
    score = score_embedding(x, y, config=ScoreConfig(pic=False, elbow_k_max=None))
    assert score.spectral is not None and score.spectral["n_clusters"] == 2 and score.spectral["nmi"] > 0.9
    assert set(score.spectral) == {"n_clusters", "largest", "nmi", "ari"}
    off = score_embedding(x, y, config=ScoreConfig(pic=False, elbow_k_max=None, spectral=False))
    assert off.spectral is None
    capped = score_embedding(x, y, config=ScoreConfig(pic=False, elbow_k_max=None, spectral_max_items=100))
    assert capped.spectral is None  # 200 items: over the cap
    unlabelled = score_embedding(x, np.full(200, -1), config=ScoreConfig(k=2, pic=False, elbow_k_max=None))
    assert unlabelled.spectral is not None and "nmi" not in unlabelled.spectral
