"""The report as one self-contained HTML file: ``render_html``, from the jinja2 templates in ``templates/``.

Choices:

* **One file, nothing external.** The HTML is rendered by jinja2 from ``templates/report.html.j2`` (with the
  ``figure`` macro of ``templates/figure.html.j2`` and the inline script ``templates/report.js``), shipped as
  package data of ``lib.report``, with inline CSS and script, every image embedded as a
  ``data:image/png;base64,`` URI and the 3D views' grids as inline JSON; it opens offline, loads nothing from
  the network, and can be mailed or stored as a single artifact.
* **Readable by a curator.** The metrics table shows its key columns (``KEY_COLUMNS``) and hides the rest
  behind "show all columns" (a checkbox, plain CSS); it scrolls inside its own box with a sticky header, so
  the page never grows wider than the window, and a click on a header sorts it (numbers highest first,
  missing values last). Supervised rows carry a badge; a glossary explains every column in plain words
  (``GLOSSARY``, also the headers' tooltips); times carry units (``duration``); DeepCluster's history plots
  say how to read them (``DEEPCLUSTER_NOTE``).
* **Central members.** Under each method's thumbnails, the item ids they show (``central_members``, row by
  row), as copyable text; clicking one draws it in 3D on a ``<canvas>`` (shaded voxel faces, turned by
  dragging) from the grids of the method's ``previews`` file (:mod:`lib.report.previews`), each embedded once.
  About 0.7 KB a member at R = 32: a report of 4 methods x 7 clusters x 8 members grew from 309 KB to 400 KB.
* **Links.** Run, assignment and data URLs are links (``_safe_href``): relative for files inside the report
  folder (``report_url``), ``file://`` for local paths, as they are for http(s), file, s3 and gs URLs; any
  other scheme (``javascript:``, ``data:``) stays text.
* **Escaping.** Autoescape is on: method names, options, item ids and error messages (which may contain
  anything, ``<script>`` included) are shown as text, and the inline JSON has ``<``, ``>`` and ``&`` escaped.
  Only bytes that start with the PNG signature are embedded.
* **Robustness.** A report is written at the end of a long run, so rendering never fails on missing parts:
  a referenced image absent from ``images`` shows "(image missing)", missing metrics show "–", a method
  without its scored split has empty metric cells, a missing or broken previews file leaves the item ids
  without a 3D view.
* **Templates.** Loaded once, at import, with jinja's default ``keep_trailing_newline=False``: the one
  trailing newline of ``report.html.j2`` is dropped, so the document ends with ``</html>``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from markupsafe import Markup

from lib.report.previews import read_previews
from lib.report.table import (
    GLOSSARY,
    HEADERS,
    KEY_COLUMNS,
    SPLIT_COLUMNS,
    best_methods,
    columns,
    duration,
    failed_methods,
    fmt,
    glossary_key,
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
_TEXT_COLUMNS = ("name", "method", "supervised", "status")
_LINK_SCHEMES = ("http", "https", "file", "s3", "gs")
DEEPCLUSTER_NOTE = (
    "How to read DeepCluster's curves: at the start of every epoch DeepCluster sorts all scans into new groups "
    "(pseudo-labels) with its current features, then learns to predict those groups with a fresh output layer. "
    "Its loss is measured against targets that change every epoch, so a loss that rises, or an NMI between "
    "consecutive epochs' groups that falls (the groups are still moving), does not mean that training failed. "
    "The NMI against the labels (classes it never sees) and its scores in the metrics table are what count."
)

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lib.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=False,
    lstrip_blocks=False,
)
_TEMPLATE = _ENV.get_template("report.html.j2")


def _safe_href(url: Any, report_url: str | None = None) -> str | None:
    """The link target of ``url``, or None when it must not be clickable (``javascript:``, ``data:`` and any
    other scheme): a path relative to the report folder for a file inside it (``report_url``), so that the
    link works wherever the folder is viewed or copied; ``file://`` for an absolute local path; the URL
    itself for http(s), file, s3 and gs URLs."""
    if not isinstance(url, str) or not url.strip():
        return None
    url = url.strip()
    if report_url:
        base = report_url.strip().rstrip("/") + "/"
        if url.startswith(base) and len(url) > len(base):
            return quote(url[len(base) :], safe="/-._~")
    if url.startswith("/"):
        return "file://" + quote(str(PurePosixPath(url)), safe="/-._~")
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in _LINK_SCHEMES else None


def _script_json(value: Any) -> Markup:
    """``value`` as JSON safe inside a ``<script type="application/json">`` element (no ``<``, ``>``, ``&``)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(ch, esc)
    return Markup(text)  # escaped above: the text can neither end the element nor start a tag


def _image(file: Any, caption: str, images: Mapping[str, bytes], cache: dict[str, str]) -> dict[str, Any]:
    name = str(file)
    out: dict[str, Any] = {"file": name, "caption": caption, "src": None, "note": None, "wide": False, "explain": None}
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


def _metric_cell(col: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """One cell of the metrics table: its text, its sort key ("" when missing: sorted last) and how it shows."""
    v = row.get(col)
    if col == "status":
        sup = bool(row.get("supervised"))
        return {"kind": "status", "status": str(v), "supervised": sup, "sort": f"{v}{' supervised' if sup else ''}"}
    if col in _TEXT_COLUMNS:
        return {"kind": "name" if col == "name" else "text", "text": fmt(v), "sort": str(v)}
    value = number(v)
    text = duration(value) if col == "train_seconds" else fmt(value)
    return {"kind": "num", "text": text, "sort": "" if value is None else repr(value)}


def _glossary(cols: Sequence[str]) -> list[tuple[str, str]]:
    """(the headers a glossary entry explains, its text) for the table's columns, plus "supervised"."""
    labels: dict[str, list[str]] = {}
    for c in ["supervised", *cols]:
        key = glossary_key(c)
        if key is not None:
            labels.setdefault(key, []).append(HEADERS.get(c, c.replace("_", " ")))
    return [(" / ".join(dict.fromkeys(names)), GLOSSARY[key]) for key, names in labels.items()]


def _members(m: Mapping[str, Any], grids: Mapping[str, str]) -> list[dict[str, Any]]:
    """The method's clusters with the item ids its thumbnails show (``central_members``), each id with
    whether its grid is in the page (a 3D view)."""
    out = []
    for c in m.get("central_members") or []:
        if not isinstance(c, Mapping) or not isinstance(c.get("items"), Sequence):
            continue
        items = [{"id": str(i), "view": str(i) in grids} for i in c["items"]]
        out.append({"cluster": fmt(c.get("cluster")), "size": fmt(number(c.get("size"))), "items": items})
    return out


def render_html(report: Mapping[str, Any], images: Mapping[str, bytes], *, report_url: str | None = None) -> str:
    """The whole report as one self-contained HTML5 document (inline CSS and script, images as data URIs).

    ``images``: the report folder's files by name, the PNGs its records name and each method's ``previews``
    file (the grids of the 3D views). ``report_url``: the report folder, when the page is written there (links
    to files inside it become relative, and the page links its ``report.json`` and ``assignments.csv``)."""
    cache: dict[str, str] = {}
    split = str(report.get("scored_split") or "test")
    cols = [c for c in columns(report) if c != "supervised"]  # the status cell carries a "supervised" badge
    best = set(best_methods(report))
    methods = method_entries(report)
    anchors = [_anchor(i, str(m.get("name", ""))) for i, m in enumerate(methods)]

    headers = []
    for c in cols:
        key = glossary_key(c)
        headers.append(
            {
                "text": HEADERS.get(c, c.replace("_", " ")),
                "num": c not in _TEXT_COLUMNS,
                "extra": c not in KEY_COLUMNS,
                "title": GLOSSARY[key] if key else "",
            }
        )
    rows = []
    for anchor, row in zip(anchors, table_rows(report), strict=True):
        cls = "failed" if row["status"] != "ok" else ("best" if row["name"] in best else "")
        cells = [_metric_cell(c, row) | {"extra": h["extra"]} for c, h in zip(cols, headers, strict=True)]
        rows.append({"cls": cls, "cells": cells, "anchor": anchor})

    has_deepcluster = any(m.get("method") == "deepcluster" for m in methods)
    shared_files = report.get("images") or {}
    shared_keys = [k for k in _SHARED_IMAGES if shared_files.get(k)]
    shared_keys += [k for k in shared_files if k not in _SHARED_IMAGES and shared_files.get(k)]
    shared = [_image(shared_files[k], _SHARED_IMAGES.get(k, str(k)), images, cache) for k in shared_keys]
    for img, k in zip(shared, shared_keys, strict=True):
        if k == "deepcluster_nmi" or (k == "loss" and has_deepcluster):
            img["explain"] = DEEPCLUSTER_NOTE

    grids: dict[str, str] = {}
    method_views: list[dict[str, Any]] = []
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
        keys = [k for k in _METHOD_IMAGES if files.get(k) and k != "strips"] + [
            k for k in files if k not in _METHOD_IMAGES and files.get(k)
        ]
        imgs = [_image(files[k], _METHOD_IMAGES.get(k, str(k)), images, cache) for k in keys]
        strips = _image(files["strips"], _METHOD_IMAGES["strips"], images, cache) if files.get("strips") else None
        if strips:
            strips["wide"] = True
        if m.get("previews"):
            grids.update(read_previews(images.get(str(m["previews"]))))
        members = _members(m, grids)
        links = []
        for label, key in (("Run", "run_url"), ("Assignments", "assignments_url")):
            url = m.get(key)
            if url:
                links.append((label, {"href": _safe_href(url, report_url), "text": str(url)}))
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
                "train_time": duration(m.get("train_seconds")),
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
                "strips": strips,
                "members": members,
                "view3d": any(i["view"] for c in members for i in c["items"]),
            }
        )
    shown = {i["id"] for v in method_views for c in v["members"] for i in c["items"]}

    classes = [str(c) for c in report.get("classes") or []]
    if report.get("labelled", False):
        shown_classes = ", ".join(classes[:30]) + (f", … ({len(classes) - 30} more)" if len(classes) > 30 else "")
        labels = f"{len(classes)} classes: {shown_classes}" if classes else "labelled"
    else:
        labels = "none (unlabelled data)"
    data_url = str(report.get("data_url") or "–")
    files = [(name, name) for name in ("report.json", "assignments.csv")] if report_url else []

    return _TEMPLATE.render(
        title=str(report.get("title") or "voxclust report"),
        created=str(report.get("created") or "–"),
        data_url=data_url,
        data_href=_safe_href(data_url),
        report_url=report_url,
        files=files,
        n_items=fmt(report.get("n_items")),
        labels=labels,
        k=fmt(report.get("k")),
        split=split,
        best=verdict_text(report),
        suggested=suggested_k(report),
        failed=failed_methods(report),
        notes=method_notes(report),
        headers=headers,
        n_extra=sum(h["extra"] for h in headers),
        rows=rows,
        glossary=_glossary(cols),
        shared=shared,
        methods=method_views,
        split_headers=[HEADERS[c] for c in SPLIT_COLUMNS],
        grids=_script_json({k: v for k, v in grids.items() if k in shown}) if shown & grids.keys() else None,
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
