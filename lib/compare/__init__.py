"""Compare feature methods on one voxel store: train (or reuse) each method's run, embed every item, cluster,
score, draw, and write one report next to the store.

A comparison is a list of :class:`MethodEntry` (a row name, a registered method, its options). Each entry's
run lives at ``<store>/runs/<name>-<hash of method and options>``, so running a comparison again, or the
quality benchmark on the same store, reuses every finished run instead of training it again; a changed
option means another run.

Per method (:func:`evaluate_method`), with no labels involved until scoring:

* the run's embedding of every stored item (``all``), recomputed only when the store or the run changed;
* PCA to ``pca_dim`` when wider (whitening and row L2-normalisation optional, off by default), then faiss
  k-means on **all** items with ``k`` = the configured k, else the number of classes when the store has
  labels, else the method's suggested k (knee of its elbow curve); k-means on all items rather than per
  split because a user groups the whole batch, and the assignment of every item is written out;
* an elbow sweep (inertia over k = 2 .. ``elbow_k_max``) and its knee;
* PIC (power iteration clustering, no k) on the PCA-whitened, L2-normalised features, as in DeepCluster;
* metrics per split when the store has splits (and for ``all``): cluster sizes, inertia, silhouette on a
  seeded sample and, on labelled rows, NMI / ARI / Hungarian accuracy / purity / the contingency table;
* pictures: the contingency heat map (scored split), PCA and t-SNE maps coloured by label and by cluster
  (t-SNE on a seeded sample of at most ``tsne_max_points``), and a strip of thumbnails per cluster (the
  members nearest the centroid).

:func:`publish` then draws the shared plots (elbow curves, loss curves, DeepCluster's NMI per epoch),
writes ``report.json``, a self-contained ``report.html`` and ``assignments.csv`` under
``<store>/reports/<id>/`` and points ``<store>/reports/latest.json`` at it. A method that failed (to
train, or with NaNs in its embedding, or with fewer items than k) gets a record with its error and the rest
of the report is produced.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lib.errors import VoxclustError
from lib.evaluation import cluster
from lib.features.base import MethodError
from lib.report import plots
from lib.report.html import render_html
from lib.report.table import best_method
from lib.storage import Storage, open_storage
from lib.voxels.store import VoxelStore

REPORTS = "reports"
LATEST = "latest.json"


class CompareError(VoxclustError, ValueError):
    """Bad input to a comparison (unknown preset or row, bad options)."""


class MethodEntry(BaseModel):
    """One row of a comparison: a name, a registered method and its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)
    method: str
    options: dict[str, Any] = Field(default_factory=dict)


class CompareConfig(BaseModel):
    """How embeddings are clustered, scored and drawn (the same for every method)."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(None, ge=2, description="clusters; default: classes when labelled, else the knee")
    pca_dim: int = Field(64, ge=2, description="PCA width before k-means when the embedding is wider")
    whiten: bool = Field(False, description="whiten the PCA components (each to unit variance)")
    l2: bool = Field(False, description="scale rows to unit length before k-means (after PCA)")
    restarts: int = Field(5, ge=1, description="seeded k-means restarts")
    elbow_k_max: int = Field(20, ge=3, description="elbow sweep over k = 2 .. this")
    pic: bool = Field(True, description="also run PIC (power iteration clustering, needs no k)")
    tsne: bool = Field(True, description="draw t-SNE maps")
    tsne_max_points: int = Field(3000, ge=10, description="t-SNE on a seeded sample of at most this many items")
    silhouette_sample: int = Field(2000, ge=10)
    strip_members: int = Field(8, ge=1, le=32, description="thumbnails per cluster")
    seed: int = Field(0, ge=0)


# The CPU budget of each method on 2 cores for ModelNet10 (the quality benchmark's table): the method's
# defaults plus what is written here.
PRESETS: dict[str, list[MethodEntry]] = {
    "quality": [
        MethodEntry(name="raw", method="raw"),
        MethodEntry(name="random_cnn", method="deepcluster", options={"epochs": 0}),
        MethodEntry(name="deepcluster", method="deepcluster"),
        MethodEntry(name="autoencoder", method="autoencoder"),
        MethodEntry(name="triplet", method="triplet"),
        MethodEntry(name="softtriple", method="softtriple"),
        MethodEntry(name="voxnet", method="voxnet"),
        MethodEntry(
            name="softtriple_supervised",
            method="softtriple",
            options={"mode": "supervised", "batch_size": 64, "epochs": 10},
        ),
        MethodEntry(name="vrn", method="vrn"),  # width 8, strided stem: the full-size network needs a GPU
    ],
    # Minutes on 2 cores for the demo batch (140 shapes): every method, briefly.
    "demo": [
        MethodEntry(name="raw", method="raw"),
        MethodEntry(name="deepcluster", method="deepcluster", options={"k": 20, "epochs": 4, "batch_size": 32}),
        MethodEntry(name="autoencoder", method="autoencoder", options={"epochs": 4}),
        MethodEntry(name="triplet", method="triplet", options={"epochs": 2}),
        MethodEntry(name="softtriple", method="softtriple", options={"epochs": 2}),
        MethodEntry(name="voxnet", method="voxnet", options={"epochs": 6}),
        MethodEntry(name="vrn", method="vrn", options={"epochs": 1, "stem_stride": 2}),
    ],
}


def default_entries() -> list[MethodEntry]:
    """Every registered method with its defaults."""
    from lib.features.registry import METHODS

    return [MethodEntry(name=name, method=name) for name in METHODS]


def resolve_entries(
    names: list[str] | None = None, preset: str | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> list[MethodEntry]:
    """The rows to compare: a preset (default: every registered method with its defaults), optionally cut to
    ``names`` (a preset row name or a registered method), with per-row option overrides."""
    from lib.features.registry import METHODS

    if preset is None or preset == "default":
        base = default_entries()
    elif preset in PRESETS:
        base = list(PRESETS[preset])
    else:
        raise CompareError(f"unknown preset {preset!r}; presets: default, {', '.join(PRESETS)}")
    by_name = {e.name: e for e in base}
    if names:
        entries = []
        for n in names:
            if n in by_name:
                entries.append(by_name[n])
            elif n in METHODS:
                entries.append(MethodEntry(name=n, method=n))
            else:
                raise CompareError(f"unknown method or row {n!r}; choose from: {', '.join({**by_name, **METHODS})}")
    else:
        entries = base
    if len({e.name for e in entries}) != len(entries):
        raise CompareError("each row may appear only once")
    for row in overrides or {}:
        if row not in {e.name for e in entries}:
            raise CompareError(f"--set names row {row!r}, which is not compared ({', '.join(e.name for e in entries)})")
    out = []
    for e in entries:
        opts = {**e.options, **(overrides or {}).get(e.name, {})}
        out.append(e.model_copy(update={"options": opts}))
    return out


def run_url_for(data_url: str, entry: MethodEntry) -> str:
    """Where this entry's run lives: ``<store>/runs/<name>-<8 hex of the validated method config>``."""
    from lib.features.runs import default_run_url, make_config

    cfg = make_config(entry.method, entry.options).model_dump(mode="json")
    digest = hashlib.sha256(json.dumps([entry.method, cfg], sort_keys=True).encode()).hexdigest()[:8]
    return default_run_url(data_url, entry.method, f"{entry.name}-{digest}")


def discover_entries(data_url: str) -> list[MethodEntry]:
    """The entries of the runs already under ``<store>/runs`` that a comparison made (``<name>-<hash>`` folders
    whose hash matches their method and config), in name order."""
    from lib.features.runs import RUN_JSON, RunSpec

    runs = open_storage(f"{data_url.rstrip('/')}/runs")
    found: dict[str, tuple[float, MethodEntry]] = {}
    for obj in runs.list():
        folder, _, leaf = obj.key.rpartition("/")
        if leaf != RUN_JSON or "/" in folder or "-" not in folder:
            continue
        name = folder.rsplit("-", 1)[0]
        try:
            spec = RunSpec.model_validate(runs.read_json(obj.key))
            entry = MethodEntry(name=name, method=spec.method, options=spec.config)
            if not run_url_for(data_url, entry).rstrip("/").endswith(f"/runs/{folder}"):
                continue
        except (ValueError, MethodError):
            continue
        if name not in found or spec.created > found[name][0]:  # a row run with other options: the newest
            found[name] = (spec.created, entry)
    if not found:
        raise CompareError(f"{data_url}: no comparison runs under runs/ (run voxclust compare first)")
    return [found[name][1] for name in sorted(found)]


def new_report_url(data_url: str) -> str:
    return f"{data_url.rstrip('/')}/{REPORTS}/compare-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_report_url(data_url: str) -> str:
    storage = open_storage(f"{data_url.rstrip('/')}/{REPORTS}")
    if not storage.exists(LATEST):
        raise CompareError(f"{data_url}: no comparison report yet (run voxclust compare first)")
    return str(storage.read_json(LATEST)["url"])


# -- one method ---------------------------------------------------------------------------------------------------
def ensure_embedding(run_url: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The run's embedding of every stored item, (re)computed when missing or stale (store grew, run trained on)."""
    from lib.features.runs import RUN_JSON, Region, Session, read_embedding

    if not open_storage(run_url).exists(RUN_JSON):
        raise CompareError(f"not trained: no run at {run_url}")
    session = Session(run_url)
    if session.method.trainable and session.ckpt["epochs_done"] < session.ref.epochs:
        raise CompareError(f"not trained: {session.ckpt['epochs_done']} of {session.ref.epochs} epochs at {run_url}")
    session.finish()
    session.embed(Region(split="all"), "all", reuse=True)
    return read_embedding(run_url, "all")


def failed_record(entry: MethodEntry, error: str, run_url: str | None = None) -> dict[str, Any]:
    return {
        "name": entry.name,
        "method": entry.method,
        "options": entry.options,
        "supervised": is_supervised(entry),
        "status": "failed",
        "error": error,
        "dim": None,
        "train_seconds": None,
        "metrics": {},
        "method_metrics": {},
        "elbow": None,
        "knee": None,
        "images": {},
        "run_url": run_url,
        "assignments_url": None,
        "history": [],
    }


def is_supervised(entry: MethodEntry) -> bool:
    """Whether the entry's method trains on the store's labels (unknown methods or options: False)."""
    from lib.features.registry import get_method
    from lib.features.runs import make_config

    try:
        return bool(get_method(entry.method).needs_labels(make_config(entry.method, entry.options)))
    except MethodError:
        return False


def _splits(store_splits: np.ndarray) -> list[str]:
    present = sorted({str(s) for s in store_splits if s})
    return [*(s for s in ("train", "test") if s in present), "all"]


def evaluate_method(
    data_url: str, entry: MethodEntry, run_url: str, out_url: str, config: CompareConfig | None = None
) -> dict[str, Any]:
    """Cluster, score and draw one method's embedding of every stored item; images and the assignment go to
    ``out_url``. Returns the method's report record (a failed record on bad embeddings or too few items)."""
    cfg = config or CompareConfig()
    try:
        return _evaluate(data_url, entry, run_url, open_storage(out_url), cfg)
    except (MethodError, cluster.ClusterError, CompareError) as exc:
        return failed_record(entry, str(exc), run_url)


def _evaluate(data_url: str, entry: MethodEntry, run_url: str, out: Storage, cfg: CompareConfig) -> dict[str, Any]:
    x, rows, attrs = ensure_embedding(run_url)
    store = VoxelStore.open(data_url)
    m = store.manifest()
    by_row = {r["row"]: r for r in m.items}
    labels = np.array([-1 if by_row[int(r)]["label"] is None else by_row[int(r)]["label"] for r in rows], np.int64)
    splits = np.array([by_row[int(r)]["split"] or "" for r in rows], dtype=object)
    if len(x) < 3:
        raise CompareError(f"{entry.name}: only {len(x)} embedded item(s); at least 3 needed")
    if not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x).all(axis=1)))
        raise CompareError(f"{entry.name}: the embedding has NaN/inf values in {bad} of {len(x)} items")
    labelled = bool((labels >= 0).any())
    # One PCA fit serves k-means (when wider or whitened) and PIC (always whitened).
    reduce = x.shape[1] > cfg.pca_dim or cfg.whiten
    model = cluster.fit_pca(x, min(cfg.pca_dim, x.shape[1])) if reduce or cfg.pic else None
    if reduce and model is not None:
        feats = (model.whitened() if cfg.whiten else model).transform(x)
    else:
        feats = np.ascontiguousarray(x, np.float32)
    if cfg.l2:
        feats = cluster.l2_normalize(feats)

    ks = cluster.elbow_ks(len(feats), cfg.elbow_k_max)
    sweep = cluster.elbow_sweep(feats, ks, seed=cfg.seed)
    k = cfg.k or (len(m.classes) if labelled and len(m.classes) >= 2 else None) or sweep.knee or min(10, len(x) - 1)
    if k > len(feats):
        raise CompareError(f"{entry.name}: k={k} is larger than the number of items ({len(feats)})")
    km = cluster.kmeans(feats, k, seed=cfg.seed, restarts=cfg.restarts)
    assign = km.labels

    metrics: dict[str, Any] = {}
    for split in _splits(splits):
        sel = np.ones(len(x), bool) if split == "all" else splits == split
        if sel.sum() < 2:
            continue
        metrics[split] = cluster.cluster_summary(
            feats[sel],
            assign[sel],
            labels_true=labels[sel] if labelled else None,
            sample_size=cfg.silhouette_sample,
            seed=cfg.seed,
        )
        metrics[split]["n_items"] = int(sel.sum())
    scored = "test" if "test" in metrics else "all"

    pic: dict[str, Any] | None = None
    if cfg.pic and len(feats) > 10 and model is not None:
        res = cluster.pic(model.whitened().transform(x), l2=True)  # whitened, then rows L2-normalised
        pic = {"n_clusters": int(res.n_clusters), "largest": int(res.sizes.max())}
        known = labels >= 0
        if labelled:
            pic["nmi"] = cluster.nmi(labels[known], res.labels[known])
            pic["ari"] = cluster.ari(labels[known], res.labels[known])

    images = _method_images(
        entry, out, x, labels, assign, km.centroids, feats, rows, store, m.classes, metrics, scored, cfg
    )
    assignments_key = f"clusters/{entry.name}.json"
    out.write_json(
        assignments_key,
        {"rows": [int(r) for r in rows], "clusters": [int(c) for c in assign], "k": int(k), "method": entry.name},
    )
    run_metrics = dict(attrs.get("metrics") or {})
    history = list(attrs.get("history") or [])
    return {
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
        "method_metrics": {
            key: _num(v) for key, v in run_metrics.items() if key != "train_seconds" and isinstance(v, int | float)
        },
        "elbow": [[int(a), float(b)] for a, b in zip(sweep.ks, sweep.inertias, strict=True)],
        "knee": sweep.knee,
        "pic": pic,
        "images": images,
        "run_url": run_url,
        "assignments_url": f"{out.url}/{assignments_key}",
        "history": _light_history(history),
    }


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and math.isfinite(float(value)):
        return float(value)
    return None


def _light_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch scalars only (cluster size lists and the like stay in the run)."""
    return [{k: v for k, v in h.items() if isinstance(v, int | float) and not isinstance(v, bool)} for h in history]


def _method_images(
    entry: MethodEntry,
    out: Storage,
    x: np.ndarray,
    labels: np.ndarray,
    assign: np.ndarray,
    centroids: np.ndarray,
    feats: np.ndarray,
    rows: np.ndarray,
    store: VoxelStore,
    classes: list[str],
    metrics: dict[str, Any],
    scored: str,
    cfg: CompareConfig,
) -> dict[str, str]:
    images: dict[str, str] = {}

    def put(kind: str, png: bytes) -> None:
        key = f"{entry.name}-{kind}.png"
        out.write_bytes(key, png)
        images[kind] = key

    labelled = bool((labels >= 0).any())
    sm = metrics.get(scored, {})
    if labelled and "contingency" in sm:
        names = [classes[int(c)] if 0 <= int(c) < len(classes) else str(c) for c in sm["classes"]]
        put(
            "contingency",
            plots.contingency_heatmap(
                np.asarray(sm["contingency"]),
                names,
                [str(c) for c in sm["clusters"]],
                title=f"{entry.name}: classes x clusters ({scored} split)",
            ),
        )
    cluster_names = [f"cluster {c}" for c in range(int(assign.max()) + 1)]
    label_names = classes if labelled else None
    put(
        "pca",
        plots.scatter_2d(
            plots.map_2d(x, "pca", seed=cfg.seed),
            labels if labelled else assign,
            names=label_names if labelled else cluster_names,
            title=f"{entry.name}: PCA, coloured by {'label' if labelled else 'cluster'}",
        ),
    )
    if cfg.tsne:
        rng = np.random.default_rng(cfg.seed)
        idx = np.arange(len(x))
        if len(x) > cfg.tsne_max_points:
            idx = np.sort(rng.choice(len(x), cfg.tsne_max_points, replace=False))
        xy = plots.map_2d(x[idx], "tsne", seed=cfg.seed)
        sample = f", sample of {len(idx)}" if len(idx) < len(x) else ""
        if labelled:
            put(
                "tsne",
                plots.scatter_2d(
                    xy, labels[idx], names=label_names, title=f"{entry.name}: t-SNE, coloured by label{sample}"
                ),
            )
        put(
            "tsne_clusters",
            plots.scatter_2d(
                xy, assign[idx], names=cluster_names, title=f"{entry.name}: t-SNE, coloured by cluster{sample}"
            ),
        )
    # Thumbnails: the members of each cluster nearest its centroid.
    groups: list[tuple[str, np.ndarray]] = []
    for c in range(len(centroids)):
        members = np.flatnonzero(assign == c)
        if not len(members):
            continue
        d = ((feats[members] - centroids[c]) ** 2).sum(axis=1)
        pick = members[np.argsort(d, kind="stable")[: cfg.strip_members]]
        groups.append((f"{c} ({len(members)})", store.read(rows[pick])))
    if groups:
        put("strips", plots.cluster_strips(groups, max_per_cluster=cfg.strip_members))
    return images


# -- the report ---------------------------------------------------------------------------------------------------
def publish(
    data_url: str, out_url: str, records: list[dict[str, Any]], config: CompareConfig | None = None
) -> dict[str, Any]:
    """Shared plots, ``report.json``, ``report.html``, ``assignments.csv``; ``latest.json`` points here.

    Returns ``{"report": the report dict, "html_url", "json_url", "csv_url", "images": {name: url}}``."""
    cfg = config or CompareConfig()
    out = open_storage(out_url)
    store = VoxelStore.open(data_url)
    m = store.manifest()
    stored = store.records()
    labelled = any(r["label"] is not None for r in stored)
    ok = [r for r in records if r["status"] == "ok"]

    shared: dict[str, str] = {}
    curves = {r["name"]: [(int(a), float(b)) for a, b in r["elbow"]] for r in ok if r.get("elbow")}
    if curves:
        out.write_bytes("elbow.png", plots.elbow_plot(curves, {r["name"]: r.get("knee") for r in ok}))
        shared["elbow"] = "elbow.png"
    histories = {r["name"]: r.get("history") or [] for r in records}
    if any(any("loss" in h for h in hist) for hist in histories.values()):
        out.write_bytes("loss.png", plots.loss_curves(histories))
        shared["loss"] = "loss.png"
    for r in records:
        if r["method"] == "deepcluster" and any("nmi_previous" in h for h in r.get("history") or []):
            key = f"{r['name']}-nmi.png"
            out.write_bytes(key, plots.nmi_per_epoch(r["history"]))
            shared.setdefault("deepcluster_nmi", key)

    scored = "test" if any(r.get("scored_split") == "test" for r in ok) else "all"
    rep: dict[str, Any] = {
        "title": "voxclust: feature methods compared",
        "data_url": store.url,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "n_items": len(stored),
        "labelled": labelled,
        "classes": list(m.classes),
        "k": cfg.k or (len(m.classes) if labelled else None),
        "scored_split": scored,
        "config": cfg.model_dump(mode="json"),
        "images": shared,
        "methods": records,
    }
    rep["best_method"] = best_method(rep)

    images: dict[str, bytes] = {}
    for name in [*shared.values(), *(v for r in records for v in (r.get("images") or {}).values())]:
        if out.exists(name):
            images[name] = out.read_bytes(name)
    out.write_json("report.json", rep)
    out.write_bytes("report.html", render_html(rep, images).encode())
    out.write_bytes("assignments.csv", assignments_csv(store, out, records).encode())
    open_storage(f"{store.url.rstrip('/')}/{REPORTS}").write_json(LATEST, {"url": out.url, "created": rep["created"]})
    return {
        "report": rep,
        "html_url": f"{out.url}/report.html",
        "json_url": f"{out.url}/report.json",
        "csv_url": f"{out.url}/assignments.csv",
        "images": {name: f"{out.url}/{name}" for name in images},
    }


def assignments_csv(store: VoxelStore, out: Storage, records: list[dict[str, Any]]) -> str:
    """One line per stored item: item_id, row, split, label, then each method's cluster ('' where none)."""
    m = store.manifest()
    ok = [r for r in records if r["status"] == "ok"]
    cols: dict[str, dict[int, int]] = {}
    for r in ok:
        data = out.read_json(f"clusters/{r['name']}.json")
        cols[r["name"]] = dict(zip(data["rows"], data["clusters"], strict=True))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["item_id", "row", "split", "label", *cols])
    for rec in store.records():
        label = m.classes[rec["label"]] if rec["label"] is not None else ""
        w.writerow(
            [rec["item_id"], rec["row"], rec["split"] or "", label, *(c.get(rec["row"], "") for c in cols.values())]
        )
    return buf.getvalue()


def export_csv(data_url: str, report_url: str | None = None) -> str:
    """The ``assignments.csv`` of a report (default: the store's latest)."""
    url = report_url or latest_report_url(data_url)
    storage = open_storage(url)
    if not storage.exists("assignments.csv"):
        raise CompareError(f"{url}: no assignments.csv (not a finished comparison report)")
    return storage.read_bytes("assignments.csv").decode()
