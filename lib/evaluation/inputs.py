"""Input checks shared by the evaluation modules: features and labels validated, ClusterError, array aliases.

Features reach faiss, PCA and the metrics as C-contiguous float32 after one check (2-D, real, finite,
enough rows); labels are 1-D, and class labels are integers with < 0 meaning unknown.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from lib.errors import VoxclustError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

# Elements per float64 working block (32 MiB) when accumulating products or casting large inputs.
_BLOCK_ELEMENTS = 1 << 22


class ClusterError(VoxclustError, ValueError):
    """Bad input to clustering, PCA or the metrics."""


def as_features(x: npt.ArrayLike, *, name: str = "features", min_rows: int = 2) -> F32:
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


def _class_labels(labels: npt.ArrayLike, n_rows: int, name: str) -> npt.NDArray[Any]:
    """Integer class labels for ``n_rows`` rows (< 0 = unknown)."""
    y = _as_labels(labels, name)
    if not np.issubdtype(y.dtype, np.integer):
        raise ClusterError(f"{name} must be integers (< 0 = unknown), got dtype {y.dtype}")
    if y.shape[0] != n_rows:
        raise ClusterError(f"the features have {n_rows} rows but {name} has {y.shape[0]}")
    return y


def _scored_labels(labels: npt.ArrayLike, n_rows: int, name: str) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Integer class labels for ``n_rows`` rows (< 0 = unknown) and the mask of known ones (at least one)."""
    y = _class_labels(labels, n_rows, name)
    known = y >= 0
    if not known.any():
        raise ClusterError(f"no row has a {name} value >= 0: nothing to score")
    return y, known
