"""End-to-end benchmark: the whole seven-method comparison on ModelNet10, wall time on this machine.

Not collected by pytest. Run:

    .venv/bin/python tests/benchmarks/e2e.py --data ../shared/data/modelnet10/voxels32.npz

What is timed, from an empty S3 store (moto's server, 127.0.0.1) to a published report:

1. ``import``: the npz's 4,899 grids into a new store (the 34 all-empty grids are refused as failed items,
   leaving the 4,865 non-empty ones: 3,964 train, 901 test);
2. ``compare``: the ``compare-methods`` Prefect flow over the seven feature modules at their CPU budget (the
   ``quality`` preset's rows ``raw voxnet vrn autoencoder deepcluster triplet softtriple``): every method
   trains on the train split, embeds every item, and is clustered, scored on the test split and drawn (PCA
   and t-SNE maps, elbow, PIC, contingency, thumbnails); then the HTML report and the artifacts.

With ``--train-workers N`` (default: the core count) trainings run N at a time as tasks on a Dask
LocalCluster of N single-threaded workers, each with its share of the cores, longest first. The Prefect
API (a temporary server) is started before timing, as a deployment would have one.

``--quick`` (one epoch per method, 12 grids per class and split) is only a smoke test of the script.

Prints progress to stderr and one final JSON line: ``e2e_wall_s`` (import + compare), the two parts, the
rows with their NMI / ARI / accuracy on the test split and training seconds, and the budget used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support import S3Server, offline_prefect  # noqa: E402

offline_prefect()

import numpy as np  # noqa: E402

from lib.compare.rows import PRESETS, CompareConfig, MethodEntry  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "modelnet10" / "voxels32.npz"
# The seven feature modules, longest training first so the side-by-side schedule ends evenly (the order in
# which tasks are queued; the report lists rows in this order too).
SEVEN = ["voxnet", "softtriple", "deepcluster", "triplet", "autoencoder", "vrn", "raw"]


def entries(quick: bool) -> list[MethodEntry]:
    by_name = {e.name: e for e in PRESETS["quality"]}
    rows = [by_name[n] for n in SEVEN]
    if quick:
        brief = [{**e.options, "epochs": 1, **({"k": 20} if e.method == "deepcluster" else {})} for e in rows]
        rows = [
            e if e.method == "raw" else e.model_copy(update={"options": o}) for e, o in zip(rows, brief, strict=True)
        ]
    return rows


def small_npz(path: Path, out: Path, per_class: int) -> Path:
    """A few grids per class and split (smoke tests of this script only)."""
    z = np.load(path)
    parts: dict[str, Any] = {}
    for split in ("train", "test"):
        x, y = z[f"X_{split}"], z[f"y_{split}"]
        keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
        parts[f"X_{split}"], parts[f"y_{split}"] = x[keep], y[keep]
    for key in z.files:
        if key not in parts:
            parts[key] = z[key]
    np.savez_compressed(out, **parts)
    return out


def task_schedule() -> dict[str, list[float]]:
    """Start and end of every task run of the comparison, in seconds after the first task started (from
    the Prefect API): which trainings ran side by side, and how long each evaluation took."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def read() -> list[Any]:
        async with get_client() as client:
            return await client.read_task_runs(limit=200)

    runs = [r for r in asyncio.run(read()) if r.start_time and r.end_time]
    t0 = min(r.start_time for r in runs)
    return {
        r.name: [round((r.start_time - t0).total_seconds(), 1), round((r.end_time - t0).total_seconds(), 1)]
        for r in sorted(runs, key=lambda r: r.start_time)
    }


def run(data: Path, train_workers: int, quick: bool = False) -> dict[str, Any]:
    from flows.compare import run_compare
    from flows.runners import prefect_api
    from lib.voxels.importer import import_npz

    server = S3Server()
    os.environ.update(server.env())
    try:
        bucket = server.new_bucket()
        store = f"s3://{bucket}/mn10"
        if quick:
            data = small_npz(data, Path(tempfile.mkdtemp(prefix="voxclust-e2e-")) / "small.npz", 12)
        rows = entries(quick)
        with prefect_api():
            t0 = time.perf_counter()
            imported = import_npz(data, store)
            t1 = time.perf_counter()
            print(f"imported {imported} in {t1 - t0:.1f} s", file=sys.stderr, flush=True)
            result = run_compare(store, rows, CompareConfig(), "cpu", train_workers)
            t2 = time.perf_counter()
            schedule = task_schedule()
    finally:
        server.stop()
    methods: dict[str, Any] = {}
    for rec in result["rows"]:
        methods[rec["name"]] = {
            k: rec[k] for k in ("status", "nmi", "ari", "acc", "train_seconds", "test_accuracy", "error") if k in rec
        }
    return {
        "e2e_wall_s": round(t2 - t0, 1),
        "e2e_import_s": round(t1 - t0, 1),
        "e2e_compare_s": round(t2 - t1, 1),
        "e2e_items": imported,
        "e2e_train_workers": train_workers,
        "e2e_budget": {e.name: e.options for e in rows},
        "e2e_rows": methods,
        "e2e_schedule": schedule,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="npz with X_train, y_train, X_test, y_test")
    ap.add_argument("--train-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, 12 grids per class and split")
    args = ap.parse_args()
    print(json.dumps(run(args.data, args.train_workers, args.quick)))


if __name__ == "__main__":
    main()
