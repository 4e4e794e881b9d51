"""Exact PCA (fit once, transform any rows, optional whitening) and row L2 normalisation.

PCA is exact and done in float64 with numpy/scipy rather than ``faiss.PCAMatrix`` (which works in float32
and silently trains on at most ``max_points_per_d * d`` rows). The decomposition goes through the smaller of
the two Gram matrices: the (D, D) covariance when D <= N, otherwise the (N, N) matrix of centred row
products (4,865 raw 32^3 grids give a 4,865 x 4,865 problem instead of 32,768 x 32,768). Both are
accumulated in blocks so that no float64 copy of the whole data is made, and only the top eigenpairs are
computed: with LAPACK (``scipy.linalg.eigh(subset_by_index=...)``) for matrices up to 512 wide or when more
than a quarter of the spectrum is wanted, otherwise with ARPACK's Lanczos (``scipy.sparse.linalg.eigsh``,
tol=0 i.e. machine precision, fixed start vector so that it is deterministic), which is several times
faster on a 4,865-wide Gram matrix; LAPACK is the fallback if ARPACK does not converge. Eigenvalues are
variances with the N - 1 denominator, as in scikit-learn. Whitening divides each component by
``sqrt(eigenvalue + eps)`` (faiss ``eigen_power=-0.5`` as in DeepCluster, plus a guard). Directions of zero
variance (rank-deficient data) project to 0. Signs are fixed: the largest-magnitude entry of each component
is positive.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import scipy.linalg
from scipy.sparse.linalg import ArpackNoConvergence, eigsh

from lib.evaluation.inputs import _BLOCK_ELEMENTS, F32, F64, ClusterError, as_features

__all__ = ["PCAModel", "fit_pca", "l2_normalize", "pca"]

# Symmetric eigenproblems up to this width are solved densely (LAPACK); wider ones with ARPACK.
_DENSE_EIG_MAX = 512


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
        xf = as_features(x, name="x", min_rows=1)
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
    xf = as_features(x, name="x")
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
