"""Voxelize benchmark: the Prefect flow over Dask vs a bare spawn-based process pool, both into S3.

Not collected by pytest. Run:  .venv/bin/python tests/benchmarks/voxelize.py [--workers 2] [--meshes 252]

Both paths call the same lib code (lib.pipeline: plan, process_chunk, finalize) with the same worker
count and write the same store format to a local S3 server (moto, on 127.0.0.1). Uploading the inputs
is not timed; each store starts empty. Each path runs ``--repeats`` times (default 3), alternating which
goes first; rates use the median time. Timed: from the call to the finished, finalised store, including
starting the workers (Dask LocalCluster / process pool) on both sides. The Prefect API (one temporary
server) is started before timing, as a deployment would already have one.

Prints one final JSON line:
{"pcd_items", "pcd_flow_items_per_s", "pcd_bare_items_per_s", "mesh_items", "mesh_flow_items_per_s",
 "mesh_bare_items_per_s", "overhead_ratio" (flow/bare, meshes), "pcd_overhead_ratio"}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="voxclust-bench-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)

from lib.pipeline import group_jobs, plan_batch, process_chunk  # noqa: E402
from lib.pipeline import items_per_task as auto_items_per_task  # noqa: E402
from lib.readers import ReadLimits  # noqa: E402
from lib.store import VoxelStore  # noqa: E402
from tests.support import S3Server  # noqa: E402

PCD_DIR = ROOT.parent / "shared" / "data" / "modelnet10" / "pcd"


def upload_tree(local: Path, url: str) -> int:
    from lib.storage import open_storage

    dest = open_storage(url)
    n = 0
    for path in sorted(local.rglob("*")):
        if path.is_file():
            dest.write_bytes(path.relative_to(local).as_posix(), path.read_bytes())
            n += 1
    return n


def run_flow(batch_url: str, store_url: str, workers: int, items_per_task: int | None) -> dict[str, Any]:
    from flows.runners import dask_runner
    from flows.voxelize import voxelize_batch

    fn = voxelize_batch.with_options(task_runner=dask_runner(n_workers=workers))  # type: ignore[arg-type]
    result: dict[str, Any] = fn(batch_url=batch_url, store_url=store_url, items_per_task=items_per_task)
    return result


def _bare_group(jobs: list[Any], batch_url: str, store_url: str, voxel: Any) -> int:
    return sum(process_chunk(j, batch_url, store_url, voxel, ReadLimits()).stored for j in jobs)


def run_bare(batch_url: str, store_url: str, workers: int, items_per_task: int | None) -> dict[str, Any]:
    plan = plan_batch(batch_url, store_url)
    todo = sum(len(j.items) for j in plan.jobs)
    chunk_items = plan.jobs[0].stop - plan.jobs[0].start
    groups = group_jobs(plan.jobs, items_per_task or auto_items_per_task(todo, workers, chunk_items))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_bare_group, g, plan.source, store_url, plan.voxel) for g in groups]
        stored = sum(f.result() for f in futures)
    VoxelStore.open(store_url).finalize()
    return {"items": plan.total, "stored": stored}


def timed(fn: Any, *args: Any) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--meshes", type=int, default=252, help="demo meshes (7 classes; rounded up to a multiple of 7)")
    ap.add_argument("--items-per-task", type=int, default=None, help="default: the flow's own rule, both paths")
    ap.add_argument("--pcd", type=Path, default=PCD_DIR)
    ap.add_argument("--skip-pcd", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each path; figures use the median")
    args = ap.parse_args()

    from flows.runners import prefect_api
    from lib.demo import write_demo_batch

    server = S3Server()
    os.environ.update(server.env())
    bucket = server.new_bucket()
    figures: dict[str, Any] = {"workers": args.workers, "items_per_task": args.items_per_task}
    try:
        with prefect_api():
            mesh_url = f"s3://{bucket}/batches/meshes"
            n_meshes = write_demo_batch(mesh_url, n_per_class=-(-args.meshes // 7), seed=7, point_cloud_share=0.0)
            datasets = [("mesh", mesh_url, n_meshes)]
            if not args.skip_pcd and args.pcd.is_dir():
                pcd_url = f"s3://{bucket}/batches/mn10"
                datasets.insert(0, ("pcd", pcd_url, upload_tree(args.pcd, pcd_url)))
            for name, url, n in datasets:
                times: dict[str, list[float]] = {"flow": [], "bare": []}
                for rep in range(args.repeats):
                    # alternate which path goes first, so neither always meets a warmer machine
                    order = ("bare", "flow") if rep % 2 == 0 else ("flow", "bare")
                    for path in order:
                        fn = run_bare if path == "bare" else run_flow
                        store = f"s3://{bucket}/stores/{name}-{path}-{rep}"
                        t, res = timed(fn, url, store, args.workers, args.items_per_task)
                        times[path].append(t)
                        stored = res["stored"]
                        print(f"{name} {path} run {rep}: {n} items, {stored} stored, {t:.1f} s", file=sys.stderr)
                t_flow, t_bare = statistics.median(times["flow"]), statistics.median(times["bare"])
                figures[f"{name}_items"] = n
                figures[f"{name}_stored"] = stored
                figures[f"{name}_flow_s"] = [round(t, 2) for t in times["flow"]]
                figures[f"{name}_bare_s"] = [round(t, 2) for t in times["bare"]]
                figures[f"{name}_flow_items_per_s"] = round(n / t_flow, 1)
                figures[f"{name}_bare_items_per_s"] = round(n / t_bare, 1)
    finally:
        server.stop()
    figures["overhead_ratio"] = round(figures["mesh_flow_items_per_s"] / figures["mesh_bare_items_per_s"], 3)
    if "pcd_items" in figures:
        figures["pcd_overhead_ratio"] = round(figures["pcd_flow_items_per_s"] / figures["pcd_bare_items_per_s"], 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
