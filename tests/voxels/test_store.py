"""Voxel store semantics on a local directory and on S3: reservation, chunk ownership, resume, append."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lib.scans.batch import BatchItem
from lib.scans.voxelize import VoxelConfig
from lib.storage import Storage, open_storage
from lib.voxels.records import Region
from lib.voxels.store import FAILED, PENDING, STORED, ItemResult, StoreError, VoxelStore

R = 8


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Storage:  # type: ignore[no-untyped-def]
    if request.param == "local":
        return open_storage(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return open_storage(f"s3://{bucket}/stores/one")


def items(n: int, prefix: str = "f", label: str | None = "cls") -> list[BatchItem]:
    return [BatchItem(f"{prefix}{i:03d}.off", 10, label, "train" if i % 4 else "test") for i in range(n)]


def grid_for(row: int) -> np.ndarray:
    g = np.zeros((R, R, R), bool)
    g[row % R, : (row % R) + 1, 1] = True
    return g


def write_all(store: VoxelStore, plan_jobs, fail_rows=()) -> None:  # type: ignore[no-untyped-def]
    for job in plan_jobs:
        grids = {it.row: grid_for(it.row) for it in job.items if it.row not in fail_rows}
        results = [
            ItemResult(it.row, FAILED, "bad file") if it.row in fail_rows else ItemResult(it.row, STORED, "", 1)
            for it in job.items
        ]
        store.write_chunk(job, grids, results)


def chunk_digests(storage: Storage) -> dict[str, str]:
    return {o.key: hashlib.sha256(storage.read_bytes(o.key)).hexdigest() for o in storage.list("voxels/c")}


def test_plan_write_finalize(storage: Storage) -> None:
    store = VoxelStore.open_or_create(storage, VoxelConfig(resolution=R), chunk_items=4)
    plan = store.plan("b1", "s3://in/b1", items(10))
    assert (plan.total, plan.reserved, plan.skipped, plan.resumed) == (10, 10, 0, 0)
    assert [(j.chunk, j.start, j.stop) for j in plan.jobs] == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    assert {r.status for r in store.items(None)} == {PENDING}
    write_all(store, plan.jobs, fail_rows={3})
    assert store.finalize() == 10
    recs = store.items(None)
    assert [r.status for r in recs].count(STORED) == 9
    failed = store.items(FAILED)
    assert [(r.item_id, r.reason) for r in failed] == [("b1/f003.off", "bad file")]
    stored_rows = [r.row for r in store.items()]
    np.testing.assert_array_equal(store.read(stored_rows), np.stack([grid_for(r) for r in stored_rows]))
    assert not store.read([3]).any()  # a failed item's row stays empty
    assert recs[0].source == "s3://in/b1/f000.off" and recs[0].split == "test"
    summary = store.summary()
    assert (summary["stored"], summary["failed"], summary["pending"]) == (9, 1, 0)
    assert summary["classes"] == {"cls": 9}


def test_rerun_stores_nothing_twice_and_append_keeps_old_bytes(storage: Storage) -> None:
    store = VoxelStore.open_or_create(storage, VoxelConfig(resolution=R), chunk_items=4)
    plan = store.plan("b1", "src", items(6))
    write_all(store, plan.jobs)
    store.finalize()
    before = chunk_digests(storage)
    again = store.plan("b1", "src", items(6))
    assert (again.jobs, again.skipped, again.reserved) == ([], 6, 0)
    assert len(store.items(None)) == 6
    # a new batch appends at the next chunk boundary and never touches the first batch's chunks
    other = store.plan("b2", "src2", items(5, prefix="g", label="other"))
    assert other.jobs[0].start == 8
    write_all(store, other.jobs)
    store.finalize()
    after = chunk_digests(storage)
    assert {k: after[k] for k in before} == before
    assert store.index().classes == ["cls", "other"]
    assert store.summary()["stored"] == 11


def test_a_run_that_died_is_completed_by_the_rerun(storage: Storage) -> None:
    store = VoxelStore.open_or_create(storage, VoxelConfig(resolution=R), chunk_items=4)
    plan = store.plan("b1", "src", items(12))
    write_all(store, plan.jobs[:1])  # the run dies after one chunk, before finalize
    resumed = store.plan("b1", "src", items(12))  # merges the leftover commit, redoes the rest
    assert (resumed.skipped, resumed.reserved, resumed.resumed) == (4, 0, 8)
    assert [j.chunk for j in resumed.jobs] == [1, 2]
    write_all(store, resumed.jobs)
    store.finalize()
    recs = store.items(None)
    assert len(recs) == 12 and {r.status for r in recs} == {STORED}
    assert sorted(r.row for r in recs) == list(range(12))


def test_settings_must_agree(storage: Storage) -> None:
    VoxelStore.open_or_create(storage, VoxelConfig(resolution=R), chunk_items=4)
    assert VoxelStore.open_or_create(storage, None).index().resolution == R
    with pytest.raises(StoreError, match="made with"):
        VoxelStore.open_or_create(storage, VoxelConfig(resolution=16))
    with pytest.raises(StoreError, match="chunk_items"):
        VoxelStore.open_or_create(storage, VoxelConfig(resolution=R), chunk_items=8)


def test_never_creates_a_store_over_other_data(storage: Storage) -> None:
    storage.write_bytes("precious/scan.ply", b"irreplaceable")
    with pytest.raises(StoreError, match="not a voxclust store"):
        VoxelStore.open_or_create(storage, VoxelConfig(resolution=R))
    assert storage.read_bytes("precious/scan.ply") == b"irreplaceable"
    assert not storage.exists("voxels/zarr.json")


def test_open_missing_store(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StoreError, match="not a voxclust store"):
        VoxelStore.open(str(tmp_path))


def test_concurrent_plans_reserve_disjoint_rows(storage: Storage) -> None:
    VoxelStore.open_or_create(storage, VoxelConfig(resolution=R), chunk_items=4)
    plans = {}

    def plan(name: str) -> None:
        plans[name] = VoxelStore.open(storage.url).plan(name, "src", items(7, prefix=name))

    threads = [threading.Thread(target=plan, args=(f"b{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [it.row for p in plans.values() for j in p.jobs for it in j.items]
    assert len(rows) == 28 == len(set(rows))
    chunks = [j.chunk for p in plans.values() for j in p.jobs]
    assert len(chunks) == len(set(chunks))  # no chunk shared between batches
    store = VoxelStore.open(storage.url)
    assert len(store.items(None)) == 28
    assert store.array().shape[0] >= max(rows) + 1


def test_a_file_gone_before_the_rerun_still_gets_a_status(storage: Storage) -> None:
    store = VoxelStore.open_or_create(storage, VoxelConfig(resolution=R), chunk_items=4)
    plan = store.plan("b1", "src", items(6))  # the run dies before writing anything
    assert len(plan.jobs) == 2
    listed_now = items(6)[:5]  # f005 was deleted from the batch meanwhile
    again = store.plan("b1", "src", listed_now)
    assert (again.skipped, again.reserved, again.resumed) == (0, 0, 6)
    assert "b1/f005.off" in {it.item_id for job in again.jobs for it in job.items}


STORE_V1 = Path(__file__).resolve().parents[1] / "data" / "store-v1"  # written by format 1's code: see its README


def copy_store_v1(storage: Storage) -> None:
    for path in sorted(p for p in STORE_V1.rglob("*") if p.is_file() and p.name != "README.md"):
        storage.write_bytes(path.relative_to(STORE_V1).as_posix(), path.read_bytes())


def test_a_store_of_format_1_opens_as_it_is_and_its_first_write_migrates_it(storage: Storage) -> None:
    copy_store_v1(storage)
    store = VoxelStore.open(storage)
    before = {r.item_id: r for r in store.items(None)}
    assert {k: r.status for k, r in before.items()} == {
        **{f"one/{k}": STORED for k in ("bowl/0.off", "cup/1.off", "bowl/2.off", "cup/4.off")},
        "one/cup/3.off": FAILED,
        **{f"two/s{i}.pcd": PENDING for i in range(3)},
    }
    grids = store.read(sorted(r.row for r in before.values()))
    assert storage.read_json("manifest.json")["format"] == "voxclust-store/1"  # reading migrates nothing
    assert VoxelStore.open_or_create(storage).summary()["stored"] == 4

    # The first write: the commit record the old code left (it names no batch) merges into batch two's part.
    assert store.finalize() == 2
    index = storage.read_json("manifest.json")
    assert index["format"] == "voxclust-store/2" and "items" not in index
    assert {k: v["counts"] for k, v in index["batches"].items()} == {
        "one": {STORED: 4, FAILED: 1, PENDING: 0},
        "two": {STORED: 2, FAILED: 0, PENDING: 1},
    }
    after = {r.item_id: r for r in store.items(None)}
    assert after.keys() == before.keys()
    for key, rec in before.items():
        want = replace(rec, status=STORED, capture="cloud") if key in ("two/s0.pcd", "two/s1.pcd") else rec
        assert after[key] == want
    assert np.array_equal(store.read(sorted(r.row for r in before.values())), grids)
    assert store.summary()["classes"] == {"bowl": 2, "cup": 2}

    # Batch two resumes its pending item; a new batch starts on the next chunk boundary.
    plan = store.plan("two", "file:///scans/two", [BatchItem(f"s{i}.pcd", 50) for i in range(3)])
    assert (plan.skipped, plan.reserved, plan.resumed) == (2, 0, 1)
    write_all(store, plan.jobs)
    plan = store.plan("three", "file:///scans/three", items(3))
    assert plan.jobs[0].start == 10
    write_all(store, plan.jobs)
    store.finalize()
    assert store.summary()["stored"] == 4 + 3 + 3 and store.summary()["pending"] == 0
    assert np.array_equal(store.read([0, 1, 2, 4]), grids[[0, 1, 2, 4]])


def test_a_batch_reads_and_writes_the_index_and_its_own_records_only(storage: Storage) -> None:
    store = VoxelStore.open_or_create(storage, VoxelConfig(resolution=R), chunk_items=4)
    for b in range(6):
        plan = store.plan(f"b{b}", f"s3://in/b{b}", items(20, label=f"c{b % 2}"))
        write_all(store, plan.jobs)
        store.finalize()
    parts = {o.key: storage.read_bytes(o.key) for o in storage.list("manifest")}
    assert len(parts) == 6
    index_size = len(storage.read_bytes("manifest.json"))
    plan = store.plan("new", "s3://in/new", items(20))
    write_all(store, plan.jobs)
    store.finalize()
    # Earlier batches' records were not rewritten; the index grew by one batch's entry, not by 20 records.
    assert {o.key: storage.read_bytes(o.key) for o in storage.list("manifest") if o.key in parts} == parts
    assert len(storage.read_bytes("manifest.json")) < index_size * 1.3
    assert len(store.items()) == 7 * 20
    assert [r.item_id for r in store.items(region=Region(batches=("b3",)))] == [f"b3/f{i:03d}.off" for i in range(20)]


def test_records_of_rows_a_plan_never_got_are_ignored(storage: Storage) -> None:
    """A plan that died after writing its batch's records but before the index that gives it their rows."""
    store = VoxelStore.open_or_create(storage, VoxelConfig(resolution=R), chunk_items=4)
    plan = store.plan("a", "s3://in/a", items(4))
    write_all(store, plan.jobs)
    store.finalize()
    part = store.index().batches["a"]["part"]
    doc = storage.read_json(part)
    ghost = [{**r, "row": r["row"] + 4, "item_id": f"a/g{i}", "status": PENDING} for i, r in enumerate(doc["items"])]
    storage.write_json(part, {**doc, "items": doc["items"] + ghost})
    assert len(store.items(None)) == 4
    plan = store.plan("b", "s3://in/b", items(4, prefix="g"))  # gets rows 4-7, the ghosts' rows
    assert plan.jobs[0].start == 4
    write_all(store, plan.jobs)
    store.finalize()
    owners = {r.row: r.batch for r in store.items(None)}
    assert owners == {**dict.fromkeys(range(4), "a"), **dict.fromkeys(range(4, 8), "b")}
    again = store.plan("a", "s3://in/a", items(4))
    assert (again.skipped, again.reserved, again.resumed) == (4, 0, 0)
