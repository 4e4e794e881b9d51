"""voxelize-batch: list a scan batch, voxelize its chunks over Dask, finalise the store manifest."""

from __future__ import annotations

from typing import Any

from distributed import KilledWorker
from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.runners import dask_runner, dask_worker_threads, run_flow
from lib.progress import emit
from lib.scans.readers import ReadLimits
from lib.scans.voxelize import VoxelConfig
from lib.voxels.ingest import group_jobs
from lib.voxels.ingest import items_per_task as auto_items_per_task
from tasks.voxelize import finalize_store, merge_commits, plan_batch, voxelize_chunks

RESUBMITS = 3  # times one task group is submitted again after Dask gave up on it (KilledWorker)


@flow(name="voxelize-batch", task_runner=dask_runner())  # type: ignore[arg-type]
def voxelize_batch(
    batch_url: str,
    store_url: str,
    voxel: VoxelConfig | None = None,
    batch_name: str | None = None,
    items_per_task: int | None = None,
    chunk_items: int | None = None,
    max_bytes: int = ReadLimits.max_bytes,
    max_vertices: int = ReadLimits.max_vertices,
) -> dict[str, Any]:
    """Voxelize every new item of the batch at ``batch_url`` into the voxel store at ``store_url``.

    Items already stored (or failed) are skipped; chunks of an earlier run that died are redone.
    ``items_per_task`` defaults to about four tasks per Dask worker thread (at least one chunk each).
    ``voxel`` settings apply when the store is created; an existing store keeps its own (and refuses
    different ones).
    """
    log = get_run_logger()
    limits = ReadLimits(max_bytes=max_bytes, max_vertices=max_vertices)
    plan = plan_batch(batch_url, store_url, voxel, batch_name, chunk_items)
    todo = sum(len(job.items) for job in plan.jobs)
    log.info(
        "batch %s: %d items, %d already done, %d new, %d resumed; %d chunks to write",
        plan.batch,
        plan.total,
        plan.skipped,
        plan.reserved,
        plan.resumed,
        len(plan.jobs),
    )
    threads = dask_worker_threads()
    size = items_per_task or auto_items_per_task(todo, threads, plan.chunk_items)
    groups = group_jobs(plan.jobs, size)
    log.info("%d tasks of up to %d items", len(groups), size)
    progress: Any = create_progress_artifact(0.0, key="voxelize-progress", description=f"voxelize {plan.batch}")
    emit(f"voxelize {plan.batch}", 0, todo)
    futures = voxelize_chunks.map(
        groups, unmapped(plan.source), unmapped(store_url), unmapped(plan.voxel), unmapped(limits)
    )
    # A group whose workers kept dying (Dask gives up after its allowed failures: KilledWorker) is submitted
    # again, up to RESUBMITS times: chunks are rewritten whole with the same bytes, so nothing is stored twice.
    pending: dict[Any, tuple[list[Any], int]] = {f: (g, 0) for f, g in zip(futures, groups, strict=True)}
    done = stored = failed = resubmitted = 0
    busy = 0.0
    merged_early = len(groups) <= threads  # a single wave: nothing finishes early enough to be worth it
    while pending:
        for fut in as_completed(list(pending)):
            group, tries = pending.pop(fut)
            try:
                chunks = fut.result()
            except KilledWorker as exc:
                if tries >= RESUBMITS:
                    raise
                log.warning("chunks %s lost their workers (%s); submitting them again", group[0].chunk, exc)
                again = voxelize_chunks.submit(group, plan.source, store_url, plan.voxel, limits)
                pending[again] = (group, tries + 1)
                resubmitted += 1
                break  # wait on the new future too
            finally:
                _release(fut)  # read (or lost): the cluster need not keep it
            for chunk in chunks:
                done += chunk.stored + chunk.failed
                stored += chunk.stored
                failed += chunk.failed
                busy += chunk.seconds
            update_progress_artifact(progress, 100.0 * done / max(todo, 1))
            emit(f"voxelize {plan.batch}", done, todo)
            log.info("voxelized %d/%d items (%d stored, %d failed)", done, todo, stored, failed)
            if not merged_early and 0 < len(pending) <= threads:
                # Every task left is running: merge the commits written so far meanwhile, so the final merge
                # has only the last tasks' commits to read (merging 75 chunks' commits took 0.7-1.1 s).
                merge_commits(store_url)
                merged_early = True
    summary = finalize_store(store_url)
    result = {
        "batch": plan.batch,
        "items": plan.total,
        "skipped": plan.skipped,
        "processed": done,
        "stored": stored,
        "failed": failed,
        "chunk_seconds": round(busy, 2),  # time spent inside chunks, summed over workers
        "resubmitted": resubmitted,  # task groups submitted again after their workers died
        "store": summary,
    }
    create_table_artifact(
        [{k: v for k, v in result.items() if k != "store"} | {"store": store_url}],
        key="voxelize-summary",
        description=f"voxelize-batch {plan.batch}",
    )
    return result


def _release(fut: Any) -> None:
    """Let Dask forget a task whose result the flow has read. A key still referenced stays in the cluster's
    memory, and when the worker holding it dies, Dask computes it again elsewhere: with workers dying every few
    seconds, finished chunk groups were redone at every kill (1-20 of them each time in faults.py)."""
    release = getattr(getattr(fut, "wrapped_future", None), "release", None)
    if callable(release):  # a distributed.Future (not the futures of a thread-pool runner)
        release()


def run_voxelize(dask_address: str | None = None, n_workers: int | None = None, **params: Any) -> dict[str, Any]:
    """Run voxelize-batch in this process on a Dask LocalCluster of ``n_workers``, or on the scheduler at
    ``dask_address``; ``params`` are the flow's parameters."""
    runner = dask_runner(dask_address, n_workers)
    return run_flow(voxelize_batch.with_options(task_runner=runner), **params)  # type: ignore[arg-type]
