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
import sys
import tempfile
import time
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
from lib.voxels.importer import import_npz  # noqa: E402
from lib.voxels.store import VoxelStore  # noqa: E402

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
    args = ap.parse_args()

    if args.store:
        store_url = args.store
    else:
        work = Path(args.work or tempfile.mkdtemp(prefix="voxclust-quality-"))
        store_url = str(work / f"store-{time.strftime('%H%M%S')}")
        import_npz(args.data, store_url)
    print("store", store_url, file=sys.stderr, flush=True)
    store = VoxelStore.open(store_url)
    labels_by_row = {r["row"]: r["label"] for r in store.records()}

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

    def request(row: str) -> tuple[MethodEntry, RunRequest]:
        """A row's run: its budget and the overrides; an option ``"@<row>"`` (``pretext_run``,
        ``neighbours_run``) names that row's run in this store, trained first when it is not finished yet."""
        method, options = ROWS[row]
        assert method in METHODS
        options = {"seed": args.seed, **options, **overrides.get(row, {})}
        for key, value in options.items():
            if isinstance(value, str) and value.startswith("@"):
                options[key] = train_run(create_run(request(value[1:])[1])).ref.run_url
        entry = MethodEntry(name=row, method=method, options=options)
        # Runs live where `voxclust compare --preset quality` looks for them, so its report reuses them.
        run = RunRequest(
            method=method,
            data_url=store_url,
            options=options,
            region=Region(split="train"),
            run_url=run_url_for(store_url, entry),
            device="auto",
        )
        return entry, run

    results: dict[str, dict[str, Any]] = {}
    for row in args.methods.split(","):
        t0 = time.perf_counter()
        entry, run = request(row)
        method, options = entry.method, entry.options
        ref = create_run(run)
        session = train_run(ref, on_epoch=lambda e, row=row: print(row, _brief(e), file=sys.stderr, flush=True))
        x, y = embedded(session, "test")
        # k-means (the table's ``nmi``) and spectral clustering on the k-NN graph of the same features
        config = ScoreConfig(k=10, pca_dim=64, seed=args.seed, restarts=5, elbow_k_max=None, pic=False)
        scored = score_embedding(x, y, config=config)
        scores = scored.metrics["all"]
        # SCAN's diagnostic, on the train split: the share of each shape's 20 nearest neighbours of its class
        knn20 = neighbour_agreement(*embedded(session, "train"), 20)
        metrics = session.ckpt["metrics"]
        out: dict[str, Any] = {
            "method": method,
            "nmi": round(scores["nmi"], 4),
            "ari": round(scores["ari"], 4),
            "acc": round(scores["acc"], 4),
            "spectral_nmi": round(scored.spectral["nmi"], 4) if scored.spectral else None,
            "train_seconds": round(float(metrics.get("train_seconds", 0.0)), 1),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "knn20_agree": round(knn20, 4),
            "dim": int(x.shape[1]),
            "epochs": ref.epochs,
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
                out["pretext_train_seconds"] = round(float(pretext.ckpt["metrics"].get("train_seconds", 0.0)), 1)
        if session.history and "nmi_labels" in session.history[-1]:
            out["nmi_labels_last_epoch_train"] = round(session.history[-1]["nmi_labels"], 4)
        results[row] = out
        print("RESULT", row, json.dumps(out), file=sys.stderr, flush=True)

    unsup = {k: v for k, v in results.items() if not v["supervised"]}
    best = max(unsup, key=lambda k: unsup[k]["nmi"]) if unsup else None
    summary = {
        "data": args.data,
        "n_train": int(sum(r["split"] == "train" for r in store.records())),
        "n_test": int(sum(r["split"] == "test" for r in store.records())),
        "eval": "test split, PCA 64 when wider, faiss k-means k=10 x5 restarts",
        "best_unsupervised": best,
        "methods": results,
    }
    print(json.dumps(summary))


def _brief(entry: dict[str, Any]) -> str:
    keep = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items() if not isinstance(v, list | dict)}
    return json.dumps(keep)


if __name__ == "__main__":
    main()
