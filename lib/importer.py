"""Import grids people already have (``.npz``) into a voxel store.

Accepted layouts: ``X_train``/``y_train``/``X_test``/``y_test`` (ModelNet-style; test arrays optional),
or ``X`` with optional ``y`` and ``split`` (strings 'train'/'test'). Grids are (N, r, r, r) with any
non-zero value meaning occupied and z as the up axis (array axis 2); they are resampled to the store's
resolution when r differs. An all-empty grid is recorded as a failed item ("empty grid"), not stored.
Class names come from ``classes=`` or a ``classes`` array in the file; otherwise the label numbers are
used as names. Re-importing the same file stores nothing twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lib.batch import BatchItem
from lib.storage import open_storage
from lib.store import FAILED, MANIFEST, STORED, ItemResult, VoxelStore
from lib.voxelize import VoxelConfig, resample


class NpzImportError(ValueError):
    """The file does not hold grids in a layout we understand."""


def _load(path: Path) -> tuple[list[tuple[str, np.ndarray, np.ndarray | None]], list[str] | None]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise NpzImportError(f"{path}: not a readable .npz file ({exc})") from exc
    keys = set(data.files)
    classes = [str(c) for c in data["classes"]] if "classes" in keys else None
    parts: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    if "X_train" in keys:
        for split in ("train", "test"):
            if f"X_{split}" in keys:
                y = data[f"y_{split}"] if f"y_{split}" in keys else None
                parts.append((split, data[f"X_{split}"], y))
    elif "X" in keys:
        x = data["X"]
        y = data["y"] if "y" in keys else None
        if "split" in keys:
            s = np.asarray(data["split"]).astype(str)
            for split in ("train", "test"):
                m = s == split
                parts.append((split, x[m], None if y is None else y[m]))
        else:
            parts.append(("", x, y))
    else:
        raise NpzImportError(
            f"{path}: expected arrays X_train/y_train[/X_test/y_test] or X[/y/split], found {sorted(keys)}"
        )
    for split, x, y in parts:
        if x.ndim != 4 or not (x.shape[1] == x.shape[2] == x.shape[3]):
            raise NpzImportError(f"{path}: grids {split or 'X'} must be (N, r, r, r), got {x.shape}")
        if y is not None and len(y) != len(x):
            raise NpzImportError(f"{path}: {len(x)} grids but {len(y)} labels in {split or 'X'}")
    return parts, classes


def import_npz(
    path: str | os.PathLike[str],
    store_url: str,
    classes: Sequence[str] | None = None,
    batch_name: str | None = None,
    resolution: int | None = None,
) -> dict[str, int]:
    """Import the grids of ``path`` into the store (created at ``resolution``, or at the file's, if new)."""
    path = Path(path)
    parts, file_classes = _load(path)
    names = list(classes) if classes else file_classes
    r_file = parts[0][1].shape[1]
    storage = open_storage(store_url)
    voxel = None if storage.exists(MANIFEST) else VoxelConfig(resolution=resolution or r_file)
    store = VoxelStore.open_or_create(storage, voxel)
    r = store.manifest().resolution
    items: list[BatchItem] = []
    grids: dict[str, np.ndarray] = {}
    for split, x, y in parts:
        for i in range(len(x)):
            key = f"{split}/{i:06d}" if split else f"{i:06d}"
            label = None
            if y is not None:
                lab = int(y[i])
                label = names[lab] if names and 0 <= lab < len(names) else str(lab)
            items.append(BatchItem(key, int(x[i].nbytes), label, split or None))
        grids.update({f"{split}/{i:06d}" if split else f"{i:06d}": x[i] for i in range(len(x))})
    plan = store.plan(batch_name or path.stem, path.absolute().as_uri(), items)
    stored = failed = 0
    for job in plan.jobs:
        keys = [it.key for it in job.items]
        block = resample(np.stack([grids[k] != 0 for k in keys]), r)
        out: dict[int, np.ndarray] = {}
        results: list[ItemResult] = []
        for it, grid in zip(job.items, block, strict=True):
            if grid.any():
                out[it.row] = grid
                results.append(ItemResult(it.row, STORED, "", int(grid.sum())))
            else:
                results.append(ItemResult(it.row, FAILED, "empty grid"))
        store.write_chunk(job, out, results)
        stored += len(out)
        failed += len(results) - len(out)
    store.finalize()
    return {"items": plan.total, "skipped": plan.skipped, "stored": stored, "failed": failed}
