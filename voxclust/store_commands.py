"""Commands of the voxel store: the demo batch, voxelize, import, info, and the demo (the main job)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from lib.scans.readers import ReadLimits
from voxclust.common import AsJson, flow_session, out, user_errors
from voxclust.options import (
    DaskAddress,
    ModeChoice,
    OldOut,
    PoseChoice,
    RepresentationChoice,
    StoreOpt,
    UpAxisChoice,
    Workers,
    names,
    open_store,
    resolve_store,
)
from voxclust.output import print_report, print_summary, print_ui_link, where

app = typer.Typer()


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
    """The voxelize-batch flow, run here (inside :func:`voxclust.common.flow_session`)."""
    from flows.voxelize import run_voxelize

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
    with user_errors():
        from lib.scans.demo import write_demo_batch

        n = write_demo_batch(out_url, n_per_class=n_per_class, seed=seed)
        out.print(f"wrote {n} demo files to {escape(out_url)}", soft_wrap=True, highlight=False)


@app.command(short_help="Voxelize a scan batch into a voxel store.")
def voxelize(
    batch_url: Annotated[str, typer.Argument(help="the scan batch: a folder, file:// or s3:// prefix")],
    store_url: NewStore = None,
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
    with user_errors():
        store_url = resolve_store(store_url, old_out, "--out")
        voxel = _voxel_config(resolution, mode, up_axis, representation, pose)
        _preflight(batch_url, store_url)
        limits = {"max_bytes": max_bytes, "max_vertices": max_vertices}
        with flow_session(not as_json):
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
        print_summary(result["store"], False)
        print_ui_link(result)


@app.command("import", short_help="Import voxel grids from an .npz file into a voxel store.")
def import_grids(
    file: Annotated[Path, typer.Argument(help=".npz with X_train/y_train/X_test/y_test (or X/y/split)")],
    store_url: NewStore = None,
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
    with user_errors():
        from lib.voxels.importer import import_npz
        from lib.voxels.store import VoxelStore

        store_url = resolve_store(store_url, old_out, "--out")
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such file")
        class_names = names(classes)
        voxel = _voxel_config(resolution, mode, None, representation)
        counts = import_npz(file, store_url, class_names, batch_name, resolution, keep_frame, voxel)
        if as_json:
            out.print_json(json.dumps(counts))
            return
        out.print(
            f"imported {escape(str(file))}: {counts['items']} items, {counts['skipped']} already there, "
            f"{counts['stored']} stored, {counts['failed']} failed",
            soft_wrap=True,
            highlight=False,
        )
        print_summary(VoxelStore.open(store_url).summary(), False)


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
    with user_errors():
        from lib.voxels.store import FAILED

        if store_arg is not None and store_url is not None and store_arg != store_url:
            raise typer.BadParameter("give the store once: as STORE_URL or --store", param_hint="--store")
        store = open_store(resolve_store(store_arg or store_url))
        summary = store.summary()
        if failed:
            summary["failed_items"] = [{"item_id": r.item_id, "reason": r.reason} for r in store.items(FAILED)]
        print_summary(summary, as_json)
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
    with user_errors():
        from lib.scans.demo import write_demo_batch

        batch_url = batch_url or str(DATA_DIR / "batches" / "demo")
        store_url = store_url or str(DATA_DIR / "store")
        n = write_demo_batch(batch_url, n_per_class=n_per_class, seed=0)
        out.print(f"[bold]1/3[/bold] demo batch: {n} files in {escape(where(_local_url(batch_url)))}", soft_wrap=True)
        _preflight(batch_url, store_url)
        with flow_session():  # one Prefect API for both flows
            out.print("[bold]2/3[/bold] voxelizing (Prefect flow over Dask)...")
            result = _run_voxelize(batch_url, store_url, None, "demo", None, dask_address, workers)
            print_summary(result["store"], False)
            if not compare:
                return
            out.print("[bold]3/3[/bold] training and comparing the feature methods (Prefect flow, demo preset)...")
            from flows.compare import compare_methods
            from flows.runners import run_flow
            from lib.compare.rows import resolve_entries

            report = run_flow(compare_methods, result["store"]["store"], resolve_entries(preset="demo"))
        print_report(report, False)


def _local_url(url: str) -> str:
    return Path(url).absolute().as_uri() if "://" not in url else url
