"""Import grids people already have (``.npz``) into a voxel store.

Accepted layouts: ``X_train``/``y_train``/``X_test``/``y_test`` (ModelNet-style; test arrays optional),
or ``X`` with optional ``y`` and ``split`` (strings 'train'/'test'). Grids are (N, r, r, r) with any
non-zero value meaning occupied and z as the up axis (array axis 2). Into a store of the ``field-v1``
representation they are *conformed* by default: a grid's boundary voxels become a point cloud voxelized like
any scan, so that it lands in the store's frame (cropped to its occupied box, the longest side scaled to
R - 2*padding, proportions kept) and representation (a solid grid becomes a surface store's shell), and a
shape padded inside its grid and one spanning the whole cube come out alike. ``keep_frame`` (and any
``binned`` store) keeps them as they are, resampled to the store's resolution when r differs. An all-empty
grid is recorded as a failed item ("empty grid"), not stored.
Class names come from ``classes=`` or a ``classes`` array in the file; otherwise the label numbers are
used as names. Re-importing the same file stores nothing twice.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

from lib.errors import VoxclustError
from lib.scans.batch import BatchItem
from lib.scans.readers import PointCloudData
from lib.scans.voxelize import VoxelConfig, resample, voxelize
from lib.storage import open_storage
from lib.voxels.store import FAILED, MANIFEST, STORED, ItemResult, VoxelStore


class NpzImportError(VoxclustError, ValueError):
    """The file does not hold grids in a layout we understand."""


def _load(path: Path) -> tuple[list[tuple[str, np.ndarray, np.ndarray | None]], list[str] | None]:
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise NpzImportError(f"{path}: not a .npz archive (a single .npy array?)")
        with data:
            arrays = {k: data[k] for k in data.files}  # read now: a corrupt member fails here, not midway
    except NpzImportError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise NpzImportError(f"{path}: not a readable .npz file ({exc})") from exc
    keys = set(arrays)
    classes = [str(c) for c in np.ravel(arrays["classes"])] if "classes" in keys else None
    raw: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    if "X_train" in keys:
        for split in ("train", "test"):
            if f"X_{split}" in keys:
                raw.append((split, arrays[f"X_{split}"], arrays.get(f"y_{split}")))
    elif "X" in keys:
        raw.append(("", arrays["X"], arrays.get("y")))
    else:
        raise NpzImportError(
            f"{path}: expected arrays X_train/y_train[/X_test/y_test] or X[/y/split], found {sorted(keys)}"
        )
    for split, x, y in raw:
        if x.ndim != 4 or not (x.shape[1] == x.shape[2] == x.shape[3]) or x.dtype.kind not in "biuf":
            raise NpzImportError(f"{path}: grids {split or 'X'} must be numeric (N, r, r, r), got {x.shape} {x.dtype}")
        if x.shape[1] != raw[0][1].shape[1]:
            raise NpzImportError(f"{path}: grids of one file must share one size, got {x.shape} and {raw[0][1].shape}")
        if y is not None and (y.ndim != 1 or len(y) != len(x)):
            raise NpzImportError(f"{path}: {len(x)} grids but labels of shape {y.shape} in {split or 'X'}")
        if y is not None and not (y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(y == np.round(y)))):
            raise NpzImportError(f"{path}: labels in {split or 'X'} must be whole numbers, got {y.dtype}")
    parts = raw
    if "X" in keys and "X_train" not in keys and "split" in keys:
        x, y = raw[0][1], raw[0][2]
        s = np.asarray(arrays["split"]).astype(str)
        if s.shape != (len(x),):
            raise NpzImportError(f"{path}: {len(x)} grids but split has shape {s.shape}")
        bad = sorted(set(s.tolist()) - {"train", "test"})
        if bad:
            raise NpzImportError(f"{path}: split values must be 'train' or 'test', got {bad[:5]}")
        parts = []
        for split in ("train", "test"):
            m = s == split
            parts.append((split, x[m], None if y is None else y[m]))
    return parts, classes


def conform(grid: np.ndarray, cfg: VoxelConfig) -> np.ndarray:
    """A grid from elsewhere in the store's frame and representation: its boundary voxels' centres, as a point
    cloud, voxelized with the store's settings (an imported grid's up axis is array axis 2)."""
    occupied = np.asarray(grid, bool)
    boundary = occupied & ~ndi.binary_erosion(occupied)
    points = np.argwhere(boundary).astype(np.float64)
    return voxelize(PointCloudData(points), cfg.model_copy(update={"up_axis": "z"}))


def import_npz(
    path: str | os.PathLike[str],
    store_url: str,
    classes: Sequence[str] | None = None,
    batch_name: str | None = None,
    resolution: int | None = None,
    keep_frame: bool = False,
    voxel: VoxelConfig | None = None,
) -> dict[str, int]:
    """Import the grids of ``path`` into the store (created with ``voxel``'s settings, at ``resolution`` or
    the file's, if new); conformed to a ``field-v1`` store's frame and representation unless ``keep_frame``."""
    path = Path(path)
    parts, file_classes = _load(path)
    names = list(classes) if classes else file_classes
    r_file = parts[0][1].shape[1]
    storage = open_storage(store_url)
    if storage.exists(MANIFEST):
        voxel = None
    elif voxel is None or "resolution" not in voxel.model_fields_set:
        given = voxel.model_dump(exclude_unset=True) if voxel is not None else {}
        voxel = VoxelConfig(**{**given, "resolution": resolution or r_file})
    store = VoxelStore.open_or_create(storage, voxel)
    r = store.index().resolution
    cfg = store.voxel_config()
    conforming = cfg.representation == "field-v1" and not keep_frame
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
        raw = [grids[it.key] != 0 for it in job.items]
        block = list(resample(np.stack(raw), r)) if not conforming else raw
        out: dict[int, np.ndarray] = {}
        results: list[ItemResult] = []
        for it, grid in zip(job.items, block, strict=True):
            reason = "empty grid" if not grid.any() else ""
            if conforming and not reason:
                try:
                    grid = conform(grid, cfg)
                except ValueError as exc:  # a single voxel has no extent to scale
                    reason = f"cannot conform the grid: {exc}"
            if reason:
                results.append(ItemResult(it.row, FAILED, reason))
            else:
                out[it.row] = grid
                results.append(ItemResult(it.row, STORED, "", int(grid.sum()), "grid"))
        store.write_chunk(job, out, results)
        stored += len(out)
        failed += len(results) - len(out)
    store.finalize()
    return {"items": plan.total, "skipped": plan.skipped, "stored": stored, "failed": failed}
