"""Test data shared by the evaluation tests: separated Gaussian blobs, array aliases."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def blobs(
    n_per: int, k: int, d: int, *, spread: float = 20.0, seed: int = 0
) -> tuple[npt.NDArray[np.float32], IntArray]:
    """k well-separated isotropic Gaussian blobs (unit variance, centres ~spread apart)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread
    y = np.repeat(np.arange(k), n_per)
    x = centres[y] + rng.normal(size=(k * n_per, d))
    perm = rng.permutation(y.size)
    return x[perm].astype(np.float32), y[perm].astype(np.int64)
