"""The flat metric rows of a report: columns, one row per method, the best method, and how numbers are shown.

Shared by the HTML and markdown renderers, which show these rows and the summary derived from them.

Choices:

* **Robustness.** Rows never fail on missing parts: missing metrics are None (shown as "–"), a method without
  its scored split has empty metric cells.
* **Numbers** are shown with 3 decimals (integers as integers); NaN / infinite / missing values are ``None``
  in ``table_rows`` (JSON has no NaN) and "–" in HTML and markdown.
* **Best method** = the unsupervised method with status "ok" and the highest NMI on the scored split
  (first one on ties). Supervised methods saw the labels, so they are reference points, never "best".
* **Columns** of the metrics table are fixed, plus ``capture_nmi`` when the store mixes captures (meshes,
  point clouds, imported grids), ``own_nmi`` / ``own_acc`` when a method assigns clusters itself (SCAN), and
  ``test_accuracy``, ``reconstruction_iou`` and any other numeric ``method_metrics`` key, each only when at
  least one method has it; every row has every column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

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
    "spectral_nmi",
    "train_seconds",
)
SPLIT_COLUMNS: tuple[str, ...] = ("nmi", "ari", "acc", "purity", "silhouette", "inertia", "n_clusters")
KNOWN_METHOD_COLUMNS: tuple[str, ...] = ("test_accuracy", "reconstruction_iou")
HEADERS = {
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
    "spectral_nmi": "spectral NMI",
    "train_seconds": "train s",
    "test_accuracy": "test accuracy",
    "reconstruction_iou": "reconstruction IoU",
    "capture_nmi": "capture NMI",
    "own_nmi": "own NMI",
    "own_acc": "own ACC",
}


def number(v: Any) -> int | float | None:
    """A finite int or float, else None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def method_entries(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The report's method entries that are mappings (anything else in ``methods`` is skipped)."""
    return [m for m in report.get("methods") or [] if isinstance(m, Mapping)]


def _split_metrics(report: Mapping[str, Any], m: Mapping[str, Any]) -> Mapping[str, Any]:
    metrics = m.get("metrics") or {}
    split = metrics.get(report.get("scored_split") or "test")
    return split if isinstance(split, Mapping) else {}


def _method_columns(report: Mapping[str, Any]) -> list[str]:
    present: set[str] = set()
    for m in method_entries(report):
        for key, value in (m.get("method_metrics") or {}).items():
            if number(value) is not None and key not in BASE_COLUMNS:
                present.add(str(key))
    known = [c for c in KNOWN_METHOD_COLUMNS if c in present]
    return known + sorted(present - set(KNOWN_METHOD_COLUMNS))


def _optional_columns(report: Mapping[str, Any]) -> list[str]:
    """``capture_nmi`` when a store mixes captures; ``own_nmi`` / ``own_acc`` when a method assigns clusters
    itself (SCAN)."""
    entries = method_entries(report)
    cols = ["capture_nmi"] if any(number(m.get("capture_nmi")) is not None for m in entries) else []
    if any(isinstance(m.get("own"), Mapping) for m in entries):
        cols += ["own_nmi", "own_acc"]
    return cols


def columns(report: Mapping[str, Any]) -> list[str]:
    """The columns of ``table_rows`` (and of the HTML metrics table) for this report."""
    return [*BASE_COLUMNS, *_optional_columns(report), *_method_columns(report)]


def table_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat, JSON-able row per method: ``columns(report)`` as keys, None for missing or non-finite values.

    Clustering metrics are those of the scored split (``report["scored_split"]``).
    """
    extra = _method_columns(report)
    optional = _optional_columns(report)
    rows = []
    for m in method_entries(report):
        split = _split_metrics(report, m)
        mm = m.get("method_metrics") or {}
        row: dict[str, Any] = {
            "name": str(m.get("name", "")),
            "method": str(m.get("method", "")),
            "supervised": bool(m.get("supervised", False)),
            "status": str(m.get("status", "")),
        }
        for col in SPLIT_COLUMNS:
            row[col] = number(split.get(col))
        pic = m.get("pic") or {}
        row["knee"] = number(m.get("knee"))
        row["pic_clusters"] = number(pic.get("n_clusters"))
        row["pic_nmi"] = number(pic.get("nmi"))
        row["spectral_nmi"] = number((m.get("spectral") or {}).get("nmi"))
        row["train_seconds"] = number(m.get("train_seconds"))
        own_entry = m.get("own")
        own: Mapping[str, Any] = own_entry if isinstance(own_entry, Mapping) else {}
        for col in optional:
            row[col] = number(own.get(col[4:])) if col.startswith("own_") else number(m.get(col))
        for col in extra:
            row[col] = number(mm.get(col))
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
    for m in method_entries(report):
        if m.get("supervised", False) or m.get("status") != "ok":
            continue
        nmi = number(_split_metrics(report, m).get("nmi"))
        if nmi is not None and (best is None or nmi > best[0]):
            best = (float(nmi), str(m.get("name", "")))
    return best[1] if best else None


# -------------------------------------------------------------------------------------------- formatting


def fmt(v: Any) -> str:
    """A value as shown in HTML and markdown: 3 decimals for floats, "–" for None and non-finite values."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else "–"
    return str(v)


def summary_text(report: Mapping[str, Any]) -> str:
    """The best unsupervised method with its NMI, or why there is none."""
    split = report.get("scored_split") or "test"
    best = best_method(report)
    if best is not None:
        nmi = next(r["nmi"] for r in table_rows(report) if r["name"] == best)
        return f"{best} (NMI {fmt(nmi)} on the {split} split)"
    if not report.get("labelled", False):
        return "none: the data has no labels, so no method can be scored against classes"
    return f"none: no unsupervised method finished with an NMI on the {split} split"


def suggested_k(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(method name, elbow knee or "no clear knee") for each method with an elbow or a knee."""
    out = []
    for m in method_entries(report):
        if m.get("elbow") or m.get("knee") is not None:
            knee = m.get("knee")
            out.append((str(m.get("name", "")), str(knee) if knee is not None else "no clear knee"))
    return out


def failed_methods(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(method name, error message) for each method whose status is not "ok"."""
    return [
        (str(m.get("name", "")), str(m.get("error") or "no error message"))
        for m in method_entries(report)
        if m.get("status") != "ok"
    ]


def rounded_rows(rows: Sequence[Mapping[str, Any]], digits: int = 3) -> list[dict[str, Any]]:
    """``rows`` with every float rounded to ``digits`` decimals, as the HTML report shows them (for tables
    that print numbers in full, such as Prefect's table artifacts)."""
    return [
        {k: round(v, digits) if isinstance(v, float) and math.isfinite(v) else v for k, v in row.items()}
        for row in rows
    ]
