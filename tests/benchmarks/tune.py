"""Tuning benchmark: VoxNet's options searched on ModelNet10 within a stated CPU budget.

Not collected by pytest. Run:

    .venv/bin/python tests/benchmarks/tune.py --data ../shared/data/modelnet10/voxels32.npz

The grids are imported into a fresh local store (or ``--store`` reuses one, and its study resumes). Then
``voxclust tune``'s flow searches VoxNet's default space (lr, batch size, weight decay, width of the feature
layer) with TPE and median pruning: ``--trials`` trials (12) of ``--epochs`` epochs (10) each, ``--workers``
(2) side by side on a Dask LocalCluster, one CPU thread each. The objective is the accuracy on the
stratified validation split (10%) of the official train split; the official test split is scored once, for
the best trial, at the end. The study is SQLite beside the store. ``--final-epochs N`` trains the best
options once more for N epochs (the trials' short budget is for ranking options) and scores that run on the
test split instead (``wall_s`` then includes it).

One final JSON line with exactly ``best_params``, ``val_accuracy`` (the best trial's), ``test_accuracy``
(the best trial's run on the official test split, with VoxNet's 4-turn vote) and ``wall_s`` (the whole
search, import excluded). The trials table goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support import benchmark_store, offline_prefect  # noqa: E402

offline_prefect()

import faiss  # noqa: E402,F401  (before torch)


def final_run(spec: Any, options: dict[str, Any], epochs: int) -> dict[str, float]:
    """The best options trained for ``epochs`` on the same split as the trials (a run of the run engine beside
    the study's, resumable), scored once on the test split."""
    from lib.features.runs import Region, RunRequest, create_run, train_run
    from lib.tune.objective import test_scores

    request = RunRequest(
        method=spec.method,
        data_url=spec.data_url,
        options={**options, "epochs": epochs, "seed": spec.seed},
        region=Region(split="auto"),
        run_url=f"{spec.out_url.rstrip('/')}/final-e{epochs}",
        device=spec.device,
    )
    t0 = time.perf_counter()
    session = train_run(create_run(request))
    scores = test_scores(session, spec.k, spec.seed)
    last = session.history[-1] if session.history else {}
    print(
        f"final run {request.run_url}: {epochs} epochs, val_accuracy {last.get('val_accuracy')}, "
        f"test {scores}, {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="npz with X_train, y_train, X_test, y_test")
    ap.add_argument("--store", default=None, help="an existing store of the same data (its study resumes)")
    ap.add_argument("--work", default=None, help="folder for a new store (default: a temporary one)")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pruner", default="median")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--final-epochs",
        type=int,
        default=0,
        help="train the best options again for this many epochs and score that run on the test split instead",
    )
    args = ap.parse_args()

    from flows.runners import prefect_api
    from flows.tune import run_tune
    from lib.tune import make_spec

    store = benchmark_store(args.data, args.store, args.work, "tune")
    spec = make_spec(
        "voxnet", store, trials=args.trials, fixed={"epochs": args.epochs}, pruner=args.pruner, seed=args.seed
    )
    t0 = time.perf_counter()
    with prefect_api():
        summary = run_tune(spec, args.workers)
    test = summary["test"]
    if args.final_epochs and summary["best"]:
        test = final_run(spec, summary["best"]["options"], args.final_epochs)
    wall = time.perf_counter() - t0
    for row in summary["trials"]:
        print(json.dumps(row), file=sys.stderr)
    print("counts", json.dumps(summary["counts"]), "report", summary["html_url"], file=sys.stderr)
    best = summary["best"] or {}
    print(
        json.dumps(
            {
                "best_params": best.get("params"),
                "val_accuracy": None if not best else round(float(best["value"]), 4),
                "test_accuracy": round(float(test["test_accuracy"]), 4) if "test_accuracy" in test else None,
                "wall_s": round(wall, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
