"""Clustering of learned (or raw) shape features, and the metrics that score it against known classes.

Every feature method in the benchmark is judged the same way, by ``evaluate_embedding``: optional PCA to a
fixed width, k-means with k = number of classes, then NMI / ARI / accuracy against the labels. This module
holds those pieces, plus other ways to look at a clustering (PIC, elbow / knee, silhouette, purity); it is
plain numpy + faiss + scikit-learn + scipy + kneed (no torch, no Prefect).

Choices:

* **PCA** is exact and done in float64 with numpy/scipy rather than ``faiss.PCAMatrix`` (which works in
  float32 and silently trains on at most ``max_points_per_d * d`` rows). The decomposition goes through
  the smaller of the two Gram matrices: the (D, D) covariance when D <= N, otherwise the (N, N) matrix of
  centred row products (4,865 raw 32^3 grids give a 4,865 x 4,865 problem instead of 32,768 x 32,768).
  Both are accumulated in blocks so that no float64 copy of the whole data is made, and only the top
  eigenpairs are computed: with LAPACK (``scipy.linalg.eigh(subset_by_index=...)``) for matrices up to
  512 wide or when more than a quarter of the spectrum is wanted, otherwise with ARPACK's Lanczos
  (``scipy.sparse.linalg.eigsh``, tol=0 i.e. machine precision, fixed start vector so that it is
  deterministic), which is several times faster on a 4,865-wide Gram matrix; LAPACK is the fallback if
  ARPACK does not converge. Eigenvalues are variances with
  the N - 1 denominator, as in scikit-learn. Whitening divides each component by
  ``sqrt(eigenvalue + eps)`` (faiss ``eigen_power=-0.5`` as in DeepCluster, plus a guard). Directions of
  zero variance (rank-deficient data) project to 0. Signs are fixed: the largest-magnitude entry of each
  component is positive.
* **k-means** is faiss (``faiss.Kmeans``), one faiss run per restart with seed ``seed + r`` (faiss's own
  ``nredo`` would hide the per-restart objective), keeping the restart with the lowest inertia.
  - faiss silently subsamples the training set to ``max_points_per_centroid * k`` rows (256 * k by
    default). We **never subsample**: ``max_points_per_centroid`` is set to ``ceil(N / k)`` so that every
    row takes part in every iteration. ``min_points_per_centroid`` is set to 1 to silence faiss's
    "please provide at least ..." warning on small inputs.
  - Initialisation ``"kmeans++"`` uses faiss's own k-means++ (``ClusteringInitMethod_KMEANS_PLUS_PLUS``)
    where the installed faiss has it, otherwise scikit-learn's ``kmeans_plusplus`` seeded with the
    restart's seed and handed to ``train(init_centroids=...)``. ``"random"`` is faiss's default: k
    distinct rows drawn at random.
  - faiss re-seeds empty clusters by splitting large ones during training; ``n_empty`` is nevertheless
    counted on the final assignment.
  - Labels come from a nearest-centroid search (``faiss.IndexFlatL2``) against the *final* centroids, and
    the inertia is recomputed exactly (float64) from that assignment. The objective faiss records in
    ``iteration_stats`` belongs to the assignment made *before* the last centroid update, so it is only
    used for the iteration count. faiss stops early once an iteration no longer changes the objective,
    so ``iterations`` can be below ``niter``.
  - ``spherical=True`` keeps centroids on the unit sphere (faiss's spherical k-means); pass
    ``l2_normalize``-d rows, as the inertia is still the squared Euclidean distance to the (unit) centroid,
    which on unit rows is 2 - 2 cos.
  - Results are deterministic for the same input, parameters and seed on the same machine and thread
    count (faiss's threading is left at its default).
  - **GPU**: with ``gpu=None`` (the default) faiss trains on the GPU when it sees CUDA GPUs
    (``faiss.get_num_gpus() > 0``, looked up with ``hasattr`` so that builds without it count as CPU-only;
    0 with faiss-cpu), passing ``gpu=True`` to ``faiss.Kmeans``, which copies its ``IndexFlat`` to all
    visible GPUs. ``gpu=False`` forces the CPU; ``gpu=True`` without a visible GPU is a ``ClusterError``
    (faiss itself would quietly fall back to the CPU). Only training moves: the exact re-assignment and
    the inertia stay on the CPU. ``KMeansResult.device`` says ``"gpu"`` or ``"cpu"``. GPU runs are not
    promised to be bit-identical to CPU runs.
* **Elbow**: ``elbow`` returns the raw (k, inertia) curve. ``suggest_k`` picks its knee with the Kneedle
  method of the ``kneed`` library (``KneeLocator(curve="convex", direction="decreasing", S=1,
  interp_method="interp1d", online=True)``): points sorted by k, no smoothing. With ``online=True`` a knee
  found later along the curve replaces an earlier one, so the last knee Kneedle finds is returned (with
  ``online=False`` it would be the first; on the blob curves tried, with a single clear bend, both agree).
  None with fewer than 3 points, a constant curve, or no knee (a straight line). Kneedle normalises k
  and inertia to [0, 1], so the knee depends on the k range swept. ``kneed`` is imported on first use
  because it imports ``matplotlib.pyplot``. ``elbow_ks`` is the default range: every k from 2 to 20, then
  steps of about 15 % up to ``k_max`` (kneed handles unequal spacing), never beyond N - 1.
  ``elbow_sweep`` = ``elbow`` + ``suggest_k``.
* **PIC** (power iteration clustering as in DeepCluster's ``clustering.py``, ``PIC`` class with
  ``make_graph`` / ``make_adjacencyW`` / ``run_pic`` / ``find_maxima_cluster``; it needs no k):
  1. rows are L2-normalised when ``l2=True`` (DeepCluster runs PIC on PCA-whitened, L2-normalised
     features; the PCA is left to the caller);
  2. each row's ``n_neighbors`` exact nearest other rows, by squared L2 distance ``d`` (faiss
     ``IndexFlatL2`` on the CPU). DeepCluster drops the first of ``n_neighbors + 1`` results as "self";
     here the row itself is dropped wherever it appears (with duplicate rows it need not be first);
  3. edge weights ``exp(-d / sigma^2)``, ``W = A + A^T`` (an edge found in both directions counts twice),
     as a ``scipy.sparse`` CSR matrix. ``W`` is *not* row-normalised, as in the original;
  4. ``v`` starts uniform; ``n_iter`` times ``v <- alpha * W^T v + (1 - alpha) / N`` then
     ``v <- v / sum(v)``, exactly the original's update. With the default ``alpha = 0.001``, ``alpha`` is the
     weight of the propagation, not a restart probability, so ``v`` is close to uniform plus
     ``alpha`` x weighted degree (plus smaller multi-hop terms): a local density. Computed in float64
     (the original used float32);
  5. each row points to the graph neighbour ``j`` with the largest ``W_ij * (v_j - v_i)`` if that is > 0
     (ties to the lowest ``j``, as the original's scan), else to itself; ``v`` strictly increases along
     pointers, so following them always ends at a local maximum, and a cluster is the basin of one;
  6. ``distribute_singletons=True`` (the default of DeepCluster's ``PIC``): a one-row basin joins the
     basin of its nearest k-NN neighbour (in k-NN order) that is not itself one row, if any;
  7. clusters are numbered by decreasing size (ties: lowest first row).
  The number of clusters is set by the graph, not asked for: with 5 neighbours even well separated
  blobs split into several basins each (no basin ever crosses a gap that no k-NN edge spans), while
  denser graphs (e.g. 20 to 30 neighbours for blobs of 60 rows) give one per blob. ``sigma`` must suit
  the scale of ``d`` (in [0, 4] for unit rows): weights that underflow to 0 leave every row alone.
* **Metrics**: NMI (arithmetic mean normalisation) and ARI from scikit-learn; clustering accuracy is the
  best one-to-one matching of clusters to classes (Hungarian algorithm on the contingency table), which
  also works when the number of clusters differs from the number of classes: unmatched clusters count as
  wrong. Purity is the share of rows in their cluster's majority class (not chance-corrected: one
  cluster per row scores 1). The silhouette is scikit-learn's ``silhouette_score`` (Euclidean, on the
  float32 features) on at most ``sample_size`` rows drawn without replacement with
  ``numpy.random.default_rng(seed)`` (its cost is quadratic); it is None where it is undefined (fewer than
  3 rows, or fewer than 2 clusters or as many clusters as rows in the sample).
* **evaluate_embedding** standardises nothing (features are used as given); the labels never influence
  PCA or k-means, they are only used to score the result, and rows labelled < 0 (unknown) are left out of
  the scores only: they are still clustered.
* **cluster_summary** describes any partition (k-means, PIC, ...) with plain Python types only (JSON-able):
  sizes, the within-cluster inertia about each cluster's *mean* (float64; equal to the k-means inertia
  when the partition is a converged k-means one), the silhouette and, given true labels, NMI / ARI /
  accuracy / purity and the contingency table over the rows whose label is >= 0. Its columns are all
  clusters (a cluster holding only unknown rows gets a column of zeros).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from sklearn.cluster import kmeans_plusplus
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

from lib.errors import VoxclustError

__all__ = [
    "ClusterError",
    "ElbowResult",
    "KMeansResult",
    "PCAModel",
    "PICResult",
    "ari",
    "cluster_accuracy",
    "cluster_summary",
    "contingency",
    "elbow",
    "elbow_ks",
    "elbow_sweep",
    "evaluate_embedding",
    "faiss_num_gpus",
    "fit_pca",
    "kmeans",
    "l2_normalize",
    "nmi",
    "pca",
    "pic",
    "purity",
    "silhouette",
    "suggest_k",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Whether this faiss has its own k-means++ initialisation (faiss >= 1.12); otherwise scikit-learn seeds it.
FAISS_HAS_KMEANS_PLUS_PLUS: bool = hasattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS") and hasattr(
    faiss.ClusteringParameters(), "init_method"
)

# Elements per float64 working block (32 MiB) when accumulating products or casting large inputs.
_BLOCK_ELEMENTS = 1 << 22
# Symmetric eigenproblems up to this width are solved densely (LAPACK); wider ones with ARPACK.
_DENSE_EIG_MAX = 512
# faiss stores the seed in a C int.
_MAX_SEED = 2**31 - 1
# Below this many distance terms per iteration (rows x k x dims) k-means runs on one thread: an iteration is
# then tens of microseconds of work, and OpenMP's fork/join per iteration costs more than it saves (measured
# on 2 cores, 901 x 64, k = 10: 1.8 ms per run on 1 thread, 275 ms on 2 threads while the other core is
# busy). Running the restarts side by side in Python threads instead was slower still: starting the threads
# cost more than the runs (15 ms against 4.8 ms for 5 restarts).
SMALL_KMEANS_TERMS = 20_000_000


class ClusterError(VoxclustError, ValueError):
    """Bad input to clustering, PCA or the metrics."""


# ---------------------------------------------------------------------------------------------- input


def _as_features(x: npt.ArrayLike, *, name: str = "features", min_rows: int = 2) -> F32:
    """Validate a 2-D finite numeric matrix and return it as C-contiguous float32 (what faiss wants)."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ClusterError(f"{name} must be a 2-D array (rows = items), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
        raise ClusterError(f"{name} must be real numbers, got dtype {arr.dtype}")
    n, d = arr.shape
    if n < min_rows:
        raise ClusterError(f"{name} has {n} row(s); at least {min_rows} needed")
    if d < 1:
        raise ClusterError(f"{name} has no columns")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out).all(axis=1)))
        raise ClusterError(f"{name} has NaN/inf values (or values beyond float32 range) in {bad} row(s)")
    return out


def _as_labels(labels: npt.ArrayLike, name: str) -> npt.NDArray[Any]:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ClusterError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ClusterError(f"{name} is empty")
    return arr


def _label_pair(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    t = _as_labels(labels_true, "labels_true")
    p = _as_labels(labels_pred, "labels_pred")
    if t.shape != p.shape:
        raise ClusterError(f"labels_true and labels_pred differ in length: {t.size} vs {p.size}")
    return t, p


def _scored_labels(labels: npt.ArrayLike, n_rows: int, name: str) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Integer class labels for ``n_rows`` rows (< 0 = unknown) and the mask of known ones (at least one)."""
    y = _as_labels(labels, name)
    if not np.issubdtype(y.dtype, np.integer):
        raise ClusterError(f"{name} must be integers (< 0 = unknown), got dtype {y.dtype}")
    if y.shape[0] != n_rows:
        raise ClusterError(f"the features have {n_rows} rows but {name} has {y.shape[0]}")
    known = y >= 0
    if not known.any():
        raise ClusterError(f"no row has a {name} value >= 0: nothing to score")
    return y, known


# ------------------------------------------------------------------------------------------------ PCA


@dataclass(frozen=True, eq=False)
class PCAModel:
    """A fitted PCA: ``transform(x) = ((x - mean) @ components.T) * scale``, as float32.

    ``components`` has unit-norm rows (or zero rows for zero-variance directions), ``explained_variance``
    the matching variances (N - 1 denominator), ``scale`` is 1 without whitening and
    ``1 / sqrt(explained_variance + eps)`` with it.
    """

    mean: F64
    components: F64
    explained_variance: F64
    scale: F64

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def transform(self, x: npt.ArrayLike) -> F32:
        xf = _as_features(x, name="x", min_rows=1)
        if xf.shape[1] != self.mean.shape[0]:
            raise ClusterError(f"x has {xf.shape[1]} columns; this PCA was fitted on {self.mean.shape[0]}")
        out = np.empty((xf.shape[0], self.dim), dtype=np.float32)
        proj = self.components.T * self.scale  # (D, r)
        step = max(1, _BLOCK_ELEMENTS // xf.shape[1])
        for s in range(0, xf.shape[0], step):
            block = xf[s : s + step].astype(np.float64) - self.mean
            out[s : s + step] = block @ proj
        return out

    def whitened(self, eps: float = 1e-5) -> PCAModel:
        """The same projection with each component scaled to unit variance: ``1 / sqrt(variance + eps)``,
        0 for directions of zero variance (``fit_pca(..., whiten=True)`` without fitting again)."""
        if eps < 0 or not np.isfinite(eps):
            raise ClusterError(f"eps must be a finite number >= 0, got {eps}")
        denom = np.sqrt(self.explained_variance + eps)
        where = (self.explained_variance > 0) & (denom > 0)
        scale = np.divide(1.0, denom, out=np.zeros(self.dim, dtype=np.float64), where=where)
        return replace(self, scale=scale)


def _top_eigenpairs(sym: F64, r: int) -> tuple[F64, F64]:
    """The ``r`` largest eigenvalues (descending) of a symmetric PSD matrix, with eigenvectors as columns."""
    m = sym.shape[0]
    if m > _DENSE_EIG_MAX and r <= m // 4:
        # A fixed random start vector: deterministic, and not orthogonal to the top eigenvectors (a vector
        # of ones would be: it is in the null space of a centred Gram matrix).
        v0 = np.random.default_rng(0).standard_normal(m)
        try:
            evals, evecs = eigsh(sym, k=r, which="LA", tol=0, v0=v0)
        except ArpackNoConvergence:
            pass
        else:
            order = np.argsort(evals)[::-1]
            return np.asarray(evals[order], dtype=np.float64), np.asarray(evecs[:, order], dtype=np.float64)
    evals, evecs = scipy.linalg.eigh(sym, subset_by_index=[m - r, m - 1])
    return evals[::-1], evecs[:, ::-1]


def fit_pca(x: npt.ArrayLike, dim: int, whiten: bool = False, eps: float = 1e-5) -> PCAModel:
    """Fit PCA keeping the top ``min(dim, D, N - 1)`` principal directions (exact, float64)."""
    xf = _as_features(x, name="x")
    if dim < 1:
        raise ClusterError(f"dim must be >= 1, got {dim}")
    if eps < 0 or not np.isfinite(eps):
        raise ClusterError(f"eps must be a finite number >= 0, got {eps}")
    n, d = xf.shape
    r = min(dim, d, n - 1)
    mean = xf.mean(axis=0, dtype=np.float64)

    if d <= n:
        # Covariance (D, D), accumulated over row blocks.
        cov = np.zeros((d, d), dtype=np.float64)
        step = max(1, _BLOCK_ELEMENTS // d)
        for s in range(0, n, step):
            b = xf[s : s + step].astype(np.float64) - mean
            cov += b.T @ b
        evals, evecs = _top_eigenpairs(cov, r)
        components = np.ascontiguousarray(evecs.T)
        sq = np.clip(evals, 0.0, None)
    else:
        # Centred row products (N, N), accumulated over column blocks; components = U^T Xc / s.
        gram = np.zeros((n, n), dtype=np.float64)
        step = max(1, _BLOCK_ELEMENTS // n)
        for c in range(0, d, step):
            b = xf[:, c : c + step].astype(np.float64) - mean[c : c + step]
            gram += b @ b.T
        evals, u = _top_eigenpairs(gram, r)
        sq = np.clip(evals, 0.0, None)
        sv = np.sqrt(sq)
        components = np.zeros((r, d), dtype=np.float64)
        for c in range(0, d, step):
            b = xf[:, c : c + step].astype(np.float64) - mean[c : c + step]
            components[:, c : c + step] = u.T @ b
        with np.errstate(divide="ignore", invalid="ignore"):
            components = np.where(sv[:, None] > 0, components / sv[:, None], 0.0)

    # Directions with (numerically) zero variance are arbitrary: project them to 0.
    tol = float(sq[0]) * max(n, d) * np.finfo(np.float64).eps  # sq[0] is the largest (r >= 1)
    null = sq <= tol
    components[null] = 0.0
    sq = np.where(null, 0.0, sq)
    # Deterministic signs: the largest-magnitude entry of each component is positive.
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(r), idx])
    signs[signs == 0] = 1.0
    components *= signs[:, None]

    variance = sq / (n - 1)
    model = PCAModel(mean=mean, components=components, explained_variance=variance, scale=np.ones(r))
    return model.whitened(eps) if whiten else model


def pca(x: npt.ArrayLike, dim: int, whiten: bool = False, eps: float = 1e-5) -> F32:
    """Centre ``x`` and project it on its top ``min(dim, D, N - 1)`` principal directions (float32)."""
    return fit_pca(x, dim, whiten=whiten, eps=eps).transform(x)


def l2_normalize(x: npt.ArrayLike) -> F32:
    """Scale each row to unit Euclidean norm (float32); all-zero rows stay zero."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ClusterError(f"x must be a 2-D array, got shape {arr.shape}")
    xf = arr.astype(np.float64)
    norms = np.linalg.norm(xf, axis=1, keepdims=True)
    out = np.divide(xf, norms, out=np.zeros_like(xf), where=norms > 0)
    return np.ascontiguousarray(out, dtype=np.float32)


# -------------------------------------------------------------------------------------------- k-means


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
    for run_seed in range(seed, seed + restarts):
        run_params = dict(params, seed=run_seed)
        init_centroids: F32 | None = None
        if init == "kmeans++":
            if FAISS_HAS_KMEANS_PLUS_PLUS:
                run_params["init_method"] = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
            else:
                centres, _ = kmeans_plusplus(xf, k, random_state=run_seed)
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
    init: Literal["kmeans++", "random"] = "kmeans++",
    gpu: bool | None = None,
) -> KMeansResult:
    """k-means with faiss on all rows (never subsampled); the best of ``restarts`` seeded runs.

    ``gpu``: None trains on faiss's GPUs when it sees any (CPU otherwise), True requires them (ClusterError
    if there are none), False forces the CPU.
    """
    xf = _as_features(x)
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
    if init not in ("kmeans++", "random"):
        raise ClusterError(f"init must be 'kmeans++' or 'random', got {init!r}")
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


def elbow(x: npt.ArrayLike, ks: Sequence[int], seed: int = 0, restarts: int = 3) -> list[tuple[int, float]]:
    """(k, inertia) of ``kmeans(x, k)`` for each k in ``ks``, in the given order."""
    xf = _as_features(x)
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
    xf = _as_features(x, min_rows=3)
    chosen = elbow_ks(xf.shape[0]) if ks is None else sorted(ks)
    if not chosen:
        raise ClusterError("ks is empty")
    if len(set(chosen)) != len(chosen):
        raise ClusterError(f"ks has repeated values: {chosen}")
    curve = elbow(xf, chosen, seed=seed, restarts=restarts)
    return ElbowResult(ks=tuple(k for k, _ in curve), inertias=tuple(v for _, v in curve), knee=suggest_k(curve))


# ------------------------------------------------------------------------------------------------ PIC


@dataclass(frozen=True, eq=False)
class PICResult:
    """A PIC partition: ``labels`` in 0 .. n_clusters - 1, numbered by decreasing size (ties: the cluster
    holding the lowest row index first), ``sizes[c]`` the number of rows in cluster ``c``."""

    labels: I64
    n_clusters: int
    sizes: I64


def _knn(xf: F32, n_neighbors: int) -> tuple[I64, F32]:
    """Exact k nearest neighbours of every row among the others (faiss ``IndexFlatL2``), nearest first.

    Returns (indices, squared L2 distances), both (N, n_neighbors). The row itself is left out wherever it
    comes back among its own n_neighbors + 1 results (with duplicate rows it need not come first); where it
    does not, the farthest result is dropped instead.
    """
    n = xf.shape[0]
    index = faiss.IndexFlatL2(xf.shape[1])
    index.add(xf)
    dist, nn = index.search(xf, n_neighbors + 1)
    if nn.min() < 0:  # cannot happen with n > n_neighbors and finite input
        raise ClusterError("faiss returned fewer neighbours than asked for")
    is_self = nn == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), n_neighbors)
    keep = np.ones(nn.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    nn_k = nn[keep].reshape(n, n_neighbors).astype(np.int64)
    dist_k = np.maximum(dist[keep].reshape(n, n_neighbors), 0.0)  # float32 rounding can go below 0
    return nn_k, dist_k


def pic(
    x: npt.ArrayLike,
    *,
    n_neighbors: int = 5,
    sigma: float = 0.2,
    alpha: float = 0.001,
    n_iter: int = 200,
    l2: bool = True,
    distribute_singletons: bool = True,
) -> PICResult:
    """Power iteration clustering as in DeepCluster (``clustering.PIC``); needs no k.

    Graph: each row's ``n_neighbors`` nearest other rows (exact squared L2, faiss), edge weight
    ``exp(-d / sigma**2)``, symmetrised ``W = A + A^T``. Diffusion: ``v`` starts uniform and ``n_iter`` times
    ``v <- alpha * W^T v + (1 - alpha) / N``, then ``v /= sum(v)``. Each row then points to the graph
    neighbour ``j`` with the largest ``W_ij * (v_j - v_i)`` if that is > 0 (else to itself); clusters are
    the sets of rows whose pointer chains end at the same row. With ``distribute_singletons`` each
    one-row cluster joins the cluster of its nearest k-NN neighbour that is not itself a singleton. ``l2``
    scales rows to unit norm first (DeepCluster runs PIC on PCA-whitened, L2-normalised features).
    """
    for name, value, low in (("n_neighbors", n_neighbors, 1), ("n_iter", n_iter, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ClusterError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ClusterError(f"sigma must be a finite number > 0, got {sigma}")
    if not (np.isfinite(alpha) and 0 < alpha <= 1):
        raise ClusterError(f"alpha must lie in (0, 1], got {alpha}")
    xf = _as_features(x)
    if l2:
        xf = l2_normalize(xf)
    n = xf.shape[0]
    if n_neighbors >= n:
        raise ClusterError(f"n_neighbors = {n_neighbors} needs more than {n_neighbors} rows, got {n}")

    nn, dist = _knn(xf, int(n_neighbors))
    weights = np.exp(-dist.astype(np.float64) / (float(sigma) ** 2))
    indptr = np.arange(n + 1, dtype=np.int64) * int(n_neighbors)
    a = scipy.sparse.csr_matrix((weights.ravel(), nn.ravel(), indptr), shape=(n, n))
    w = scipy.sparse.csr_matrix(a + a.T)  # symmetric, so W^T v = W v
    w.sum_duplicates()
    w.sort_indices()

    v = np.full(n, 1.0 / n)
    for _ in range(int(n_iter)):
        v = alpha * (w @ v) + (1.0 - alpha) / n
        v /= v.sum()

    # Pointers: per row, the neighbour with the largest positive W_ij (v_j - v_i); ties to the lowest j.
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(w.indptr))
    cols = w.indices.astype(np.int64)
    gain = w.data * (v[cols] - v[rows])
    up = gain > 0
    rows, cols, gain = rows[up], cols[up], gain[up]
    order = np.lexsort((cols, -gain, rows))
    first = np.unique(rows[order], return_index=True)[1]
    pointer = np.arange(n, dtype=np.int64)
    pointer[rows[order][first]] = cols[order][first]
    # v strictly increases along pointers, so there are no cycles: jump until every row points at a root.
    while True:
        nxt = pointer[pointer]
        if np.array_equal(nxt, pointer):
            break
        pointer = nxt
    root = pointer

    if distribute_singletons:
        size_of_root = np.bincount(root, minlength=n)
        singles = np.flatnonzero(size_of_root[root] == 1)
        if singles.size:
            target_ok = size_of_root[root[nn[singles]]] > 1  # (S, n_neighbors), nearest neighbour first
            has = target_ok.any(axis=1)
            pick = nn[singles, target_ok.argmax(axis=1)]
            root = root.copy()
            root[singles[has]] = root[pick[has]]

    roots, first_row, inverse, counts = np.unique(root, return_index=True, return_inverse=True, return_counts=True)
    rank = np.empty(roots.size, dtype=np.int64)
    rank[np.lexsort((first_row, -counts))] = np.arange(roots.size, dtype=np.int64)
    labels = rank[inverse.ravel()]
    sizes = np.bincount(labels, minlength=roots.size).astype(np.int64)
    return PICResult(labels=labels, n_clusters=int(roots.size), sizes=sizes)


# -------------------------------------------------------------------------------------------- metrics


def contingency(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> I64:
    """Counts: rows are the sorted distinct true classes, columns the sorted distinct predicted clusters."""
    t, p = _label_pair(labels_true, labels_pred)
    classes, ti = np.unique(t, return_inverse=True)
    clusters, pi = np.unique(p, return_inverse=True)
    flat = np.bincount(ti.ravel() * clusters.size + pi.ravel(), minlength=classes.size * clusters.size)
    return flat.reshape(classes.size, clusters.size).astype(np.int64)


def nmi(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> float:
    """Normalised mutual information, normalised by the arithmetic mean of the two entropies."""
    t, p = _label_pair(labels_true, labels_pred)
    return float(normalized_mutual_info_score(t, p, average_method="arithmetic"))


def ari(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> float:
    """Adjusted Rand index."""
    t, p = _label_pair(labels_true, labels_pred)
    return float(adjusted_rand_score(t, p))


def cluster_accuracy(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> float:
    """Fraction of rows right under the best one-to-one cluster -> class matching (Hungarian).

    With more clusters than classes the extra clusters match nothing and all their rows count as wrong;
    with fewer, the unmatched classes are wrong.
    """
    table = contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def purity(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> float:
    """Fraction of rows in their cluster's majority class: sum over clusters of the largest class count / N.

    Not chance-corrected: it reaches 1 with one cluster per row, so read it next to NMI / ARI.
    """
    table = contingency(labels_true, labels_pred)
    return float(table.max(axis=0).sum() / table.sum())


def silhouette(
    x: npt.ArrayLike, labels: npt.ArrayLike, *, sample_size: int | None = 2000, seed: int = 0
) -> float | None:
    """Mean silhouette coefficient (Euclidean), scikit-learn's ``silhouette_score``.

    With more than ``sample_size`` rows it is computed on ``sample_size`` rows drawn without replacement by
    ``numpy.random.default_rng(seed)`` (``sample_size=None``: all rows; the cost is quadratic). None where
    the silhouette is undefined: fewer than 3 rows, or fewer than 2 clusters, or as many clusters as rows,
    in the (sampled) rows.
    """
    xf = _as_features(x, name="x", min_rows=1)
    y = _as_labels(labels, "labels")
    if y.shape[0] != xf.shape[0]:
        raise ClusterError(f"x has {xf.shape[0]} rows but labels has {y.shape[0]}")
    if sample_size is not None:
        if isinstance(sample_size, bool) or not isinstance(sample_size, int | np.integer) or sample_size < 3:
            raise ClusterError(f"sample_size must be an integer >= 3 or None, got {sample_size!r}")
        if seed < 0:
            raise ClusterError(f"seed must be >= 0, got {seed}")
    n = xf.shape[0]
    if sample_size is not None and n > sample_size:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=int(sample_size), replace=False))
        xf, y = xf[idx], y[idx]
        n = int(sample_size)
    n_labels = np.unique(y).size
    if n < 3 or not 2 <= n_labels <= n - 1:
        return None
    return float(silhouette_score(xf, y, metric="euclidean"))


# --------------------------------------------------------------------------------------------- driver


def evaluate_embedding(
    features: npt.ArrayLike,
    labels: npt.ArrayLike,
    k: int = 10,
    *,
    pca_dim: int = 64,
    seed: int = 0,
    restarts: int = 5,
) -> dict[str, float]:
    """Score an embedding: PCA (no whitening) to ``pca_dim`` if wider, k-means with ``k``, then metrics.

    Features are used as given (no standardisation). ``labels`` play no part in PCA or k-means; rows with
    a label < 0 are clustered like the rest but left out of NMI / ARI / accuracy. ``inertia`` is the
    k-means objective over all rows, in the (possibly reduced) feature space.
    """
    xf = _as_features(features)
    y, known = _scored_labels(labels, xf.shape[0], "labels")
    if pca_dim < 1:
        raise ClusterError(f"pca_dim must be >= 1, got {pca_dim}")
    if xf.shape[1] > pca_dim:
        xf = pca(xf, pca_dim)
    result = kmeans(xf, k, seed=seed, restarts=restarts)
    t, p = y[known], result.labels[known]
    return {"nmi": nmi(t, p), "ari": ari(t, p), "acc": cluster_accuracy(t, p), "inertia": result.inertia}


def _within_inertia(xf: F32, inverse: I64, n_clusters: int) -> float:
    """Sum of squared distances of the rows to the mean of their cluster (float64, two passes in blocks)."""
    n, d = xf.shape
    sums = np.zeros((n_clusters, d), dtype=np.float64)
    step = max(1, _BLOCK_ELEMENTS // d)
    for s in range(0, n, step):
        block = xf[s : s + step].astype(np.float64)
        lab = inverse[s : s + step]
        onehot = scipy.sparse.csr_matrix((np.ones(lab.size), (lab, np.arange(lab.size))), shape=(n_clusters, lab.size))
        sums += onehot @ block
    means = sums / np.bincount(inverse, minlength=n_clusters)[:, None]
    total = 0.0
    for s in range(0, n, step):
        diff = xf[s : s + step].astype(np.float64) - means[inverse[s : s + step]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def cluster_summary(
    x: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    labels_true: npt.ArrayLike | None = None,
    sample_size: int | None = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """A JSON-able description of a partition ``labels`` of the rows of ``x``.

    Always: ``n_rows``, ``n_clusters``, ``clusters`` (the sorted distinct labels), ``sizes`` (rows per
    cluster, in that order), ``inertia`` (sum of squared distances to each cluster's mean, float64) and
    ``silhouette`` (see ``silhouette``; None where undefined). With integer ``labels_true`` (< 0 =
    unknown): ``n_scored`` (rows with a known class), ``nmi``, ``ari``, ``acc``, ``purity`` over those
    rows, ``classes`` (sorted known classes) and ``contingency`` (rows = ``classes``, columns =
    ``clusters``; a cluster holding only unknown rows has a column of zeros). Unknown rows take part in
    everything but the label metrics.
    """
    xf = _as_features(x, min_rows=1)
    y = _as_labels(labels, "labels")
    if y.shape[0] != xf.shape[0]:
        raise ClusterError(f"x has {xf.shape[0]} rows but labels has {y.shape[0]}")
    clusters, inverse, sizes = np.unique(y, return_inverse=True, return_counts=True)
    inverse = inverse.ravel().astype(np.int64)
    out: dict[str, Any] = {
        "n_rows": int(xf.shape[0]),
        "n_clusters": int(clusters.size),
        "clusters": clusters.tolist(),
        "sizes": [int(c) for c in sizes],
        "inertia": _within_inertia(xf, inverse, int(clusters.size)),
        "silhouette": silhouette(xf, y, sample_size=sample_size, seed=seed),
    }
    if labels_true is None:
        return out

    t, known = _scored_labels(labels_true, xf.shape[0], "labels_true")
    tk, pk = t[known], y[known]
    classes, class_idx = np.unique(tk, return_inverse=True)
    flat = np.bincount(class_idx.ravel() * clusters.size + inverse[known], minlength=classes.size * clusters.size)
    table = flat.reshape(classes.size, clusters.size)
    out.update(
        n_scored=int(known.sum()),
        nmi=nmi(tk, pk),
        ari=ari(tk, pk),
        acc=cluster_accuracy(tk, pk),
        purity=purity(tk, pk),
        classes=classes.tolist(),
        contingency=table.tolist(),
    )
    return out
