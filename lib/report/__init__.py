"""The comparison report: one self-contained HTML file, a markdown summary and flat metric rows.

Input is a plain JSON-able dict (schema: the ``Report`` TypedDict below) plus the PNG bytes of the images it
names. Functions take any ``Mapping[str, Any]`` so that callers can pass a dict read back from JSON; the
TypedDicts document the schema and help whoever builds one.

Choices:

* **One file, nothing external.** The HTML is rendered by jinja2 from the string constant ``_HTML`` (no
  template file, so no package data), with inline CSS, no JavaScript, and every image embedded as a
  ``data:image/png;base64,`` URI; it opens offline and can be mailed or stored as a single artifact. The only
  URLs are plain links to a method's run and assignments, and only ``http(s)`` ones become links (others, e.g.
  ``s3://``, are shown as text), so a ``javascript:`` URL in the data can never be clicked.
* **Escaping.** Autoescape is on: method names, options and error messages (which may contain anything,
  ``<script>`` included) are shown as text. Only bytes that start with the PNG signature are embedded.
* **Robustness.** A report is written at the end of a long run, so rendering never fails on missing parts:
  a referenced image absent from ``images`` shows "(image missing)", missing metrics show "–", a method
  without its scored split has empty metric cells.
* **Numbers** are shown with 3 decimals (integers as integers); NaN / infinite / missing values are ``None``
  in ``table_rows`` (JSON has no NaN) and "–" in HTML and markdown.
* **Best method** = the unsupervised method with status "ok" and the highest NMI on the scored split
  (first one on ties). Supervised methods saw the labels, so they are reference points, never "best".
* **Columns** of the metrics table are fixed, plus ``test_accuracy``, ``reconstruction_iou`` and any other
  numeric ``method_metrics`` key, each only when at least one method has it; every row has every column.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Required, TypedDict
from urllib.parse import quote, urlsplit

import jinja2

# -------------------------------------------------------------------------------------------- schema


class SplitMetrics(TypedDict, total=False):
    """Clustering metrics of one method on one split. Label metrics are absent when unlabelled."""

    nmi: float
    ari: float
    acc: float
    purity: float
    silhouette: float | None
    inertia: float
    n_clusters: int
    sizes: list[int]  # members per cluster, in the order of ``clusters``
    contingency: list[list[int]]  # classes × clusters
    classes: list[Any]  # row names of ``contingency``
    clusters: list[Any]  # column names of ``contingency`` / cluster ids of ``sizes``


class MethodImages(TypedDict, total=False):
    """Image file names (keys of the ``images`` dict passed to ``render_html``), any subset."""

    contingency: str
    pca: str
    tsne: str
    tsne_clusters: str
    strips: str


class MethodEntry(TypedDict, total=False):
    name: Required[str]
    method: Required[str]
    options: dict[str, Any]
    supervised: Required[bool]
    status: Required[Literal["ok", "failed"]]
    error: str | None
    dim: int | None
    train_seconds: float | None
    metrics: dict[str, SplitMetrics]  # split ("test", "train", "all") -> metrics
    method_metrics: dict[str, float]  # e.g. test_accuracy, reconstruction_iou
    elbow: list[tuple[int, float]] | None  # [k, inertia] pairs
    knee: int | None  # suggested k
    images: MethodImages
    run_url: str | None
    assignments_url: str | None


class SharedImages(TypedDict, total=False):
    elbow: str
    loss: str
    deepcluster_nmi: str


class Report(TypedDict, total=False):
    title: Required[str]
    data_url: str
    created: str  # ISO time
    n_items: int
    labelled: bool
    classes: list[str]
    k: int
    scored_split: str  # "test" | "all" | "train"
    images: SharedImages
    methods: Required[list[MethodEntry]]


# -------------------------------------------------------------------------------------------- rows

BASE_COLUMNS: tuple[str, ...] = (
    "name",
    "method",
    "supervised",
    "status",
    "nmi",
    "ari",
    "acc",
    "purity",
    "silhouette",
    "inertia",
    "n_clusters",
    "knee",
    "pic_clusters",
    "pic_nmi",
    "train_seconds",
)
SPLIT_COLUMNS: tuple[str, ...] = ("nmi", "ari", "acc", "purity", "silhouette", "inertia", "n_clusters")
KNOWN_METHOD_COLUMNS: tuple[str, ...] = ("test_accuracy", "reconstruction_iou")
_HEADERS = {
    "name": "name",
    "method": "method",
    "supervised": "supervised",
    "status": "status",
    "nmi": "NMI",
    "ari": "ARI",
    "acc": "ACC",
    "purity": "purity",
    "silhouette": "silhouette",
    "inertia": "inertia",
    "n_clusters": "clusters",
    "knee": "elbow knee",
    "pic_clusters": "PIC clusters",
    "pic_nmi": "PIC NMI",
    "train_seconds": "train s",
    "test_accuracy": "test accuracy",
    "reconstruction_iou": "reconstruction IoU",
}
_MARKDOWN_COLUMNS: tuple[str, ...] = ("name", "method", "status", "nmi", "ari", "acc", "silhouette", "n_clusters")
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


def _number(v: Any) -> int | float | None:
    """A finite int or float, else None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _methods(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [m for m in report.get("methods") or [] if isinstance(m, Mapping)]


def _split_metrics(report: Mapping[str, Any], m: Mapping[str, Any]) -> Mapping[str, Any]:
    metrics = m.get("metrics") or {}
    split = metrics.get(report.get("scored_split") or "test")
    return split if isinstance(split, Mapping) else {}


def _method_columns(report: Mapping[str, Any]) -> list[str]:
    present: set[str] = set()
    for m in _methods(report):
        for key, value in (m.get("method_metrics") or {}).items():
            if _number(value) is not None and key not in BASE_COLUMNS:
                present.add(str(key))
    known = [c for c in KNOWN_METHOD_COLUMNS if c in present]
    return known + sorted(present - set(KNOWN_METHOD_COLUMNS))


def columns(report: Mapping[str, Any]) -> list[str]:
    """The columns of ``table_rows`` (and of the HTML metrics table) for this report."""
    return [*BASE_COLUMNS, *_method_columns(report)]


def table_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat, JSON-able row per method: ``columns(report)`` as keys, None for missing or non-finite values.

    Clustering metrics are those of the scored split (``report["scored_split"]``).
    """
    extra = _method_columns(report)
    rows = []
    for m in _methods(report):
        split = _split_metrics(report, m)
        mm = m.get("method_metrics") or {}
        row: dict[str, Any] = {
            "name": str(m.get("name", "")),
            "method": str(m.get("method", "")),
            "supervised": bool(m.get("supervised", False)),
            "status": str(m.get("status", "")),
        }
        for col in SPLIT_COLUMNS:
            row[col] = _number(split.get(col))
        pic = m.get("pic") or {}
        row["knee"] = _number(m.get("knee"))
        row["pic_clusters"] = _number(pic.get("n_clusters"))
        row["pic_nmi"] = _number(pic.get("nmi"))
        row["train_seconds"] = _number(m.get("train_seconds"))
        for col in extra:
            row[col] = _number(mm.get(col))
        if m.get("error"):
            row["error"] = str(m["error"])
        rows.append(row)
    return rows


def best_method(report: Mapping[str, Any]) -> str | None:
    """Name of the unsupervised, successful method with the highest NMI on the scored split.

    None when the report is unlabelled or no such method has an NMI. Ties go to the first one listed.
    """
    if not report.get("labelled", False):
        return None
    best: tuple[float, str] | None = None
    for m in _methods(report):
        if m.get("supervised", False) or m.get("status") != "ok":
            continue
        nmi = _number(_split_metrics(report, m).get("nmi"))
        if nmi is not None and (best is None or nmi > best[0]):
            best = (float(nmi), str(m.get("name", "")))
    return best[1] if best else None


# -------------------------------------------------------------------------------------------- formatting


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else "–"
    return str(v)


def _summary_text(report: Mapping[str, Any]) -> str:
    split = report.get("scored_split") or "test"
    best = best_method(report)
    if best is not None:
        nmi = next(r["nmi"] for r in table_rows(report) if r["name"] == best)
        return f"{best} (NMI {_fmt(nmi)} on the {split} split)"
    if not report.get("labelled", False):
        return "none: the data has no labels, so no method can be scored against classes"
    return f"none: no unsupervised method finished with an NMI on the {split} split"


def _suggested_k(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for m in _methods(report):
        if m.get("elbow") or m.get("knee") is not None:
            knee = m.get("knee")
            out.append((str(m.get("name", "")), str(knee) if knee is not None else "no clear knee"))
    return out


def _failed(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        (str(m.get("name", "")), str(m.get("error") or "no error message"))
        for m in _methods(report)
        if m.get("status") != "ok"
    ]


def _safe_href(url: Any) -> str | None:
    """``url`` when it is an http(s) URL (safe to make clickable), else None."""
    if not isinstance(url, str):
        return None
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    return url.strip() if scheme in ("http", "https") else None


# -------------------------------------------------------------------------------------------- HTML

_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1rem 1.5rem 3rem; color: #1d232a; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d6dbe0; padding-bottom: 0.2rem; margin-top: 2.2rem; }
.muted { color: #667; }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: 0.25rem 1rem; }
dl.summary dt { font-weight: 600; }
dl.summary dd { margin: 0; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #d6dbe0; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f2f4f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fdecec; }
tr.best td { background: #eaf6ea; font-weight: 600; }
.badge { display: inline-block; border-radius: 0.7rem; padding: 0 0.55rem; font-size: 0.8rem; margin-left: 0.3rem;
         background: #e8ebef; color: #334; vertical-align: middle; font-weight: normal; }
.badge.failed { background: #c62828; color: #fff; } .badge.ok { background: #2e7d32; color: #fff; }
.badge.sup { background: #5c6bc0; color: #fff; }
.error { border: 2px solid #c62828; background: #fdecec; padding: 0.5rem 0.8rem; border-radius: 4px; }
.error pre { white-space: pre-wrap; word-break: break-word; margin: 0.3rem 0 0; font-size: 0.85rem; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
figure { margin: 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eceff2; }
figure.wide { flex-basis: 100%; }
figcaption { font-size: 0.85rem; color: #556; }
.missing { display: inline-block; padding: 1.5rem 2rem; border: 1px dashed #aab; color: #667; }
.chips span { display: inline-block; background: #eef1f5; border-radius: 3px; padding: 0 0.4rem;
              margin: 0 0.25rem 0.25rem 0; font-size: 0.85rem; font-variant-numeric: tabular-nums; }
code { background: #f2f4f7; padding: 0 0.2rem; border-radius: 3px; word-break: break-all; }
nav ul { columns: 3; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="muted">created {{ created }}</p>

<section id="summary">
<h2>Summary</h2>
<dl class="summary">
<dt>Data</dt><dd><code>{{ data_url }}</code></dd>
<dt>Items</dt><dd>{{ n_items }}</dd>
<dt>Labels</dt><dd>{{ labels }}</dd>
<dt>k</dt><dd>{{ k }}</dd>
<dt>Scored split</dt><dd>{{ split }}</dd>
<dt>Best unsupervised method</dt><dd>{{ best }}</dd>
<dt>Suggested k (elbow knee)</dt><dd>
{%- for name, knee in suggested %}{{ name }}: {{ knee }}{% if not loop.last %}; {% endif %}
{%- else %}–{% endfor %}</dd>
{% if failed %}<dt>Failed methods</dt>
<dd>{% for name, _ in failed %}{{ name }}{% if not loop.last %}, {% endif %}{% endfor %}</dd>{% endif %}
</dl>
</section>

<section id="metrics">
<h2>Metrics</h2>
<p class="muted">Clustering metrics on the {{ split }} split. Supervised methods saw the labels: they are references,
never the best method.</p>
<table>
<thead><tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr{% if row.cls %} class="{{ row.cls }}"{% endif %}>
{%- for cell in row.cells %}<td{% if cell.num %} class="num"{% endif %}>
{%- if loop.first %}<a href="#{{ row.anchor }}">{{ cell.text }}</a>{% else %}{{ cell.text }}{% endif %}</td>
{%- endfor %}</tr>
{% endfor %}</tbody>
</table>
</section>

{% if shared %}<section id="shared">
<h2>Comparison plots</h2>
<div class="figures">
{% for img in shared %}{{ figure(img) }}
{% endfor %}</div>
</section>{% endif %}

{% for m in methods %}<section id="{{ m.anchor }}">
<h2>{{ m.name }} <span class="badge">{{ m.method }}</span>
{%- if m.supervised %}<span class="badge sup">supervised</span>{% endif %}
<span class="badge {{ 'ok' if m.status == 'ok' else 'failed' }}">{{ m.status }}</span></h2>
{% if m.error is not none %}<div class="error"><strong>This method failed.</strong>
<pre>{{ m.error }}</pre></div>{% endif %}
<dl class="summary">
<dt>Options</dt><dd><code>{{ m.options }}</code></dd>
<dt>Feature dim</dt><dd>{{ m.dim }}</dd>
<dt>Training time</dt><dd>{{ m.train_seconds }}</dd>
<dt>Suggested k</dt><dd>{{ m.knee }}</dd>
{% for label, link in m.links %}<dt>{{ label }}</dt><dd>
{%- if link.href %}<a href="{{ link.href }}">{{ link.text }}</a>{% else %}<code>{{ link.text }}</code>{% endif %}</dd>
{% endfor %}</dl>
{% if m.splits %}<table>
<thead><tr><th>split</th>{% for h in split_headers %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>{% for s in m.splits %}<tr><td>{{ s.name }}</td>
{%- for v in s.cells %}<td class="num">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>{% endif %}
{% if m.method_metrics %}<table><tbody>
{%- for key, value in m.method_metrics %}<tr><th>{{ key }}</th><td class="num">{{ value }}</td></tr>
{% endfor %}</tbody></table>{% endif %}
{% for s in m.sizes %}<p class="chips"><strong>Cluster sizes ({{ s.split }}, {{ s.n }} clusters):</strong>
{% for c, n in s.entries %}<span>{{ c }}: {{ n }}</span>{% endfor %}</p>
{% endfor %}
{% if m.images %}<div class="figures">
{% for img in m.images %}{{ figure(img) }}
{% endfor %}</div>{% endif %}
</section>
{% endfor %}
</body>
</html>
"""

_FIGURE = """{% macro figure(img) %}<figure{% if img.wide %} class="wide"{% endif %}>
{%- if img.src %}<img src="{{ img.src }}" alt="{{ img.caption }}">
{%- else %}<div class="missing">{{ img.note }}</div>{% endif %}
<figcaption>{{ img.caption }} <span class="muted">({{ img.file }})</span></figcaption></figure>{% endmacro %}"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False, lstrip_blocks=False)
_TEMPLATE = _ENV.from_string(_FIGURE + _HTML)


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
    return {"split": split, "n": len(sizes), "entries": [(str(c), _fmt(n)) for c, n in zip(names, sizes, strict=True)]}


def render_html(report: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """The whole report as one self-contained HTML5 document (inline CSS, images as data URIs)."""
    cache: dict[str, str] = {}
    split = str(report.get("scored_split") or "test")
    cols = columns(report)
    best = best_method(report)
    methods = _methods(report)
    anchors = [_anchor(i, str(m.get("name", ""))) for i, m in enumerate(methods)]

    rows = []
    for anchor, row in zip(anchors, table_rows(report), strict=True):
        cls = "failed" if row["status"] != "ok" else ("best" if best is not None and row["name"] == best else "")
        cells = [{"text": _fmt(row[c]), "num": c not in ("name", "method", "supervised", "status")} for c in cols]
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
            splits.append({"name": s, "cells": [_fmt(_number(sm.get(c))) for c in SPLIT_COLUMNS]})
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
                "dim": _fmt(m.get("dim")),
                "train_seconds": _fmt(_number(m.get("train_seconds")))
                + (" s" if _number(m.get("train_seconds")) else ""),
                "knee": _fmt(m.get("knee"))
                if m.get("knee") is not None
                else ("no clear knee" if m.get("elbow") else "–"),
                "links": links,
                "splits": splits,
                "method_metrics": [
                    (_HEADERS.get(str(k), str(k)), _fmt(v)) for k, v in (m.get("method_metrics") or {}).items()
                ],
                "sizes": sizes,
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
        n_items=_fmt(report.get("n_items")),
        labels=labels,
        k=_fmt(report.get("k")),
        split=split,
        best=_summary_text(report),
        suggested=_suggested_k(report),
        failed=_failed(report),
        headers=[_HEADERS.get(c, c.replace("_", " ")) for c in cols],
        rows=rows,
        shared=shared,
        methods=method_views,
        split_headers=[_HEADERS[c] for c in SPLIT_COLUMNS],
    )


# -------------------------------------------------------------------------------------------- markdown


def _md(text: Any) -> str:
    """Text safe inside a markdown table cell or paragraph: no HTML, pipes or line breaks."""
    s = " ".join(str(text).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\|[]*_`":
        s = s.replace(ch, "\\" + ch)
    return s


def _md_url(url: str) -> str:
    return quote(url.strip(), safe=":/?#@!$&'*+,;=%~-._")


def render_markdown(report: Mapping[str, Any], links: Mapping[str, str] | None = None) -> str:
    """A short markdown summary (for a Prefect markdown artifact): best method, main metrics, suggested k,
    failures and ``links`` (name -> URL) at the end."""
    split = report.get("scored_split") or "test"
    lines = [f"# {_md(report.get('title') or 'voxclust report')}", ""]
    lines.append(
        f"Data: {_md(report.get('data_url') or '–')} · items: {_fmt(report.get('n_items'))} · "
        f"k: {_fmt(report.get('k'))} · scored split: {_md(split)}"
    )
    lines += ["", f"**Best unsupervised method:** {_md(_summary_text(report))}", ""]

    rows = table_rows(report)
    if rows:
        cols = list(_MARKDOWN_COLUMNS) + [c for c in columns(report) if c in KNOWN_METHOD_COLUMNS]
        lines.append("| " + " | ".join(_HEADERS.get(c, c) for c in cols) + " |")
        lines.append("|" + "|".join("---" if c in ("name", "method", "status") else "---:" for c in cols) + "|")
        for r in rows:
            name = _md(r["name"]) + (" (supervised)" if r["supervised"] else "")
            cells = [name] + [_md(_fmt(r[c])) for c in cols[1:]]
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("No methods were run.")

    suggested = _suggested_k(report)
    if suggested:
        lines += ["", "**Suggested k (elbow knee):** " + "; ".join(f"{_md(n)}: {_md(k)}" for n, k in suggested)]

    failed = _failed(report)
    if failed:
        lines += ["", "**Failed methods:**", ""]
        for name, error in failed:
            short = error if len(error) <= 300 else error[:297] + "..."
            lines.append(f"- {_md(name)}: {_md(short)}")

    if links:
        lines += ["", "**Links:**", ""]
        lines += [f"- [{_md(name)}]({_md_url(url)})" for name, url in links.items()]
    return "\n".join(lines) + "\n"
