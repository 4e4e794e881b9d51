"""Test and benchmark support: a real S3 server (moto's) in its own process on 127.0.0.1, synthetic voxel
shapes, and helpers that several test modules share."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lib.processes import die_with_parent

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def offline_prefect() -> None:
    """Prefect settings for a benchmark script: its own temporary home, no analytics, quiet logs, and a
    temporary local API unless the script starts one (``flows.runners.prefect_api``). Call before importing
    Prefect."""
    if "PREFECT_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="voxclust-bench-prefect-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)  # its processes end before this one
        os.environ["PREFECT_HOME"] = home
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.pop("PREFECT_API_URL", None)


def grids_by_item(store_url: str) -> tuple[dict[str, Any], Counter[str]]:
    """The stored grid of each item id, and how many manifest records each item id has."""
    from lib.voxels.store import STORED, VoxelStore

    store = VoxelStore.open(store_url)
    recs = store.items(None)
    stored = [r for r in recs if r.status == STORED]
    grids = store.read([r.row for r in stored]) if stored else []
    return {r.item_id: g for r, g in zip(stored, grids, strict=True)}, Counter(r.item_id for r in recs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` consecutive ports that are free now on 127.0.0.1 (the local stack's S3 server takes the nine above
    its own: ports drawn one by one could fall among them)."""
    # Below the kernel's ephemeral range: a client connection made meanwhile cannot take one of them.
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(10000, max(10001, low - n))
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + n):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return list(range(first, first + n))
    raise RuntimeError(f"no {n} consecutive free ports on 127.0.0.1")


def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class S3Server:
    """moto's S3 server as a separate process, spoken to over HTTP like AWS S3 or MinIO."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # a killed test run or benchmark leaves no server behind
        )
        wait_port(self.port)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "voxclust-test-key",
            "AWS_SECRET_ACCESS_KEY": "voxclust-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        e = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=e["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=e["AWS_SECRET_ACCESS_KEY"],
            region_name=e["AWS_DEFAULT_REGION"],
        )

    def new_bucket(self) -> str:
        name = f"vc-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Postgres:
    """A throwaway PostgreSQL server on a free loopback port in ``root``, started as the local stack starts one
    (:func:`voxclust.stack_parts.postgres_cluster`: Debian's package, run as ``postgres`` when the tests are root)."""

    def __init__(self, root: Path) -> None:
        from voxclust.stack_parts import postgres_cluster

        self.port = free_port()
        argv, self.url = postgres_cluster(root, self.port)
        self.log = open(root / "postgres.log", "ab")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def benchmark_store(data: str, store: str | None, work: str | None, name: str) -> str:
    """A benchmark's voxel store: ``store`` when given (its finished runs are reused), else the npz ``data``
    imported into a new store under ``work`` (default: a temporary folder ``voxclust-<name>-*``)."""
    from lib.voxels.importer import import_npz

    if store:
        url = store
    else:
        folder = Path(work or tempfile.mkdtemp(prefix=f"voxclust-{name}-"))
        url = str(folder / f"store-{time.strftime('%H%M%S')}")
        import_npz(data, url)
    print("store", url, file=sys.stderr, flush=True)
    return url


# -- shared by several test modules -----------------------------------------------------------------------
def shapes(n_per_class: int, seed: int, r: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Boxes, balls and vertical rods of random size and position (upright, like scans)."""
    rng = np.random.default_rng(seed)
    idx = np.indices((r, r, r)).transpose(1, 2, 3, 0)
    grids, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            c = rng.uniform(r * 0.35, r * 0.65, size=3)
            s = rng.uniform(r * 0.18, r * 0.3)
            d = idx - c
            if label == 0:
                g = (np.abs(d) <= s).all(axis=-1)
            elif label == 1:
                g = (d**2).sum(-1) <= s**2
            else:
                g = ((d[..., :2] ** 2).sum(-1) <= (s * 0.4) ** 2) & (np.abs(d[..., 2]) <= s * 1.6)
            grids.append(g)
            labels.append(label)
    return np.stack(grids), np.array(labels)


def write_npz(path: Path, n_per_class: int = 16, seed: int = 0, labelled: bool = True) -> Path:
    x_tr, y_tr = shapes(n_per_class, seed)
    x_te, y_te = shapes(max(2, n_per_class // 4), seed + 1)
    x_tr[-1] = False  # an all-empty grid (a failed scan): regions drop it
    if labelled:
        np.savez(path, X_train=x_tr, y_train=y_tr, X_test=x_te, y_test=y_te)
    else:
        np.savez(path, X=np.concatenate([x_tr, x_te]))
    return path


def task_runs(flow_run_id: object) -> list[tuple[str, list[str]]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list[tuple[str, list[str]]]:
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return [(r.name, list(r.tags)) for r in runs]

    return asyncio.run(read())


def cli_stderr(result) -> str:  # type: ignore[no-untyped-def]
    try:
        return str(result.stderr)
    except (ValueError, AttributeError):  # click without separate stderr capture
        return str(result.output)


def assert_user_error(result, *fragments: str) -> str:  # type: ignore[no-untyped-def]
    """Exit code 2, one line 'error: ...' on stderr, no traceback, nothing on stdout."""
    assert result.exit_code == 2, result.output
    err = cli_stderr(result)
    assert err.startswith("error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    for f in fragments:
        assert f in err, err
    return err


# The shared ModelNet meshes whose 1,024-point PCD covers the same box as the mesh (bathtub_0001's covers a
# smaller one), with the PCD's <class>/<split> folder; and the shapes the density comparisons sample.
MESH_PCD_PAIRS = {
    "bathtub_0002": "bathtub/train",
    "bed_0001": "bed/train",
    "chair_0890": "chair/test",
    "toilet_0345": "toilet/test",
}


def density_shapes() -> dict[str, Any]:
    """A sphere, a cube and a torus (trimesh meshes)."""
    import trimesh

    return {
        "sphere": trimesh.creation.icosphere(subdivisions=4),
        "cube": trimesh.creation.box(),
        "torus": trimesh.creation.torus(major_radius=1.0, minor_radius=0.3),
    }


def voxelize_demo(batch: Path, store_url: str, name: str, seed: int, n_per_class: int) -> None:
    """A demo scan batch written to ``batch`` and voxelized into the store in this process (no flow)."""
    from lib.scans.demo import write_demo_batch
    from lib.scans.readers.base import ReadLimits
    from lib.voxels.ingest import plan_batch, process_chunk
    from lib.voxels.store import VoxelStore

    write_demo_batch(str(batch), n_per_class=n_per_class, seed=seed)
    plan = plan_batch(str(batch), store_url, batch_name=name)
    for job in plan.jobs:
        process_chunk(job, str(batch), store_url, plan.voxel, ReadLimits())
    VoxelStore.open(store_url).finalize()


def compare_raw_and_brief_autoencoder(store_url: str) -> None:
    """compare-methods on the store: raw voxels and a one-epoch autoencoder, no t-SNE / PIC / spectral."""
    from flows.compare import compare_methods
    from flows.runners import prefect_api
    from lib.compare.rows import CompareConfig, MethodEntry

    entries = [
        MethodEntry(name="raw", method="raw"),
        MethodEntry(name="ae", method="autoencoder", options={"epochs": 1, "width": 4, "latent": 16}),
    ]
    cfg = CompareConfig(tsne=False, elbow_k_max=4, strip_members=2, pic=False, spectral=False)
    with prefect_api():
        compare_methods(store_url, entries, cfg, device="cpu")


# -- headless Chromium (Debian's package, driven by playwright) for the browser checks ------------------------
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_executable() -> str:
    """Debian's chromium; skips the calling test where there is none, or fails it when VOXCLUST_REQUIRE_BROWSER
    is set."""
    import pytest

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("VOXCLUST_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return exe


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """A headless Chromium (see :func:`chromium_executable`), closed on exit."""
    from playwright.sync_api import sync_playwright

    exe = chromium_executable()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()
