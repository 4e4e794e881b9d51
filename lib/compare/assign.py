"""New scans join the existing groups: each method's run embeds the items, and the clustering model of the
store's latest report (its PCA and centroids, saved by the comparison) assigns them to its clusters by their
stable ids, without clustering again.

Each assigned item also gets a **novelty** score: its distance to the nearest centroid divided by that
cluster's spread (the root mean square distance of the cluster's members). Items scoring above the model's
threshold (the 99th percentile of the clustered items' own scores) are flagged ``novel``: they look like
nothing the groups were made of.

What was assigned is kept in the report folder, ``assigned/<method>.json`` (one entry per store row, so
assigning the same items again rewrites the same entries: idempotent).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from lib.compare.publish import finished_runs, latest_report_url
from lib.compare.records import Report, read_report
from lib.errors import VoxclustError
from lib.evaluation.pca import PCAModel
from lib.evaluation.score import clustered_features
from lib.storage import Storage, open_storage
from lib.voxels.store import VoxelStore


class AssignError(VoxclustError, ValueError):
    """Nothing to assign to (no model for a method, a run of another resolution) or unknown batches."""


@dataclass(frozen=True)
class ClusterModel:
    """A method's clustering model of one report (see :func:`lib.compare.evaluate.save_model`)."""

    index: faiss.Index  # the centroids, answering with their stable ids
    spread: dict[int, float]  # stable id -> the cluster's spread
    threshold: float
    l2: bool
    pca: PCAModel | None = None

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(stable id, distance to that centroid, novelty score) of each embedding row."""
        d2, found = self.index.search(clustered_features(x, self.pca, self.l2), 1)
        ids = found[:, 0].astype(np.int64)
        dist = np.sqrt(np.maximum(d2[:, 0], 0.0))
        return ids, dist, dist / np.array([self.spread[int(i)] for i in ids], dtype=np.float64)


def load_model(report: Storage, name: str) -> ClusterModel:
    key = f"clusters/{name}.npz"
    if not report.exists(key):
        raise AssignError(f"{report.url}: no clustering model of {name!r} (a report made before models were saved?)")
    z = np.load(io.BytesIO(report.read_bytes(key)))
    fields = ("mean", "components", "explained_variance", "scale")
    pca = PCAModel(*(z[f"pca_{f}"] for f in fields)) if "pca_mean" in z else None
    index = faiss.deserialize_index(np.frombuffer(report.read_bytes(f"clusters/{name}.faiss"), dtype=np.uint8))
    spread = {int(i): float(s) for i, s in zip(z["ids"], z["spread"], strict=True)}
    return ClusterModel(index, spread, float(z["novelty_threshold"]), bool(z["l2"]), pca)


@dataclass(frozen=True)
class MethodAssignment:
    method: str
    rows: np.ndarray
    ids: np.ndarray
    distance: np.ndarray
    novelty: np.ndarray
    threshold: float

    @property
    def novel(self) -> np.ndarray:
        return self.novelty > self.threshold


def rows_to_assign(store: VoxelStore, report: Storage, doc: Report, batches: list[str] | None) -> np.ndarray:
    """The stored rows of ``batches`` (default: every stored row the report did not cluster)."""
    recs = store.items()
    if batches:
        known = {r.batch for r in recs}
        unknown = sorted(set(batches) - known)
        if unknown:
            raise AssignError(f"{store.url}: no batch {', '.join(unknown)} (batches: {', '.join(sorted(known))})")
        return np.array(sorted(r.row for r in recs if r.batch in batches), dtype=np.int64)
    clustered: set[int] = set()
    for m in doc.methods:
        if m.ok and report.exists(f"clusters/{m.name}.json"):
            clustered |= {int(r) for r in report.read_json(f"clusters/{m.name}.json")["rows"]}
    return np.array(sorted(r.row for r in recs if r.row not in clustered), dtype=np.int64)


def assign(
    data_url: str, batches: list[str] | None = None, methods: list[str] | None = None
) -> tuple[str, list[MethodAssignment]]:
    """Assign the items of ``batches`` (default: every stored item the latest report did not cluster) to the
    latest report's clusters with each of its finished methods (or ``methods``); keeps them in the report
    folder. Returns (the report URL, one assignment per method)."""
    from lib.features.runs import Session

    store = VoxelStore.open(data_url)
    report_url = latest_report_url(data_url)
    report = open_storage(report_url)
    doc = read_report(report)
    runs = finished_runs(doc, methods)
    rows = rows_to_assign(store, report, doc, batches)
    grids = store.read(rows)
    resolution = store.voxel_config().resolution
    out = []
    for name, run_url in runs:
        model = load_model(report, name)
        method = Session(run_url).method
        if method.info.resolution != resolution:
            raise AssignError(f"{run_url}: trained at {method.info.resolution}^3, the store holds {resolution}^3")
        ids, dist, novelty = (
            model.assign(method.embed(grids)) if len(rows) else (np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
        )
        result = MethodAssignment(name, rows, np.asarray(ids, np.int64), dist, novelty, model.threshold)
        _keep(report, result)
        out.append(result)
    return report_url, out


def summary_row(a: MethodAssignment, batches: list[str] | None) -> dict[str, Any]:
    """One table row of an assignment: method, batches, items, the clusters they joined (id: count), novel."""
    ids, counts = np.unique(a.ids, return_counts=True)
    return {
        "method": a.method,
        "batches": ", ".join(batches) if batches else "not yet clustered",
        "items": len(a.rows),
        "clusters joined": ", ".join(f"{int(c)}: {int(n)}" for c, n in zip(ids, counts, strict=True)) or "–",
        "novel": int(a.novel.sum()),
    }


def _keep(report: Storage, a: MethodAssignment) -> None:
    """Merge into ``assigned/<method>.json``: one entry per row, the latest assignment of each."""
    key = f"assigned/{a.method}.json"
    doc: dict[str, Any] = report.read_json(key) if report.exists(key) else {"method": a.method}
    items: dict[str, Any] = doc.setdefault("items", {})
    for i, row in enumerate(a.rows):
        items[str(int(row))] = {
            "cluster": int(a.ids[i]),
            "distance": float(a.distance[i]),
            "novelty": float(a.novelty[i]),
            "novel": bool(a.novel[i]),
        }
    doc["threshold"] = a.threshold
    report.write_json(key, doc)
