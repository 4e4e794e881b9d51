"""voxelize-batch end to end: Prefect flow over a Dask LocalCluster into a real S3 server."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import pytest
from distributed import LocalCluster

from flows.voxelize import run_voxelize
from lib.scans.demo import iter_demo_batch, write_demo_batch
from lib.scans.readers import PointCloudData, ReadLimits, read_geometry
from lib.scans.voxelize import VoxelConfig, voxelize_item
from lib.storage import Storage, open_storage
from lib.voxels.store import FAILED, VoxelStore

BAD_FILES = {
    "junk/empty.off": b"",
    "junk/garbage.stl": bytes(range(256)) * 3,
    "junk/nan.off": b"OFF\n3 1 0\n0 0 0\nnan 1 0\n0 1 1\n3 0 1 2\n",
    "junk/notes.txt": b"not a scan",
    "junk/past_end.off": b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 1\n3 0 1 7\n",
}


def run_flow(batch_url: str, store_url: str, address: str | None = None, **kw: Any) -> dict[str, Any]:
    return run_voxelize(address, 2, batch_url=batch_url, store_url=store_url, **kw)


def digests(storage: Storage) -> dict[str, str]:
    return {o.key: hashlib.sha256(storage.read_bytes(o.key)).hexdigest() for o in storage.list("voxels/c")}


@pytest.fixture
def s3_batch(s3_bucket: str) -> str:
    url = f"s3://{s3_bucket}/inbox/batch-a"
    write_demo_batch(url, n_per_class=3, seed=1)
    batch = open_storage(url)
    for key, data in BAD_FILES.items():
        batch.write_bytes(key, data)
    return url


def test_voxelize_flow_into_s3_end_to_end(prefect_api: str, s3_batch: str, s3_bucket: str) -> None:
    store_url = f"s3://{s3_bucket}/stores/demo"
    good = list(iter_demo_batch(n_per_class=3, seed=1))
    result = run_flow(s3_batch, store_url, chunk_items=8, items_per_task=16)
    assert (result["items"], result["stored"], result["failed"]) == (len(good) + 5, len(good), 5)

    store = VoxelStore.open(store_url)
    summary = store.summary()
    assert summary["stored"] == len(good) and summary["failed"] == 5 and summary["pending"] == 0
    assert set(summary["classes"]) == {f.label for f in good}
    reasons = {r.item_id: r.reason for r in store.items(FAILED)}
    assert set(reasons) == {f"batch-a/{k}" for k in BAD_FILES}
    assert "empty" in reasons["batch-a/junk/empty.off"]
    assert "unsupported extension" in reasons["batch-a/junk/notes.txt"]
    assert all(reasons.values())
    assert not any(r.capture is not None for r in store.items(FAILED))

    # stored grids are exactly what the library makes of each file, with labels and splits from the tree
    records = {r.item_id: r for r in store.items()}
    cfg = VoxelConfig()
    for f in good:
        rec = records[f"batch-a/{f.key}"]
        assert store.index().classes[rec.label] == f.label and rec.split == f.split
        cloud = isinstance(read_geometry(f.key, f.data, ReadLimits()), PointCloudData)
        assert rec.capture == ("cloud" if cloud else "mesh")
        expected = voxelize_item(f.key, f.data, cfg, ReadLimits())
        np.testing.assert_array_equal(store.read([rec.row])[0], expected)

    # the store really is chunked zarr v3 on S3: whole-item chunks, Blosc-compressed
    arr = store.array(read_only=True)
    assert arr.chunks == (8, 32, 32, 32) and arr.dtype == bool
    assert "blosc" in str(arr.metadata.to_dict()["codecs"]).lower()

    # re-running stores nothing twice and leaves every chunk untouched
    storage = open_storage(store_url)
    before = digests(storage)
    again = run_flow(s3_batch, store_url, chunk_items=8, items_per_task=16)
    assert (again["skipped"], again["processed"], again["stored"]) == (len(good) + 5, 0, 0)
    assert digests(storage) == before
    assert len(store.items(None)) == len(good) + 5


def test_rerun_completes_a_run_that_died(prefect_api: str, s3_batch: str, s3_bucket: str) -> None:
    from lib.voxels.ingest import plan_batch, process_chunk

    store_url = f"s3://{s3_bucket}/stores/resume"
    plan = plan_batch(s3_batch, store_url, chunk_items=8)
    for job in plan.jobs[:2]:  # two chunks written, then the process "dies": no finalize
        process_chunk(job, plan.source, store_url, plan.voxel, ReadLimits())
    result = run_flow(s3_batch, store_url, chunk_items=8, items_per_task=16)
    done_before = sum(len(j.items) for j in plan.jobs[:2])
    assert result["skipped"] == done_before
    assert result["processed"] == plan.total - done_before
    store = VoxelStore.open(store_url)
    recs = store.items(None)
    assert len(recs) == plan.total and {r.status for r in recs} <= {"stored", "failed"}
    assert len({r.row for r in recs}) == plan.total


def test_existing_dask_scheduler_and_appending_batches(prefect_api: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store_url = str(tmp_path / "store")
    write_demo_batch(str(tmp_path / "b1"), n_per_class=2, seed=3)
    write_demo_batch(str(tmp_path / "b2"), n_per_class=2, seed=4)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        first = run_flow(str(tmp_path / "b1"), store_url, address=cluster.scheduler_address)
        second = run_flow(str(tmp_path / "b2"), store_url, address=cluster.scheduler_address)
    assert first["stored"] == second["stored"] == 14
    store = VoxelStore.open(store_url)
    assert store.summary()["batches"] == ["b1", "b2"] and store.summary()["stored"] == 28
    rows_b2 = [r.row for r in store.items() if r.batch == "b2"]
    assert min(rows_b2) % store.index().chunk_items == 0


def test_task_size_follows_the_cluster_the_flow_runs_on(prefect_api: str) -> None:
    from prefect import flow
    from prefect_dask import DaskTaskRunner

    from flows.runners import dask_worker_threads

    with LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=":0") as cluster:

        @flow(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        def probe() -> int:
            return dask_worker_threads()

        assert probe() == 3


def test_commits_written_so_far_merge_while_the_last_tasks_run(
    prefect_api: str, s3_batch: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With more tasks than worker threads, the flow merges the commits of finished tasks once every task left
    is running; the final merge takes the rest, and the store ends as complete as with one merge."""
    import flows.voxelize as flow_module
    from lib.voxels.store import COMMITS

    store_url = f"s3://{s3_bucket}/stores/early"
    storage = open_storage(store_url)
    merged: list[tuple[int, int]] = []  # (commit records waiting, items still pending in the records)
    real = flow_module.merge_commits

    def spy(url: str) -> int:
        merged.append((len(storage.list(COMMITS)), VoxelStore.open(url).summary()["pending"]))
        return real(url)

    monkeypatch.setattr(flow_module, "merge_commits", spy)
    result = run_flow(s3_batch, store_url, chunk_items=4, items_per_task=4)  # 26 items: 7 tasks, 2 threads
    assert len(merged) == 1
    waiting, pending = merged[0]
    assert waiting >= 1 and pending == result["items"]  # finished tasks' commits, not yet merged
    store = VoxelStore.open(store_url)
    summary = store.summary()
    assert summary["pending"] == 0 and summary["stored"] == result["stored"] and summary["failed"] == 5
    assert storage.list(COMMITS) == [] and len(store.items(None)) == result["items"]


def test_a_chunk_result_the_flow_has_read_is_released_from_the_cluster() -> None:
    """Else the cluster keeps it, and when the worker holding it dies, Dask computes it again elsewhere."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    from distributed import Client

    from flows.voxelize import _release

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        fut = client.submit(sum, [1, 2], key="a-chunk-group")
        assert fut.result() == 3
        _release(SimpleNamespace(wrapped_future=fut))
        deadline = time.monotonic() + 10
        while "a-chunk-group" in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks)):
            assert time.monotonic() < deadline, "the scheduler still holds the read result"
            time.sleep(0.05)
    local: Future[int] = Future()
    local.set_result(1)
    _release(SimpleNamespace(wrapped_future=local))  # a thread-pool runner's future: nothing to release
