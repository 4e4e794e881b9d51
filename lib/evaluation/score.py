"""Scoring of one embedding: PCA, k-means with a chosen k, the elbow sweep, PIC and the metrics per split.

Every feature method is judged the same way, by ``score_embedding`` (the comparison report and the quality
benchmark both call it): one PCA fit (to ``pca_dim`` when the embedding is wider or whitening is asked for;
also the whitened input of PIC), optional row L2 normalisation, an elbow sweep, then faiss k-means on all
items with k = the configured k, else the number of classes when the items are labelled (at least 2
classes), else the knee of the elbow curve, else min(10, N - 1); then ``cluster_summary`` per split
(``train``, ``test``, ``all``), PIC on the PCA-whitened, L2-normalised embedding, and spectral clustering on
the k-NN graph of the clustered features (same k; over all items, like PIC). The figures to read are
those of the test split when it holds at least ``min_test_items`` items, else those of all items.

Features are used as given (no standardisation); the labels never influence PCA or k-means, they are only
used to score the result, and rows labelled < 0 (unknown) are left out of the scores only: they are still
clustered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from lib.evaluation.inputs import F32, ClusterError, _class_labels
from lib.evaluation.kmeans import ElbowResult, KMeansResult, elbow_ks, elbow_sweep, kmeans
from lib.evaluation.metrics import ari, cluster_accuracy, cluster_summary, nmi
from lib.evaluation.pca import PCAModel, fit_pca, l2_normalize
from lib.evaluation.pic import pic
from lib.evaluation.spectral import spectral

__all__ = ["EmbeddingScore", "ScoreConfig", "ScoreError", "score_embedding"]


class ScoreError(ClusterError):
    """An embedding that cannot be scored: fewer than 3 items, NaN/inf values, or k above the number of items."""


class ScoreConfig(BaseModel):
    """How an embedding is clustered and scored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int | None = Field(None, ge=2, description="clusters; default: classes when labelled, else the knee")
    pca_dim: int = Field(64, ge=1, description="PCA width before k-means when the embedding is wider")
    whiten: bool = Field(False, description="whiten the PCA components (each to unit variance)")
    l2: bool = Field(False, description="scale rows to unit length before k-means (after PCA)")
    restarts: int = Field(5, ge=1, description="seeded k-means restarts")
    elbow_k_max: int | None = Field(20, ge=2, description="elbow sweep over k = 2 .. this; None: no sweep")
    pic: bool = Field(True, description="also run PIC (power iteration clustering, needs no k)")
    spectral: bool = Field(True, description="also run spectral clustering on the k-NN graph, with the same k")
    spectral_max_items: int = Field(20_000, ge=3, description="skip spectral clustering above this many items")
    silhouette_sample: int | None = Field(2000, ge=3, description="silhouette on at most this many rows")
    min_test_items: int = Field(
        100, ge=2, description="score the test split when it has at least this many items, else all items"
    )
    seed: int = Field(0, ge=0)


_DEFAULT = ScoreConfig()


@dataclass(frozen=True, eq=False)
class EmbeddingScore:
    """What ``score_embedding`` found.

    ``feats`` are the clustered features (after PCA / L2), ``kmeans`` the k-means run with ``k`` clusters,
    ``elbow`` the sweep (None when skipped), ``metrics`` the ``cluster_summary`` of each split with at
    least 2 items (``train``, ``test``, ``all``, in that order) plus its ``n_items``, ``scored_split`` the
    split to read (``test`` when it has at least ``min_test_items`` items, else ``all``: a test split of a few
    dozen items is too small to judge a grouping by), ``pic`` PIC's cluster count, largest cluster and,
    when labelled, NMI / ARI (None when PIC did not run); ``spectral`` the same for spectral clustering on the
    k-NN graph of the clustered features with the same k (None when skipped).
    """

    feats: F32
    k: int
    kmeans: KMeansResult
    elbow: ElbowResult | None
    metrics: dict[str, dict[str, Any]]
    scored_split: str
    pic: dict[str, Any] | None
    spectral: dict[str, Any] | None = None
    pca: PCAModel | None = None  # the projection k-means saw (None: the embedding as it is); then L2 when ``l2``
    l2: bool = False

    def features(self, x: npt.ArrayLike) -> F32:
        """New rows of the embedding as the clustered features (``feats``) are made from it."""
        return clustered_features(x, self.pca, self.l2)


def clustered_features(x: npt.ArrayLike, pca: PCAModel | None, l2: bool) -> F32:
    """Embedding rows as k-means saw them: projected by ``pca`` (when there was one), then L2-normalised when
    ``l2``."""
    out = pca.transform(x) if pca is not None else np.ascontiguousarray(x, np.float32)
    return l2_normalize(out) if l2 else out


def _partition_scores(part: npt.NDArray[np.int64], y: npt.NDArray[Any] | None) -> dict[str, Any]:
    """A partition beside k-means (PIC, spectral): its cluster count, largest cluster and, with labels ``y``
    (< 0 unknown), NMI / ARI over the labelled rows."""
    out: dict[str, Any] = {"n_clusters": int(np.unique(part).size), "largest": int(np.bincount(part).max())}
    if y is not None:
        known = y >= 0
        out["nmi"] = nmi(y[known], part[known])
        out["ari"] = ari(y[known], part[known])
    return out


def _split_order(splits: npt.NDArray[Any]) -> list[str]:
    present = sorted({str(s) for s in splits if s})
    return [*(s for s in ("train", "test") if s in present), "all"]


def score_embedding(
    x: npt.ArrayLike,
    labels: npt.ArrayLike,
    splits: npt.ArrayLike | None = None,
    config: ScoreConfig = _DEFAULT,
    n_classes: int | None = None,
) -> EmbeddingScore:
    """Cluster and score the rows of ``x`` (see the module docstring).

    ``labels``: integer class per row, < 0 = unknown (all unknown: no label metrics). ``splits``: split
    name per row (``""`` or None: none), None = no splits (only ``all``). ``n_classes``: the number of
    classes k defaults to (default: the distinct known labels). Raises ``ScoreError`` with fewer than 3
    items, NaN/inf values or k above the number of items.
    """
    cfg = config
    emb = np.asarray(x)
    if emb.ndim != 2:
        raise ClusterError(f"features must be a 2-D array (rows = items), got shape {emb.shape}")
    n = len(emb)
    if n < 3:
        raise ScoreError(f"only {n} embedded item(s); at least 3 needed")
    if not np.isfinite(emb).all():
        bad = int(np.count_nonzero(~np.isfinite(emb).all(axis=1)))
        raise ScoreError(f"the embedding has NaN/inf values in {bad} of {n} items")
    y = _class_labels(labels, n, "labels")
    split_of = np.full(n, "", dtype=object) if splits is None else np.asarray(splits, dtype=object)
    if split_of.shape != (n,):
        raise ClusterError(f"splits must be 1-D with one entry per row ({n}), got shape {split_of.shape}")
    labelled = bool((y >= 0).any())
    if n_classes is None:
        n_classes = int(np.unique(y[y >= 0]).size)
    # One PCA fit serves k-means (when wider or whitened) and PIC (always whitened).
    reduce = emb.shape[1] > cfg.pca_dim or cfg.whiten
    model = fit_pca(emb, min(cfg.pca_dim, emb.shape[1])) if reduce or cfg.pic else None
    projection = (model.whitened() if cfg.whiten else model) if reduce and model is not None else None
    feats = projection.transform(emb) if projection is not None else np.ascontiguousarray(emb, np.float32)
    if cfg.l2:
        feats = l2_normalize(feats)

    sweep = None
    if cfg.elbow_k_max is not None:
        sweep = elbow_sweep(feats, elbow_ks(len(feats), cfg.elbow_k_max), seed=cfg.seed)
    knee = None if sweep is None else sweep.knee
    k = cfg.k or (n_classes if labelled and n_classes >= 2 else None) or knee or min(10, n - 1)
    if k > len(feats):
        raise ScoreError(f"k={k} is larger than the number of items ({len(feats)})")
    km = kmeans(feats, k, seed=cfg.seed, restarts=cfg.restarts)
    assign = km.labels

    metrics: dict[str, dict[str, Any]] = {}
    for split in _split_order(split_of):
        sel = np.ones(n, bool) if split == "all" else split_of == split
        if sel.sum() < 2:
            continue
        metrics[split] = cluster_summary(
            feats[sel],
            assign[sel],
            labels_true=y[sel] if labelled else None,
            sample_size=cfg.silhouette_sample,
            seed=cfg.seed,
        )
        metrics[split]["n_items"] = int(sel.sum())
    scored = "test" if metrics.get("test", {}).get("n_items", 0) >= cfg.min_test_items else "all"

    pic_scores: dict[str, Any] | None = None
    if cfg.pic and len(feats) > 10 and model is not None:
        res = pic(model.whitened().transform(emb), l2=True)  # whitened, then rows L2-normalised
        pic_scores = _partition_scores(res.labels, y if labelled else None)

    spectral_scores: dict[str, Any] | None = None
    if cfg.spectral and k < len(feats) <= cfg.spectral_max_items:
        part = spectral(feats, k, seed=cfg.seed)  # on the features k-means saw
        spectral_scores = _partition_scores(part, y if labelled else None)

    return EmbeddingScore(
        feats=feats,
        k=int(k),
        kmeans=km,
        elbow=sweep,
        metrics=metrics,
        scored_split=scored,
        pic=pic_scores,
        spectral=spectral_scores,
        pca=projection,
        l2=cfg.l2,
    )


def label_scores(
    score: EmbeddingScore, labels: npt.ArrayLike, splits: npt.ArrayLike | None, seeds: list[int], restarts: int
) -> list[dict[str, float | None]]:
    """NMI / ARI / ACC on ``score``'s scored split of k-means with each of ``seeds`` (``restarts`` each) on the
    features ``score`` clustered, with its k: how much the k-means seed alone moves the scores. Unlabelled
    items are left out; all None when none is labelled."""
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    split_of = np.full(n, "", dtype=object) if splits is None else np.asarray(splits, dtype=object)
    sel = (split_of == "test") if score.scored_split == "test" else np.ones(n, bool)
    sel &= y >= 0
    out: list[dict[str, float | None]] = []
    for seed in seeds:
        if not sel.any():
            out.append({"nmi": None, "ari": None, "acc": None})
            continue
        assign = kmeans(score.feats, score.k, seed=seed, restarts=restarts).labels[sel]
        truth = y[sel]
        out.append({"nmi": nmi(truth, assign), "ari": ari(truth, assign), "acc": cluster_accuracy(truth, assign)})
    return out
