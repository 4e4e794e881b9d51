"""One method of a comparison: its run's embedding of every stored item scored
(:func:`lib.evaluation.score.score_embedding`), drawn (:mod:`lib.compare.figures`) and returned as a
:class:`MethodResult`. Labels play no part until scoring.

A method that failed (to train, or with NaNs in its embedding, or with fewer items than k) gets a failed
record with its error, so that the rest of the report is still produced.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lib.compare.figures import FigureInputs, method_images
from lib.compare.ids import PreviousClusters, id_index, match_ids, read_previous
from lib.compare.records import MethodResult, SplitMetrics
from lib.compare.rows import CompareConfig, CompareError, MethodEntry, entry_seed, is_supervised
from lib.evaluation.inputs import ClusterError
from lib.evaluation.metrics import cluster_summary, nmi
from lib.evaluation.score import EmbeddingScore, ScoreError, label_scores, score_embedding
from lib.features.base import MethodError
from lib.features.registry import get_method
from lib.storage import Storage, open_storage
from lib.voxels.index import Index
from lib.voxels.records import ItemRecord
from lib.voxels.store import VoxelStore


def ensure_embedding(run_url: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The run's embedding of every stored item, (re)computed when missing or stale (store grew, run trained on)."""
    from lib.features.runs import RUN_JSON, Session, read_embedding
    from lib.voxels.records import Region

    if not open_storage(run_url).exists(RUN_JSON):
        raise CompareError(f"not trained: no run at {run_url}")
    session = Session(run_url)
    if session.method.trainable and session.ckpt["epochs_done"] < session.ref.epochs:
        raise CompareError(f"not trained: {session.ckpt['epochs_done']} of {session.ref.epochs} epochs at {run_url}")
    session.finish()
    session.embed(Region(split="all"), "all", reuse=True)
    return read_embedding(run_url, "all")


def failed_record(entry: MethodEntry, error: str, run_url: str | None = None) -> MethodResult:
    return MethodResult.failed(entry.name, entry.method, entry.options, is_supervised(entry), error, run_url)


def evaluate_method(
    data_url: str,
    entry: MethodEntry,
    run_url: str,
    out_url: str,
    config: CompareConfig | None = None,
    index: int = 0,
) -> MethodResult:
    """Cluster, score and draw one method's embedding of every stored item; images and the assignment go to
    ``out_url``. Returns the method's report record (a failed record on bad embeddings or too few items).

    ``index`` > 0: the row's ``index``-th seeded run (``entry`` is its seeded entry), scored only (k-means with
    the comparison's seed + ``index``, no pictures, no other partitions): one more point of the row's spread."""
    cfg = config or CompareConfig()
    try:
        if index > 0:
            return _score_only(data_url, entry, run_url, cfg, index)
        return _evaluate(data_url, entry, run_url, open_storage(out_url), cfg)
    except (MethodError, ClusterError, CompareError) as exc:
        return failed_record(entry, str(exc), run_url)


def _records(store: VoxelStore) -> tuple[Index, dict[int, ItemRecord]]:
    """The store's index and every item record by row: read once per evaluation and passed down."""
    return store.index(), {r.row: r for r in store.items(status=None)}


def _labels_splits(by_row: dict[int, ItemRecord], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label (-1: none) and split of each embedded row, from the manifest's records by row."""
    recs = [by_row[int(r)] for r in rows]
    labels = np.array([-1 if rec.label is None else rec.label for rec in recs], np.int64)
    splits = np.array([rec.split or "" for rec in recs], dtype=object)
    return labels, splits


def _score(
    entry: MethodEntry, x: np.ndarray, labels: np.ndarray, splits: np.ndarray, cfg: CompareConfig, n_classes: int
) -> EmbeddingScore:
    try:
        return score_embedding(x, labels, splits, cfg, n_classes=n_classes)
    except ScoreError as exc:  # too few items, NaN/inf or k too large: name the method
        raise CompareError(f"{entry.name}: {exc}") from exc


def _score_only(data_url: str, entry: MethodEntry, run_url: str, cfg: CompareConfig, index: int) -> MethodResult:
    x, rows, attrs = ensure_embedding(run_url)
    m, by_row = _records(VoxelStore.open(data_url))
    labels, splits = _labels_splits(by_row, rows)
    light = cfg.model_copy(update={"seed": cfg.seed + index, "elbow_k_max": None, "pic": False, "spectral": False})
    score = _score(entry, x, labels, splits, light, len(m.classes))
    return MethodResult(
        name=entry.name,
        method=entry.method,
        options=entry.options,
        supervised=is_supervised(entry),
        status="ok",
        dim=int(x.shape[1]),
        n_items=len(x),
        k=score.k,
        train_seconds=_num(dict(attrs.get("metrics") or {}).get("train_seconds")),
        metrics={split: SplitMetrics.model_validate(v) for split, v in score.metrics.items()},
        scored_split=score.scored_split,
        run_url=run_url,
        seed=entry_seed(entry),
    )


def _evaluate(data_url: str, entry: MethodEntry, run_url: str, out: Storage, cfg: CompareConfig) -> MethodResult:
    x, rows, attrs = ensure_embedding(run_url)
    store = VoxelStore.open(data_url)
    m, by_row = _records(store)
    labels, splits = _labels_splits(by_row, rows)
    score = _score(entry, x, labels, splits, cfg, len(m.classes))
    k, km, sweep = score.k, score.kmeans, score.elbow
    trials = [cfg.seed + j for j in range(cfg.restart_trials)]  # k-means seeds alone, on this one embedding
    restarts = label_scores(score, labels, splits, trials, cfg.restarts)
    metrics, scored = score.metrics, score.scored_split
    assign = km.labels
    ids, next_id = match_ids(assign, rows, k, _previous_clusters(data_url, entry.name))
    for split_metrics in metrics.values():  # the clusters as the report names them: their stable ids
        split_metrics["clusters"] = [ids[int(c)] for c in split_metrics["clusters"]]
    own = None
    if get_method(entry.method).assigns:
        sel = splits == "test" if scored == "test" else np.ones(len(x), bool)
        own = cluster_summary(
            x[sel],
            x[sel].argmax(axis=1),
            labels_true=labels[sel] if (labels >= 0).any() else None,
            sample_size=cfg.silhouette_sample,
            seed=cfg.seed,
        )
        own["n_items"] = int(sel.sum())
    captures = np.array([by_row[int(r)].capture or "" for r in rows], dtype=object)
    known = captures != ""  # stores made before captures were recorded have none
    capture_nmi = nmi(captures[known].astype(str), assign[known]) if len(set(captures[known])) > 1 else None

    item_ids = [by_row[int(r)].item_id for r in rows]
    figures = method_images(
        FigureInputs(entry.name, x, rows, labels, list(m.classes), score, store, ids, item_ids), out, cfg
    )
    assignments_key = f"clusters/{entry.name}.json"
    out.write_json(
        assignments_key,
        {
            "rows": [int(r) for r in rows],
            "clusters": [ids[int(c)] for c in assign],
            "k": int(k),
            "ids": ids,  # k-means label -> stable id
            "next_id": next_id,
            "method": entry.name,
        },
    )
    save_model(out, entry.name, score, ids)
    run_metrics = dict(attrs.get("metrics") or {})
    history = list(attrs.get("history") or [])
    latest = max(m.batches, key=lambda b: m.batches[b].get("first_seen", 0.0)) if m.batches else None
    members: dict[int, list[str]] = {}
    for r, c in zip(rows, assign, strict=True):
        if latest is not None and by_row[int(r)].batch == latest:
            members.setdefault(ids[int(c)], []).append(by_row[int(r)].item_id)
    return MethodResult.model_validate(
        {
            "name": entry.name,
            "method": entry.method,
            "options": entry.options,
            "supervised": is_supervised(entry),
            "status": "ok",
            "error": None,
            "dim": int(x.shape[1]),
            "n_items": len(x),
            "k": int(k),
            "train_seconds": _num(run_metrics.get("train_seconds")),
            "metrics": metrics,
            "scored_split": scored,
            "capture_nmi": capture_nmi,
            "own": own,
            "method_metrics": {
                key: _num(v) for key, v in run_metrics.items() if key != "train_seconds" and isinstance(v, int | float)
            },
            "elbow": [[int(a), float(b)] for a, b in zip(sweep.ks, sweep.inertias, strict=True)] if sweep else [],
            "knee": None if sweep is None else sweep.knee,
            "pic": score.pic,
            "spectral": score.spectral,
            "images": figures.images,
            "central_members": figures.members,
            "previews": figures.previews,
            "run_url": run_url,
            "assignments_url": f"{out.url}/{assignments_key}",
            "history": _light_history(history),
            "seed": entry_seed(entry),
            "latest_batch": latest,
            "latest_members": dict(sorted(members.items())),
            "spread": {
                "seeds": [entry_seed(entry) or 0],
                **{key: [metrics.get(scored, {}).get(key)] for key in ("nmi", "ari", "acc")},
                "restart_seeds": trials,
                "restart_nmi": [r["nmi"] for r in restarts],
            },
        }
    )


def _previous_clusters(data_url: str, name: str) -> PreviousClusters | None:
    """The method's clusters in the store's latest report, if any (what the new ids are matched to)."""
    from lib.compare.publish import latest_report_url

    try:
        return read_previous(open_storage(latest_report_url(data_url)), name)
    except (CompareError, FileNotFoundError):
        return None


def save_model(out: Storage, name: str, score: EmbeddingScore, ids: list[int]) -> None:
    """The method's clustering model beside its assignment: ``clusters/<name>.npz`` (the PCA that made the
    clustered features from the embedding, whether rows were then L2-normalised, the centroids in label order,
    their stable ids, each cluster's spread and the novelty threshold, see :func:`cluster_spread`) and
    ``clusters/<name>.faiss``, a faiss index of the centroids that answers with the stable ids: a new item's
    cluster, without clustering again."""
    import io

    import faiss

    centroids = np.ascontiguousarray(score.kmeans.centroids, dtype=np.float32)
    spread, threshold = cluster_spread(score.feats, score.kmeans.labels, centroids)
    parts: dict[str, Any] = {"centroids": centroids, "ids": np.asarray(ids, np.int64), "l2": np.bool_(score.l2)}
    parts |= {"spread": spread, "novelty_threshold": np.float64(threshold)}
    if score.pca is not None:
        pca = score.pca
        parts |= {f"pca_{f}": getattr(pca, f) for f in ("mean", "components", "explained_variance", "scale")}
    buf = io.BytesIO()
    np.savez(buf, **parts)
    out.write_bytes(f"clusters/{name}.npz", buf.getvalue())
    out.write_bytes(f"clusters/{name}.faiss", faiss.serialize_index(id_index(centroids, ids)).tobytes())


def cluster_spread(feats: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, float]:
    """Each cluster's spread (the root mean square distance of its members to its centroid; 1e-6 at least)
    and the novelty threshold: the 99th percentile, over the clustered items, of their distance to their
    centroid divided by their cluster's spread. An item assigned later beyond it is flagged novel."""
    d = np.sqrt(((feats - centroids[labels]) ** 2).sum(axis=1))
    k = len(centroids)
    counts = np.bincount(labels, minlength=k)
    sums = np.bincount(labels, weights=d**2, minlength=k)
    spread = np.maximum(np.sqrt(sums / np.maximum(counts, 1)), 1e-6)
    return spread, float(np.percentile(d / spread[labels], 99)) if len(d) else 0.0


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value)
    return None


def _light_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch scalars only (cluster size lists and the like stay in the run)."""
    return [{k: v for k, v in h.items() if isinstance(v, int | float) and not isinstance(v, bool)} for h in history]
