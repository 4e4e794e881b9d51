"""Tiny voxel stores for the feature-method tests: 16^3 synthetic shapes of three kinds, with labels and a
train/test split, imported through the real importer into a real store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib.voxels.importer import import_npz


def shapes(n_per_class: int, seed: int, r: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Boxes, balls and vertical rods of random size and position (upright, like scans)."""
    rng = np.random.default_rng(seed)
    idx = np.indices((r, r, r)).transpose(1, 2, 3, 0)
    grids, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            c = rng.uniform(r * 0.35, r * 0.65, size=3)
            s = rng.uniform(r * 0.18, r * 0.3)
            d = idx - c
            if label == 0:
                g = (np.abs(d) <= s).all(axis=-1)
            elif label == 1:
                g = (d**2).sum(-1) <= s**2
            else:
                g = ((d[..., :2] ** 2).sum(-1) <= (s * 0.4) ** 2) & (np.abs(d[..., 2]) <= s * 1.6)
            grids.append(g)
            labels.append(label)
    return np.stack(grids), np.array(labels)


def write_npz(path: Path, n_per_class: int = 16, seed: int = 0, labelled: bool = True) -> Path:
    x_tr, y_tr = shapes(n_per_class, seed)
    x_te, y_te = shapes(max(2, n_per_class // 4), seed + 1)
    x_tr[-1] = False  # an all-empty grid (a failed scan): regions drop it
    if labelled:
        np.savez(path, X_train=x_tr, y_train=y_tr, X_test=x_te, y_test=y_te)
    else:
        np.savez(path, X=np.concatenate([x_tr, x_te]))
    return path


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("tiny")
    url = str(root / "store")
    import_npz(write_npz(root / "tiny.npz"), url, classes=["box", "ball", "rod"])
    return url


@pytest.fixture(scope="session")
def unlabelled_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("unlabelled")
    url = str(root / "store")
    import_npz(write_npz(root / "u.npz", labelled=False), url)
    return url
