"""A comparison's report folder: shared plots, ``report.json`` (a validated :class:`Report`), the HTML page,
``assignments.csv``, and ``<store>/reports/latest.json`` pointing at the newest."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from lib.compare.records import REPORT_JSON, MethodResult, Report, read_report
from lib.compare.rows import CompareConfig, CompareError
from lib.report import plots
from lib.report.html import render_html
from lib.report.table import best_method, best_methods
from lib.storage import Storage, open_storage
from lib.voxels.records import ItemRecord
from lib.voxels.store import VoxelStore

REPORTS = "reports"
LATEST = "latest.json"


def new_report_url(data_url: str) -> str:
    return f"{data_url.rstrip('/')}/{REPORTS}/compare-{time.strftime('%Y%m%d-%H%M%S')}"


def has_report(data_url: str) -> bool:
    """Whether the store has a comparison report yet."""
    return open_storage(f"{data_url.rstrip('/')}/{REPORTS}").exists(LATEST)


def finished_runs(report: Report, methods: list[str] | None = None) -> list[tuple[str, str]]:
    """(row name, run URL) of the report's finished methods, cut to ``methods`` when given (CompareError
    naming any that the report has not finished)."""
    runs = [(m.name, m.run_url) for m in report.methods if m.ok and m.run_url]
    if methods:
        unknown = sorted(set(methods) - {name for name, _ in runs})
        if unknown:
            have = ", ".join(name for name, _ in runs) or "none"
            raise CompareError(f"no finished method {', '.join(unknown)} in the latest report (it has: {have})")
        runs = [(name, url) for name, url in runs if name in methods]
    return runs


def latest_report_url(data_url: str) -> str:
    storage = open_storage(f"{data_url.rstrip('/')}/{REPORTS}")
    if not storage.exists(LATEST):
        raise CompareError(f"{data_url}: no comparison report yet (run voxclust compare first)")
    return str(storage.read_json(LATEST)["url"])


def publish(
    data_url: str, out_url: str, records: list[MethodResult], config: CompareConfig | None = None
) -> dict[str, Any]:
    """Shared plots, ``report.json``, ``report.html``, ``assignments.csv``; ``latest.json`` points here.

    Returns ``{"report": the report (JSON form), "html_url", "json_url", "csv_url", "images": {name: url}}``."""
    cfg = config or CompareConfig()
    out = open_storage(out_url)
    store = VoxelStore.open(data_url)
    m = store.index()
    stored = store.items()  # read once: the report's counts and its assignments.csv
    labelled = any(r.label is not None for r in stored)
    ok = [r for r in records if r.ok]

    shared: dict[str, str] = {}
    curves = {r.name: [(int(a), float(b)) for a, b in r.elbow] for r in ok if r.elbow}
    if curves:
        out.write_bytes("elbow.png", plots.elbow_plot(curves, {r.name: r.knee for r in ok}))
        shared["elbow"] = "elbow.png"
    histories: dict[str, list[dict[str, Any]]] = {r.name: list(r.history) for r in records}
    if any(any("loss" in h for h in hist) for hist in histories.values()):
        out.write_bytes("loss.png", plots.loss_curves(histories))
        shared["loss"] = "loss.png"
    for r in records:
        if r.method == "deepcluster" and any("nmi_previous" in h for h in r.history):
            key = f"{r.name}-nmi.png"
            out.write_bytes(key, plots.nmi_per_epoch(r.history))
            shared.setdefault("deepcluster_nmi", key)

    rep = Report(
        data_url=store.url,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        n_items=len(stored),
        labelled=labelled,
        classes=list(m.classes),
        k=cfg.k or (len(m.classes) if labelled else None),
        scored_split="test" if any(r.scored_split == "test" for r in ok) else "all",
        config=cfg.model_dump(mode="json"),
        images=shared,
        methods=records,
        seeds=cfg.seeds,
    )
    doc = rep.model_dump(mode="json")
    doc["best_method"] = rep.best_method = best_method(doc)
    doc["best_methods"] = rep.best_methods = best_methods(doc)

    images: dict[str, bytes] = {}
    previews = [r.previews for r in records if r.previews]
    for name in [*shared.values(), *(v for r in records for v in r.images.values()), *previews]:
        if out.exists(name):
            images[name] = out.read_bytes(name)
    out.write_json(REPORT_JSON, doc)
    out.write_bytes("report.html", render_html(doc, images, report_url=out.url).encode())
    out.write_bytes("assignments.csv", assignments_csv(store, out, records, stored).encode())
    open_storage(f"{store.url.rstrip('/')}/{REPORTS}").write_json(LATEST, {"url": out.url, "created": rep.created})
    return {
        "report": doc,
        "html_url": f"{out.url}/report.html",
        "json_url": f"{out.url}/{REPORT_JSON}",
        "csv_url": f"{out.url}/assignments.csv",
        "images": {name: f"{out.url}/{name}" for name in images if name not in previews},
    }


def assignments_csv(
    store: VoxelStore, out: Storage, records: list[MethodResult], stored: list[ItemRecord] | None = None
) -> str:
    """One line per stored item (``stored``: the store's stored items, read when not given): item_id, row,
    split, label, then each method's cluster ('' where none) and, for a method that later placed new items in
    its clusters (``voxclust assign``), their clusters too and a ``<method>_novel`` column (yes / no; '' for
    the items it clustered itself)."""
    classes = store.index().classes
    cols: dict[str, dict[int, Any]] = {}
    for r in records:
        if r.ok:
            data = out.read_json(f"clusters/{r.name}.json")
            cols[r.name] = dict(zip(data["rows"], data["clusters"], strict=True))
            if out.exists(f"assigned/{r.name}.json"):
                items = out.read_json(f"assigned/{r.name}.json")["items"]
                cols[r.name] |= {int(row): a["cluster"] for row, a in items.items() if int(row) not in cols[r.name]}
                novel = {int(row): "yes" if a["novel"] else "no" for row, a in items.items()}
                cols[f"{r.name}_novel"] = novel
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["item_id", "row", "split", "label", *cols])
    for rec in store.items() if stored is None else stored:
        label = classes[rec.label] if rec.label is not None else ""
        w.writerow([rec.item_id, rec.row, rec.split or "", label, *(c.get(rec.row, "") for c in cols.values())])
    return buf.getvalue()


def export_csv(data_url: str, report_url: str | None = None) -> str:
    """The ``assignments.csv`` of a report (default: the store's latest)."""
    url = report_url or latest_report_url(data_url)
    storage = open_storage(url)
    if not storage.exists("assignments.csv"):
        raise CompareError(f"{url}: no assignments.csv (not a finished comparison report)")
    if storage.list("assigned/"):  # items placed in its clusters since: written anew
        return assignments_csv(VoxelStore.open(data_url), storage, read_report(storage).methods)
    return storage.read_bytes("assignments.csv").decode()
