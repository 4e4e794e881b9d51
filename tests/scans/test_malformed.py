"""Malformed input (issue 6, item 1): every kind of tests/malformed.py alone, mixed batches through the real
flow on a local folder and on S3, and fuzzing of the readers."""

from __future__ import annotations

import os
import re
import struct
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.voxelize import run_voxelize
from lib.scans.batch import key_problem, list_batch
from lib.scans.readers import ReadError, ReadLimits
from lib.scans.voxelize import VoxelConfig, voxelize_item
from lib.storage import StorageError, open_storage
from lib.voxels.ingest import plan_batch, process_chunk
from lib.voxels.store import FAILED, STORED, VoxelStore
from tests import malformed as m
from tests.support import S3Server

CFG = VoxelConfig()
ENTRIES = m.make_all()
CONTENT = [e for e in ENTRIES if e.listed and e.content_bad]
NAMES = [e for e in ENTRIES if e.listed and not e.content_bad]
UNLISTED = [(e, t) for e in ENTRIES if not e.listed for t in sorted(e.targets)]
BATCH = "scans"  # the batch folder / prefix name: item ids are "scans/<key>" in every store
N_GOOD, SEED = 10, 3


def _kind(entry: m.Malformed) -> str:
    return entry.kind


# --------------------------------------------------------------------------- the corpus, kind by kind


def test_the_corpus() -> None:
    assert len(m.KINDS) >= 24
    assert len({e.key for e in ENTRIES}) == len(ENTRIES)
    named_in_the_issue = {
        "empty-file",
        "truncated-binary-ply",
        "truncated-binary-stl",
        "off-wrong-counts",
        "fused-off-header-wrong-counts",
        "nan-vertex",
        "inf-vertex",
        "face-past-vertex-list",
        "zero-area-mesh",
        "single-point",
        "off-claims-1e8-vertices",
        "garbage-stl",
        "wrong-extension-stl-as-off",
        "non-utf8-name",
        "symlink-escaping-batch",
        "dotdot-key-escaping-prefix",
        "pcd-wrong-points-count",
        "over-size-limit",
    }
    assert named_in_the_issue <= set(m.KINDS)
    assert {m.LOCAL, m.S3} == {t for e in ENTRIES for t in e.targets}


@pytest.mark.parametrize("entry", CONTENT, ids=_kind)
def test_bad_content_fails_with_read_error_only(entry: m.Malformed) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ReadError) as info:  # any other exception type fails the test
            voxelize_item(entry.key, entry.data, CFG, m.LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = info.value
    assert err.source == entry.key and str(err) == f"{entry.key}: {err.reason}"
    assert entry.reason in err.reason, err.reason
    assert m.readable(err.reason), err.reason
    assert peak < 64 * 2**20  # claimed counts of 10^8 fail before anything is allocated


@pytest.mark.parametrize("entry", NAMES, ids=_kind)
def test_bad_names_are_refused_whatever_the_content(entry: m.Malformed) -> None:
    problem = key_problem(entry.key)
    assert problem is not None and entry.reason in problem and m.readable(problem), problem
    assert voxelize_item(entry.key, entry.data, CFG, m.LIMITS).any()  # the bytes alone are fine


def test_plain_names_are_not_refused() -> None:
    for key in ["a.off", "chair/train/chair_0001.off", "odd/ünï cödé ✓ 50%.xyz", "x y/z?#%41.PLY", "a..b.off"]:
        assert key_problem(key) is None, key


def test_glb_textures_are_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    # a small PNG can decode to hundreds of MB (9000 x 9000 pixels: 260 KB in the file, 600 MB decoded)
    import PIL.Image

    opened: list[object] = []
    real_open = PIL.Image.open

    def counting_open(*args: Any, **kw: Any) -> Any:
        opened.append(args)
        return real_open(*args, **kw)

    data = m.textured_glb()
    monkeypatch.setattr(PIL.Image, "open", counting_open)
    assert voxelize_item("textured.glb", data, CFG, m.LIMITS).any()
    assert not opened


def _batch_url(target: str, tmp_path: Path, request: pytest.FixtureRequest, name: str = BATCH) -> str:
    if target == m.S3:
        return f"s3://{request.getfixturevalue('s3_bucket')}/inbox/{name}"
    return str(tmp_path / name)


@pytest.mark.parametrize(("entry", "target"), UNLISTED, ids=lambda v: v if isinstance(v, str) else v.kind)
def test_links_pipes_folders_and_escaping_keys_never_become_items(
    entry: m.Malformed, target: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _batch_url(target, tmp_path, request)
    m.write_files(url, {"good.off": m.OFF_TETRA})
    m.write_entry(url, entry)
    storage = open_storage(url)
    assert [it.key for it in list_batch(storage)] == ["good.off"]
    if entry.refused:  # and where a read can be attempted, the storage refuses to follow it out of the batch
        with pytest.raises(StorageError) as info:
            storage.read_bytes(entry.key)
        assert entry.reason in str(info.value)


def test_local_storage_refuses_keys_out_of_the_root(tmp_path: Path) -> None:
    (tmp_path / "outside.off").write_bytes(m.OFF_TETRA)
    storage = open_storage(str(tmp_path / BATCH))
    for key in ["../outside.off", f"../{BATCH}/../outside.off", "/etc/passwd", "a/../../outside.off"]:
        with pytest.raises(StorageError, match="escapes"):
            storage.read_bytes(key)


def test_a_link_swapped_in_after_listing_fails_its_item_only(tmp_path: Path) -> None:
    batch, store = tmp_path / BATCH, str(tmp_path / "store")
    m.write_files(str(batch), {"a.off": m.OFF_TETRA, "b.off": m.OFF_TETRA})
    plan = plan_batch(str(batch), store, chunk_items=8)
    (tmp_path / "secret.off").write_bytes(m.OFF_TETRA)
    (batch / "b.off").unlink()
    os.symlink(tmp_path / "secret.off", batch / "b.off")  # between listing and reading
    (job,) = plan.jobs
    summary = process_chunk(job, plan.source, store, plan.voxel, m.LIMITS)
    assert (summary.stored, summary.failed) == (1, 1)
    vs = VoxelStore.open(store)
    vs.finalize()
    failed = {r.item_id: r.reason for r in vs.items(FAILED)}
    assert list(failed) == [f"{BATCH}/b.off"] and "symbolic link" in failed[f"{BATCH}/b.off"]


# --------------------------------------------------------------------------- mixed batches through the flow


@pytest.fixture(scope="module")
def dask_address(prefect_api: str, s3_server: S3Server) -> Iterator[str]:
    """One small LocalCluster for the module's flow runs, started after the Prefect API and the S3 endpoint
    are in the environment (its worker processes inherit both)."""
    from distributed import LocalCluster

    from flows.runners import local_cluster_kwargs

    with LocalCluster(**local_cluster_kwargs(2)) as cluster:
        yield cluster.scheduler_address


def _run(address: str, batch_url: str, store_url: str) -> dict[str, Any]:
    return run_voxelize(
        address,
        batch_url=batch_url,
        store_url=store_url,
        chunk_items=8,
        items_per_task=8,
        max_bytes=m.LIMITS.max_bytes,  # = Expected.flow_kwargs
        max_vertices=m.LIMITS.max_vertices,
    )


@pytest.fixture(scope="module")
def clean_store(dask_address: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The good files alone, voxelized by the same flow: what the mixed runs must store, bit for bit."""
    root = tmp_path_factory.mktemp("clean")
    good = m.good_files(N_GOOD, SEED)
    m.write_files(str(root / BATCH), good)
    result = _run(dask_address, str(root / BATCH), str(root / "store"))
    assert (result["stored"], result["failed"]) == (len(good), 0)
    return str(root / "store")


def _labels(store: VoxelStore) -> dict[str, tuple[str | None, str | None]]:
    classes = store.index().classes
    return {r.item_id: (None if r.label is None else classes[r.label], r.split) for r in store.items(None)}


@pytest.mark.parametrize("target", [m.LOCAL, m.S3])
def test_mixed_batch_fails_every_bad_item_and_stores_the_good_ones_exactly(
    target: str, dask_address: str, clean_store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    batch_url = _batch_url(target, tmp_path, request)
    store_url = batch_url.replace(f"inbox/{BATCH}", "stores/mixed") if target == m.S3 else str(tmp_path / "store")
    expected = m.write_mixed_batch(batch_url, N_GOOD, SEED)
    assert expected.batch == BATCH and expected.target == target and expected.limits == m.LIMITS
    n_good, n_bad = len(expected.good), len(expected.bad)
    assert n_bad >= 24 and expected.unlisted

    result = _run(dask_address, batch_url, store_url)  # returns only when the flow run completed

    assert (result["items"], result["processed"], result["skipped"]) == (n_good + n_bad, n_good + n_bad, 0)
    assert (result["stored"], result["failed"]) == (n_good, n_bad)
    store = VoxelStore.open(store_url)
    summary = store.summary()
    assert (summary["stored"], summary["failed"], summary["pending"]) == (n_good, n_bad, 0)
    records = {r.item_id: r for r in store.items(status=None)}
    assert set(records) == {expected.item_id(k) for k in [*expected.good, *expected.bad]}
    assert not any("outside" in item_id or "pipe" in item_id or "hidden" in item_id for item_id in records)

    wrong = {}
    for key, entry in expected.bad.items():
        rec = records[expected.item_id(key)]
        if rec.status != FAILED or entry.reason not in rec.reason or not m.readable(rec.reason):
            wrong[entry.kind] = (rec.status, rec.reason)
    assert not wrong
    assert all(records[expected.item_id(k)].status == STORED for k in expected.good)
    assert all(not records[expected.item_id(k)].reason for k in expected.good)

    # the good items are stored exactly as a run of the good files alone stores them, labels included
    clean = VoxelStore.open(clean_store)
    clean_rows = {r.item_id: r.row for r in clean.items()}
    assert set(clean_rows) == {expected.item_id(k) for k in expected.good}
    ids = sorted(clean_rows)
    mixed_grids = store.read([records[i].row for i in ids])
    clean_grids = clean.read([clean_rows[i] for i in ids])
    assert mixed_grids.dtype == clean_grids.dtype == np.bool_
    differ = [i for i, a, b in zip(ids, mixed_grids, clean_grids, strict=True) if not np.array_equal(a, b)]
    assert not differ
    assert all(g.any() for g in mixed_grids)
    mixed_labels, clean_labels = _labels(store), _labels(clean)
    assert {i: mixed_labels[i] for i in ids} == clean_labels
    # rows of failed items stay empty
    assert not store.read([records[expected.item_id(k)].row for k in expected.bad]).any()


# --------------------------------------------------------------------------- fuzzing the readers

FUZZ_LIMITS = ReadLimits(max_bytes=1 << 16, max_vertices=5_000)
FUZZ_CFG = VoxelConfig(resolution=16)
SAMPLES = m.valid_samples()
NUMBERS = [
    b"0",
    b"-1",
    b"1",
    b"3",
    b"255",
    b"65536",
    b"4294967295",
    b"-2147483649",
    b"100000000",
    b"99999999999999999999",
    b"1e308",
    b"-1e308",
    b"1e400",
    b"1e-320",
    b"nan",
    b"-inf",
    b"0.5",
    b"x",
    b"",
]
WORDS = [
    struct.pack("<I", 0),
    struct.pack("<I", 0xFFFFFFFF),
    struct.pack("<I", 100_000_000),
    struct.pack("<i", -1),
    struct.pack("<f", float("nan")),
    struct.pack("<f", float("inf")),
    struct.pack("<f", 3.4e38),
    struct.pack("<H", 0xFFFF),
    b"\xff",
    b"\x00",
]
_NUMBER = re.compile(rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_POS = st.floats(0, 1, exclude_max=True)
_EDIT = st.one_of(
    st.tuples(st.just("flip"), _POS, st.integers(0, 7)),
    st.tuples(st.just("truncate"), _POS),
    st.tuples(st.just("insert"), _POS, st.sampled_from(NUMBERS)),
    st.tuples(st.just("number"), st.integers(0, 63), st.sampled_from(NUMBERS)),
    st.tuples(st.just("word"), _POS, st.sampled_from(WORDS)),
    st.tuples(st.just("header-word"), st.sampled_from([8, 12, 16, 20, 80]), st.sampled_from(WORDS)),
    st.tuples(st.just("delete"), _POS, st.integers(1, 16)),
    st.tuples(st.just("duplicate"), _POS, st.integers(1, 64)),
    st.tuples(st.just("bytes"), _POS, st.binary(min_size=1, max_size=8)),
)
_EDITS = st.lists(_EDIT, min_size=1, max_size=4)
MAGICS = [b"", b"OFF\n", b"OFF", b"ply\nformat binary_little_endian 1.0\n", b"ply\nformat ascii 1.0\n", b"solid x\n"]
MAGICS += [b"glTF\x02\x00\x00\x00", b"VERSION 0.7\nFIELDS x y z\n", b"v 0 0 0\nf "]
_FUZZ = settings(
    max_examples=1000,
    deadline=timedelta(seconds=5),  # a hang or a runaway parse shows up as a deadline failure
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mutate(data: bytes, edits: list[tuple[Any, ...]]) -> bytes:
    out = bytearray(data)
    for op, *args in edits:
        pos = int(args[0] * len(out)) if op not in ("number", "header-word") else 0
        if op == "flip" and out:
            out[pos] ^= 1 << args[1]
        elif op == "truncate":
            del out[pos:]
        elif op == "insert":
            out[pos:pos] = args[1]
        elif op == "number":
            found = list(_NUMBER.finditer(bytes(out)))
            if found:
                hit = found[args[0] % len(found)]
                out[hit.start() : hit.end()] = args[1]
        elif op in ("word", "bytes"):
            out[pos : pos + len(args[1])] = args[1]
        elif op == "header-word":
            out[args[0] : args[0] + len(args[1])] = args[1]
        elif op == "delete":
            del out[pos : pos + args[1]]
        elif op == "duplicate":
            out[pos:pos] = out[pos : pos + args[1]]
    return bytes(out)


def _only_read_errors(source: str, data: bytes) -> None:
    try:
        grid = voxelize_item(source, data, FUZZ_CFG, FUZZ_LIMITS)
    except ReadError as err:
        assert err.source == source and m.readable(err.reason), repr(err.reason)
        return
    assert grid.shape == (16, 16, 16) and grid.dtype == np.bool_ and grid.any()


@pytest.mark.timeout(120)
@settings(_FUZZ, max_examples=1500)
@given(sample=st.sampled_from(SAMPLES), edits=_EDITS)
def test_fuzz_mutated_valid_files(sample: tuple[str, bytes], edits: list[tuple[Any, ...]]) -> None:
    ext, data = sample
    _only_read_errors(f"mutant{ext}", mutate(data, edits))


@pytest.mark.timeout(120)
@_FUZZ
@given(
    ext=st.sampled_from(sorted({ext for ext, _ in SAMPLES} | {".abc", ""})),
    magic=st.sampled_from(MAGICS),
    data=st.binary(max_size=512),
)
def test_fuzz_random_bytes(ext: str, magic: bytes, data: bytes) -> None:
    _only_read_errors(f"random{ext}", magic + data)
