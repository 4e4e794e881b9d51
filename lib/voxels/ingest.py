"""The voxelize work, without any orchestration: plan a batch, process chunks, finalise.

What happens to one scan (read, voxelize, its capture) is :mod:`lib.scans.voxelize`'s; this module moves
whole chunks between a batch and the store.

The Prefect flow (``flows/voxelize.py``) and the bare process-pool benchmark both call these functions, so
they do the same work and write the same store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from lib.scans.batch import batch_name_from_url, key_problem, list_batch
from lib.scans.readers import ReadError, ReadLimits
from lib.scans.voxelize import VoxelConfig, voxelize_scan
from lib.storage import Storage, StorageError, open_storage
from lib.voxels.store import FAILED, STORED, BatchPlan, ChunkJob, ItemResult, VoxelStore


@dataclass(frozen=True)
class ChunkSummary:
    chunk: int
    stored: int
    failed: int
    seconds: float


@lru_cache(maxsize=16)
def _storage(url: str) -> Storage:
    """One client per URL and process (workers handle many chunks)."""
    return open_storage(url)


def plan_batch(
    batch_url: str,
    store_url: str,
    voxel: VoxelConfig | None = None,
    batch_name: str | None = None,
    chunk_items: int | None = None,
) -> BatchPlan:
    """List the batch (fails early on a missing batch or bad store URL) and reserve its rows."""
    batch = open_storage(batch_url)
    items = list_batch(batch)
    store = VoxelStore.open_or_create(store_url, voxel, chunk_items)
    return store.plan(batch_name or batch_name_from_url(batch.url), batch.url, items)


def process_chunk(
    job: ChunkJob, batch_url: str, store_url: str, voxel: VoxelConfig, limits: ReadLimits
) -> ChunkSummary:
    """Voxelize every item of one chunk and write the chunk and its commit record.

    A bad item is recorded as failed with its reason; the chunk still completes.
    """
    t0 = time.perf_counter()
    batch = _storage(batch_url)
    grids: dict[int, np.ndarray] = {}
    results: list[ItemResult] = []
    for item in job.items:
        try:
            problem = key_problem(item.key)
            if problem:
                raise ReadError(item.key, problem)
            if item.size > limits.max_bytes:
                raise ReadError(item.key, f"file is {item.size} bytes, over the limit of {limits.max_bytes}")
            try:
                data = batch.read_bytes(item.key)
            except FileNotFoundError as exc:
                raise ReadError(item.key, "file no longer exists in the batch") from exc
            except StorageError as exc:  # a key or link the storage refuses to follow
                raise ReadError(item.key, f"refused by the batch storage: {exc}") from exc
            grid, capture = voxelize_scan(item.key, data, voxel, limits)
        except ReadError as exc:
            results.append(ItemResult(item.row, FAILED, exc.reason))
            continue
        grids[item.row] = grid
        results.append(ItemResult(item.row, STORED, "", int(grid.sum()), capture))
    VoxelStore(_storage(store_url)).write_chunk(job, grids, results)
    return ChunkSummary(job.chunk, len(grids), len(results) - len(grids), time.perf_counter() - t0)


def items_per_task(todo: int, workers: int, chunk_items: int, tasks_per_worker: int = 4, cap: int = 2048) -> int:
    """Task size: about ``tasks_per_worker`` tasks per worker thread (load balance) but never under one chunk,
    nor over ``cap`` items (retry cost). Prefect costs tens of ms per task, so tasks hold many items."""
    want = -(-todo // max(1, workers * tasks_per_worker))
    return max(chunk_items, min(cap, want))


def group_jobs(jobs: list[ChunkJob], items_per_task: int) -> list[list[ChunkJob]]:
    """Consecutive chunks into task-sized groups of at least one chunk each."""
    groups: list[list[ChunkJob]] = []
    current: list[ChunkJob] = []
    count = 0
    for job in jobs:
        if current and count + len(job.items) > items_per_task:
            groups.append(current)
            current, count = [], 0
        current.append(job)
        count += len(job.items)
    if current:
        groups.append(current)
    return groups
