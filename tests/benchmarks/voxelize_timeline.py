"""Where a voxelize run's fixed cost goes: the timeline of warm `voxelize-batch` runs on a standing cluster.

Not collected by pytest. Run:  .venv/bin/python tests/benchmarks/voxelize_timeline.py [--workers 2]
[--meshes 252] [--repeats 3]

The same setting as ``voxelize.py``'s warm regime (demo meshes on a local S3 server, a standing 2-worker
LocalCluster given by address that has run one small flow, one temporary Prefect server), but instead of a
bare pool beside it, each run's task runs are read back from the API and their times laid out: from the call
to the flow run's start, the plan, the first chunk task's start, the gap on a worker thread between one chunk
task's end and the next one's start (Prefect's per-task work on the worker: the context rebuilt, an API client,
the task run created and set running; each task is matched to the worker slot freed earliest before it
started), and from the last chunk's end to the call's return (finalize, artifacts, the flow run's end).

Prints one final JSON line: {"runs", "chunk_tasks", "wall_s", "to_flow_start_s", "plan_s",
"to_first_chunk_s", "gap_s" (median gap per run), "gaps_per_thread_s" (the gaps summed over a run, divided
by the worker threads), "tail_s"}, every list one value per run.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support import offline_prefect  # noqa: E402

offline_prefect()

from tests.support import S3Server  # noqa: E402


def task_times(flow_run_id: Any) -> tuple[Any, list[Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> tuple[Any, list[Any]]:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return run, tasks

    return asyncio.run(read())


def latest_flow_run_id() -> Any:
    from prefect.client.orchestration import get_client

    async def read() -> Any:
        async with get_client() as client:
            return (await client.read_flow_runs(sort="START_TIME_DESC", limit=1))[0].id

    return asyncio.run(read())


def gaps(chunks: list[tuple[float, float]], slots: int) -> list[float]:
    """Start minus the end of the worker slot it took, for every chunk task after the first ``slots``."""
    ends: list[float] = []  # a heap: when each slot's latest task ended
    out: list[float] = []
    for start, end in sorted(chunks):
        if len(ends) >= slots and ends[0] <= start:
            out.append(start - heapq.heappop(ends))  # the slot freed earliest
        heapq.heappush(ends, end)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--meshes", type=int, default=252)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from flows.runners import local_cluster_kwargs, prefect_api
    from flows.voxelize import run_voxelize
    from lib.scans.demo import write_demo_batch

    server = S3Server()
    os.environ.update(server.env())
    bucket = server.new_bucket()
    keys = ("wall_s", "to_flow_start_s", "plan_s", "to_first_chunk_s", "gap_s", "gaps_per_thread_s", "tail_s")
    figures: dict[str, list[float]] = {k: [] for k in keys}
    n_chunks = 0
    try:
        with prefect_api():
            mesh_url = f"s3://{bucket}/batches/meshes"
            write_demo_batch(mesh_url, n_per_class=-(-args.meshes // 7), seed=7, point_cloud_share=0.0)
            warm_url = f"s3://{bucket}/batches/warm-up"
            write_demo_batch(warm_url, n_per_class=2, seed=3, point_cloud_share=0.0)
            with LocalCluster(**local_cluster_kwargs(args.workers)) as cluster, Client(cluster) as client:
                client.run(lambda: __import__("tasks.voxelize"))
                addr = cluster.scheduler_address
                run_voxelize(addr, args.workers, batch_url=warm_url, store_url=f"s3://{bucket}/stores/warm-up")
                slots = sum(client.nthreads().values())  # worker threads: one chunk task each at a time
                for rep in range(args.repeats):
                    t0 = time.time()
                    run_voxelize(addr, args.workers, batch_url=mesh_url, store_url=f"s3://{bucket}/stores/{rep}")
                    t1 = time.time()
                    run, tasks = task_times(latest_flow_run_id())
                    times = {
                        t.name: (t.start_time.timestamp() - t0, t.end_time.timestamp() - t0)
                        for t in tasks
                        if t.start_time and t.end_time
                    }
                    chunks = [se for name, se in times.items() if name.startswith("voxelize-chunks")]
                    plan = next(se for name, se in times.items() if name.startswith("plan-batch"))
                    n_chunks = len(chunks)
                    g = gaps(chunks, slots)
                    figures["wall_s"].append(t1 - t0)
                    figures["to_flow_start_s"].append(run.start_time.timestamp() - t0)
                    figures["plan_s"].append(plan[1] - plan[0])
                    figures["to_first_chunk_s"].append(min(s for s, _ in chunks))
                    figures["gap_s"].append(statistics.median(g) if g else 0.0)
                    figures["gaps_per_thread_s"].append(sum(g) / slots)
                    figures["tail_s"].append(t1 - t0 - max(e for _, e in chunks))
                    print(f"run {rep}: {t1 - t0:.2f} s, {n_chunks} chunk tasks, gaps {[round(x, 2) for x in g]}",
                          file=sys.stderr)  # fmt: skip
    finally:
        server.stop()
    out: dict[str, Any] = {"runs": args.repeats, "chunk_tasks": n_chunks}
    out.update({k: [round(v, 3) for v in vs] for k, vs in figures.items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
