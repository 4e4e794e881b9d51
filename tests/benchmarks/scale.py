"""Scale benchmark: what a further 1,000-item batch costs as the store grows, and k-means where size matters.

Not collected by pytest. Run:

    .venv/bin/python tests/benchmarks/scale.py [--sizes 1000,10000,100000] [--no-kmeans]

Store part, on a local S3 server (moto's, 127.0.0.1, spoken to over HTTP as AWS S3 would be):

* the store is filled to each size with 1,000-item batches through the store's own ``plan``,
  ``write_chunk`` and ``finalize`` (each item a one-voxel grid: what grows with the store is its metadata;
  no file is read for these);
* at each size a real batch of 1,000 tiny point clouds (binary PCD of 12 points, ~300 bytes each, on the
  same server) is planned by ``lib.voxels.ingest.plan_batch`` (which lists the batch and reserves its rows),
  its chunks voxelized by ``process_chunk`` (not timed) and finalized. ``batch_s``: plan + finalize seconds;
  ``manifest_bytes``: bytes of manifest objects (``manifest.json`` and the batch parts under
  ``manifest/``) read and written by them; ``planner_peak_mb``: the peak of Python's allocations
  (tracemalloc) during plan and finalize, measured on a second such batch (tracemalloc slows what it
  watches, so the timed batch runs without it).

k-means part: ``tests/benchmarks/kmeans.py``'s size cases (faiss against scikit-learn, same k, restarts
and seeds; see there), as ``kmeans_speedup``.

Final JSON line with exactly ``batch_s``, ``manifest_bytes``, ``planner_peak_mb`` (each keyed by store size)
and ``kmeans_speedup``. Details (fill seconds, plan and finalize apart, k-means NMI and inertia) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import faiss  # noqa: E402,F401  (before torch)
import numpy as np  # noqa: E402

from lib.scans.batch import BatchItem  # noqa: E402
from lib.scans.readers import ReadLimits  # noqa: E402
from lib.scans.voxelize import VoxelConfig  # noqa: E402
from lib.scans.writers import encode_pcd  # noqa: E402
from lib.storage import Storage, open_storage  # noqa: E402
from lib.voxels.ingest import plan_batch, process_chunk  # noqa: E402
from lib.voxels.store import STORED, ItemResult, VoxelStore  # noqa: E402
from tests.support import S3Server  # noqa: E402

BATCH = 1000
DATA = ROOT.parent / "shared" / "data" / "modelnet10" / "voxels32.npz"


class ByteCounter:
    """Bytes of manifest objects read and written through any Storage of this process."""

    def __init__(self) -> None:
        self.bytes = 0

    @staticmethod
    def is_manifest(key: str) -> bool:
        return key == "manifest.json" or key.startswith("manifest/")

    @contextmanager
    def counting(self) -> Iterator[None]:
        cls = type(open_storage("s3://bucket/x"))
        read, write = cls.read_bytes, cls.write_bytes

        def counted_read(storage: Storage, key: str) -> bytes:
            data = read(storage, key)
            if self.is_manifest(key):
                self.bytes += len(data)
            return data

        def counted_write(storage: Storage, key: str, data: bytes) -> None:
            if self.is_manifest(key):
                self.bytes += len(data)
            write(storage, key, data)

        cls.read_bytes, cls.write_bytes = counted_read, counted_write  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            cls.read_bytes, cls.write_bytes = read, write  # type: ignore[method-assign]


def fill(store: VoxelStore, name: str, n: int) -> None:
    """A batch of ``n`` items stored through the store's API, one voxel each (no files)."""
    plan = store.plan(name, f"s3://synthetic/{name}", [BatchItem(f"{i:06d}.pcd", 300) for i in range(n)])
    r = store.index().resolution
    grid = np.zeros((r, r, r), dtype=bool)
    grid[r // 2, r // 2, r // 2] = True

    def write(job: Any) -> None:
        store.write_chunk(
            job, {it.row: grid for it in job.items}, [ItemResult(it.row, STORED, "", 1, "cloud") for it in job.items]
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, plan.jobs))
    store.finalize()


def items(store: VoxelStore) -> int:
    """Items in the store, from the index's per-batch counts alone."""
    return sum(sum(info["counts"].values()) for info in store.index().batches.values())


def write_batch(storage: Storage) -> None:
    """1,000 binary PCD files of 12 points each."""
    rng = np.random.default_rng(0)

    def put(i: int) -> None:
        pts = rng.normal(0, 1, (12, 3)) * (1 + i % 7)
        storage.write_bytes(f"cloud{i:05d}.pcd", encode_pcd(pts))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(BATCH)))


def probe(batch_url: str, store_url: str, name: str, measure: Callable[[], Any]) -> dict[str, float]:
    """Plan, voxelize (not measured) and finalize one batch; plan and finalize inside ``measure``."""
    with measure():
        t0 = time.perf_counter()
        plan = plan_batch(batch_url, store_url, batch_name=name)
        plan_s = time.perf_counter() - t0
    for job in plan.jobs:
        process_chunk(job, batch_url, store_url, plan.voxel, ReadLimits())
    store = VoxelStore.open(store_url)
    with measure():
        t0 = time.perf_counter()
        store.finalize()
        finalize_s = time.perf_counter() - t0
    return {"plan_s": plan_s, "finalize_s": finalize_s}


@contextmanager
def peak(out: list[float]) -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        out.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()


def store_part(server: S3Server, sizes: list[int]) -> dict[str, dict[str, float]]:
    bucket = server.new_bucket()
    batch_url, store_url = f"s3://{bucket}/batches/probe", f"s3://{bucket}/store"
    write_batch(open_storage(batch_url))
    store = VoxelStore.open_or_create(store_url, VoxelConfig(resolution=32))
    out: dict[str, dict[str, float]] = {"batch_s": {}, "manifest_bytes": {}, "planner_peak_mb": {}}
    counter = ByteCounter()
    fills = 0
    for size in sorted(sizes):
        t0 = time.perf_counter()
        while (n := items(store)) < size:
            fill(store, f"fill{fills:05d}", min(BATCH, size - n))
            fills += 1
        fill_s = time.perf_counter() - t0
        counter.bytes = 0
        times = probe(batch_url, store_url, f"probe-{size}", counter.counting)
        peaks: list[float] = []
        probe(batch_url, store_url, f"probe-{size}-mem", lambda: peak(peaks))  # noqa: B023
        key = str(size)
        out["batch_s"][key] = round(times["plan_s"] + times["finalize_s"], 3)
        out["manifest_bytes"][key] = counter.bytes
        out["planner_peak_mb"][key] = round(max(peaks), 2)
        print(
            f"store of {n} items (filled in {fill_s:.0f} s): plan {times['plan_s']:.3f} s, "
            f"finalize {times['finalize_s']:.3f} s, manifest bytes {counter.bytes}, peak {max(peaks):.1f} MB",
            file=sys.stderr,
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", help="store sizes, comma-separated")
    ap.add_argument("--data", type=Path, default=DATA, help="ModelNet10 npz for the k-means cases")
    ap.add_argument("--seeds", type=int, default=3, help="k-means seeds per case")
    ap.add_argument("--no-kmeans", action="store_true", help="the store part only")
    args = ap.parse_args()

    server = S3Server()
    os.environ.update(server.env())
    try:
        figures: dict[str, Any] = store_part(server, [int(s) for s in args.sizes.split(",")])
    finally:
        server.stop()
    if not args.no_kmeans:
        from tests.benchmarks.kmeans import size_cases

        cases = size_cases(args.data, args.seeds)
        figures["kmeans_speedup"] = {name: case["speedup"] for name, case in cases.items()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
