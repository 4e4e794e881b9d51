"""Voxelize scaling: how the flow's wall time grows with batch size and with Dask workers.

Not collected by pytest. Run:

    .venv/bin/python tests/benchmarks/scaling.py [--runs 1000:1,1000:2,5000:1,5000:2,20000:2]

Each run is ``SIZE:WORKERS``: a demo batch of SIZE scans (the demo generator's mix: 7 shape classes, 80%
meshes in OFF/PLY/STL/OBJ/GLB, 20% point clouds; written to a local S3 server first, not timed) voxelized
at 32^3 by the ``voxelize-batch`` flow on a Dask LocalCluster of WORKERS single-threaded workers, started
inside the timing as ``voxclust voxelize`` does, into a new store on the same server. Batches are generated
once per size and shared by the runs of that size.

Prints one line per run to stderr and a final JSON line: per run the seconds and items/s, and per worker
count a least-squares fit ``seconds = fixed + items / rate`` over the sizes it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support import S3Server, offline_prefect  # noqa: E402

offline_prefect()

import numpy as np  # noqa: E402

N_CLASSES = 7


def parse_runs(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        size, _, workers = part.partition(":")
        out.append((int(size), int(workers or 2)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="1000:1,1000:2,5000:1,5000:2,20000:2", help="SIZE:WORKERS,...")
    args = ap.parse_args()
    runs = parse_runs(args.runs)

    from flows.runners import prefect_api
    from flows.voxelize import run_voxelize
    from lib.scans.demo import write_demo_batch

    server = S3Server()
    os.environ.update(server.env())
    bucket = server.new_bucket()
    figures: dict[str, Any] = {"scaling_runs": {}}
    batches: dict[int, tuple[str, int]] = {}
    try:
        with prefect_api():
            for size, workers in runs:
                if size not in batches:
                    url = f"s3://{bucket}/batches/demo-{size}"
                    t = time.perf_counter()
                    n = write_demo_batch(url, n_per_class=-(-size // N_CLASSES), seed=size)
                    print(f"generated {n} scans in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
                    batches[size] = (url, n)
                url, n = batches[size]
                t = time.perf_counter()
                res = run_voxelize(None, workers, batch_url=url, store_url=f"s3://{bucket}/stores/{size}-{workers}")
                seconds = time.perf_counter() - t
                if res["processed"] != n:
                    raise SystemExit(f"{size}:{workers}: processed {res['processed']} of {n}")
                rec = {
                    "items": n,
                    "workers": workers,
                    "seconds": round(seconds, 1),
                    "items_per_s": round(n / seconds, 2),
                }
                rec["stored"], rec["failed"] = res["stored"], res["failed"]
                print("run", json.dumps(rec), file=sys.stderr, flush=True)
                figures["scaling_runs"][f"{size}:{workers}"] = rec
    finally:
        server.stop()
    for workers in sorted({w for _, w in runs}):
        pts = [(r["items"], r["seconds"]) for r in figures["scaling_runs"].values() if r["workers"] == workers]
        if len(pts) >= 2:
            x, y = np.array(pts, dtype=float).T
            slope, fixed = np.polyfit(x, y, 1)
            figures[f"scaling_fit_{workers}w"] = {"fixed_s": round(float(fixed), 1), "items_per_s": round(1 / slope, 2)}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
