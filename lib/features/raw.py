"""``raw``: the voxels themselves, flattened, optionally average-pooled first. No training.

The baseline every learned method must beat. On ModelNet10 32^3 (4,865 non-empty grids), PCA 64 + k-means
k = 10 gives NMI 0.442, ARI 0.273 (../shared/METHODS.md). ``pool = p`` averages p^3 blocks (a 32^3 grid
with p = 2 gives 4,096 values instead of 32,768), a cheap blur that tolerates small shifts.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from lib.features.base import FeatureMethod, MethodConfig


class RawConfig(MethodConfig):
    epochs: int = Field(0, ge=0, le=0, description="raw voxels do not train")
    pool: int = Field(1, ge=1, le=8, description="average-pool p^3 blocks before flattening (1 = none)")


class Raw(FeatureMethod):
    name: ClassVar[str] = "raw"
    config_cls = RawConfig
    trainable = False
    config: RawConfig

    def embed(self, grids: np.ndarray) -> np.ndarray:
        p = self.config.pool
        n, r = len(grids), (grids.shape[1] if grids.ndim == 4 else self.info.resolution)
        if r % p:
            raise ValueError(f"pool {p} does not divide the grid side {r}")
        x = np.asarray(grids, dtype=np.float32)
        if p > 1:
            x = x.reshape(n, r // p, p, r // p, p, r // p, p).mean(axis=(2, 4, 6))
        return np.ascontiguousarray(x.reshape(n, -1), dtype=np.float32)
