"""Which stored scans look like this one? The k nearest stored items of a query by each compared method's
embedding.

The query is a stored item (by item id) or a scan file that is not in the store, read and voxelized with
the store's own settings and embedded by each method's run. The methods are those of the store's latest
comparison report that finished (or the ones named). Distances are Euclidean in each method's embedding of
every stored item (the same embedding the comparison clusters), searched exactly by a faiss flat index that
is built once per embedding and saved beside it in the run (``similar/<embedding>.faiss``, rebuilt when the
embedding changes: the store grew or the run trained on).
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from lib.compare.evaluate import ensure_embedding
from lib.compare.publish import finished_runs, latest_report_url
from lib.compare.records import read_report
from lib.errors import VoxclustError
from lib.report import plots
from lib.scans.readers.base import ReadLimits
from lib.scans.voxelize import voxelize_item
from lib.storage import open_storage
from lib.voxels.store import VoxelStore


class SimilarError(VoxclustError, ValueError):
    """A query that cannot be answered: unknown item id, no finished method, a run of another resolution."""


@dataclass(frozen=True)
class Neighbour:
    item_id: str
    row: int
    source: str
    label: str | None
    split: str | None
    distance: float


@dataclass(frozen=True)
class MethodNeighbours:
    method: str  # the comparison row's name
    run_url: str
    neighbours: list[Neighbour]


@dataclass(frozen=True)
class Query:
    """What was asked: a stored item (``row`` set) or a file (``grid`` voxelized from it)."""

    label: str
    grid: np.ndarray
    row: int | None = None


def stored_query(store: VoxelStore, item_id: str) -> Query:
    """The stored item ``item_id`` as a query."""
    found = [r for r in store.items() if r.item_id == item_id]
    if not found:
        raise SimilarError(f"{store.url}: no stored item with id {item_id!r}")
    row = found[0].row
    return Query(label=item_id, grid=store.read([row])[0], row=row)


def file_query(store: VoxelStore, path: Path) -> Query:
    """A scan file not in the store, read and voxelized with the store's settings (ReadError when it cannot)."""
    grid = voxelize_item(path.name, path.read_bytes(), store.voxel_config(), ReadLimits())
    return Query(label=path.name, grid=grid)


def compared_runs(data_url: str, methods: list[str] | None = None) -> list[tuple[str, str]]:
    """(row name, run URL) of the latest report's finished methods, cut to ``methods`` when given."""
    runs = finished_runs(read_report(open_storage(latest_report_url(data_url))), methods)
    if not runs:
        raise SimilarError(f"{data_url}: the latest report has no finished method")
    return runs


def flat_index(run_url: str, x: np.ndarray, rows: np.ndarray, name: str = "all") -> faiss.Index:
    """The exact (flat L2) faiss index of a run's embedding, read from the run when it was built for this very
    embedding, else built and saved there."""
    storage = open_storage(run_url)
    digest = hashlib.sha256(np.ascontiguousarray(rows, np.int64).tobytes() + np.ascontiguousarray(x).tobytes())
    stamp = {"sha256": digest.hexdigest(), "n": len(x), "dim": int(x.shape[1])}
    meta, blob = f"similar/{name}.json", f"similar/{name}.faiss"
    if storage.exists(meta) and storage.exists(blob) and storage.read_json(meta) == stamp:
        return faiss.deserialize_index(np.frombuffer(storage.read_bytes(blob), dtype=np.uint8))
    index = faiss.IndexFlatL2(int(x.shape[1]))
    index.add(np.ascontiguousarray(x, dtype=np.float32))
    storage.write_bytes(blob, faiss.serialize_index(index).tobytes())
    storage.write_json(meta, stamp)
    return index


def _query_vector(run_url: str, query: Query, x: np.ndarray, rows: np.ndarray, resolution: int) -> np.ndarray:
    if query.row is not None:
        where = np.flatnonzero(rows == query.row)
        if len(where):
            return x[where[:1]]
    from lib.features.runs import Session

    method = Session(run_url).method
    trained_at = method.info.resolution
    if trained_at != resolution:
        raise SimilarError(f"{run_url}: the run was trained at {trained_at}^3, the store holds {resolution}^3 grids")
    return np.asarray(method.embed(query.grid[None]), dtype=np.float32)


def similar(data_url: str, query: Query, k: int = 10, methods: list[str] | None = None) -> list[MethodNeighbours]:
    """The ``k`` nearest stored items of ``query`` by each method (the query item itself left out)."""
    if k < 1:
        raise SimilarError(f"k must be at least 1, got {k}")
    store = VoxelStore.open(data_url)
    records = {r.row: r for r in store.items()}
    classes = store.index().classes
    resolution = store.voxel_config().resolution
    out = []
    for name, run_url in compared_runs(data_url, methods):
        x, rows, _ = ensure_embedding(run_url)
        index = flat_index(run_url, x, rows)
        want = min(len(x), k + (1 if query.row is not None else 0))
        dist, pos = index.search(_query_vector(run_url, query, x, rows, resolution), want)
        found = []
        for d, p in zip(dist[0], pos[0], strict=True):
            row = int(rows[p])
            if p < 0 or row == query.row or row not in records:
                continue
            rec = records[row]
            label = classes[rec.label] if rec.label is not None else None
            found.append(Neighbour(rec.item_id, row, rec.source, label, rec.split, float(np.sqrt(d))))
        out.append(MethodNeighbours(name, run_url, found[:k]))
    return out


def as_json(query: Query, found: list[MethodNeighbours]) -> dict[str, Any]:
    return {
        "query": query.label,
        "stored": query.row is not None,
        "methods": {m.method: {"run_url": m.run_url, "neighbours": [asdict(n) for n in m.neighbours]} for m in found},
    }


def similar_html(store: VoxelStore, query: Query, found: list[MethodNeighbours]) -> str:
    """A self-contained page: the query's thumbnail and, per method, its neighbours' thumbnails and a table."""
    groups: list[tuple[str, Any]] = [(f"query: {query.label}", query.grid[None])]
    for m in found:
        rows = [n.row for n in m.neighbours]
        groups.append((f"{m.method}: nearest first", store.read(rows)))
    png = base64.b64encode(plots.cluster_strips(groups, max_per_cluster=max(1, *(len(m.neighbours) for m in found))))
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>voxclust: similar scans</title>",
        "<style>body{font-family:sans-serif;margin:2rem}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}td.num{text-align:right}</style></head><body>",
        f"<h1>Stored scans like {esc(query.label)}</h1>",
        f"<p>store <code>{esc(store.url)}</code></p>",
        f"<img alt='thumbnails' style='max-width:100%' src='data:image/png;base64,{png.decode()}'>",
    ]
    for m in found:
        parts.append(f"<h2>{esc(m.method)}</h2><table><tr><th>#</th><th>item id</th><th>source</th>")
        parts.append("<th>class</th><th>split</th><th>distance</th></tr>")
        for i, n in enumerate(m.neighbours, 1):
            cells = [n.item_id, n.source, n.label or "–", n.split or "–"]
            parts.append(
                f"<tr><td class='num'>{i}</td>"
                + "".join(f"<td>{esc(c)}</td>" for c in cells)
                + f"<td class='num'>{n.distance:.4g}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
