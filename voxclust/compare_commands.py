"""Commands of comparisons: compare, report, export, assign, similar."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from voxclust.common import AsJson, err, flow_session, out, user_errors
from voxclust.options import (
    DaskAddress,
    Device,
    OldData,
    Preset,
    StoreOpt,
    names,
    open_store,
    parse_options,
    resolve_store,
)
from voxclust.output import print_path, print_report, where

app = typer.Typer()


def _compare_entries(methods: str | None, preset: str | None, options: list[str], device: str = "cpu") -> Any:
    """The rows; ``device``: where they train (on CUDA a preset's rows get its GPU budget)."""
    from lib.compare.rows import resolve_entries, trains_on_cuda

    overrides: dict[str, dict[str, Any]] = {}
    for pair in options:
        key, sep, _ = pair.partition("=")
        row, dot, _ = key.partition(".")
        if not sep or not dot:
            raise typer.BadParameter(f"{pair!r}: expected row.option=value", param_hint="--set")
        overrides.setdefault(row, {}).update(parse_options([pair.split(".", 1)[1]], None))
    return resolve_entries(names(methods), preset, overrides, cuda=trains_on_cuda(device))


Methods = Annotated[
    str | None, typer.Option("--methods", help="comma-separated rows or registered methods (default: the preset's)")
]

K = Annotated[int | None, typer.Option("--k", min=2, help="clusters (default: classes when labelled, else the knee)")]

Seeds = Annotated[
    int | None,
    typer.Option(
        "--seeds", min=1, max=20, help="training runs per row, seeds 0..N-1: the report gives their spread (default 1)"
    ),
]


@app.command(short_help="Train every feature method on a store, cluster, score and publish the report.")
def compare(
    data_url: StoreOpt = None,
    old_data: OldData = None,
    methods: Methods = None,
    preset: Preset = None,
    options: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="ROW.KEY=VALUE", help="row.option=value (JSON value), e.g. voxnet.epochs=5; repeatable"
        ),
    ] = None,
    k: K = None,
    seeds: Seeds = None,
    tsne: Annotated[bool, typer.Option(help="draw t-SNE maps")] = True,
    device: Device = "auto",
    train_workers: Annotated[
        int | None,
        typer.Option(min=1, help="methods trained side by side on Dask workers (default 1: one after another)"),
    ] = None,
    dask_address: DaskAddress = None,
    as_json: AsJson = False,
) -> None:
    """Train (or reuse) every method's run on the store, cluster and score each embedding, and publish the
    comparison: Prefect artifacts and a self-contained HTML report next to the store. On a CPU machine,
    --train-workers set to the core count trains fastest (each training gets one share of the cores)."""
    with user_errors():
        data_url = resolve_store(data_url, old_data)
        entries = _compare_entries(methods, preset, options or [], device)
        from lib.compare.rows import CompareConfig

        open_store(data_url)  # a missing store fails here, before anything starts
        config = CompareConfig(k=k, tsne=tsne, **({"seeds": seeds} if seeds else {}))
        with flow_session(not as_json):
            from flows.compare import run_compare

            result = run_compare(data_url, entries, config, device, train_workers, dask_address)
        print_report(result, as_json)


@app.command(short_help="Re-cluster and re-render the comparison from finished runs, without training.")
def report(
    data_url: StoreOpt = None,
    old_data: OldData = None,
    methods: Methods = None,
    preset: Preset = None,
    k: K = None,
    seeds: Seeds = None,
    tsne: Annotated[bool, typer.Option(help="draw t-SNE maps")] = True,
    as_json: AsJson = False,
) -> None:
    """Re-cluster and re-render the comparison from the runs already in the store, without training (by default
    every finished run under <data>/runs)."""
    with user_errors():
        from lib.compare.rows import CompareConfig, discover_entries

        data_url = resolve_store(data_url, old_data)
        open_store(data_url)
        entries = _compare_entries(methods, preset, []) if methods or preset else discover_entries(data_url)
        config = CompareConfig(k=k, tsne=tsne, **({"seeds": seeds} if seeds else {}))
        with flow_session(not as_json):
            from flows.compare import compare_methods
            from flows.runners import run_flow

            result = run_flow(compare_methods, data_url, entries, config, False)
        print_report(result, as_json)


@app.command(short_help="Cluster assignments per item (one column per method) as CSV.")
def export(
    data_url: StoreOpt = None,
    old_data: OldData = None,
    report_url: Annotated[str | None, typer.Option("--report", help="a report folder (default: the latest)")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="CSV file to write (default: stdout)")] = None,
) -> None:
    """Cluster assignments per item id (one column per method) as CSV."""
    with user_errors():
        from lib.compare.publish import export_csv

        data_url = resolve_store(data_url, old_data)
        open_store(data_url)
        text = export_csv(data_url, report_url)
        if out_file is None:
            sys.stdout.write(text)
        else:
            out_file.write_text(text)
            err.print(f"{text.count(chr(10)) - 1} items written to {escape(str(out_file))}", soft_wrap=True)


@app.command(short_help="Place new items in the latest comparison's clusters, with novelty.")
def assign(
    data_url: StoreOpt = None,
    old_data: OldData = None,
    batches: Annotated[
        str | None, typer.Option("--batches", help="comma-separated batches (default: every item not yet clustered)")
    ] = None,
    methods: Methods = None,
    as_json: AsJson = False,
) -> None:
    """Assign new items to the clusters of the latest comparison (each method's run embeds them, the report's
    clustering model places them; no re-clustering), with their novelty; kept in the report folder."""
    with user_errors():
        from lib.compare.assign import assign as run_assign

        wanted = names(batches)
        data_url = resolve_store(data_url, old_data)
        open_store(data_url)
        report_url, found = run_assign(data_url, wanted, names(methods))
        if as_json:
            doc = {
                "report_url": report_url,
                "methods": {
                    a.method: {
                        "rows": a.rows.tolist(),
                        "clusters": a.ids.tolist(),
                        "novelty": [round(float(v), 4) for v in a.novelty],
                        "novel": a.novel.tolist(),
                        "threshold": a.threshold,
                    }
                    for a in found
                },
            }
            out.print_json(json.dumps(doc))
            return
        from lib.compare.assign import summary_row

        print_path("assigned to the clusters of", where(report_url))
        table = Table()
        rows = [summary_row(a, wanted) for a in found]
        for col in ("method", "batches", "items", "clusters joined", "novel"):
            table.add_column(col, justify="right" if col in ("items", "novel") else "left")
        for row in rows:
            table.add_row(*(str(row[c]) for c in ("method", "batches", "items", "clusters joined", "novel")))
        out.print(table)


@app.command(short_help="The stored scans nearest to an item or a new scan file, by each method.")
def similar(
    query: Annotated[str, typer.Argument(help="a stored item id, or a scan file not in the store")],
    data_url: StoreOpt = None,
    old_data: OldData = None,
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="neighbours per method")] = 10,
    methods: Methods = None,
    html_file: Annotated[Path | None, typer.Option("--html", help="also write a page with thumbnails here")] = None,
    as_json: AsJson = False,
) -> None:
    """The stored scans nearest to QUERY by each method of the latest comparison (its embedding of every
    stored item; a file is voxelized with the store's settings and embedded by each method's run)."""
    with user_errors():
        from lib.compare import similar as sim

        store = open_store(resolve_store(data_url, old_data))
        path = Path(query)
        q = sim.file_query(store, path) if path.is_file() else sim.stored_query(store, query)
        found = sim.similar(store.url, q, k, names(methods))
        if html_file is not None:
            html_file.write_text(sim.similar_html(store, q, found))
        if as_json:
            out.print_json(json.dumps(sim.as_json(q, found)))
            return
        out.print(
            f"stored scans nearest to {escape(q.label)}, by each method (distance: Euclidean, in the method's "
            "embedding; smaller is more alike)",
            highlight=False,
        )
        for m in found:
            # Ids and sources wrap inside their cells, never cut: a user copies them.
            table = Table(title=m.method, title_justify="left", expand=False)
            table.add_column("#", justify="right")
            table.add_column("item id", overflow="fold", ratio=3)
            table.add_column("class", overflow="fold")
            table.add_column("distance", justify="right")
            table.add_column("source", overflow="fold", ratio=3)
            for i, n in enumerate(m.neighbours, 1):
                table.add_row(str(i), escape(n.item_id), escape(n.label or "–"), f"{n.distance:.3g}", escape(n.source))
            out.print(table)
        if html_file is not None:
            print_path("thumbnails", str(html_file.absolute()))
