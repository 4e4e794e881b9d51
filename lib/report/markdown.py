"""The report as a short markdown summary (for a Prefect markdown artifact): ``render_markdown``.

Choices:

* **Contents.** Title, data, the best unsupervised method, the main metrics (``_MARKDOWN_COLUMNS`` plus the
  known method metrics present), suggested k, failures (errors cut to 300 characters) and links at the end.
* **Escaping.** Text from the data is flattened to one line with HTML and markdown syntax escaped
  (``_md``), so a method name or error message can neither inject HTML nor break the table; link URLs are
  percent-quoted.
* **Numbers** as in ``lib.report.table``: 3 decimals, "–" for missing or non-finite values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from lib.report.table import (
    HEADERS,
    KNOWN_METHOD_COLUMNS,
    columns,
    failed_methods,
    fmt,
    method_entries,
    method_notes,
    suggested_k,
    table_rows,
    verdict_text,
)

_MARKDOWN_COLUMNS: tuple[str, ...] = ("name", "method", "status", "nmi", "ari", "acc", "silhouette", "n_clusters")


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
        f"Data: {_md(report.get('data_url') or '–')} · items: {fmt(report.get('n_items'))} · "
        f"k: {fmt(report.get('k'))} · scored split: {_md(split)}"
    )
    lines += ["", f"**Best unsupervised method:** {_md(verdict_text(report))}", ""]

    rows = table_rows(report)
    if rows:
        optional = ("seeds", "nmi_mean", "nmi_min", "nmi_max", "capture_nmi", "own_nmi", *KNOWN_METHOD_COLUMNS)
        cols = list(_MARKDOWN_COLUMNS) + [c for c in columns(report) if c in optional]
        lines.append("| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |")
        lines.append("|" + "|".join("---" if c in ("name", "method", "status") else "---:" for c in cols) + "|")
        for r in rows:
            name = _md(r["name"]) + (" (supervised)" if r["supervised"] else "")
            cells = [name] + [_md(fmt(r[c])) for c in cols[1:]]
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("No methods were run.")

    suggested = suggested_k(report)
    if suggested:
        lines += ["", "**Suggested k (elbow knee):** " + "; ".join(f"{_md(n)}: {_md(k)}" for n, k in suggested)]

    latest = [m for m in method_entries(report) if m.get("latest_batch") and m.get("latest_members")]
    if latest:
        lines += ["", f"**Latest batch ({_md(latest[0]['latest_batch'])}) per cluster:**", ""]
        for m in latest:
            parts = [f"{_md(c)}: {len(items)}" for c, items in m["latest_members"].items()]
            lines.append(f"- {_md(m.get('name', ''))}: " + ", ".join(parts))

    notes = method_notes(report)
    if notes:
        lines += ["", "**Notes:**", ""] + [f"- {_md(note)}" for note in notes]

    failed = failed_methods(report)
    if failed:
        lines += ["", "**Failed methods:**", ""]
        for name, error in failed:
            short = error if len(error) <= 300 else error[:297] + "..."
            lines.append(f"- {_md(name)}: {_md(short)}")

    if links:
        lines += ["", "**Links:**", ""]
        lines += [f"- [{_md(name)}]({_md_url(url)})" for name, url in links.items()]
    return "\n".join(lines) + "\n"
