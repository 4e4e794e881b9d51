"""k-means benchmark: the project's clustering (faiss) vs scikit-learn's KMeans on ModelNet10 test embeddings.

Not collected by pytest. Run:

    .venv/bin/python tests/benchmarks/kmeans.py [--embeddings more.npz] [--seeds 10]

Embeddings of the 901 non-empty test grids by two methods that need no training time here: ``raw`` (the
occupancy grid itself, 32,768-d) and ``random_cnn`` (DeepCluster's network with its seeded initial
weights, the comparison's random-features baseline). ``--embeddings`` adds arrays ``<name>`` (N, D) with
labels ``y`` from a file, e.g. the test embeddings of trained runs. Every embedding is reduced as the
comparison does (PCA to 64 when wider; not timed, shared by both sides); then, for each seed, with k = 10
and 5 restarts on both sides:

* project: ``lib.evaluation.kmeans.kmeans`` (faiss, k-means++ seeding, 20 iterations, best of 5 by exact inertia);
* scikit-learn: ``KMeans(n_clusters=10, init="k-means++", n_init=5, random_state=seed)`` (lloyd, its
  default tolerance and up to 300 iterations).

Both use every core (faiss and scikit-learn's OpenMP threads). NMI is against the test labels (which take no
part in clustering). Final JSON line: per embedding the median seconds per clustering, the mean NMI of each
side (and its spread over seeds), the ratio of their mean inertias, their speed ratio, and
``kmeans_min_speedup`` / ``kmeans_nmi_not_worse``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402,F401  (before torch)
import numpy as np  # noqa: E402

from lib.evaluation.kmeans import kmeans  # noqa: E402
from lib.evaluation.metrics import nmi  # noqa: E402
from lib.evaluation.pca import pca  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "modelnet10" / "voxels32.npz"


def test_embeddings(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from lib.features.base import DataInfo
    from lib.features.deepcluster import DeepCluster, DeepClusterConfig

    z = np.load(path)
    x, y = z["X_test"].astype(bool), z["y_test"].astype(np.int64)
    keep = x.reshape(len(x), -1).any(axis=1)
    x, y = x[keep], y[keep]
    dc = DeepCluster(DeepClusterConfig(epochs=0), DataInfo(32, len(x), 10), "cpu")
    return {"raw": x.reshape(len(x), -1).astype(np.float32), "random_cnn": dc.embed(x)}, y


def sklearn_kmeans(x: np.ndarray, k: int, restarts: int, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, init="k-means++", n_init=restarts, random_state=seed).fit(x)
    return km.labels_, float(km.inertia_)


def project_kmeans(x: np.ndarray, k: int, restarts: int, seed: int) -> tuple[np.ndarray, float]:
    res = kmeans(x, k, seed=seed, restarts=restarts)
    return res.labels, res.inertia


def bench(x: np.ndarray, y: np.ndarray, k: int, restarts: int, seeds: int) -> dict[str, Any]:
    sides = {"project": project_kmeans, "sklearn": sklearn_kmeans}
    for fn in sides.values():  # warm-up (imports, thread pools)
        fn(x, k, restarts, 0)
    times: dict[str, list[float]] = {s: [] for s in sides}
    nmis: dict[str, list[float]] = {s: [] for s in sides}
    inertias: dict[str, list[float]] = {s: [] for s in sides}
    for seed in range(seeds):
        for side in list(sides) if seed % 2 == 0 else list(reversed(sides)):
            t = time.perf_counter()
            labels, inertia = sides[side](x, k, restarts, seed * 100)
            times[side].append(time.perf_counter() - t)
            nmis[side].append(nmi(y, labels))
            inertias[side].append(inertia)
    tp, ts = statistics.median(times["project"]), statistics.median(times["sklearn"])
    return {
        "project_s": round(tp, 5),
        "sklearn_s": round(ts, 5),
        "speedup": round(ts / tp, 2),
        "project_nmi": round(float(np.mean(nmis["project"])), 4),
        "sklearn_nmi": round(float(np.mean(nmis["sklearn"])), 4),
        "project_nmi_sd": round(float(np.std(nmis["project"])), 4),
        "sklearn_nmi_sd": round(float(np.std(nmis["sklearn"])), 4),
        "project_inertia_vs_sklearn": round(float(np.mean(inertias["project"]) / np.mean(inertias["sklearn"])), 5),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--embeddings", type=Path, default=None, help="npz with arrays <name> (N, D) and y (N,)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--restarts", type=int, default=5)
    args = ap.parse_args()

    embs, y = test_embeddings(args.data)
    labels = {name: y for name in embs}
    if args.embeddings:
        with np.load(args.embeddings) as z:
            for name in z.files:
                if name != "y":
                    embs[name], labels[name] = z[name].astype(np.float32), z["y"].astype(np.int64)
    figures: dict[str, Any] = {"kmeans_rows": len(y), "kmeans_k": args.k, "kmeans_restarts": args.restarts}
    for name, x in embs.items():
        xr = pca(x, 64) if x.shape[1] > 64 else x
        res = bench(np.ascontiguousarray(xr, dtype=np.float32), labels[name], args.k, args.restarts, args.seeds)
        print(name, json.dumps(res), file=sys.stderr, flush=True)
        figures[f"kmeans_{name}"] = res
    results = [v for k, v in figures.items() if isinstance(v, dict)]
    figures["kmeans_min_speedup"] = min(r["speedup"] for r in results)
    figures["kmeans_nmi_not_worse"] = all(r["project_nmi"] >= r["sklearn_nmi"] for r in results)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
