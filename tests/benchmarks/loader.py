"""Store-read benchmark: training fed from the voxel store on S3 vs from an in-memory numpy array.

Not collected by pytest. Run:  .venv/bin/python tests/benchmarks/loader.py [--trials 3] [--method voxnet]

The ModelNet10 npz is imported into a store on a local S3 server (moto, 127.0.0.1; not timed). The
training loader is ``lib.features.runs.load_region``: it reads a run's region from the store once per
process (every chunk it needs, fetched concurrently by zarr's async store, and decoded) and keeps it for
the run's later epochs. Side by side, alternating which goes first, ``--trials`` times each:

* **memory**: one training epoch (``--method``'s ``train_epoch``, quality preset options, every core) on
  the 3,964 train grids held in a numpy array;
* **store, cold**: the process cache is cleared, then the same epoch on what ``load_region`` returns, its
  read from S3 included: the first epoch of a run;
* and for the record, the loader alone: the cold read's items/s, and the items/s of assembling every
  shuffled training batch (indexing + the float tensor) from memory.

A later epoch of the same run reads nothing (the region is cached), so it runs at the memory rate.

Final JSON line: ``loader_epoch_ratio`` (store-fed cold epoch items/s / memory-fed), both rates, and the
loader-only figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support import S3Server, offline_prefect  # noqa: E402

offline_prefect()

import faiss  # noqa: E402,F401  (before torch)
import numpy as np  # noqa: E402
import torch  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "modelnet10" / "voxels32.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--method", default="voxnet")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lib.compare.rows import PRESETS
    from lib.features import runs
    from lib.features.base import DataInfo, VoxelData
    from lib.features.registry import get_method
    from lib.features.runs import Region, load_region, make_config
    from lib.features.torchbase import batches, to_input
    from lib.voxels.importer import import_npz

    server = S3Server()
    os.environ.update(server.env())
    try:
        url = f"s3://{server.new_bucket()}/mn10"
        import_npz(args.data, url)
        region = Region(split="train")
        first = load_region(url, region)
        mem = VoxelData(first.grids.copy(), first.labels.copy(), first.rows.copy(), first.classes)
        n = len(mem)
        options = next(e.options for e in PRESETS["quality"] if e.name == args.method)
        cfg = make_config(args.method, {**options, "epochs": 100})
        method = get_method(args.method)(cfg, DataInfo(32, n, 10), "cpu")
        epoch = 0

        def train(data: VoxelData) -> None:
            nonlocal epoch
            method.train_epoch(data, epoch, np.random.default_rng(epoch))
            epoch += 1

        def from_store() -> VoxelData:
            runs._CACHE.clear()
            return load_region(url, region)

        train(mem)  # warm-up
        t_mem: list[float] = []
        t_store: list[float] = []
        t_read: list[float] = []
        for trial in range(args.trials):
            for side in ("memory", "store") if trial % 2 == 0 else ("store", "memory"):
                t = time.perf_counter()
                if side == "memory":
                    train(mem)
                    t_mem.append(time.perf_counter() - t)
                else:
                    data = from_store()
                    t_read.append(time.perf_counter() - t)
                    assert np.array_equal(data.grids, mem.grids)
                    train(data)
                    t_store.append(time.perf_counter() - t)
        # The loader alone: every shuffled batch of an epoch assembled from memory.
        t = time.perf_counter()
        for idx in batches(n, cfg.batch_size, np.random.default_rng(0), drop_last=True):  # type: ignore[attr-defined]
            to_input(mem.grids[idx], "cpu")
        t_batches = time.perf_counter() - t
    finally:
        server.stop()
    rate_mem, rate_store = n / statistics.median(t_mem), n / statistics.median(t_store)
    print(
        json.dumps(
            {
                "loader_items": n,
                "loader_method": args.method,
                "loader_epoch_ratio": round(rate_store / rate_mem, 3),
                "loader_epoch_items_per_s_memory": round(rate_mem, 1),
                "loader_epoch_items_per_s_store_cold": round(rate_store, 1),
                "loader_read_items_per_s": round(n / statistics.median(t_read), 1),
                "loader_batch_items_per_s_memory": round(n / t_batches, 1),
                "loader_times": {
                    "memory_epoch_s": [round(x, 2) for x in t_mem],
                    "store_epoch_s": [round(x, 2) for x in t_store],
                    "store_read_s": [round(x, 3) for x in t_read],
                },
            }
        )
    )


if __name__ == "__main__":
    main()
