"""pipeline: one scan batch end to end, voxelize-batch (over Dask) then compare-methods on the store."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.compare import compare_methods
from flows.voxelize import run_voxelize
from lib.compare.assign import AssignError
from lib.compare.publish import has_report
from lib.compare.rows import CompareConfig, CompareError, current_run, resolve_entries, trains_on_cuda
from lib.report.table import rounded_rows
from tasks.compare import assign_batch


@flow(name="pipeline")
def pipeline(
    batch_url: str,
    store_url: str,
    batch_name: str | None = None,
    preset: str = "default",
    methods: list[str] | None = None,
    config: CompareConfig | None = None,
    dask_address: str | None = None,
    device: str = "auto",
    recluster: bool = False,
) -> dict[str, Any]:
    """Voxelize the batch at ``batch_url`` into the store at ``store_url`` (a Dask LocalCluster, or the
    scheduler at ``dask_address`` / ``VOXCLUST_DASK_ADDRESS``). The store's first batch (or any batch with
    ``recluster``, or when the latest report lacks one of the methods, or when the store has outgrown a run:
    see :func:`lib.compare.rows.current_run`) then trains or reuses every method of
    ``preset`` (optionally only ``methods``) and publishes the comparison of the whole store; a later batch
    joins the latest report's clusters instead (``assign``: no re-clustering), with its novelty."""
    log = get_run_logger()
    entries = resolve_entries(methods, preset, cuda=trains_on_cuda(device))  # bad names fail before any work
    voxelized = run_voxelize(dask_address, batch_url=batch_url, store_url=store_url, batch_name=batch_name)
    log.info("batch %s: %d stored, %d failed", voxelized["batch"], voxelized["stored"], voxelized["failed"])
    store = voxelized["store"]["store"]
    retrain = [note for e in entries if (note := current_run(store, e)[1])]  # the store outgrew a run
    for note in retrain:
        log.info("re-clustering: %s", note)
    if not recluster and not retrain and has_report(store):
        try:
            joined = assign_batch(store, [voxelized["batch"]], [e.name for e in entries])
        except (AssignError, CompareError) as exc:  # no model, or a method the report lacks
            log.info("re-clustering: %s", exc)
        else:
            create_table_artifact(
                joined["rows"],
                key="voxclust-pipeline-table",
                description=f"batch {voxelized['batch']} ({voxelized['stored']} stored, {voxelized['failed']} "
                f"failed) joined the clusters of {joined['report_url']}",
            )
            return {"voxelize": {k: v for k, v in voxelized.items() if k != "store"}, "assign": joined}
    report = compare_methods(store, entries, config, True, device)
    create_table_artifact(
        rounded_rows(report["rows"]),
        key="voxclust-pipeline-table",
        description=f"comparison after batch {voxelized['batch']} ({voxelized['stored']} stored, "
        f"{voxelized['failed']} failed); report {report['html_url']}",
    )
    return {"voxelize": {k: v for k, v in voxelized.items() if k != "store"}, "compare": report}
