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

``--sizes`` instead times the cases where the choice matters (:func:`size_cases`, also run by scale.py):
``901x64`` (the case above: random-CNN test embedding, PCA 64, k = 10, 5 restarts), ``3964x256_k100``
(DeepCluster's re-clustering: its network's features of the 3,964 non-empty train grids, PCA-whitened to
256 and L2-normalised as it does, k = 100, 1 restart as it runs) and ``100000x128_k1000`` (synthetic: 1,000
Gaussian clusters in 128-d, k = 1,000, 1 restart). Final JSON line ``kmeans_speedup`` (scikit-learn's
seconds over faiss's, the median over ``--seeds``) with the mean inertia ratio and NMI of both sides per case.
``--device cuda`` trains the faiss side on the GPU (faiss-gpu; fails where faiss sees none).
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


def nonempty_grids(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty grids of ``split`` (train, test) and their labels."""
    z = np.load(path)
    x, y = z[f"X_{split}"].astype(bool), z[f"y_{split}"].astype(np.int64)
    keep = x.reshape(len(x), -1).any(axis=1)
    return x[keep], y[keep]


def random_cnn(x: np.ndarray) -> np.ndarray:
    """Features of DeepCluster's network with its seeded initial weights (the random-features baseline)."""
    from lib.features.base import DataInfo
    from lib.features.deepcluster import DeepCluster, DeepClusterConfig

    return DeepCluster(DeepClusterConfig(epochs=0), DataInfo(32, len(x), 10), "cpu").embed(x)


def test_embeddings(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    x, y = nonempty_grids(path, "test")
    return {"raw": x.reshape(len(x), -1).astype(np.float32), "random_cnn": random_cnn(x)}, y


def sklearn_kmeans(x: np.ndarray, k: int, restarts: int, seed: int) -> tuple[np.ndarray, float]:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, init="k-means++", n_init=restarts, random_state=seed).fit(x)
    return km.labels_, float(km.inertia_)


GPU = False  # --device cuda: the faiss side on the GPU


def project_kmeans(x: np.ndarray, k: int, restarts: int, seed: int) -> tuple[np.ndarray, float]:
    res = kmeans(x, k, seed=seed, restarts=restarts, gpu=GPU)
    return res.labels, res.inertia


def bench(x: np.ndarray, y: np.ndarray, k: int, restarts: int, seeds: int, warm: bool = True) -> dict[str, Any]:
    sides = {"project": project_kmeans, "sklearn": sklearn_kmeans}
    for fn in sides.values() if warm else ():  # warm-up (imports, thread pools)
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


def deepcluster_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """What DeepCluster clusters at its first re-clustering: its network's features of the non-empty train
    grids, PCA-whitened to 256 and L2-normalised."""
    from lib.evaluation.pca import fit_pca, l2_normalize

    x, y = nonempty_grids(path, "train")
    f = random_cnn(x)
    return l2_normalize(fit_pca(f, 256, whiten=True).transform(f)), y


def synthetic(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points around ``k`` centres in ``d`` dimensions; centres and noise both unit normal, so
    neighbouring clusters overlap as those of real embeddings do."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    return centres[y] + rng.normal(0, 1, (n, d)).astype(np.float32), y


def size_cases(data: Path, seeds: int = 3) -> dict[str, dict[str, Any]]:
    """faiss against scikit-learn at the sizes of :func:`main`'s ``--sizes`` (same k, restarts and seeds)."""
    embs, y = test_embeddings(data)
    cases = {"901x64": (pca(embs["random_cnn"], 64), y, 10, 5)}
    xd, yd = deepcluster_features(data)
    cases["3964x256_k100"] = (xd, yd, 100, 1)  # 3,964 rows with ModelNet10's train split
    xs, ys = synthetic(100_000, 128, 1000)
    cases["100000x128_k1000"] = (xs, ys, 1000, 1)
    out: dict[str, dict[str, Any]] = {}
    for name, (x, labels, k, restarts) in cases.items():
        x = np.ascontiguousarray(x, dtype=np.float32)
        out[name] = {"rows": len(x), **bench(x, labels, k, restarts, seeds, warm=len(x) < 10_000)}
        print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--embeddings", type=Path, default=None, help="npz with arrays <name> (N, D) and y (N,)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--sizes", action="store_true", help="time the size cases instead (see above)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where faiss trains")
    args = ap.parse_args()
    global GPU
    GPU = args.device == "cuda"
    if args.sizes:
        cases = size_cases(args.data, min(args.seeds, 3))
        print(json.dumps({"kmeans_speedup": {n: c["speedup"] for n, c in cases.items()}, "cases": cases}))
        return

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
