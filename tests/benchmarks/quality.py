"""Feature quality benchmark: which method groups ModelNet10 best without labels?

Not collected by pytest. Run:

    .venv/bin/python tests/benchmarks/quality.py --data ../shared/data/modelnet10/voxels32.npz

The grids are imported into a fresh local voxel store (all-empty grids are refused there, as binvox failures
are). Every method then trains with its CPU budget below on the train split, through the same run engine the
CLI and the flows use (checkpoint after every step), embeds the test split, and the test embedding is
scored the same way for every method: PCA to 64 dimensions when wider, faiss k-means with k = 10 (5 seeded
restarts), then NMI / ARI / Hungarian accuracy against the test labels. Labels never reach an unsupervised
method: they enter only the scoring (and the classifiers' and supervised SoftTriple's training).
``random_cnn`` is DeepCluster's backbone with no training: the random-features baseline.

With ``--seeds N`` every unsupervised row trains N runs (seeds ``--seed`` .. ``--seed``+N-1; supervised rows
keep one), ``--workers W`` of them side by side (processes sharing the cores), each embedding clustered
with k-means seeded by the benchmark's seed + its seed index; a row then also carries ``seeds``,
``nmi_mean`` / ``nmi_min`` / ``nmi_max`` (the same for ``ari``, ``acc``, ``spectral_nmi``, ``train_seconds``)
and ``per_seed``, its other keys being its first seed's. The final line also gives ``wall_seconds`` (the
whole benchmark), ``best_unsupervised`` (by mean NMI) and ``within_noise_of_best`` (the unsupervised rows
whose NMI range over seeds overlaps the best one's).

Prints a line per method as it finishes, then one final JSON line: per method ``nmi``, ``ari``, ``acc``,
``spectral_nmi`` (spectral clustering on the k-NN graph of the same features, k = 10, scored the same way),
``train_seconds`` (wall time of all training steps), ``knn20_agree`` (the share of each train shape's 20
nearest neighbours in the embedding that share its class: SCAN's diagnostic, labels used for it only) and,
for classifiers, ``test_accuracy``; for ``scan`` also ``own_nmi`` (its heads' arg-max) and ``pretext_nmi``
(k-means NMI of the pretext run it started from, scored the same way; null when it trained its own) and
``pretext_train_seconds`` (that run's training, not in the row's ``train_seconds``). The ``scan`` rows start
from the table's ``simclr`` row (trained first when needed) unless given another finished pretext run:
``--set 'scan.pretext_run="<store>/runs/..."'`` (or ``"@<row>"``: that row's run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402,F401  (before torch)
import numpy as np  # noqa: E402

from lib.compare.rows import PRESETS, MethodEntry, is_supervised, run_url_for  # noqa: E402
from lib.evaluation.metrics import nmi  # noqa: E402
from lib.evaluation.neighbours import neighbour_agreement  # noqa: E402
from lib.evaluation.score import ScoreConfig, score_embedding  # noqa: E402
from lib.features.registry import METHODS  # noqa: E402
from lib.features.runs import Region, RunRequest, Session, create_run, read_embedding, train_run  # noqa: E402
from lib.voxels.store import VoxelStore  # noqa: E402
from tests.support import benchmark_store  # noqa: E402

# The CPU budget of each method on 2 cores: lib.compare's "quality" preset (the method's defaults, epochs:
# voxnet 30, autoencoder 15, deepcluster 30, triplet 8, softtriple 8, plus the options written there).
BUDGETS: dict[str, tuple[str, dict[str, Any]]] = {e.name: (e.method, dict(e.options)) for e in PRESETS["quality"]}
# Here the scan rows start from the table's simclr row ("@simclr": that row's run) instead of a pretext of
# their own, so that pretext_nmi scores what they began with; scan_ae_neighbours mines its neighbours in the
# autoencoder row's embedding (the best top-20 neighbour agreement of the unsupervised rows).
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    **BUDGETS,
    "scan": ("scan", {**BUDGETS["scan"][1], "pretext_run": "@simclr"}),
    "scan_selflabel": ("scan", {**BUDGETS["scan_selflabel"][1], "pretext_run": "@simclr"}),
    "scan_ae_neighbours": (
        "scan",
        {**BUDGETS["scan_selflabel"][1], "pretext_run": "@simclr", "neighbours_run": "@autoencoder"},
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="npz with X_train, y_train, X_test, y_test")
    ap.add_argument("--methods", default=",".join(ROWS), help="comma-separated rows of the table")
    ap.add_argument("--set", action="append", default=[], help="override: row.option=value (JSON value)")
    ap.add_argument("--work", default=None, help="folder for the store (default: a temporary one)")
    ap.add_argument("--store", default=None, help="an existing store of the same data: its finished runs are reused")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="training runs per unsupervised row (seed, seed+1, ...)")
    ap.add_argument("--workers", type=int, default=1, help="trainings side by side (processes sharing the cores)")
    args = ap.parse_args()
    t_start = time.perf_counter()

    store_url = benchmark_store(args.data, args.store, args.work, "quality")
    store = VoxelStore.open(store_url)
    labels_by_row = {r.row: r.label for r in store.items()}

    overrides: dict[str, dict[str, Any]] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        row, _, option = key.partition(".")
        overrides.setdefault(row, {})[option] = json.loads(value)

    def embedded(session: Session, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
        """A run's embedding of a split (kept when already made by the same checkpoint) and its labels."""
        emb = session.embed(Region(split=split), name=split, reuse=True)
        x, rows, _ = read_embedding(emb.run_url, emb.name)
        return x, np.array([labels_by_row[int(r)] for r in rows], dtype=np.int64)

    waves: dict[str, tuple[int, str, RunRequest]] = {}  # run URL -> (wave, row, request): dependencies first

    def request(row: str, seed: int) -> tuple[MethodEntry, RunRequest, int]:
        """A row's run for ``seed``: its budget and the overrides; an option ``"@<row>"`` (``pretext_run``,
        ``neighbours_run``) names that row's run of the same seed, trained in an earlier wave. Returns the
        entry, the request and its wave."""
        method, options = ROWS[row]
        assert method in METHODS
        options = {**options, **overrides.get(row, {}), "seed": seed}
        wave = 0
        for key, value in options.items():
            if isinstance(value, str) and value.startswith("@"):
                _, dep, dep_wave = request(value[1:], seed)
                options[key] = dep.run_url
                wave = max(wave, dep_wave + 1)
        entry = MethodEntry(name=row, method=method, options=options)
        # Runs live where `voxclust compare --preset quality` looks for them, so its report reuses them.
        url = run_url_for(store_url, entry)
        run = RunRequest(
            method=method, data_url=store_url, options=options, region=Region(split="train"), run_url=url, device="auto"
        )
        waves.setdefault(url, (wave, row, run))
        return entry, run, wave

    def seeds_of(row: str) -> list[int]:
        method, options = ROWS[row]
        supervised = is_supervised(MethodEntry(name=row, method=method, options={**options, **overrides.get(row, {})}))
        return [args.seed + i for i in range(1 if supervised else args.seeds)]

    def score(row: str, entry: MethodEntry, run: RunRequest, index: int) -> dict[str, Any]:
        """One run's scores: k-means (the table's ``nmi``, seeded with the benchmark's seed + ``index``) and
        spectral clustering on the test embedding, SCAN's neighbour diagnostic on the train one."""
        t0 = time.perf_counter()
        session = Session(str(run.run_url))
        method, options = entry.method, entry.options
        x, y = embedded(session, "test")
        config = ScoreConfig(k=10, pca_dim=64, seed=args.seed + index, restarts=5, elbow_k_max=None, pic=False)
        scored = score_embedding(x, y, config=config)
        scores = scored.metrics["all"]
        # SCAN's diagnostic, on the train split: the share of each shape's 20 nearest neighbours of its class
        knn20 = neighbour_agreement(*embedded(session, "train"), 20)
        metrics = session.finish()
        out: dict[str, Any] = {
            "method": method,
            "nmi": round(scores["nmi"], 4),
            "ari": round(scores["ari"], 4),
            "acc": round(scores["acc"], 4),
            "spectral_nmi": round(scored.spectral["nmi"], 4) if scored.spectral else None,
            "train_seconds": round(float(metrics.get("train_seconds", 0.0)), 1),
            "score_seconds": round(time.perf_counter() - t0, 1),
            "knn20_agree": round(knn20, 4),
            "dim": int(x.shape[1]),
            "epochs": session.ref.epochs,
            "supervised": is_supervised(entry),
        }
        for key in ("test_accuracy", "test_accuracy_single_view", "reconstruction_iou"):
            if key in metrics:
                out[key] = round(float(metrics[key]), 4)
        if METHODS[method].assigns:  # SCAN: its own partition, and the pretext run it started from
            out["own_nmi"] = round(nmi(y, x.argmax(axis=1)), 4)
            out["pretext_nmi"] = None  # a pretext trained inside the run is fine-tuned away: not scored
            if options.get("pretext_run"):
                pretext = Session(options["pretext_run"])
                xp, yp = embedded(pretext, "test")
                out["pretext_nmi"] = round(score_embedding(xp, yp, config=config).metrics["all"]["nmi"], 4)
                out["pretext_train_seconds"] = round(float(pretext.finish().get("train_seconds", 0.0)), 1)
        if session.history and "nmi_labels" in session.history[-1]:
            out["nmi_labels_last_epoch_train"] = round(session.history[-1]["nmi_labels"], 4)
        return out

    rows = args.methods.split(",")
    plan = {row: [request(row, seed)[:2] for seed in seeds_of(row)] for row in rows}
    train_all(sorted(waves.values(), key=lambda w: w[0]), args.workers)

    results: dict[str, dict[str, Any]] = {}
    for row in rows:
        per_seed = [score(row, entry, run, i) for i, (entry, run) in enumerate(plan[row])]
        out = per_seed[0]
        if len(per_seed) > 1:
            out["seeds"] = [run.options["seed"] for _, run in plan[row]]
            for key in ("nmi", "ari", "acc", "spectral_nmi", "train_seconds"):
                values = [r[key] for r in per_seed if r.get(key) is not None]
                out[f"{key}_mean"] = round(float(np.mean(values)), 4) if values else None
                out[f"{key}_min"] = round(float(min(values)), 4) if values else None
                out[f"{key}_max"] = round(float(max(values)), 4) if values else None
            out["per_seed"] = [{k: r[k] for k in ("nmi", "ari", "acc", "train_seconds")} for r in per_seed]
        results[row] = out
        print("RESULT", row, json.dumps(out), file=sys.stderr, flush=True)

    unsup = {k: v for k, v in results.items() if not v["supervised"]}
    best = max(unsup, key=lambda k: unsup[k].get("nmi_mean", unsup[k]["nmi"])) if unsup else None
    summary = {
        "data": args.data,
        "n_train": int(sum(r.split == "train" for r in store.items())),
        "n_test": int(sum(r.split == "test" for r in store.items())),
        "eval": "test split, PCA 64 when wider, faiss k-means k=10 x5 restarts (seed + the run's seed index)",
        "seeds": args.seeds,
        "workers": args.workers,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "best_unsupervised": best,
        "within_noise_of_best": within_noise(unsup, best),
        "methods": results,
    }
    print(json.dumps(summary))


def within_noise(rows: dict[str, dict[str, Any]], best: str | None) -> list[str]:
    """The rows whose NMI range over seeds (min to max; one seed: its NMI) overlaps the best row's."""
    if best is None:
        return []

    def span(r: dict[str, Any]) -> tuple[float, float]:
        return r.get("nmi_min", r["nmi"]), r.get("nmi_max", r["nmi"])

    lo, hi = span(rows[best])
    return [name for name, r in rows.items() if name != best and span(r)[1] >= lo and span(r)[0] <= hi]


def train_all(waves: list[tuple[int, str, RunRequest]], workers: int) -> None:
    """Train every run (resuming finished ones is a no-op), wave after wave; ``workers`` > 1 trains that many
    side by side in processes, each with its share of the cores."""
    if workers <= 1:
        for _, row, run in waves:
            _train(row, run, None)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        for wave in sorted({w for w, _, _ in waves}):
            jobs = [pool.submit(_train, row, run, threads) for w, row, run in waves if w == wave]
            for job in jobs:
                job.result()


def _train(row: str, run: RunRequest, threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    seed = run.options.get("seed")
    train_run(create_run(run), on_epoch=lambda e: print(row, f"seed {seed}", _brief(e), file=sys.stderr, flush=True))


def _brief(entry: dict[str, Any]) -> str:
    keep = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items() if not isinstance(v, list | dict)}
    return json.dumps(keep)


if __name__ == "__main__":
    main()
