"""Clustering of learned (or raw) shape features, and the metrics that score it against known classes.

Every feature method in the benchmark is judged the same way, by ``evaluate_embedding``: optional PCA to a
fixed width, k-means with k = number of classes, then NMI / ARI / accuracy against the labels. This module
holds those pieces; it is plain numpy + faiss + scikit-learn + scipy (no torch, no Prefect).

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
* **Metrics**: NMI (arithmetic mean normalisation) and ARI from scikit-learn; clustering accuracy is the
  best one-to-one matching of clusters to classes (Hungarian algorithm on the contingency table), which
  also works when the number of clusters differs from the number of classes: unmatched clusters count as
  wrong.
* **evaluate_embedding** standardises nothing (features are used as given); the labels never influence
  PCA or k-means, they are only used to score the result, and rows labelled < 0 (unknown) are left out of
  the scores only: they are still clustered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
import scipy.linalg
from scipy.optimize import linear_sum_assignment
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from sklearn.cluster import kmeans_plusplus
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = [
    "ClusterError",
    "KMeansResult",
    "PCAModel",
    "ari",
    "cluster_accuracy",
    "contingency",
    "elbow",
    "evaluate_embedding",
    "fit_pca",
    "kmeans",
    "l2_normalize",
    "nmi",
    "pca",
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


class ClusterError(ValueError):
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
    if whiten:
        denom = np.sqrt(variance + eps)
        scale = np.divide(1.0, denom, out=np.zeros(r, dtype=np.float64), where=~null & (denom > 0))
    else:
        scale = np.ones(r, dtype=np.float64)
    return PCAModel(mean=mean, components=components, explained_variance=variance, scale=scale)


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
    ``restart_inertias`` the inertia of every restart in order (seed, seed + 1, ...).
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


def kmeans(
    x: npt.ArrayLike,
    k: int,
    *,
    seed: int = 0,
    restarts: int = 5,
    niter: int = 20,
    spherical: bool = False,
    init: Literal["kmeans++", "random"] = "kmeans++",
) -> KMeansResult:
    """k-means with faiss on all rows (never subsampled); the best of ``restarts`` seeded runs."""
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

    params: dict[str, Any] = {
        "niter": niter,
        "nredo": 1,
        "spherical": spherical,
        "max_points_per_centroid": -(-n // k),  # ceil(N / k): faiss then keeps all N rows
        "min_points_per_centroid": 1,
        "verbose": False,
    }
    best: tuple[float, int, F32, I64, int] | None = None
    inertias: list[float] = []
    for r in range(restarts):
        run_seed = seed + r
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
        iterations = len(km.iteration_stats or [])
        labels, inertia = _assign(xf, centroids)
        inertias.append(inertia)
        if best is None or inertia < best[0]:
            best = (inertia, run_seed, centroids, labels, iterations)

    assert best is not None
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
    )


def elbow(x: npt.ArrayLike, ks: Sequence[int], seed: int = 0, restarts: int = 3) -> list[tuple[int, float]]:
    """(k, inertia) of ``kmeans(x, k)`` for each k in ``ks``, in the given order."""
    xf = _as_features(x)
    return [(int(k), kmeans(xf, k, seed=seed, restarts=restarts).inertia) for k in ks]


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
    y = _as_labels(labels, "labels")
    if not np.issubdtype(y.dtype, np.integer):
        raise ClusterError(f"labels must be integers (< 0 = unknown), got dtype {y.dtype}")
    if y.shape[0] != xf.shape[0]:
        raise ClusterError(f"features have {xf.shape[0]} rows but labels has {y.shape[0]}")
    known = y >= 0
    if not known.any():
        raise ClusterError("no row has a label >= 0: nothing to score")
    if pca_dim < 1:
        raise ClusterError(f"pca_dim must be >= 1, got {pca_dim}")
    if xf.shape[1] > pca_dim:
        xf = pca(xf, pca_dim)
    result = kmeans(xf, k, seed=seed, restarts=restarts)
    t, p = y[known], result.labels[known]
    return {"nmi": nmi(t, p), "ari": ari(t, p), "acc": cluster_accuracy(t, p), "inertia": result.inertia}
