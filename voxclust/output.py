"""What the commands print: a store's summary, the comparison table, a tuning summary, paths (whole, escaped,
local ones as plain paths) and the Prefect UI link."""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from lib.report.table import duration
from voxclust.common import out


def _counts(value: Any) -> str:
    """A list or a count per name as text: ``demo, museum`` or ``train 112, test 28``."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "–"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "–"
    return str(value)


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(f"voxel store [bold]{escape(where(summary['store']))}[/bold]", soft_wrap=True, highlight=False)
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 1))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("resolution", "mode", "items", "stored", "failed", "pending", "batches", "splits", "classes"):
        if key in summary and (summary[key] or key not in ("splits", "classes")):
            table.add_row(key, escape(_counts(summary[key])))
    out.print(table)


def where(url: str) -> str:
    """A local store or report as a plain path (what a user copies), any other URL as it is."""
    from urllib.parse import unquote, urlparse

    if url.startswith("file://"):
        return unquote(urlparse(url).path)
    return url


def print_path(label: str, url: str) -> None:
    """``label: <url>`` on one line, never broken by rich (the terminal wraps it), markup escaped."""
    out.print(f"{label}: [bold]{escape(url)}[/bold]", soft_wrap=True, highlight=False)


def print_ui_link(result: dict[str, Any]) -> None:
    """The flow run's page in the Prefect UI, only when that UI outlives this command."""
    from flows.runners import ui_run_link

    link = ui_run_link(result)
    if link:
        print_path("Prefect UI", link)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "–"
    if column == "train_seconds":  # the report's units; "–" for a method that does not train
        return duration(value) if value else "–"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def print_report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(result))
        return
    # A few key columns, fitting an 80-column terminal; every column is in the HTML report.
    cols = {"name": "name", "status": "status", "nmi": "NMI", "ari": "ARI", "acc": "ACC"}
    cols |= {"train_seconds": "train time", "test_accuracy": "test acc"}
    table = Table(title="feature methods compared")
    for c, header in cols.items():
        table.add_column(header, justify="left" if c in ("name", "status") else "right")
    for row in result["rows"]:
        table.add_row(*(_cell(c, row.get(c)) for c in cols))
    out.print(table)
    for row in result["rows"]:
        if row.get("error"):
            out.print(
                f"[yellow]{escape(row['name'])}[/yellow]: {escape(str(row['error']))}", highlight=False, soft_wrap=True
            )
    split = result.get("scored_split")
    if split:
        scored = "the test split" if split == "test" else f"all {result.get('n_items')} items"
        out.print(f"NMI, ARI, ACC: {scored}")
    best = result.get("best_method")
    if best:
        verdict = escape(result.get("verdict") or best)
        out.print(f"best unsupervised method: [bold]{verdict}[/bold]", soft_wrap=True, highlight=False)
        capture = next((r.get("capture_nmi") for r in result["rows"] if r["name"] == best), None)
        if capture is not None:
            out.print(f"its clusters vs capture (mesh / cloud / grid): NMI {capture:.2f} (0 = independent)")
    print_path("report", where(result["html_url"]))
    print_ui_link(result)


def print_tune(summary: dict[str, Any]) -> None:
    rows = summary["trials"]
    table = Table(title=f"trials of study {escape(summary['study'])} ({summary['objective']}, maximised)")
    columns = list(dict.fromkeys(k for r in rows for k in r if k not in ("run", "error")))
    for c in columns:
        table.add_column(c, justify="right" if c not in ("state",) else "left")
    for r in rows:
        v = [r.get(c) for c in columns]
        table.add_row(*["–" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x)) for x in v])
    out.print(table)
    best = summary["best"]
    if best is None:
        out.print("no trial finished: nothing to recommend")
    else:
        out.print(f"best: trial {best['trial']}, {summary['objective']} {best['value']:.4f}, options {best['params']}")
        if summary["test"]:
            out.print(
                "held-out (scored once, for this trial): "
                + ", ".join(f"{k} {v:.4g}" for k, v in summary["test"].items())
            )
        out.print(f"use it: {escape(summary['use'])}", soft_wrap=True, highlight=False)
        out.print(f"    or: {escape(summary['set_flags'])}", soft_wrap=True, highlight=False)
    print_path("report", where(summary["html_url"]))
    out.print(f"study: optuna-dashboard {escape(summary['storage'])}", soft_wrap=True, highlight=False)
