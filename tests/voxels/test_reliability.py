"""Reliability under real faults: a Dask worker killed mid-run, the flow process killed mid-batch and run
again, two batches voxelized into one store at the same time, and a training process killed mid-epoch.
Every check compares against a clean run of the same input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import Client, LocalCluster

from flows.voxelize import run_voxelize
from lib.scans.demo import write_demo_batch
from lib.storage import open_storage
from lib.voxels.store import PENDING, STORED, VoxelStore
from tests.support import grids_by_item

VOXCLUST = str(Path(sys.executable).with_name("voxclust"))


def _assert_same_items(got: VoxelStore, clean: VoxelStore) -> None:
    recs = got.items(None)
    ids = [r.item_id for r in recs]
    assert len(ids) == len(set(ids)), "an item is stored twice"
    assert len({r.row for r in recs}) == len(recs), "two items share a row"
    assert not [r for r in recs if r.status == PENDING]
    want, have = grids_by_item(clean.url)[0], grids_by_item(got.url)[0]
    assert have.keys() == want.keys()
    for key, grid in want.items():
        np.testing.assert_array_equal(have[key], grid, err_msg=key)


def _cli_env(prefect_api: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_LOGGING_LEVEL": "WARNING"}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("batch") / "b1")
    write_demo_batch(url, n_per_class=6, seed=5)  # 42 scans: a run of several seconds
    return url


@pytest.fixture(scope="module")
def clean(batch: str, tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> VoxelStore:
    url = str(tmp_path_factory.mktemp("clean") / "store")
    run_voxelize(None, 2, batch_url=batch, store_url=url, chunk_items=4, items_per_task=4)
    return VoxelStore.open(url)


def _start_run(address: str, batch: str, store_url: str, result: dict[str, Any]) -> threading.Thread:
    """A voxelize run on the cluster at ``address`` in a thread of its own; ``result`` gets its summary."""
    kw = {"batch_url": batch, "store_url": store_url, "chunk_items": 4, "items_per_task": 4}
    run = threading.Thread(target=lambda: result.update(run_voxelize(address, **kw)))
    run.start()
    return run


def test_a_dask_worker_killed_mid_run(prefect_api: str, batch: str, clean: VoxelStore, tmp_path: Path) -> None:
    store_url = str(tmp_path / "store")
    result: dict[str, Any] = {}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        run = _start_run(cluster.scheduler_address, batch, store_url, result)
        # once chunks are being written, kill one worker process outright (its nanny starts a new one)
        commits = open_storage(store_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(o.key.startswith("_commits/") for o in commits.list()):
            time.sleep(0.05)
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        run.join(180)
    assert not run.is_alive() and result, "the run did not finish"
    assert result["stored"] + result["skipped"] == clean.summary()["stored"]
    _assert_same_items(VoxelStore.open(store_url), clean)


def test_a_task_group_dask_gave_up_on_is_resubmitted_in_the_same_run(
    prefect_api: str, batch: str, clean: VoxelStore, tmp_path: Path
) -> None:
    """With no failures allowed, killing the worker that runs a chunk task makes Dask give up on it at once
    (KilledWorker): the flow submits that group again and the one run stores every item once."""
    import dask

    store_url = str(tmp_path / "store")
    result: dict[str, Any] = {}
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        run = _start_run(cluster.scheduler_address, batch, store_url, result)
        deadline = time.monotonic() + 60
        busy: list[str] = []
        while time.monotonic() < deadline and not busy:
            busy = [w for w, keys in client.processing().items() if any("voxelize_chunks" in str(k) for k in keys)]
            time.sleep(0.02)
        assert busy, "no chunk task ever ran"
        os.kill(client.run(os.getpid, workers=[busy[0]])[busy[0]], signal.SIGKILL)
        run.join(180)
    assert not run.is_alive() and result, "the run did not finish"
    assert result["resubmitted"] >= 1
    assert result["stored"] + result["skipped"] == clean.summary()["stored"]
    _assert_same_items(VoxelStore.open(store_url), clean)


def test_the_flow_process_killed_mid_batch_then_run_again(
    prefect_api: str, batch: str, clean: VoxelStore, tmp_path: Path
) -> None:
    store_url = str(tmp_path / "store")
    # Chunks of 4 (as the clean run's): 11 chunk tasks, so "mid-batch" lasts seconds. With the CLI's default
    # of 32 the batch is 2 chunks, and on a busy machine the poll below sometimes saw both commits only after
    # finalize had merged them: the kill came too late.
    VoxelStore.open_or_create(store_url, chunk_items=4)
    args = [VOXCLUST, "voxelize", batch, "--store", store_url, "--workers", "2", "--items-per-task", "4", "--json"]
    proc = subprocess.Popen(
        args, env=_cli_env(prefect_api), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    storage = open_storage(store_url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len([o for o in storage.list("_commits")]) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the flow process and its Dask workers
    proc.wait(30)
    died = VoxelStore.open(store_url).summary()
    assert died["stored"] < clean.summary()["stored"], "killed too late to test anything"

    again = subprocess.run(args, env=_cli_env(prefect_api), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout)
    # only the missing items were done: the ones a finished chunk already committed were skipped
    assert result["skipped"] >= died["stored"] and result["processed"] == result["items"] - result["skipped"]
    store = VoxelStore.open(store_url)
    _assert_same_items(store, clean)
    # no orphaned partial writes: no commit records or locks left, every chunk object belongs to a row
    left = [o.key for o in storage.list() if o.key.startswith(("_commits/", "_locks/"))]
    assert not left, left
    n_chunks = -(-store.index().n_rows // store.index().chunk_items)
    chunk_keys = [o.key for o in storage.list("voxels/c")]
    assert all(int(k.split("/")[2]) < n_chunks for k in chunk_keys)


def test_two_batches_into_one_store_at_the_same_time(
    prefect_api: str, batch: str, clean: VoxelStore, tmp_path: Path
) -> None:
    other = str(tmp_path / "b2")
    write_demo_batch(other, n_per_class=6, seed=6)
    clean2_url = str(tmp_path / "clean2")
    run_voxelize(None, 2, batch_url=other, store_url=clean2_url, chunk_items=4, items_per_task=4)
    store_url = str(tmp_path / "shared")
    # create the store first so both runs use the same chunking, then start both writers at once
    VoxelStore.open_or_create(store_url, chunk_items=4)
    procs = [
        subprocess.Popen(
            [VOXCLUST, "voxelize", b, "--store", store_url, "--workers", "1", "--items-per-task", "4", "--json"],
            env=_cli_env(prefect_api),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for b in (batch, other)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    store = VoxelStore.open(store_url)
    recs = store.items(None)
    assert {r.batch for r in recs} == {"b1", "b2"}
    assert all(r.status == STORED for r in recs)
    assert len({r.row for r in recs}) == len(recs) == clean.summary()["stored"] * 2
    have, _ = grids_by_item(store_url)
    for ref in (clean.url, clean2_url):
        for key, grid in grids_by_item(ref)[0].items():
            np.testing.assert_array_equal(have[key], grid, err_msg=key)


def test_training_killed_mid_epoch_resumes_to_the_same_result(prefect_api: str, tmp_path: Path) -> None:
    from tests.support import write_npz

    data = str(tmp_path / "store")
    from lib.voxels.importer import import_npz

    import_npz(write_npz(tmp_path / "d.npz", n_per_class=24), data, classes=["box", "ball", "rod"])
    env = {**_cli_env(prefect_api), "OMP_NUM_THREADS": "1"}

    def train(run: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [VOXCLUST, "train", "-m", "autoencoder", "--store", data, "--run", run, "--epochs", "6", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    whole = train(str(tmp_path / "whole"))
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-3000:]
    reference = json.loads(out)["metrics"]

    run = tmp_path / "preempted"
    first = train(str(run))
    ckpt = run / "checkpoint.pt"
    deadline = time.monotonic() + 120
    seen: list[float] = []
    while time.monotonic() < deadline and len(seen) < 3:  # created, then two more epoch steps written
        if ckpt.exists() and (not seen or ckpt.stat().st_mtime != seen[-1]):
            seen.append(ckpt.stat().st_mtime)
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)  # a preempted machine: no clean-up of any kind
    first.wait(30)
    assert first.returncode == -signal.SIGKILL, "training finished before it could be killed"

    resumed = train(str(run))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    metrics = json.loads(out)["metrics"]
    assert metrics.keys() == reference.keys()
    for key, value in reference.items():
        if isinstance(value, float) and not key.endswith("seconds"):  # wall times differ, results must not
            assert metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def _alive(pids: set[int]) -> set[int]:
    import psutil

    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_a_voxelize_run_and_a_worker_killed_leave_no_process_behind(batch: str, tmp_path: Path) -> None:
    """The CLI with no Prefect API configured (it starts a temporary server) on its own LocalCluster: a worker
    SIGKILLed, then the CLI process alone SIGKILLed (not its group). Its temporary server, its Dask
    processes and whatever a worker started all end by themselves."""
    import psutil

    store_url = str(tmp_path / "store")
    VoxelStore.open_or_create(store_url, chunk_items=4)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    args = [VOXCLUST, "voxelize", batch, "--store", store_url, "--workers", "2", "--items-per-task", "4", "--json"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        cli = psutil.Process(proc.pid)
        storage = open_storage(store_url)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not list(storage.iter_objects("_commits")):
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the kills"
        family = {p.pid for p in cli.children(recursive=True)}
        workers = [p for p in cli.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]  # not the tracker
        assert workers and any("uvicorn" in " ".join(p.cmdline()) for p in cli.children(recursive=True))
        workers[0].kill()
        time.sleep(1.0)
        family |= {p.pid for p in cli.children(recursive=True)}  # the restarted worker too
        proc.kill()  # the flow process only: its children are on their own now
        proc.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(family):
            time.sleep(0.2)
        left = {pid: " ".join(psutil.Process(pid).cmdline())[:120] for pid in _alive(family)}
        assert not left, f"left behind: {left}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
