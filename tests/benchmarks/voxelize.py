"""Voxelize benchmark: the Prefect flow over Dask vs a bare spawn-based process pool, both into S3.

Not collected by pytest. Run:  .venv/bin/python tests/benchmarks/voxelize.py [--workers 2] [--meshes 252]
[--meshes-large 2520]

Both paths call the same lib code (lib.voxels.ingest: plan, process_chunk, finalize) with the same worker count
and the same task grouping, and write the same store format to a local S3 server (moto, 127.0.0.1).
Uploading the inputs is not timed; every run writes a new, empty store. The Prefect API (one temporary
server) is started before timing, as a deployment would already have one.

Two regimes, each path run ``--repeats`` times (alternating which goes first), rates from the median:
* cold: each run starts its own workers inside the timing (the flow its Dask LocalCluster, the bare
  path its process pool), as ``voxclust voxelize`` does with no ``--dask-address``;
* warm: workers are started and have done work before timing (a standing Dask cluster given by address,
  as deployments use, that has run one small voxelize flow; a started process pool that has imported the
  code), so only the work and its orchestration are timed.

The large mesh batch (``--meshes-large``, 2,520 by default; 0 skips it) is measured warm only.

Prints one final JSON line with "pcd_items", "pcd_flow_items_per_s", "pcd_bare_items_per_s",
"mesh_flow_items_per_s", "mesh_bare_items_per_s", "overhead_ratio" (flow/bare, 252 meshes; warm),
"overhead_ratio_2520" (the large batch, warm), "pcd_overhead_ratio", "fixed_s" (the seconds a flow run
adds to the bare run of the same work: median flow time minus median bare time, 252 meshes, warm;
"fixed_s_by_batch" gives it for every batch) and the same figures for the cold regime (keys ending
"_cold"), plus every time measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support import offline_prefect  # noqa: E402

offline_prefect()

from lib.scans.readers import ReadLimits  # noqa: E402
from lib.voxels.ingest import group_jobs, plan_batch, process_chunk  # noqa: E402
from lib.voxels.ingest import items_per_task as auto_items_per_task  # noqa: E402
from lib.voxels.store import VoxelStore  # noqa: E402
from tests.support import S3Server  # noqa: E402

PCD_DIR = ROOT.parent / "shared" / "data" / "modelnet10" / "pcd"


def upload_tree(local: Path, url: str, limit: int | None = None) -> int:
    from lib.storage import open_storage

    dest = open_storage(url)
    n = 0
    for path in sorted(local.rglob("*")):
        if limit is not None and n >= limit:
            break
        if path.is_file():
            dest.write_bytes(path.relative_to(local).as_posix(), path.read_bytes())
            n += 1
    return n


def run_flow(batch_url: str, store_url: str, workers: int, address: str | None = None) -> dict[str, Any]:
    from flows.voxelize import run_voxelize

    return run_voxelize(address, workers, batch_url=batch_url, store_url=store_url)


def _bare_group(jobs: list[Any], batch_url: str, store_url: str, voxel: Any) -> tuple[int, float]:
    done = [process_chunk(j, batch_url, store_url, voxel, ReadLimits()) for j in jobs]
    return sum(c.stored for c in done), sum(c.seconds for c in done)


def _warm_up() -> None:
    import lib.voxels.ingest  # noqa: F401  (what a worker imports for its first chunk)


def run_bare(batch_url: str, store_url: str, workers: int, pool: Executor | None = None) -> dict[str, Any]:
    """plan, chunks over a spawn-based process pool (the flow's grouping rule), finalize."""
    plan = plan_batch(batch_url, store_url)
    todo = sum(len(j.items) for j in plan.jobs)
    groups = group_jobs(plan.jobs, auto_items_per_task(todo, workers, plan.chunk_items))
    own = pool is None
    pool = pool or ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    try:
        futures = [pool.submit(_bare_group, g, plan.source, store_url, plan.voxel) for g in groups]
        results = [f.result() for f in futures]
    finally:
        if own:
            pool.shutdown()
    VoxelStore.open(store_url).finalize()
    return {"items": plan.total, "stored": sum(r[0] for r in results), "chunk_seconds": sum(r[1] for r in results)}


def measure(
    name: str, n: int, repeats: int, paths: dict[str, Callable[[str], dict[str, Any]]], stores: str
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {p: [] for p in paths}
    busy = chunk_seconds.setdefault(name, {p: [] for p in paths})
    for rep in range(repeats):
        order = list(paths) if rep % 2 == 0 else list(reversed(paths))
        for path in order:
            t0 = time.perf_counter()
            res = paths[path](f"{stores}/{name}-{path}-{rep}")
            t = time.perf_counter() - t0
            times[path].append(t)
            busy.setdefault(path, []).append(round(res["chunk_seconds"], 2))
            if res["stored"] != stored_expected.setdefault(name, res["stored"]):
                raise SystemExit(f"{name} {path}: stored {res['stored']}, other runs {stored_expected[name]}")
            print(f"{name} {path} run {rep}: {n} items, {res['stored']} stored, {t:.1f} s", file=sys.stderr)
    return times


stored_expected: dict[str, int] = {}
chunk_seconds: dict[str, dict[str, list[float]]] = {}  # per dataset and path: seconds inside chunks, per run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--meshes", type=int, default=252, help="demo meshes (7 classes; rounded up to a multiple of 7)")
    ap.add_argument("--meshes-large", type=int, default=2520, help="a larger demo mesh batch, warm only (0: none)")
    ap.add_argument("--repeats-large", type=int, default=2, help="runs of each path for the large batch")
    ap.add_argument("--pcd", type=Path, default=PCD_DIR)
    ap.add_argument("--skip-pcd", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each path per regime; rates use the median")
    ap.add_argument("--skip-cold", action="store_true", help="warm regime only")
    ap.add_argument("--pcd-limit", type=int, default=None, help="only the first N point clouds (smoke tests)")
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from flows.runners import local_cluster_kwargs, prefect_api
    from lib.scans.demo import write_demo_batch

    server = S3Server()
    os.environ.update(server.env())
    bucket = server.new_bucket()
    w = args.workers
    figures: dict[str, Any] = {"workers": w}
    n_large = 0
    fixed: dict[str, dict[str, float]] = {}  # regime -> batch -> median flow seconds minus median bare seconds
    try:
        with prefect_api():
            mesh_url = f"s3://{bucket}/batches/meshes"
            n_meshes = write_demo_batch(mesh_url, n_per_class=-(-args.meshes // 7), seed=7, point_cloud_share=0.0)
            warm_url = f"s3://{bucket}/batches/warm-up"
            write_demo_batch(warm_url, n_per_class=2, seed=3, point_cloud_share=0.0)
            datasets = [("mesh", mesh_url, n_meshes, args.repeats, True)]
            if args.meshes_large:
                large_url = f"s3://{bucket}/batches/meshes-large"
                n_large = write_demo_batch(
                    large_url, n_per_class=-(-args.meshes_large // 7), seed=11, point_cloud_share=0.0
                )
                datasets.append((f"mesh{n_large}", large_url, n_large, args.repeats_large, False))
            if not args.skip_pcd and args.pcd.is_dir():
                pcd_url = f"s3://{bucket}/batches/mn10"
                datasets.insert(0, ("pcd", pcd_url, upload_tree(args.pcd, pcd_url, args.pcd_limit), args.repeats, True))
            stores = f"s3://{bucket}/stores"
            for name, url, n, repeats, with_cold in datasets:
                cold = (
                    {}
                    if args.skip_cold or not with_cold
                    else measure(
                        name,
                        n,
                        repeats,
                        {"bare": lambda s, u=url: run_bare(u, s, w), "flow": lambda s, u=url: run_flow(u, s, w)},
                        f"{stores}/cold",
                    )
                )
                with (
                    LocalCluster(**local_cluster_kwargs(w)) as cluster,
                    Client(cluster) as client,
                    ProcessPoolExecutor(w, mp_context=get_context("spawn")) as pool,
                ):
                    client.run(_warm_up)
                    client.run(lambda: __import__("tasks.voxelize"))
                    for f in [pool.submit(_warm_up) for _ in range(4 * w)]:
                        f.result()
                    addr = cluster.scheduler_address
                    run_flow(warm_url, f"{stores}/warm-up-{name}", w, addr)  # untimed: as on a standing cluster
                    warm = measure(
                        name,
                        n,
                        repeats,
                        {
                            "bare": lambda s, u=url, p=pool: run_bare(u, s, w, p),  # type: ignore[misc]
                            "flow": lambda s, u=url, a=addr: run_flow(u, s, w, a),  # type: ignore[misc]
                        },
                        f"{stores}/warm",
                    )
                for regime, times, suffix in (("warm", warm, ""), ("cold", cold, "_cold")):
                    if not times:
                        continue
                    t_flow, t_bare = statistics.median(times["flow"]), statistics.median(times["bare"])
                    figures[f"{name}_items"] = n
                    figures[f"{name}_stored"] = stored_expected[name]
                    figures[f"{name}_flow_items_per_s{suffix}"] = round(n / t_flow, 1)
                    figures[f"{name}_bare_items_per_s{suffix}"] = round(n / t_bare, 1)
                    figures[f"{name}_{regime}_flow_s"] = [round(t, 2) for t in times["flow"]]
                    figures[f"{name}_{regime}_bare_s"] = [round(t, 2) for t in times["bare"]]
                    fixed.setdefault(regime, {})[name] = round(t_flow - t_bare, 2)
    finally:
        server.stop()
    for suffix in ("", "_cold"):
        keys = [("mesh", "overhead_ratio"), ("pcd", "pcd_overhead_ratio")]
        if n_large:
            keys.append((f"mesh{n_large}", f"overhead_ratio_{n_large}"))
        for name, key in keys:
            if f"{name}_flow_items_per_s{suffix}" in figures:
                ratio = figures[f"{name}_flow_items_per_s{suffix}"] / figures[f"{name}_bare_items_per_s{suffix}"]
                figures[key + suffix] = round(ratio, 3)
    if "mesh" in fixed.get("warm", {}):
        figures["fixed_s"] = fixed["warm"]["mesh"]
    figures["fixed_s_by_batch"] = fixed.get("warm", {})
    if "cold" in fixed:
        figures["fixed_s_by_batch_cold"] = fixed["cold"]
    figures["chunk_seconds"] = chunk_seconds
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
