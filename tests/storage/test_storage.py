"""One storage contract, run against a local directory and against a real S3 server (moto, over HTTP)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zarr

from lib.storage import LocalStorage, LockTimeout, S3Settings, S3Storage, Storage, StorageError, open_storage
from tests.support import S3Server, free_port


class StorageContract:
    """Every backend passes these through a short subclass providing the ``storage`` fixture."""

    def test_roundtrip_and_overwrite(self, storage: Storage) -> None:
        storage.write_bytes("a/b/c.bin", b"one")
        assert storage.read_bytes("a/b/c.bin") == b"one"
        storage.write_bytes("a/b/c.bin", b"two!")
        assert storage.read_bytes("a/b/c.bin") == b"two!"

    def test_list_is_recursive_sorted_with_sizes(self, storage: Storage) -> None:
        for key, data in {"z.txt": b"zz", "d/x.off": b"x" * 5, "d/e/y.ply": b"", "a.stl": b"123"}.items():
            storage.write_bytes(key, data)
        listed = [(o.key, o.size) for o in storage.list()]
        assert listed == [("a.stl", 3), ("d/e/y.ply", 0), ("d/x.off", 5), ("z.txt", 2)]
        assert [o.key for o in storage.list("d")] == ["d/e/y.ply", "d/x.off"]
        assert storage.list("nothing-here") == []

    def test_exists_and_delete(self, storage: Storage) -> None:
        assert not storage.exists("k")
        storage.write_bytes("k", b"1")
        assert storage.exists("k")
        storage.delete("k")
        assert not storage.exists("k")
        storage.delete("k")  # deleting a missing key is fine

    def test_missing_key_raises_file_not_found(self, storage: Storage) -> None:
        with pytest.raises(FileNotFoundError):
            storage.read_bytes("missing/key")

    def test_write_if_absent(self, storage: Storage) -> None:
        assert storage.write_if_absent("once", b"first")
        assert not storage.write_if_absent("once", b"second")
        assert storage.read_bytes("once") == b"first"

    def test_write_if_absent_has_one_winner_under_contention(self, storage: Storage) -> None:
        wins: list[int] = []

        def attempt(i: int) -> None:
            if storage.write_if_absent("race", str(i).encode()):
                wins.append(i)

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert storage.read_bytes("race") == str(wins[0]).encode()

    def test_lock_excludes(self, storage: Storage) -> None:
        assert _most_holders_at_once(storage, "t", threads=4, hold_s=0.02) == 1
        assert not storage.exists("_locks/t.lock")

    def test_lock_times_out_and_breaks_stale(self, storage: Storage) -> None:
        with storage.lock("held", ttl_s=300), pytest.raises(LockTimeout), storage.lock("held", timeout_s=0.2):
            pass
        # a holder that died: its lock expires and is broken
        storage.write_json("_locks/dead.lock", {"owner": "gone", "expires": time.time() - 1})
        with storage.lock("dead", timeout_s=5):
            assert storage.read_json("_locks/dead.lock")["owner"] != "gone"

    def test_stale_lock_is_broken_by_one_waiter_only(self, storage: Storage) -> None:
        storage.write_json("_locks/s.lock", {"owner": "gone", "expires": time.time() - 1})
        assert _most_holders_at_once(storage, "s", threads=6, hold_s=0.05) == 1
        assert storage.list("_locks") == []  # neither the lock nor its breaker is left behind

    def test_lock_of_a_killed_process_of_this_machine_is_broken_at_once(self, storage: Storage) -> None:
        code = (
            "import sys, time; from lib.storage import open_storage\n"
            "with open_storage(sys.argv[1]).lock('held', ttl_s=300):\n"
            "    print('held', flush=True); time.sleep(600)\n"
        )
        holder = subprocess.Popen([sys.executable, "-c", code, storage.url], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            with pytest.raises(LockTimeout), storage.lock("held", timeout_s=0.5):  # alive: it is respected
                pass
        finally:
            holder.kill()  # not reaped yet: a zombie counts as gone as well
        started = time.monotonic()
        with storage.lock("held", timeout_s=30):
            assert storage.read_json("_locks/held.lock")["pid"] == os.getpid()
        assert time.monotonic() - started < 10  # not the 300 s of its ttl
        assert storage.list("_locks") == []
        holder.wait()

    @pytest.mark.timeout(120)
    def test_listing_while_writers_work(self, storage: Storage) -> None:
        """8 writers (plain overwrites and deletes, put-if-absent, zarr chunks) and 8 listers on one prefix for
        a bounded time: no lister fails, none sees a temporary file, every put-if-absent key has one creator."""
        seconds = 8.0
        stop = threading.Event()
        errors: list[BaseException] = []
        creators: dict[str, list[int]] = {}
        seen: set[str] = set()
        guard = threading.Lock()
        deadline = time.monotonic() + seconds
        arr = zarr.open_group(storage.child("w").zarr_store(), mode="a", zarr_format=3).create_array(
            "z", shape=(64, 4), chunks=(1, 4), dtype="int32"
        )

        def guarded(fn):  # type: ignore[no-untyped-def]
            def run(i: int) -> None:
                try:
                    fn(i)
                except BaseException as exc:  # reported below
                    errors.append(exc)
                    stop.set()

            return run

        @guarded
        def plain(i: int) -> None:
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                key = f"w/plain/{i}/{n % 5}.bin"
                storage.write_bytes(key, bytes(n % 251 for _ in range(64)))
                if n % 3 == 2:
                    storage.delete(f"w/plain/{i}/{(n - 1) % 5}.bin")
                n += 1

        @guarded
        def if_absent(i: int) -> None:
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                key = f"w/claims/{n // 2}/attempt-{n % 2}.json"  # every such writer races for every key
                if storage.write_if_absent(key, f"{i}:{n}:{time.monotonic_ns()}".encode()):
                    with guard:
                        creators.setdefault(key, []).append(i)
                n += 1

        @guarded
        def chunks(i: int) -> None:
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                arr[n % 64] = n
                n += 1

        @guarded
        def lister(i: int) -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                for o in storage.list("w" if i % 2 else ""):
                    name = o.key.rsplit("/", 1)[-1]
                    assert not name.startswith("."), f"listed a temporary file {o.key}"
                    assert ".tmp" not in name and ".partial" not in name, f"listed a temporary file {o.key}"
                    with guard:
                        seen.add(o.key)

        workers = [plain] * 3 + [if_absent] * 4 + [chunks] + [lister] * 8
        threads = [threading.Thread(target=fn, args=(i,)) for i, fn in enumerate(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert creators and all(len(who) == 1 for who in creators.values())
        assert set(creators) == {o.key for o in storage.list("w/claims")}
        assert any(k.startswith("w/plain/") for k in seen) and any(k.startswith("w/z/c/") for k in seen)
        assert {o.key for o in storage.list()} == {o.key for o in storage.list() if not o.key.startswith(".")}

    def test_listing_leaves_out_temporary_files(self, storage: Storage) -> None:
        storage.write_bytes("d/a.json", b"1")
        if isinstance(storage, LocalStorage):  # leftovers of writes that died (ours, older ones, zarr's)
            names = (".a.json.k3j_9xq2.voxclust-tmp", ".a.json.ab_cd123.tmp", f"0.{'0123456789abcdef' * 2}.partial")
            for name in names:
                (storage.root / "d" / name).write_bytes(b"partial")
        assert [o.key for o in storage.list()] == ["d/a.json"]

    @pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "", "a/./b"])
    def test_keys_cannot_escape_the_root(self, storage: Storage, key: str) -> None:
        with pytest.raises(StorageError):
            storage.write_bytes(key, b"x")
        with pytest.raises(StorageError):
            storage.read_bytes(key)

    def test_child_is_rooted_below(self, storage: Storage) -> None:
        child = storage.child("sub/dir")
        child.write_bytes("f", b"data")
        assert storage.read_bytes("sub/dir/f") == b"data"
        assert [o.key for o in child.list()] == ["f"]
        assert child.url.endswith("/sub/dir")

    def test_zarr_v3_roundtrip(self, storage: Storage) -> None:
        group = zarr.open_group(storage.zarr_store(), mode="a", zarr_format=3)
        arr = group.create_array("v", shape=(10, 4, 4, 4), chunks=(5, 4, 4, 4), dtype="bool")
        data = np.random.default_rng(0).random((10, 4, 4, 4)) > 0.5
        arr[:] = data
        again = zarr.open_group(storage.zarr_store(read_only=True), mode="r")["v"]
        assert isinstance(again, zarr.Array)
        np.testing.assert_array_equal(again[:], data)
        keys = {o.key for o in storage.list()}
        assert {"zarr.json", "v/zarr.json", "v/c/0/0/0/0", "v/c/1/0/0/0"} <= keys

    def test_check(self, storage: Storage) -> None:
        storage.check()  # reachable
        storage.write_bytes("x", b"1")
        storage.check(must_exist=True)
        with pytest.raises(StorageError):
            storage.child("no/such/prefix").check(must_exist=True)


def _most_holders_at_once(storage: Storage, name: str, threads: int, hold_s: float) -> int:
    """Start ``threads`` threads at once that each take lock ``name`` and hold it ``hold_s``; the most that ever
    held it at the same time."""
    inside = 0
    peak = 0
    guard = threading.Lock()
    start = threading.Barrier(threads)

    def work() -> None:
        nonlocal inside, peak
        start.wait()
        with storage.lock(name, timeout_s=30):
            with guard:
                inside += 1
                peak = max(peak, inside)
            time.sleep(hold_s)
            with guard:
                inside -= 1

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return peak


class TestLocalStorage(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path) -> Storage:  # type: ignore[no-untyped-def]
        return LocalStorage(tmp_path / "root")


class TestS3Storage(StorageContract):
    @pytest.fixture
    def storage(self, s3_bucket: str) -> Storage:
        return open_storage(f"s3://{s3_bucket}/some/prefix")

    def test_objects_live_under_the_prefix(self, storage: Storage, s3_server: S3Server) -> None:
        assert isinstance(storage, S3Storage)
        storage.write_bytes("a/b", b"1")
        keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=storage.bucket)["Contents"]]
        assert keys == ["some/prefix/a/b"]

    def test_storages_with_the_same_settings_share_one_client(self, storage: Storage, s3_bucket: str) -> None:
        # A voxelize run opens its batch and store several times; each new client cost 0.15-0.3 s of CPU.
        other = open_storage(f"s3://{s3_bucket}/elsewhere")
        assert isinstance(storage, S3Storage) and isinstance(other, S3Storage)
        assert other.client is storage.client
        other.write_bytes("k", b"v")
        assert other.exists("k") and not storage.exists("k")  # each storage keeps to its own prefix
        moved = S3Settings(endpoint_url=f"http://127.0.0.1:{free_port()}")
        assert S3Storage(s3_bucket, "elsewhere", moved).client is not storage.client

    def test_survives_pickle(self, storage: Storage) -> None:
        import pickle

        storage.write_bytes("p", b"ok")
        assert pickle.loads(pickle.dumps(storage)).read_bytes("p") == b"ok"


def test_open_storage_urls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    local = open_storage(tmp_path.as_uri())
    assert isinstance(local, LocalStorage) and local.root == tmp_path
    s3 = open_storage("s3://bucket-name/a/b/")
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("bucket-name", "a/b")
    for bad in ("ftp://host/x", "s3:///nobucket", "", "gs://b/p", "file://otherhost/x"):
        with pytest.raises(StorageError):
            open_storage(bad)


@pytest.mark.timeout(60)  # an error, not endless retries
def test_unreachable_endpoint_is_one_clear_error() -> None:
    settings = S3Settings(endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=1, max_attempts=1)
    with pytest.raises(StorageError, match="not reachable"):
        S3Storage("bucket", "p", settings).check()


def test_missing_bucket_is_one_clear_error(s3_server: S3Server) -> None:
    with pytest.raises(StorageError, match="not reachable"):
        open_storage("s3://no-such-bucket-here/x").check()
