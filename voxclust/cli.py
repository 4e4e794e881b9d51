"""The ``voxclust`` command line.

Every command takes storage URLs: a local path, ``file://...`` or ``s3://bucket/prefix`` (endpoint and
credentials from the standard AWS environment: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...); the voxel
store is ``--store`` in every command. Flows run over a Dask LocalCluster unless ``--dask-address`` (or
``VOXCLUST_DASK_ADDRESS``) names a scheduler, and report to the Prefect API in ``PREFECT_API_URL`` (a
temporary local one when unset). The terminal gets progress bars and a summary; library log records only at
WARNING and above unless ``--verbose``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from lib.scans.readers import ReadLimits
from voxclust import ops
from voxclust.common import AsJson, err, out, progress_bars, set_verbose
from voxclust.common import prefect_defaults as _prefect_defaults
from voxclust.common import user_errors as _user_errors
from voxclust.options import (
    Device,
    EmbedSplitChoice,
    Method,
    ModeChoice,
    ObjectiveChoice,
    OldData,
    OldOut,
    PoseChoice,
    Preset,
    PrunerChoice,
    RepresentationChoice,
    SamplerChoice,
    SplitChoice,
    StoreOpt,
    UpAxisChoice,
    method_listing,
    methods_text,
    open_store,
    resolve_store,
)

app = typer.Typer(
    name="voxclust",
    help="Group 3D scans by shape, without labels: voxelize scan batches into a voxel store, train and compare "
    "feature methods on it, and publish the comparison.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DATA_DIR = Path(os.environ.get("VOXCLUST_HOME", "voxclust-data"))

NewStore = Annotated[str | None, typer.Option("--store", metavar="URL", help="the voxel store (created if missing)")]
BatchName = Annotated[str | None, typer.Option(help="name of the batch in the store (default: last URL part)")]
Resolution = Annotated[
    int | None,
    typer.Option("--resolution", "-r", help="grid side of a new store, 8-256 (default 32)"),
]
Mode = Annotated[
    ModeChoice | None, typer.Option(help="meshes filled (solid, the default) or as a shell; new stores only")
]
UpAxis = Annotated[UpAxisChoice | None, typer.Option(help="the sources' up axis (default z); new stores only")]
Representation = Annotated[
    RepresentationChoice | None,
    typer.Option(help="field-v1 (default: the same grid whatever the capture) or binned; new stores only"),
]
Pose = Annotated[
    PoseChoice | None,
    typer.Option(help="as-scanned (default), upright (turned about the up axis) or full; new stores only"),
]
DaskAddress = Annotated[
    str | None, typer.Option(help="existing Dask scheduler, e.g. tcp://host:8786 (env VOXCLUST_DASK_ADDRESS)")
]
Workers = Annotated[int | None, typer.Option(help="LocalCluster worker processes (default: one per core)")]


def _voxel_config(
    resolution: int | None,
    mode: str | None,
    up_axis: str | None,
    representation: str | None = None,
    pose: str | None = None,
) -> Any:
    from lib.scans.voxelize import VoxelConfig

    options = {
        "resolution": resolution,
        "mode": mode,
        "up_axis": up_axis,
        "representation": representation,
        "pose": pose,
    }
    given = {k: v for k, v in options.items() if v is not None}
    return VoxelConfig.model_validate(given) if given else None


def _counts(value: Any) -> str:
    """A list or a count per name as text: ``demo, museum`` or ``train 112, test 28``."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "–"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "–"
    return str(value)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(f"voxel store [bold]{escape(_where(summary['store']))}[/bold]", soft_wrap=True, highlight=False)
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 1))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("resolution", "mode", "items", "stored", "failed", "pending", "batches", "splits", "classes"):
        if key in summary and (summary[key] or key not in ("splits", "classes")):
            table.add_row(key, escape(_counts(summary[key])))
    out.print(table)


def _where(url: str) -> str:
    """A local store or report as a plain path (what a user copies), any other URL as it is."""
    from urllib.parse import unquote, urlparse

    if url.startswith("file://"):
        return unquote(urlparse(url).path)
    return url


def _print_path(label: str, url: str) -> None:
    """``label: <url>`` on one line, never broken by rich (the terminal wraps it), markup escaped."""
    out.print(f"{label}: [bold]{escape(url)}[/bold]", soft_wrap=True, highlight=False)


def _print_ui_link(result: dict[str, Any]) -> None:
    """The flow run's page in the Prefect UI, only when that UI outlives this command."""
    from flows.runners import ui_run_link

    link = ui_run_link(result)
    if link:
        _print_path("Prefect UI", link)


def _preflight(batch_url: str, store_url: str) -> None:
    """Fail before any work starts on a bad URL, a missing batch or an unreachable endpoint."""
    from lib.storage import open_storage

    open_storage(batch_url).check(must_exist=True)
    open_storage(store_url).check()


def _run_voxelize(
    batch_url: str,
    store_url: str,
    voxel: Any,
    batch_name: str | None,
    items_per_task: int | None,
    dask_address: str | None,
    workers: int | None,
    limits: dict[str, int] | None = None,
) -> dict[str, Any]:
    _prefect_defaults()
    from flows.runners import prefect_api
    from flows.voxelize import run_voxelize

    with prefect_api():
        return run_voxelize(
            dask_address,
            workers,
            batch_url=batch_url,
            store_url=store_url,
            voxel=voxel,
            batch_name=batch_name,
            items_per_task=items_per_task,
            **(limits or {}),
        )


@app.command("demo-batch", short_help="Write the procedural demo scan batch (meshes and point clouds).")
def demo_batch(
    out_url: Annotated[str, typer.Option("--out", help="where to write the batch (path or s3://...)")],
    n_per_class: Annotated[int, typer.Option(min=1, help="shapes per class")] = 20,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same files)")] = 0,
) -> None:
    """Write a procedural demo scan batch (meshes in several formats plus point clouds)."""
    with _user_errors():
        from lib.scans.demo import write_demo_batch

        n = write_demo_batch(out_url, n_per_class=n_per_class, seed=seed)
        out.print(f"wrote {n} demo files to {escape(out_url)}", soft_wrap=True, highlight=False)


@app.command(short_help="Voxelize a scan batch into a voxel store.")
def voxelize(
    batch_url: Annotated[str, typer.Argument(help="the scan batch: a folder, file:// or s3:// prefix")],
    store_url: Annotated[
        str | None, typer.Option("--store", metavar="URL", help="the voxel store (created if missing)")
    ] = None,
    old_out: OldOut = None,
    resolution: Resolution = None,
    mode: Mode = None,
    up_axis: UpAxis = None,
    representation: Representation = None,
    pose: Pose = None,
    batch_name: BatchName = None,
    items_per_task: Annotated[
        int | None, typer.Option(min=1, help="items per Prefect task (default: ~4 tasks per Dask worker)")
    ] = None,
    dask_address: DaskAddress = None,
    workers: Workers = None,
    max_bytes: Annotated[int, typer.Option(min=1, help="files larger than this fail (bytes)")] = ReadLimits.max_bytes,
    max_vertices: Annotated[
        int, typer.Option(min=1, help="meshes/clouds with more vertices fail")
    ] = ReadLimits.max_vertices,
    as_json: AsJson = False,
) -> None:
    """Voxelize a scan batch into a voxel store (a Prefect flow over Dask). Re-runs store nothing twice."""
    with _user_errors():
        store_url = resolve_store(store_url, old_out, "--out")
        voxel = _voxel_config(resolution, mode, up_axis, representation, pose)
        _preflight(batch_url, store_url)
        limits = {"max_bytes": max_bytes, "max_vertices": max_vertices}
        with progress_bars(not as_json):
            result = _run_voxelize(
                batch_url, store_url, voxel, batch_name, items_per_task, dask_address, workers, limits
            )
        if as_json:
            out.print_json(json.dumps(result))
            return
        out.print(
            f"batch {escape(result['batch'])}: {result['items']} items, {result['skipped']} already done, "
            f"{result['stored']} stored, {result['failed']} failed now",
            highlight=False,
        )
        _print_summary(result["store"], False)
        _print_ui_link(result)


@app.command("import", short_help="Import voxel grids from an .npz file into a voxel store.")
def import_grids(
    file: Annotated[Path, typer.Argument(help=".npz with X_train/y_train/X_test/y_test (or X/y/split)")],
    store_url: Annotated[
        str | None, typer.Option("--store", metavar="URL", help="the voxel store (created if missing)")
    ] = None,
    old_out: OldOut = None,
    classes: Annotated[str | None, typer.Option(help="comma-separated class names for label numbers")] = None,
    batch_name: BatchName = None,
    resolution: Resolution = None,
    mode: Mode = None,
    representation: Representation = None,
    keep_frame: Annotated[
        bool, typer.Option(help="keep each grid's own framing and representation (only resample it)")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Import grids people already have into a voxel store: into a field-v1 store's frame and representation
    (cropped, scaled like a scan, as a shell in surface mode), else resampled to the store's resolution."""
    with _user_errors():
        from lib.voxels.importer import import_npz
        from lib.voxels.store import VoxelStore

        store_url = resolve_store(store_url, old_out, "--out")
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such file")
        names = [c.strip() for c in classes.split(",")] if classes else None
        voxel = _voxel_config(resolution, mode, None, representation)
        counts = import_npz(file, store_url, names, batch_name, resolution, keep_frame, voxel)
        if as_json:
            out.print_json(json.dumps(counts))
            return
        out.print(
            f"imported {escape(str(file))}: {counts['items']} items, {counts['skipped']} already there, "
            f"{counts['stored']} stored, {counts['failed']} failed",
            soft_wrap=True,
            highlight=False,
        )
        _print_summary(VoxelStore.open(store_url).summary(), False)


@app.command(short_help="Summarise a voxel store: items, classes, splits, failures.")
def info(
    store_arg: Annotated[
        str | None, typer.Argument(metavar="[STORE_URL]", help="the voxel store (or --store)", show_default=False)
    ] = None,
    store_url: StoreOpt = None,
    failed: Annotated[bool, typer.Option(help="also list failed items and why")] = False,
    as_json: AsJson = False,
) -> None:
    """Summarise a voxel store: resolution, items stored and failed, batches, splits and classes."""
    with _user_errors():
        from lib.voxels.store import FAILED

        if store_arg is not None and store_url is not None and store_arg != store_url:
            raise typer.BadParameter("give the store once: as STORE_URL or --store", param_hint="--store")
        store = open_store(resolve_store(store_arg or store_url))
        summary = store.summary()
        if failed:
            summary["failed_items"] = [{"item_id": r.item_id, "reason": r.reason} for r in store.items(FAILED)]
        _print_summary(summary, as_json)
        if failed and not as_json:
            for rec in summary["failed_items"]:
                out.print(
                    f"  failed {escape(rec['item_id'])}: {escape(rec['reason'])}", highlight=False, soft_wrap=True
                )


@app.command(short_help="The main job on a generated demo batch: voxelize, train, compare, report.")
def demo(
    store_url: Annotated[str | None, typer.Option("--store", help="voxel store (default: voxclust-data/store)")] = None,
    batch_url: Annotated[
        str | None, typer.Option("--batch", help="demo batch location (default: voxclust-data/batches/demo)")
    ] = None,
    n_per_class: Annotated[int, typer.Option(min=1, help="demo shapes per class")] = 20,
    dask_address: DaskAddress = None,
    workers: Workers = None,
    compare: Annotated[bool, typer.Option(help="train and compare the feature methods after voxelizing")] = True,
) -> None:
    """The main job on the embedded default: generate a demo batch, voxelize it, then compare every feature
    method on it (the demo preset: a few epochs each) and write the report."""
    with _user_errors():
        from lib.scans.demo import write_demo_batch

        batch_url = batch_url or str(DATA_DIR / "batches" / "demo")
        store_url = store_url or str(DATA_DIR / "store")
        n = write_demo_batch(batch_url, n_per_class=n_per_class, seed=0)
        out.print(f"[bold]1/3[/bold] demo batch: {n} files in {escape(_where(_local_url(batch_url)))}", soft_wrap=True)
        _preflight(batch_url, store_url)
        _prefect_defaults()
        from flows.runners import prefect_api

        with prefect_api(), progress_bars():  # one Prefect API for both flows
            out.print("[bold]2/3[/bold] voxelizing (Prefect flow over Dask)...")
            result = _run_voxelize(batch_url, store_url, None, "demo", None, dask_address, workers)
            _print_summary(result["store"], False)
            if not compare:
                return
            out.print("[bold]3/3[/bold] training and comparing the feature methods (Prefect flow, demo preset)...")
            from flows.compare import compare_methods
            from flows.runners import run_flow
            from lib.compare.rows import resolve_entries

            report = run_flow(compare_methods, result["store"]["store"], resolve_entries(preset="demo"))
        _print_report(report, False)


def _local_url(url: str) -> str:
    return Path(url).absolute().as_uri() if "://" not in url else url


def _parse_options(pairs: list[str], epochs: int | None) -> dict[str, Any]:
    """``key=value`` pairs (value as JSON when it parses, else a string; ``a.b=v`` for nested options)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected key=value", param_hint="--set")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = options
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    if epochs is not None:
        options["epochs"] = epochs
    return options


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="KEY=VALUE", help="method option key=value (JSON value; a.b=v for nested), repeatable"
    ),
]
Split = Annotated[
    SplitChoice, typer.Option(help="store region: auto (the train split if any, else all), all, train, test")
]
METHODS_EPILOG = "The methods and their options: voxclust methods"


@app.command(short_help="Train one feature method on a voxel store and embed its items.", epilog=METHODS_EPILOG)
def train(
    method: Method,
    data_url: StoreOpt = None,
    old_data: OldData = None,
    epochs: Annotated[int | None, typer.Option(min=0, help="training epochs (default: the method's)")] = None,
    options: SetOption = None,
    split: Split = "auto",
    run_url: Annotated[
        str | None, typer.Option("--run", metavar="URL", help="where the run goes (default: <store>/runs/...)")
    ] = None,
    device: Device = "auto",
    as_json: AsJson = False,
) -> None:
    """Train a feature method on a voxel store (a Prefect flow: one task per epoch step, checkpointed), then
    embed every stored item. Re-running with the same --run resumes at the last finished step."""
    with _user_errors():
        data_url = resolve_store(data_url, old_data)
        open_store(data_url)
        opts = _parse_options(options or [], epochs)
        _prefect_defaults()
        from flows.features import train_features
        from lib.features.runs import RunRequest, make_config
        from lib.voxels.records import Region

        make_config(method, opts)  # bad method or option: fail before starting anything
        region = Region.model_validate({"split": split})
        request = RunRequest(
            method=method, data_url=data_url, options=opts, region=region, run_url=run_url, device=device
        )
        from flows.runners import run_flow

        with progress_bars(not as_json):
            result = run_flow(train_features, request)
        if as_json:
            out.print_json(json.dumps(result))
            return
        emb = result["embedding"]
        _print_path("run", result["run"])
        out.print(f"embedding {escape(emb['name'])!r} of {emb['n']} items x {emb['dim']} dimensions", highlight=False)
        for key, value in result["metrics"].items():
            out.print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}", highlight=False)
        _print_ui_link(result)


@app.command(short_help="Embed a region of the store with a trained run's model.")
def embed(
    run_url: Annotated[str, typer.Option("--run", help="a training run (see voxclust train)")],
    split: Annotated[EmbedSplitChoice, typer.Option(help="store region to embed")] = "all",
    name: Annotated[str | None, typer.Option(help="name of the embedding array (default: the split)")] = None,
    as_json: AsJson = False,
) -> None:
    """Embed a region of the run's voxel store with its trained model (stored as a zarr array in the run)."""
    with _user_errors():
        from lib.features.runs import Session
        from lib.voxels.records import Region

        ref = Session(run_url).embed(Region.model_validate({"split": split}), name)
        if as_json:
            out.print_json(ref.model_dump_json())
            return
        out.print(f"embedding {escape(ref.name)!r}: {ref.n} items x {ref.dim} dimensions", highlight=False)
        _print_path("in the run", ref.run_url)


def _compare_entries(methods: str | None, preset: str | None, options: list[str], device: str = "cpu") -> Any:
    """The rows; ``device``: where they train (on CUDA a preset's rows get its GPU budget)."""
    from lib.compare.rows import resolve_entries, trains_on_cuda

    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    overrides: dict[str, dict[str, Any]] = {}
    for pair in options:
        key, sep, _ = pair.partition("=")
        row, dot, _ = key.partition(".")
        if not sep or not dot:
            raise typer.BadParameter(f"{pair!r}: expected row.option=value", param_hint="--set")
        overrides.setdefault(row, {}).update(_parse_options([pair.split(".", 1)[1]], None))
    return resolve_entries(names, preset, overrides, cuda=trains_on_cuda(device))


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "–"
    if column == "train_seconds":
        return _duration(value)
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    """``–`` (no training), ``<1 s``, ``41 s``, ``2 min 5 s``, ``1 h 3 min``."""
    if not seconds:
        return "–"
    if seconds < 1:
        return "<1 s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _print_report(result: dict[str, Any], as_json: bool) -> None:
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
            out.print(f"[yellow]{row['name']}[/yellow]: {row['error']}", highlight=False, soft_wrap=True)
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
    _print_path("report", _where(result["html_url"]))
    _print_ui_link(result)


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
    with _user_errors():
        data_url = resolve_store(data_url, old_data)
        entries = _compare_entries(methods, preset, options or [], device)
        _prefect_defaults()
        from flows.compare import run_compare
        from flows.runners import prefect_api
        from lib.compare.rows import CompareConfig

        open_store(data_url)  # a missing store fails here, before anything starts
        with prefect_api(), progress_bars(not as_json):
            config = CompareConfig(k=k, tsne=tsne, **({"seeds": seeds} if seeds else {}))
            result = run_compare(data_url, entries, config, device, train_workers, dask_address)
        _print_report(result, as_json)


@app.command(short_help="Search a method's options (Optuna), resumable, and write a preset.", epilog=METHODS_EPILOG)
def tune(
    method: Method,
    data_url: StoreOpt = None,
    old_data: OldData = None,
    trials: Annotated[int, typer.Option(min=1, help="trials the study holds when the search ends")] = 12,
    space: Annotated[
        Path | None, typer.Option("--space", help="search space, YAML or JSON (default: the method's own)")
    ] = None,
    objective: Annotated[
        ObjectiveChoice | None,
        typer.Option(help="val_accuracy (classifiers; validation split) or silhouette (label-free; default otherwise)"),
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="study name (default: the method); resumes if it exists")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="study database, any SQLAlchemy URL (default: SQLite <store>/tune/studies.db)"),
    ] = None,
    sampler: Annotated[SamplerChoice, typer.Option(help="Optuna's sampler")] = "tpe",
    pruner: Annotated[
        PrunerChoice, typer.Option(help="stops poor trials early (reads the per-epoch objective)")
    ] = "median",
    seed: Annotated[int, typer.Option(min=0, help="the sampler's seed and every trial's training seed")] = 0,
    k: Annotated[int, typer.Option("--k", min=2, help="clusters for the silhouette objective and the test NMI")] = 10,
    epochs: Annotated[int | None, typer.Option(min=0, help="training epochs of every trial")] = None,
    options: SetOption = None,
    device: Device = "auto",
    train_workers: Annotated[
        int | None, typer.Option(min=1, help="trials side by side on Dask workers (default: setting, 1)")
    ] = None,
    dask_address: DaskAddress = None,
    as_json: AsJson = False,
) -> None:
    """Search a method's options (Optuna; every trial an ordinary, resumable run, a Prefect task on the Dask
    workers), the study in a database: re-running the same --study resumes it. Prints the best options, scored
    once on the test split, and writes a report and a preset file for `voxclust compare --preset`."""
    with _user_errors():
        data_url = resolve_store(data_url, old_data)
        open_store(data_url)
        _prefect_defaults()
        from lib.settings import settings
        from lib.tune import make_spec

        workers = settings(train_workers=train_workers).train_workers
        spec = make_spec(
            method,
            data_url,
            trials=trials,
            space=space,
            fixed=_parse_options(options or [], epochs),
            objective=objective,
            storage=storage,
            study_name=study,
            sampler=sampler,
            pruner=pruner,
            seed=seed,
            k=k,
            device=device,
        )
        from flows.runners import prefect_api
        from flows.tune import run_tune

        if not as_json:
            err.print(
                f"study {escape(spec.study_name)!r} in {escape(_redacted(spec.storage))}: {spec.trials} trials, "
                f"{spec.objective}",
                soft_wrap=True,
                highlight=False,
            )
        with prefect_api(), progress_bars(not as_json):
            summary = run_tune(spec, workers, dask_address)
    if as_json:
        out.print_json(json.dumps({k: v for k, v in summary.items() if k != "trials"} | {"trials": summary["trials"]}))
        return
    _print_tune(summary)
    _print_ui_link(summary)


def _redacted(url: str) -> str:
    from lib.tune.study import redact

    return redact(url)


def _print_tune(summary: dict[str, Any]) -> None:
    rows = summary["trials"]
    table = Table(title=f"trials of study {summary['study']} ({summary['objective']}, maximised)")
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
    _print_path("report", _where(summary["html_url"]))
    out.print(f"study: optuna-dashboard {escape(summary['storage'])}", soft_wrap=True, highlight=False)


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
    with _user_errors():
        _prefect_defaults()
        from flows.compare import compare_methods
        from flows.runners import prefect_api, run_flow
        from lib.compare.rows import CompareConfig, discover_entries

        data_url = resolve_store(data_url, old_data)
        open_store(data_url)
        entries = _compare_entries(methods, preset, []) if methods or preset else discover_entries(data_url)
        with prefect_api(), progress_bars(not as_json):
            config = CompareConfig(k=k, tsne=tsne, **({"seeds": seeds} if seeds else {}))
            result = run_flow(compare_methods, data_url, entries, config, False)
        _print_report(result, as_json)


@app.command(short_help="Cluster assignments per item (one column per method) as CSV.")
def export(
    data_url: StoreOpt = None,
    old_data: OldData = None,
    report_url: Annotated[str | None, typer.Option("--report", help="a report folder (default: the latest)")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="CSV file to write (default: stdout)")] = None,
) -> None:
    """Cluster assignments per item id (one column per method) as CSV."""
    with _user_errors():
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
    with _user_errors():
        from lib.compare.assign import assign as run_assign

        names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
        wanted = [b.strip() for b in batches.split(",") if b.strip()] if batches else None
        data_url = resolve_store(data_url, old_data)
        open_store(data_url)
        report_url, found = run_assign(data_url, wanted, names)
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

        _print_path("assigned to the clusters of", _where(report_url))
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
    with _user_errors():
        from lib.compare import similar as sim

        store = open_store(resolve_store(data_url, old_data))
        path = Path(query)
        q = sim.file_query(store, path) if path.is_file() else sim.stored_query(store, query)
        names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
        found = sim.similar(store.url, q, k, names)
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
            _print_path("thumbnails", str(html_file.absolute()))


@app.command(short_help="List the feature methods and their options.")
def methods(as_json: AsJson = False) -> None:
    """List the registered feature methods: what each is, and its options with their defaults."""
    listing = method_listing()
    if as_json:
        out.print_json(json.dumps(listing))
        return
    out.print(methods_text(listing), highlight=False, markup=False)


app.add_typer(ops.stack_app, name="stack", short_help="Start, stop and inspect the local stack (Prefect, S3, Dask).")
app.command(short_help="Create or update the deployments on the Prefect server.")(ops.deploy)
app.command(short_help="Announce a new scan batch to the watch-inbox deployment.")(ops.notify)
app.command(short_help="Run the inbox watcher once: start a pipeline per new batch.")(ops.watch)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"voxclust {version('voxclust')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            dir_okay=False,
            exists=True,
            help="settings file (TOML); default ./voxclust.toml, else ~/.config/voxclust/config.toml",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also print library log records at INFO (setting verbose)")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Settings come from flags, then VOXCLUST_* environment variables, then the settings file."""
    if config is not None:
        os.environ["VOXCLUST_CONFIG"] = str(config)
    with _user_errors():
        from lib.settings import settings

        set_verbose(verbose or settings().verbose)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
