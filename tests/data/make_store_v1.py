"""Made tests/data/store-v1 with the code of commit e5f7d2d (manifest format 1). Not collected by pytest.

git worktree add /tmp/v1 e5f7d2d && .venv/bin/python tests/data/make_store_v1.py /tmp/v1 OUT
"""

import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
from lib.scans.batch import BatchItem
from lib.scans.voxelize import VoxelConfig
from lib.voxels.store import FAILED, STORED, ItemResult, VoxelStore

store = VoxelStore.open_or_create(sys.argv[2], VoxelConfig(resolution=8), chunk_items=2)


def grid(i: int) -> np.ndarray:
    g = np.zeros((8, 8, 8), bool)
    g[1 + i % 5 : 4 + i % 5, 2:6, 1:7] = True
    return g


# Batch one: 5 items, finalized, one failed.
labels = [("bowl", "train"), ("cup", "train"), ("bowl", "test"), ("cup", "test"), ("cup", "train")]
batch_one = [BatchItem(f"{c}/{i}.off", 100 + i, c, s) for i, (c, s) in enumerate(labels)]
plan = store.plan("one", "file:///scans/one", batch_one)
for job in plan.jobs:
    res, grids = [], {}
    for it in job.items:
        if it.key == "cup/3.off":
            res.append(ItemResult(it.row, FAILED, "not a mesh"))
        else:
            grids[it.row] = grid(it.row)
            res.append(ItemResult(it.row, STORED, "", int(grids[it.row].sum()), "mesh"))
    store.write_chunk(job, grids, res)
store.finalize()
# Batch two: 3 unlabelled items; the first chunk written but not finalized (its commit record left), the
# second never written (its item pending).
plan = store.plan("two", "file:///scans/two", [BatchItem(f"s{i}.pcd", 50, None, None) for i in range(3)])
job = plan.jobs[0]
grids = {it.row: grid(it.row + 1) for it in job.items}
store.write_chunk(job, grids, [ItemResult(it.row, STORED, "", int(grids[it.row].sum()), "cloud") for it in job.items])
print(store.summary())
