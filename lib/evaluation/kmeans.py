"""k-means with faiss (best of seeded restarts, iterations never subsampled, CPU or GPU) and the elbow sweep.

k-means is faiss (``faiss.Kmeans``), one faiss run per restart with seed ``seed + r`` (faiss's own ``nredo``
would hide the per-restart objective), keeping the restart with the lowest inertia.

* faiss silently subsamples the training set to ``max_points_per_centroid * k`` rows (256 * k by default).
  We **never subsample**: ``max_points_per_centroid`` is set to ``ceil(N / k)`` so that every row takes
  part in every iteration. ``min_points_per_centroid`` is set to 1 to silence faiss's "please provide at
  least ..." warning on small inputs.
* Initialisation ``"kmeans++"`` is scikit-learn's greedy k-means++ (``sklearn.cluster.kmeans_plusplus``, as
  its ``KMeans`` seeds: each centre the best of 2 + ln k candidates drawn by D^2), seeded with the restart's
  seed and handed to ``train(init_centroids=...)``. It runs on float64 rows (on float32 rows scikit-learn
  computes every distance in float64 chunk by chunk: 2.2 s against 9.3 s for 20,000 x 128, k = 1,000), and
  on all rows up to ``max(SEED_ROWS_PER_CENTROID * k, SEED_ROWS_MIN)`` of them, else on a uniform sample of
  that many rows drawn with the restart's seed (greedy seeding reads every row once per centre: 11-13 s on
  all 100,000 x 128 rows for k = 1,000, 4-8 s on 40,000); the iterations always use every row.
  Measured at 100,000 x 128, k = 1,000 (synthetic, 20 iterations; faiss converges in about 12), mean of 3
  seeds: seeding on 20,000 rows ends at 1.008x scikit-learn's inertia, on 40,000 at 1.006x, on all rows
  at 1.002x (per seed 0.9998-1.0066: the seeds' spread is larger than these gaps), at 4.8, 6.6 and 14.0 s
  against scikit-learn's 43 s; fewer candidates per centre than scikit-learn's 2 + ln k save little time
  and cost inertia (3 instead of 8: 1.05x). faiss's own k-means++ (``"faiss-kmeans++"``, plain, not greedy)
  ends at 1.10x whatever the iterations.
  ``"random"`` is faiss's default: k distinct rows drawn at random.
* faiss re-seeds empty clusters by splitting large ones during training; ``n_empty`` is nevertheless counted
  on the final assignment.
* Labels come from a nearest-centroid search (``faiss.IndexFlatL2``) against the *final* centroids, and the
  inertia is recomputed exactly (float64) from that assignment. The objective faiss records in
  ``iteration_stats`` belongs to the assignment made *before* the last centroid update, so it is only used
  for the iteration count. faiss stops early once an iteration no longer changes the objective, so
  ``iterations`` can be below ``niter``.
* ``spherical=True`` keeps centroids on the unit sphere (faiss's spherical k-means); pass ``l2_normalize``-d
  rows, as the inertia is still the squared Euclidean distance to the (unit) centroid, which on unit rows
  is 2 - 2 cos.
* Results are deterministic for the same input, parameters and seed on the same machine and thread count
  (faiss's threading is left at its default).
* **GPU**: with ``gpu=None`` (the default) faiss trains on the GPU when it sees CUDA GPUs
  (``faiss.get_num_gpus() > 0``, looked up with ``hasattr`` so that builds without it count as CPU-only; 0
  with faiss-cpu), passing ``gpu=True`` to ``faiss.Kmeans``, which copies its ``IndexFlat`` to all visible
  GPUs. ``gpu=False`` forces the CPU; ``gpu=True`` without a visible GPU is a ``ClusterError`` (faiss itself
  would quietly fall back to the CPU). Only training moves: the exact re-assignment and the inertia stay on
  the CPU. ``KMeansResult.device`` says ``"gpu"`` or ``"cpu"``. GPU runs are not promised to be
  bit-identical to CPU runs.

**Elbow**: ``elbow`` returns the raw (k, inertia) curve. ``suggest_k`` picks its knee with the Kneedle method
of the ``kneed`` library (``KneeLocator(curve="convex", direction="decreasing", S=1, interp_method="interp1d",
online=True)``): points sorted by k, no smoothing. With ``online=True`` a knee found later along the curve
replaces an earlier one, so the last knee Kneedle finds is returned (with ``online=False`` it would be the
first; on the blob curves tried, with a single clear bend, both agree). None with fewer than 3 points, a
constant curve, or no knee (a straight line). Kneedle normalises k and inertia to [0, 1], so the knee depends
on the k range swept. ``kneed`` is imported on first use because it imports ``matplotlib.pyplot``.
``elbow_ks`` is the default range: every k from 2 to 20, then steps of about 15 % up to ``k_max`` (kneed
handles unequal spacing), never beyond N - 1. ``elbow_sweep`` = ``elbow`` + ``suggest_k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
from sklearn.cluster import kmeans_plusplus

from lib.evaluation.inputs import _BLOCK_ELEMENTS, F32, I64, ClusterError, as_features

__all__ = [
    "INITS",
    "SMALL_KMEANS_TERMS",
    "ElbowResult",
    "KMeansResult",
    "elbow",
    "elbow_ks",
    "elbow_sweep",
    "faiss_num_gpus",
    "kmeans",
    "suggest_k",
]

# Whether this faiss has its own k-means++ initialisation (faiss >= 1.12), for init="faiss-kmeans++".
FAISS_HAS_KMEANS_PLUS_PLUS: bool = hasattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS") and hasattr(
    faiss.ClusteringParameters(), "init_method"
)
INITS = ("kmeans++", "faiss-kmeans++", "random")
# Greedy k-means++ seeds on at most max(SEED_ROWS_PER_CENTROID * k, SEED_ROWS_MIN) rows (a uniform sample).
SEED_ROWS_PER_CENTROID = 40  # 20: 0.8% above scikit-learn's mean inertia at 100,000 x 128, k = 1,000; 40: 0.6%
SEED_ROWS_MIN = 10_000
Init = Literal["kmeans++", "faiss-kmeans++", "random"]

# faiss stores the seed in a C int.
_MAX_SEED = 2**31 - 1
# Below this many distance terms per iteration (rows x k x dims) k-means runs on one thread: an iteration is
# then tens of microseconds of work, and OpenMP's fork/join per iteration costs more than it saves (measured
# on 2 cores, 901 x 64, k = 10: 1.8 ms per run on 1 thread, 275 ms on 2 threads while the other core is
# busy). Running the restarts side by side in Python threads instead was slower still: starting the threads
# cost more than the runs (15 ms against 4.8 ms for 5 restarts).
SMALL_KMEANS_TERMS = 20_000_000


@dataclass(frozen=True, eq=False)
class KMeansResult:
    """The best of ``restarts`` k-means runs.

    ``inertia`` is the sum of squared distances of the rows to their assigned centroid for the kept
    restart, ``seed`` the seed of that restart, ``iterations`` the iterations faiss ran in it,
    ``restart_inertias`` the inertia of every restart in order (seed, seed + 1, ...), ``device`` where faiss
    trained: ``"cpu"`` or ``"gpu"`` (the final exact assignment is always computed on the CPU).
    """

    labels: I64
    centroids: F32
    inertia: float
    sizes: I64
    n_empty: int
    seed: int
    restarts: int
    iterations: int
    restart_inertias: tuple[float, ...] = field(default=())
    device: str = "cpu"


def faiss_num_gpus() -> int:
    """How many CUDA GPUs faiss can use (0 with faiss-cpu, or where the faiss build has no GPU support)."""
    if not hasattr(faiss, "get_num_gpus"):
        return 0
    return max(0, int(faiss.get_num_gpus()))


def _assign(x: F32, centroids: F32) -> tuple[I64, float]:
    """Nearest centroid per row (faiss exact L2 search) and the exact float64 inertia of that assignment."""
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(centroids)
    _, nearest = index.search(x, 1)
    labels = np.ascontiguousarray(nearest[:, 0], dtype=np.int64)
    if labels.min() < 0:  # faiss marks "no result" with -1; cannot happen with finite inputs
        raise ClusterError("faiss returned no nearest centroid for some rows")
    inertia = 0.0
    c64 = centroids.astype(np.float64)
    step = max(1, _BLOCK_ELEMENTS // x.shape[1])
    for s in range(0, x.shape[0], step):
        diff = x[s : s + step].astype(np.float64) - c64[labels[s : s + step]]
        inertia += float(np.einsum("ij,ij->", diff, diff))
    return labels, inertia


def _restarts(
    xf: F32, k: int, seed: int, restarts: int, params: dict[str, Any], init: str
) -> tuple[tuple[float, int, F32, I64, int], list[float]]:
    """Seeded faiss runs ``seed .. seed + restarts - 1``: the best (inertia, seed, centroids, labels,
    iterations) by exact inertia, and every run's inertia."""
    d = xf.shape[1]
    best: tuple[float, int, F32, I64, int] | None = None
    inertias: list[float] = []
    n = xf.shape[0]
    seed_rows = min(n, max(SEED_ROWS_PER_CENTROID * k, SEED_ROWS_MIN))
    x64: npt.NDArray[np.float64] | None = None  # all rows in float64, made once when seeding uses them all
    for run_seed in range(seed, seed + restarts):
        run_params = dict(params, seed=run_seed)
        init_centroids: F32 | None = None
        if init == "faiss-kmeans++" and FAISS_HAS_KMEANS_PLUS_PLUS:
            run_params["init_method"] = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
        elif init != "random":  # greedy k-means++ (also for faiss-kmeans++ where faiss lacks it)
            if seed_rows < n:
                sample = np.sort(np.random.default_rng(run_seed).choice(n, seed_rows, replace=False))
                rows = xf[sample].astype(np.float64)
            else:
                x64 = xf.astype(np.float64) if x64 is None else x64
                rows = x64
            centres, _ = kmeans_plusplus(rows, k, random_state=run_seed)
            init_centroids = np.ascontiguousarray(centres, dtype=np.float32)
        km = faiss.Kmeans(d, k, **run_params)
        km.train(xf, init_centroids=init_centroids)
        if km.centroids is None:
            raise ClusterError("faiss k-means produced no centroids")
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32).reshape(k, d)
        labels, inertia = _assign(xf, centroids)
        inertias.append(inertia)
        if best is None or inertia < best[0]:
            best = (inertia, run_seed, centroids, labels, len(km.iteration_stats or []))
    assert best is not None
    return best, inertias


def kmeans(
    x: npt.ArrayLike,
    k: int,
    *,
    seed: int = 0,
    restarts: int = 5,
    niter: int = 20,
    spherical: bool = False,
    init: Init = "kmeans++",
    gpu: bool | None = None,
) -> KMeansResult:
    """k-means with faiss on all rows (never subsampled); the best of ``restarts`` seeded runs.

    ``gpu``: None trains on faiss's GPUs when it sees any (CPU otherwise), True requires them (ClusterError
    if there are none), False forces the CPU.
    """
    xf = as_features(x)
    n, d = xf.shape
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ClusterError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k < 2:
        raise ClusterError(f"k must be >= 2, got {k}")
    if k > n:
        raise ClusterError(f"k = {k} is larger than the number of rows ({n})")
    if restarts < 1:
        raise ClusterError(f"restarts must be >= 1, got {restarts}")
    if niter < 1:
        raise ClusterError(f"niter must be >= 1, got {niter}")
    if init not in INITS:
        raise ClusterError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
    if seed < 0 or seed + restarts - 1 > _MAX_SEED:
        raise ClusterError(f"seeds seed .. seed + restarts - 1 must lie in [0, {_MAX_SEED}], got seed={seed}")
    if gpu is not None and not isinstance(gpu, bool | np.bool_):
        raise ClusterError(f"gpu must be True, False or None, got {gpu!r}")
    n_gpus = faiss_num_gpus() if gpu is None or gpu else 0
    if gpu and n_gpus == 0:
        raise ClusterError(
            "gpu=True but faiss sees no CUDA GPU (faiss-cpu build, no driver, or CUDA_VISIBLE_DEVICES hides "
            "them); pass gpu=None to fall back to the CPU"
        )
    use_gpu = n_gpus > 0

    params: dict[str, Any] = {
        "niter": niter,
        "nredo": 1,
        "spherical": spherical,
        "max_points_per_centroid": -(-n // k),  # ceil(N / k): faiss then keeps all N rows
        "min_points_per_centroid": 1,
        "verbose": False,
    }
    if use_gpu:
        params["gpu"] = True  # faiss.Kmeans then trains with an IndexFlat copied to all visible GPUs
    small = not use_gpu and n * k * d < SMALL_KMEANS_TERMS
    threads = faiss.omp_get_max_threads()
    if small:
        faiss.omp_set_num_threads(1)
    try:
        best, inertias = _restarts(xf, k, seed, restarts, params, init)
    finally:
        if small:
            faiss.omp_set_num_threads(threads)
    inertia, best_seed, centroids, labels, iterations = best
    sizes = np.bincount(labels, minlength=k).astype(np.int64)
    return KMeansResult(
        labels=labels,
        centroids=centroids,
        inertia=inertia,
        sizes=sizes,
        n_empty=int(np.count_nonzero(sizes == 0)),
        seed=best_seed,
        restarts=restarts,
        iterations=iterations,
        restart_inertias=tuple(inertias),
        device="gpu" if use_gpu else "cpu",
    )


# ---------------------------------------------------------------------------------------------- elbow


def elbow(x: npt.ArrayLike, ks: Sequence[int], seed: int = 0, restarts: int = 3) -> list[tuple[int, float]]:
    """(k, inertia) of ``kmeans(x, k)`` for each k in ``ks``, in the given order."""
    xf = as_features(x)
    return [(int(k), kmeans(xf, k, seed=seed, restarts=restarts).inertia) for k in ks]


# Every k up to this value is tried by ``elbow_ks``; above it the k grow geometrically.
_ELBOW_DENSE_MAX = 20
# Relative step between consecutive k above _ELBOW_DENSE_MAX.
_ELBOW_GROWTH = 1.15


def elbow_ks(n_rows: int, k_max: int = 20) -> list[int]:
    """Default k for an elbow sweep: 2 .. min(k_max, n_rows - 1), every k up to 20, then ~15 % steps.

    ``k_max`` itself (or ``n_rows - 1``) is always the last value. With the default ``k_max`` this is
    simply 2, 3, ..., min(20, n_rows - 1).
    """
    for name, value in (("n_rows", n_rows), ("k_max", k_max)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ClusterError(f"{name} must be an integer, got {value!r}")
    top = min(int(k_max), int(n_rows) - 1)
    if k_max < 2:
        raise ClusterError(f"k_max must be >= 2, got {k_max}")
    if top < 2:
        raise ClusterError(f"an elbow sweep needs at least 3 rows (k from 2 to n_rows - 1), got {n_rows}")
    ks = list(range(2, min(top, _ELBOW_DENSE_MAX) + 1))
    k = ks[-1]
    while k < top:
        k = min(top, max(k + 1, round(k * _ELBOW_GROWTH)))
        ks.append(k)
    return ks


def suggest_k(curve: Sequence[tuple[int, float]]) -> int | None:
    """The elbow of a (k, inertia) curve by the Kneedle method (``kneed.KneeLocator``), or None.

    The points are sorted by k first. None when there are fewer than 3 points, when the inertia is the same
    for every k, or when Kneedle finds no knee (e.g. on a straight line).
    """
    pts = list(curve)
    ks_list: list[int] = []
    ys_list: list[float] = []
    for point in pts:
        try:
            k, y = point
        except (TypeError, ValueError):
            raise ClusterError(f"curve must hold (k, inertia) pairs, got {point!r}") from None
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise ClusterError(f"k must be an integer, got {k!r}")
        try:
            yf = float(y)
        except (TypeError, ValueError):
            raise ClusterError(f"inertia must be a number, got {y!r}") from None
        if not np.isfinite(yf):
            raise ClusterError(f"inertia for k = {k} is not finite ({y!r})")
        ks_list.append(int(k))
        ys_list.append(yf)
    if len(set(ks_list)) != len(ks_list):
        raise ClusterError(f"curve has repeated k: {sorted(ks_list)}")
    if len(pts) < 3:
        return None
    order = np.argsort(ks_list)
    ks = np.asarray(ks_list, dtype=np.int64)[order]
    ys = np.asarray(ys_list, dtype=np.float64)[order]
    if ys.max() == ys.min():  # Kneedle normalises by the range: a flat curve has no knee
        return None
    # Imported here: kneed imports matplotlib.pyplot (and scipy.signal) when it is imported itself.
    from kneed import KneeLocator

    locator = KneeLocator(ks, ys, S=1.0, curve="convex", direction="decreasing", online=True)
    return None if locator.knee is None else int(locator.knee)


@dataclass(frozen=True, eq=False)
class ElbowResult:
    """An elbow sweep: ``inertias[i]`` is the best k-means inertia with ``ks[i]`` clusters, ``knee`` the
    k that ``suggest_k`` picks on that curve (None if it finds no knee)."""

    ks: tuple[int, ...]
    inertias: tuple[float, ...]
    knee: int | None


def elbow_sweep(x: npt.ArrayLike, ks: Sequence[int] | None = None, seed: int = 0, restarts: int = 3) -> ElbowResult:
    """``elbow`` over ``ks`` (default ``elbow_ks(n_rows)``), sorted by k, and the knee of that curve."""
    xf = as_features(x, min_rows=3)
    chosen = elbow_ks(xf.shape[0]) if ks is None else sorted(ks)
    if not chosen:
        raise ClusterError("ks is empty")
    if len(set(chosen)) != len(chosen):
        raise ClusterError(f"ks has repeated values: {chosen}")
    curve = elbow(xf, chosen, seed=seed, restarts=restarts)
    return ElbowResult(ks=tuple(k for k, _ in curve), inertias=tuple(v for _, v in curve), knee=suggest_k(curve))
