"""Object-store faults: a fault-injecting proxy on 127.0.0.1 in front of the S3 server answers 500/503, resets
connections (before and after the server did the request) and delays answers. Voxelize and compare still
complete through retries with backoff, a reader never sees a half-written chunk, and the manifest agrees
with the data."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from flows.voxelize import run_voxelize
from lib.scans.demo import write_demo_batch
from lib.storage import S3Settings, S3Storage, open_storage
from lib.voxels.store import STORED, VoxelStore
from tests.faultproxy import FaultProxy
from tests.support import S3Server


@pytest.fixture
def faulty(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint, rate=0.08, delay_s=0.3, seed=11) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # inherited by the Dask workers the flow starts
        yield proxy


def test_put_if_absent_recognises_its_own_write_after_a_lost_answer(s3_server: S3Server, s3_bucket: str) -> None:
    with FaultProxy(s3_server.endpoint, rate=1.0, kinds=("reset_after",)) as proxy:
        settings = S3Settings(endpoint_url=proxy.endpoint, max_attempts=2)
        storage = S3Storage(s3_bucket, "locks", settings)
        # the first attempt creates the object but its answer is lost; the retry meets that object
        proxy.rate = 0.5
        proxy.random.seed(3)
        created = [storage.write_if_absent(f"k{i}", f"token-{i}".encode()) for i in range(6)]
    direct = open_storage(f"s3://{s3_bucket}/locks")
    assert all(created) and [direct.read_bytes(f"k{i}") for i in range(6)] == [f"token-{i}".encode() for i in range(6)]
    assert proxy.injected["reset_after"] >= 1
    assert not direct.write_if_absent("k0", b"another writer")  # a real conflict is still a conflict


def test_voxelize_and_compare_complete_through_s3_faults(
    prefect_api: str, s3_server: S3Server, s3_bucket: str, faulty: FaultProxy
) -> None:
    batch_url = f"s3://{s3_bucket}/inbox/b1"
    faulty.rate = 0.0
    write_demo_batch(batch_url, n_per_class=3, seed=2)
    clean_url = f"s3://{s3_bucket}/stores/clean"
    run_voxelize(None, 2, batch_url=batch_url, store_url=clean_url, chunk_items=4, items_per_task=8)

    # a reader straight on the server (no faults) samples the store while the faulty run writes it
    store_url = f"s3://{s3_bucket}/stores/faulty"
    snapshots: list[np.ndarray] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        import zarr

        from lib.storage import S3Storage as Direct

        direct = Direct(s3_bucket, "stores/faulty", S3Settings(endpoint_url=s3_server.endpoint))
        while not stop.is_set():
            try:
                if direct.exists("voxels/zarr.json"):
                    arr = zarr.open_group(direct.zarr_store(read_only=True), mode="r")["voxels"]
                    snapshots.append(np.asarray(arr[:]))
            except Exception as exc:  # a chunk that does not decode would land here
                if "zarr.json" not in str(exc):
                    errors.append(exc)
            time.sleep(0.1)

    thread = threading.Thread(target=reader, daemon=True)
    faulty.rate = 0.08
    thread.start()
    try:
        result = run_voxelize(None, 2, batch_url=batch_url, store_url=store_url, chunk_items=4, items_per_task=8)
    finally:
        stop.set()
        thread.join(10)
    assert faulty.faults >= 5, faulty.injected
    assert not errors, errors[:3]
    clean, got = VoxelStore.open(clean_url), VoxelStore.open(store_url)
    assert result["stored"] == clean.summary()["stored"] and result["failed"] == 0

    # the manifest agrees with the data: every item once, each stored grid equal to the clean run's
    recs = {r.item_id: r for r in got.items(None)}
    clean_recs = {r.item_id: r for r in clean.items(None)}
    assert recs.keys() == clean_recs.keys() and {r.status for r in recs.values()} == {STORED}
    assert len({r.row for r in recs.values()}) == len(recs)
    final = got.read([r.row for r in recs.values()])
    np.testing.assert_array_equal(final, clean.read([clean_recs[k].row for k in recs]))
    # what the reader saw mid-run: each row either not written yet (empty) or already final
    whole = np.asarray(got.array(read_only=True)[:])
    for snap in snapshots:
        for row in range(snap.shape[0]):
            assert not snap[row].any() or np.array_equal(snap[row], whole[row]), f"row {row} half-written"

    # compare through the same faults
    from flows.compare import compare_methods
    from lib.compare.rows import CompareConfig, MethodEntry

    before = faulty.faults
    report = compare_methods(
        store_url, [MethodEntry(name="raw", method="raw")], CompareConfig(k=3, tsne=False, elbow_k_max=4)
    )
    assert report["rows"][0]["status"] == "ok"
    assert open_storage(report["report_url"]).exists("report.html")
    assert faulty.faults > before
