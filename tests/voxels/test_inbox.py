"""The inbox: batches found under a prefix, ready and processed rules, and claims that let exactly one of any
number of concurrent watchers start a batch (put-if-absent on the real S3 protocol and on a local folder)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lib.storage import open_storage
from lib.voxels import inbox
from lib.voxels.index import MANIFEST, Manifest
from lib.voxels.store import VoxelStore


def _drop(url: str, files: dict[str, bytes]) -> None:
    storage = open_storage(url)
    for key, data in files.items():
        storage.write_bytes(key, data)


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path)
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/site"


def test_batches_are_listed_with_a_fingerprint_of_their_files(root: str) -> None:
    _drop(f"{root}/inbox", {"b1/a.off": b"OFF\n", "b1/chair/train/c.off": b"OFF 1\n", "b2/x.xyz": b"0 0 0\n"})
    _drop(f"{root}/inbox", {"_tmp/ignored.off": b"1", ".hidden/y.off": b"1", "loose.off": b"1"})
    batches = inbox.list_inbox(f"{root}/inbox")
    assert [b.name for b in batches] == ["b1", "b2"]
    b1 = batches[0]
    assert b1.n_items == 2 and b1.url.endswith("/inbox/b1") and not b1.marked_ready
    # the same files give the same fingerprint; a changed or added file a new one; the marker does not count
    assert inbox.describe_batch(b1.url).fingerprint == b1.fingerprint
    _drop(b1.url, {".ready": b""})
    marked = inbox.describe_batch(b1.url)
    assert marked.marked_ready and marked.fingerprint == b1.fingerprint
    _drop(b1.url, {"a.off": b"OFF\n\n"})
    assert inbox.describe_batch(b1.url).fingerprint != b1.fingerprint
    assert inbox.list_inbox(f"{root}/nothing-here") == []


def test_a_batch_is_ready_when_marked_or_settled() -> None:
    b = inbox.InboxBatch("b", "u", "f", n_items=3, newest=1000.0, marked_ready=False)
    assert not b.ready(60, now=1030.0) and b.ready(60, now=1061.0)
    assert inbox.InboxBatch("b", "u", "f", 3, 1000.0, True).ready(60, now=1001.0)
    assert not inbox.InboxBatch("b", "u", "f", 0, 1000.0, True).ready(0, now=5000.0)  # nothing to do


def test_processed_means_every_item_of_the_batch_is_stored_or_failed(root: str) -> None:
    store = open_storage(f"{root}/store")
    batches = [
        inbox.InboxBatch(name, "u", "f", n, 0.0, True) for name, n in (("done", 2), ("pending", 2), ("grown", 3))
    ]
    assert inbox.processed(store.url, batches) == set()  # no store yet
    items = [
        {"batch": "done", "status": "stored"},
        {"batch": "done", "status": "failed"},
        {"batch": "pending", "status": "stored"},
        {"batch": "pending", "status": "pending"},
        {"batch": "grown", "status": "stored"},
        {"batch": "grown", "status": "stored"},
    ]
    items = [{"row": row, **rec} for row, rec in enumerate(items)]  # a store of format 1: records in one document
    m = Manifest(32, 16, {}, items=items, batches={"done": {}, "pending": {}, "grown": {}})
    store.write_json(MANIFEST, m.to_json())
    assert inbox.processed(store.url, batches) == {"done"}


def test_exactly_one_of_many_concurrent_watchers_claims_a_batch(root: str) -> None:
    store_url = f"{root}/store"
    batch = inbox.InboxBatch("b1", f"{root}/inbox/b1", "abcd", 3, 0.0, True)
    claims: list[inbox.Claim | None] = []
    start = threading.Barrier(8)

    def watcher(i: int) -> None:
        start.wait()
        claims.append(inbox.try_claim(store_url, batch, lambda _id: None, owner=f"w{i}"))

    threads = [threading.Thread(target=watcher, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [c for c in claims if c is not None]
    assert len(claims) == 8 and len(won) == 1 and won[0].attempt == 1
    # a later watcher, before the run is recorded, leaves it to the claimant
    assert inbox.try_claim(store_url, batch, lambda _id: None) is None
    # claims may precede the store: creating the store there still works
    VoxelStore.open_or_create(store_url)


def test_a_failed_run_is_claimed_again_up_to_max_attempts(tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    batch = inbox.InboxBatch("b1", "u", "fp", 3, 0.0, True)
    states = {"run-1": "COMPLETED"}
    first = inbox.try_claim(store_url, batch, states.get, max_attempts=2)
    assert first is not None
    inbox.record_run(store_url, first, "run-1", "pipeline-b1")
    assert inbox.try_claim(store_url, batch, states.get, max_attempts=2) is None  # finished: never again
    states["run-1"] = "FAILED"
    second = inbox.try_claim(store_url, batch, states.get, max_attempts=2)
    assert second is not None and second.attempt == 2
    assert second.idempotency_key != first.idempotency_key
    inbox.record_run(store_url, second, "run-2", "pipeline-b1")
    states["run-2"] = "CRASHED"
    assert inbox.try_claim(store_url, batch, states.get, max_attempts=2) is None  # out of attempts


def test_a_claimant_that_died_before_starting_the_run_is_replaced_after_the_stale_time(tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    batch = inbox.InboxBatch("b1", "u", "fp", 3, 0.0, True)
    first = inbox.try_claim(store_url, batch, lambda _id: None)
    assert first is not None
    assert inbox.try_claim(store_url, batch, lambda _id: None, stale_s=60) is None
    time.sleep(0.05)
    again = inbox.try_claim(store_url, batch, lambda _id: None, stale_s=0.01)
    # the same attempt and idempotency key: the server creates at most one run for it
    assert again is not None and again.reissue and again.idempotency_key == first.idempotency_key


def test_claims_live_under_an_underscore_key_that_the_store_leaves_alone(tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    claim = inbox.try_claim(store_url, inbox.InboxBatch("b1", "u", "fp", 3, 0.0, True), lambda _id: None)
    assert claim is not None and claim.key == f"{inbox.CLAIMS}/b1/fp/attempt-1.json"
    assert inbox.CLAIMS.startswith("_")
    open_storage(store_url).write_json("_someone-else/note.json", {})  # any '_' key is bookkeeping beside the store
    VoxelStore.open_or_create(store_url)


def test_a_claim_written_at_the_old_key_is_still_honoured(tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    storage = open_storage(store_url)
    batch = inbox.InboxBatch("b1", "u", "fp", 3, 0.0, True)
    old = f"{inbox.LEGACY_CLAIMS}/b1/fp"
    storage.write_json(f"{old}/attempt-1.json", {"batch": "b1", "claimed_at": time.time()})
    assert inbox.try_claim(store_url, batch, lambda _id: None) is None  # its claimant is starting the run
    storage.write_json(f"{old}/attempt-1.run.json", {"flow_run_id": "run-1", "flow_run_name": "p"})
    states = {"run-1": "COMPLETED"}
    assert inbox.try_claim(store_url, batch, states.get) is None  # done: never again
    states["run-1"] = "FAILED"
    again = inbox.try_claim(store_url, batch, states.get)
    assert again is not None and again.attempt == 2 and again.key == f"{old}/attempt-2.json"  # goes on there
    assert not storage.list(inbox.CLAIMS)
    VoxelStore.open_or_create(store_url)  # old claims before the store still do not block its creation
