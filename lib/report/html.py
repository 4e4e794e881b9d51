"""The report as one self-contained HTML file: ``render_html``, from the jinja2 templates in ``templates/``.

Choices:

* **One file, nothing external.** The HTML is rendered by jinja2 from ``templates/report.html.j2`` (with the
  ``figure`` macro of ``templates/figure.html.j2``), shipped as package data of ``lib.report``, with inline CSS,
  no JavaScript, and every image embedded as a ``data:image/png;base64,`` URI; it opens offline and can be
  mailed or stored as a single artifact. The only URLs are plain links to a method's run and assignments, and
  only ``http(s)`` ones become links (others, e.g. ``s3://``, are shown as text), so a ``javascript:`` URL in
  the data can never be clicked.
* **Escaping.** Autoescape is on: method names, options and error messages (which may contain anything,
  ``<script>`` included) are shown as text. Only bytes that start with the PNG signature are embedded.
* **Robustness.** A report is written at the end of a long run, so rendering never fails on missing parts:
  a referenced image absent from ``images`` shows "(image missing)", missing metrics show "–", a method
  without its scored split has empty metric cells.
* **Templates.** Loaded once, at import, with jinja's default ``keep_trailing_newline=False``: the one
  trailing newline of ``report.html.j2`` is dropped, so the document ends with ``</html>``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import jinja2

from lib.report.table import (
    HEADERS,
    SPLIT_COLUMNS,
    best_methods,
    columns,
    failed_methods,
    fmt,
    method_entries,
    method_notes,
    number,
    suggested_k,
    table_rows,
    verdict_text,
)

_SHARED_IMAGES = {
    "elbow": "k-means elbow, all methods",
    "loss": "Training loss",
    "deepcluster_nmi": "DeepCluster NMI per epoch",
}
_METHOD_IMAGES = {
    "contingency": "Classes × clusters",
    "pca": "PCA map",
    "tsne": "t-SNE map",
    "tsne_clusters": "t-SNE map, coloured by cluster",
    "strips": "Cluster members (front and side depth views, up is up)",
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lib.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=False,
    lstrip_blocks=False,
)
_TEMPLATE = _ENV.get_template("report.html.j2")


def _safe_href(url: Any) -> str | None:
    """``url`` when it is an http(s) URL (safe to make clickable), else None."""
    if not isinstance(url, str):
        return None
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return url.strip() if scheme in ("http", "https") else None


def _image(file: Any, caption: str, images: Mapping[str, bytes], cache: dict[str, str]) -> dict[str, Any]:
    name = str(file)
    out: dict[str, Any] = {"file": name, "caption": caption, "src": None, "note": None, "wide": False}
    data = images.get(name)
    if data is None:
        out["note"] = "(image missing)"
    elif bytes(data[:8]) != _PNG_SIGNATURE:
        out["note"] = "(image missing: not a PNG)"
    else:
        if name not in cache:
            cache[name] = "data:image/png;base64," + base64.b64encode(bytes(data)).decode("ascii")
        out["src"] = cache[name]
    return out


def _anchor(i: int, name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return f"m{i}-{slug}" if slug else f"m{i}"


def _cluster_sizes(split: str, metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    sizes = metrics.get("sizes")
    if not isinstance(sizes, Sequence) or isinstance(sizes, str) or not sizes:
        return None
    names = metrics.get("clusters")
    if not isinstance(names, Sequence) or isinstance(names, str) or len(names) != len(sizes):
        names = list(range(len(sizes)))
    return {"split": split, "n": len(sizes), "entries": [(str(c), fmt(n)) for c, n in zip(names, sizes, strict=True)]}


def _latest_batch(m: Mapping[str, Any], shown: int = 12) -> dict[str, Any] | None:
    """The items of the store's newest batch in each cluster (at most ``shown`` named per cluster)."""
    members = m.get("latest_members") or {}
    if not m.get("latest_batch") or not isinstance(members, Mapping) or not members:
        return None
    entries = []
    for c, items in members.items():
        names = ", ".join(str(i) for i in list(items)[:shown])
        more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
        entries.append((str(c), len(items), names + more))
    return {"batch": str(m["latest_batch"]), "entries": entries}


def render_html(report: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """The whole report as one self-contained HTML5 document (inline CSS, images as data URIs)."""
    cache: dict[str, str] = {}
    split = str(report.get("scored_split") or "test")
    cols = columns(report)
    best = set(best_methods(report))
    methods = method_entries(report)
    anchors = [_anchor(i, str(m.get("name", ""))) for i, m in enumerate(methods)]

    rows = []
    for anchor, row in zip(anchors, table_rows(report), strict=True):
        cls = "failed" if row["status"] != "ok" else ("best" if row["name"] in best else "")
        cells = [{"text": fmt(row[c]), "num": c not in ("name", "method", "supervised", "status")} for c in cols]
        rows.append({"cls": cls, "cells": cells, "anchor": anchor})

    shared_files = report.get("images") or {}
    shared_keys = [k for k in _SHARED_IMAGES if shared_files.get(k)]
    shared_keys += [k for k in shared_files if k not in _SHARED_IMAGES and shared_files.get(k)]
    shared = [_image(shared_files[k], _SHARED_IMAGES.get(k, str(k)), images, cache) for k in shared_keys]

    method_views = []
    for anchor, m in zip(anchors, methods, strict=True):
        metrics = m.get("metrics") or {}
        order = [s for s in ("test", "train", "all") if s in metrics] + [
            s for s in metrics if s not in ("test", "train", "all")
        ]
        splits, sizes = [], []
        for s in order:
            sm = metrics.get(s)
            if not isinstance(sm, Mapping):
                continue
            splits.append({"name": s, "cells": [fmt(number(sm.get(c))) for c in SPLIT_COLUMNS]})
            cs = _cluster_sizes(s, sm)
            if cs:
                sizes.append(cs)
        files = m.get("images") or {}
        keys = [k for k in _METHOD_IMAGES if files.get(k)] + [
            k for k in files if k not in _METHOD_IMAGES and files.get(k)
        ]
        imgs = [_image(files[k], _METHOD_IMAGES.get(k, str(k)), images, cache) for k in keys]
        for img, k in zip(imgs, keys, strict=True):
            img["wide"] = k == "strips"
        links = []
        for label, key in (("Run", "run_url"), ("Assignments", "assignments_url")):
            url = m.get(key)
            if url:
                links.append((label, {"href": _safe_href(url), "text": str(url)}))
        status = str(m.get("status", ""))
        error = m.get("error")
        method_views.append(
            {
                "anchor": anchor,
                "name": str(m.get("name", "")),
                "method": str(m.get("method", "")),
                "supervised": bool(m.get("supervised", False)),
                "status": status,
                "error": str(error) if error else ("no error message" if status != "ok" else None),
                "options": json.dumps(m.get("options") or {}, sort_keys=True, default=str),
                "dim": fmt(m.get("dim")),
                "train_seconds": fmt(number(m.get("train_seconds"))) + (" s" if number(m.get("train_seconds")) else ""),
                "knee": fmt(m.get("knee"))
                if m.get("knee") is not None
                else ("no clear knee" if m.get("elbow") else "–"),
                "links": links,
                "splits": splits,
                "method_metrics": [
                    (HEADERS.get(str(k), str(k)), fmt(v)) for k, v in (m.get("method_metrics") or {}).items()
                ],
                "sizes": sizes,
                "latest": _latest_batch(m),
                "images": imgs,
            }
        )

    classes = [str(c) for c in report.get("classes") or []]
    if report.get("labelled", False):
        shown = ", ".join(classes[:30]) + (f", … ({len(classes) - 30} more)" if len(classes) > 30 else "")
        labels = f"{len(classes)} classes: {shown}" if classes else "labelled"
    else:
        labels = "none (unlabelled data)"

    return _TEMPLATE.render(
        title=str(report.get("title") or "voxclust report"),
        created=str(report.get("created") or "–"),
        data_url=str(report.get("data_url") or "–"),
        n_items=fmt(report.get("n_items")),
        labels=labels,
        k=fmt(report.get("k")),
        split=split,
        best=verdict_text(report),
        suggested=suggested_k(report),
        failed=failed_methods(report),
        notes=method_notes(report),
        headers=[HEADERS.get(c, c.replace("_", " ")) for c in cols],
        rows=rows,
        shared=shared,
        methods=method_views,
        split_headers=[HEADERS[c] for c in SPLIT_COLUMNS],
    )


_TUNE_TEMPLATE = _ENV.get_template("tune.html.j2")
_TUNE_IMAGES = {"history.png": "Optimisation history", "importance.png": "Option importances"}


def render_tune_html(summary: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """A search's report (``voxclust tune``) as one self-contained HTML5 document: what was searched, the best
    trial and how to use it, its held-out scores, the plots and every trial."""
    cache: dict[str, str] = {}
    rows_in: Sequence[Mapping[str, Any]] = summary.get("trials") or []
    columns_ = list(dict.fromkeys(k for r in rows_in for k in r if k != "run"))
    best = summary.get("best") or {}
    rows = []
    for r in rows_in:
        css = "best" if best and r.get("trial") == best.get("trial") else ("fail" if r.get("state") == "fail" else "")
        cells = [{"text": _short(r.get(c)), "num": isinstance(r.get(c), int | float)} for c in columns_]
        rows.append({"css": css, "cells": cells})
    test = summary.get("test") or {}
    counts = summary.get("counts") or {}
    return _TUNE_TEMPLATE.render(
        title=f"voxclust tune: {summary.get('method', '?')} on {summary.get('data_url', '?')}",
        created=str(summary.get("created") or "–"),
        data_url=str(summary.get("data_url") or "–"),
        method=str(summary.get("method") or "–"),
        objective=str(summary.get("objective") or "–"),
        objective_note=str(summary.get("objective_note") or ""),
        counts=", ".join(f"{n} {s}" for s, n in counts.items()) or "none",
        searched=list((summary.get("searched") or {}).items()),
        best=f"trial {best['trial']}: {_short(best.get('value'))} with {json.dumps(best.get('params'))}"
        if best
        else "–",
        use=str(summary.get("use") or "–"),
        test=", ".join(f"{k} {_short(v)}" for k, v in test.items()) or "–",
        study=str(summary.get("study") or "–"),
        storage=str(summary.get("storage") or "–"),
        dashboard=f"optuna-dashboard {summary.get('storage', '')}",
        images=[_image(name, caption, images, cache) for name, caption in _TUNE_IMAGES.items()],
        columns=columns_,
        rows=rows,
    )


def _short(v: Any) -> str:
    """4 significant digits for floats (learning rates are small), else as :func:`fmt`."""
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else fmt(v)
