"""What a search maximises, computed after every epoch of a trial's run, never from test labels.

* ``val_accuracy`` (supervised classifiers: voxnet, vrn): accuracy on the run's stratified validation split
  of its training region (``val_fraction`` of each class, held out of training), as the run logs it after
  every epoch. The test split is never read.
* ``silhouette`` (any method, the default for unsupervised ones): the mean silhouette of the k-means
  partition (``k`` clusters, faiss, seeded) of the run's embedding of its training region, after PCA to 64
  dimensions when wider. Label-free: it reads the grids and nothing else, so shuffling the store's labels
  changes no trial. It rewards embeddings whose k groups are compact and apart, which is what the
  comparison then clusters; like any internal criterion it can prefer a confident wrong grouping, so check
  the best trial in ``voxclust compare``.

The test split is scored once, for the best trial, when the search ends (:func:`test_scores`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from lib.tune.space import TuneError

Objective = Literal["val_accuracy", "silhouette"]
OBJECTIVES: tuple[str, ...] = ("val_accuracy", "silhouette")


def default_objective(method: str) -> Objective:
    """``val_accuracy`` for a classifier, ``silhouette`` for everything else."""
    return "val_accuracy" if _is_classifier(method) else "silhouette"


def _is_classifier(method: str) -> bool:
    from lib.features.registry import get_method

    return get_method(method).tune_objective == "val_accuracy"


def check_objective(objective: str, method: str, options: dict[str, Any], labelled: bool) -> None:
    """TuneError when ``objective`` cannot score ``method`` with ``options`` on a store (``labelled``: every
    training item has a label)."""
    from lib.features.runs import make_config

    if objective not in OBJECTIVES:
        raise TuneError(f"unknown objective {objective!r}; objectives: {', '.join(OBJECTIVES)}")
    if objective == "val_accuracy":
        if not _is_classifier(method):
            raise TuneError(
                f"objective val_accuracy needs a classifier (voxnet, vrn); {method} holds out no validation "
                "split: use --objective silhouette"
            )
        if not labelled:
            raise TuneError(
                "objective val_accuracy needs a label on every training item, and this store's items are not "
                "all labelled: use --objective silhouette"
            )
        if float(getattr(make_config(method, options), "val_fraction", 0.0)) <= 0:
            raise TuneError("objective val_accuracy needs val_fraction > 0 (the validation share of the train split)")


def embedding_silhouette(x: np.ndarray, k: int, seed: int) -> float:
    """Silhouette of the seeded k-means partition of ``x`` (PCA to 64 dimensions when wider)."""
    from lib.evaluation.kmeans import kmeans
    from lib.evaluation.metrics import silhouette
    from lib.evaluation.pca import pca

    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        return -1.0
    if x.shape[1] > 64:
        x = pca(x, 64)
    if len(x) <= k:
        raise TuneError(f"objective silhouette: {len(x)} training items cannot form k={k} clusters; lower --k")
    part = kmeans(x, k, seed=seed, restarts=3, gpu=False)
    value = silhouette(x, part.labels, sample_size=2000, seed=seed)
    return -1.0 if value is None else float(value)


def epoch_value(session: Any, objective: str, k: int, seed: int) -> float:
    """The objective of a run (a :class:`lib.features.runs.Session`) as it stands after its last epoch."""
    if objective == "val_accuracy":
        history = session.history
        if not history or "val_accuracy" not in history[-1]:
            raise TuneError(f"{session.spec.method}: the run logged no val_accuracy")
        return float(history[-1]["val_accuracy"])
    return embedding_silhouette(session.method.embed(session.data.grids), k, seed)


def test_scores(session: Any, k: int, seed: int) -> dict[str, float]:
    """Held-out scores of the best trial's run, computed once: the run's own test metrics (a classifier's
    ``test_accuracy``, with its test-time vote) and, for a store with a labelled test split, the k-means NMI
    of the test embedding (the comparison's scoring)."""
    from lib.evaluation.score import ScoreConfig, score_embedding
    from lib.features.runs import load_region
    from lib.voxels.records import Region

    metrics = session.finish()
    out = {key: float(v) for key, v in metrics.items() if isinstance(v, int | float) and key != "train_seconds"}
    if session.spec.region.split == "train":
        test = load_region(session.spec.data, Region(split="test"))
        if len(test) > k and (test.labels >= 0).all():
            cfg = ScoreConfig(k=k, pca_dim=64, seed=seed, restarts=5, elbow_k_max=None, pic=False)
            scored = score_embedding(session.method.embed(test.grids), test.labels, config=cfg)
            out["test_nmi"] = float(scored.metrics["all"]["nmi"])
    return out
