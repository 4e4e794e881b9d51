"""The flat metric rows of a report: columns, one row per method, the best method, and how numbers are shown.

Shared by the HTML and markdown renderers, which show these rows and the summary derived from them.

Choices:

* **Robustness.** Rows never fail on missing parts: missing metrics are None (shown as "–"), a method without
  its scored split has empty metric cells.
* **Numbers** are shown with 3 decimals (integers as integers); NaN / infinite / missing values are ``None``
  in ``table_rows`` (JSON has no NaN) and "–" in HTML and markdown. Times are shown with their unit
  (``duration``: "0.0 s", "1 min 12 s").
* **Glossary.** ``GLOSSARY`` says what each column means in a sentence or two for readers who are not
  machine-learning engineers (the HTML report's glossary and header tooltips).
* **Best method** = the unsupervised method with status "ok" and the highest NMI on the scored split, its
  mean over the row's seeds (first one on ties). Supervised methods saw the labels, so they are reference
  points, never "best". **The verdict** (``best_methods``, ``verdict_text``) names the best and every other
  unsupervised method whose NMI interval over its seeds (min to max) overlaps the best one's: within noise of
  each other. With one seed per row it says that it rests on a single training run, and how far k-means
  seeds alone move the best one's NMI.
* **Columns** of the metrics table are fixed (the first seed's scores), plus ``restart_nmi_min`` /
  ``restart_nmi_max`` (k-means seeds alone, on that embedding) when rows carry a spread, ``seeds`` and the
  mean / min / max of NMI, ARI and ACC over seeds when a row has more than one, ``capture_nmi`` when the
  store mixes captures (meshes, point clouds, imported grids), ``own_nmi`` / ``own_acc`` when a method
  assigns clusters itself (SCAN), and ``test_accuracy``, ``reconstruction_iou`` and any other numeric
  ``method_metrics`` key, each only when at least one method has it; every row has every column.
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
    "train_seconds": "train time",
    "test_accuracy": "test accuracy",
    "reconstruction_iou": "reconstruction IoU",
    "capture_nmi": "capture NMI",
    "own_nmi": "own NMI",
    "own_acc": "own ACC",
    "seeds": "seeds",
    "restart_nmi_min": "NMI min (k-means seeds)",
    "restart_nmi_max": "NMI max (k-means seeds)",
}
SPREAD_KEYS: tuple[str, ...] = ("nmi", "ari", "acc")
SEED_COLUMNS: tuple[str, ...] = ("seeds", *(f"{k}_{s}" for k in SPREAD_KEYS for s in ("mean", "min", "max")))
HEADERS |= {f"{k}_{s}": f"{HEADERS[k]} {s}" for k in SPREAD_KEYS for s in ("mean", "min", "max")}
# The columns the HTML metrics table shows by default (the rest behind "show all columns"), when present.
KEY_COLUMNS: tuple[str, ...] = (
    "name",
    "method",
    "status",
    "nmi",
    "ari",
    "acc",
    "nmi_mean",
    "train_seconds",
    "capture_nmi",
    "test_accuracy",
    "reconstruction_iou",
)

# What each column means, for readers who are not machine-learning engineers (the report's glossary and the
# headers' tooltips). "Groups" are the clusters a method's features are sorted into; "classes" the known labels.
_SPREAD_NOTE = "over the method's training runs with different random starts: a wide range means luck matters."
GLOSSARY: dict[str, str] = {
    "supervised": "A supervised method was shown the known classes while it learned. It shows what is possible "
    "with labels, so it is a reference, never the best method.",
    "nmi": "Normalised mutual information: how well the groups match the known classes, from 0 (no relation) to "
    "1 (each group is exactly one class). The main score of this report; it does not mind how groups are named.",
    "ari": "Adjusted Rand index: for every pair of scans, do the groups and the classes agree on whether the two "
    "belong together? 0 is what random grouping gives, 1 is perfect agreement.",
    "acc": "Accuracy: name each group after the class it matches best (one class per group), then count the "
    "share of scans that land in their own class's group, from 0 to 1.",
    "purity": "The share of scans that belong to their group's most common class. 1 means every group holds a "
    "single class; many small groups make it high easily, so read it with NMI.",
    "silhouette": "How clearly the groups stand apart in the method's own features, without looking at the "
    "classes: from -1 to 1, higher means tighter, better separated groups.",
    "inertia": "The spread of the groups around their centres in the method's own features (lower is tighter). "
    "Its scale differs from method to method, so compare it only within one method.",
    "n_clusters": "How many groups the scans were sorted into (by k-means).",
    "knee": "The number of groups suggested by the elbow plot: where adding more groups stops helping much.",
    "pic_clusters": "How many groups PIC found. PIC (power iteration clustering) is a second way to group the "
    "same features; it picks its own number of groups.",
    "pic_nmi": "NMI of PIC's groups against the classes (see NMI).",
    "spectral_nmi": "NMI of spectral clustering's groups against the classes: another way to group the same "
    "features, by which scans are each other's near neighbours, with the same number of groups.",
    "train_seconds": "How long the method took to learn its features. Methods that learn nothing (raw voxels) "
    "take no time.",
    "capture_nmi": "How much the groups follow the way a scan was captured (mesh, point cloud, voxel grid) "
    "instead of its shape. Near 0 is good; near 1 means the groups sort scanners, not objects.",
    "own_nmi": "NMI of the groups the method makes itself (SCAN predicts a group for each scan), beside the "
    "k-means groups of its features.",
    "own_acc": "Accuracy (see ACC) of the groups the method makes itself.",
    "seeds": "How many times the method was trained, each time from a different random start.",
    "nmi_mean": "NMI's average, lowest and highest value " + _SPREAD_NOTE,
    "ari_mean": "ARI's average, lowest and highest value " + _SPREAD_NOTE,
    "acc_mean": "ACC's average, lowest and highest value " + _SPREAD_NOTE,
    "restart_nmi_min": "The lowest and highest NMI when only the random start of the grouping (k-means) "
    "changes, on the same features: how far chance alone moves the score.",
    "test_accuracy": "For supervised methods: the share of held-out test scans whose class the method names "
    "correctly, from 0 to 1.",
    "reconstruction_iou": "For autoencoders: how well the method redraws a scan from its features, as the "
    "overlap of the redrawn and the original voxels (intersection over union), from 0 to 1.",
}
# Columns explained by another column's entry (the spread's min / max by its mean).
GLOSSARY_ALIASES: dict[str, str] = {
    **{f"{k}_{s}": f"{k}_mean" for k in SPREAD_KEYS for s in ("min", "max")},
    "restart_nmi_max": "restart_nmi_min",
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


def spread_of(m: Mapping[str, Any]) -> dict[str, Any]:
    """A method entry's spread as flat columns: ``seeds`` (runs scored), ``<metric>_mean`` / ``_min`` / ``_max``
    over them for NMI, ARI, ACC, and ``restart_nmi_min`` / ``_max`` (k-means seeds alone); {} without one."""
    spread = m.get("spread")
    if not isinstance(spread, Mapping):
        return {}
    out: dict[str, Any] = {"seeds": len(spread.get("seeds") or [])}
    for key in SPREAD_KEYS:
        values = [float(v) for v in spread.get(key) or [] if number(v) is not None]
        out[f"{key}_mean"] = sum(values) / len(values) if values else None
        out[f"{key}_min"] = min(values, default=None)
        out[f"{key}_max"] = max(values, default=None)
    restarts = [float(v) for v in spread.get("restart_nmi") or [] if number(v) is not None]
    out["restart_nmi_min"] = min(restarts, default=None)
    out["restart_nmi_max"] = max(restarts, default=None)
    return out


def _optional_columns(report: Mapping[str, Any]) -> list[str]:
    """The restart spread when rows carry a spread, the seed spread when a row has several seeds;
    ``capture_nmi`` when a store mixes captures; ``own_nmi`` / ``own_acc`` when a method assigns clusters
    itself (SCAN)."""
    entries = method_entries(report)
    spreads = [spread_of(m) for m in entries]
    cols = [*SEED_COLUMNS] if any(sp.get("seeds", 0) > 1 for sp in spreads) else []
    cols += ["restart_nmi_min", "restart_nmi_max"] if any(spreads) else []
    cols += ["capture_nmi"] if any(number(m.get("capture_nmi")) is not None for m in entries) else []
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
        spread = spread_of(m)
        for col in optional:
            if col.startswith("own_"):
                row[col] = number(own.get(col[4:]))
            else:
                row[col] = number(spread[col]) if col in spread else number(m.get(col))
        for col in extra:
            row[col] = number(mm.get(col))
        if m.get("error"):
            row["error"] = str(m["error"])
        rows.append(row)
    return rows


def _candidates(report: Mapping[str, Any]) -> list[tuple[str, float, float, float, int]]:
    """(name, mean NMI, min, max, seeds) of each unsupervised, successful method with an NMI on the scored
    split (a record without a spread: its one NMI)."""
    if not report.get("labelled", False):
        return []
    out = []
    for m in method_entries(report):
        if m.get("supervised", False) or m.get("status") != "ok":
            continue
        name, nmi, spread = str(m.get("name", "")), number(_split_metrics(report, m).get("nmi")), spread_of(m)
        if spread.get("nmi_mean") is not None:
            out.append((name, spread["nmi_mean"], spread["nmi_min"], spread["nmi_max"], spread["seeds"]))
        elif nmi is not None:
            out.append((name, float(nmi), float(nmi), float(nmi), 1))
    return out


def best_method(report: Mapping[str, Any]) -> str | None:
    """Name of the unsupervised, successful method with the highest NMI on the scored split (mean over its
    seeds). None when the report is unlabelled or no such method has an NMI. Ties go to the first one listed."""
    best = best_methods(report)
    return best[0] if best else None


def best_methods(report: Mapping[str, Any]) -> list[str]:
    """The best method, then every other whose NMI interval over its seeds (min to max) overlaps the best one's,
    by mean NMI: the methods within noise of the best."""
    found = _candidates(report)
    if not found:
        return []
    top = max(found, key=lambda c: c[1])  # max keeps the first on ties
    near = [c for c in found if c is not top and c[3] >= top[2] and c[2] <= top[3]]
    return [top[0], *(c[0] for c in sorted(near, key=lambda c: -c[1]))]


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


def duration(seconds: Any) -> str:
    """A time with its unit: "0.0 s", "12.3 s", "1 min 12 s", "2 h 5 min"; "–" when not a number."""
    s = number(seconds)
    if s is None:
        return "–"
    if s < 59.95:
        return f"{s:.1f} s"
    whole = round(s)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def glossary_key(column: str) -> str | None:
    """The ``GLOSSARY`` entry that explains ``column`` (None when there is none)."""
    key = GLOSSARY_ALIASES.get(column, column)
    return key if key in GLOSSARY else None


def verdict_text(report: Mapping[str, Any]) -> str:
    """The best unsupervised method (with every method within noise of it) and how many seeds back that, or
    why there is none."""
    split = report.get("scored_split") or "test"
    scope = "all items" if split == "all" else f"the {split} split"
    names = best_methods(report)
    if not names:
        if not report.get("labelled", False):
            return "none: the data has no labels, so no method can be scored against classes"
        return f"none: no unsupervised method finished with an NMI on {scope}"
    found = {c[0]: c for c in _candidates(report)}
    top = found[names[0]]
    if all(found[n][4] <= 1 for n in names):
        restarts = spread_of(next(m for m in method_entries(report) if m.get("name") == names[0]))
        lo, hi = restarts.get("restart_nmi_min"), restarts.get("restart_nmi_max")
        moved = ""
        if lo is not None and hi is not None:
            same = fmt(lo) == fmt(hi)
            moved = (
                f"; every k-means seed gives it {fmt(lo)}"
                if same
                else f"; k-means seeds alone give it {fmt(lo)}–{fmt(hi)}"
            )
        tied = f", tied with {_joined(names[1:])}" if len(names) > 1 else ""
        single = f"from a single training run per method{moved}"
        return f"{names[0]} (NMI {fmt(top[1])} on {scope}{tied}): {single}"
    spans = ", ".join(f"{n} {fmt(found[n][2])}–{fmt(found[n][3])} over {found[n][4]} seeds" for n in names)
    if len(names) == 1:
        return f"{names[0]} (NMI mean {fmt(top[1])} on {scope}, {spans}; no other method's range overlaps it)"
    return f"{_joined(names)}, within noise of each other (NMI on {scope}: {spans})"


def _joined(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def suggested_k(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(method name, elbow knee or "no clear knee") for each method with an elbow or a knee."""
    out = []
    for m in method_entries(report):
        if m.get("elbow") or m.get("knee") is not None:
            knee = m.get("knee")
            out.append((str(m.get("name", "")), str(knee) if knee is not None else "no clear knee"))
    return out


def method_notes(report: Mapping[str, Any]) -> list[str]:
    """The methods' notes (e.g. that a run was trained anew because the store grew)."""
    return [str(m["note"]) for m in method_entries(report) if m.get("note")]


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
