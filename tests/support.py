"""Test and benchmark support: a real S3 server (moto's) in its own process on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any


def offline_prefect() -> None:
    """Prefect settings for a benchmark script: its own temporary home, no analytics, quiet logs, and a
    temporary local API unless the script starts one (``flows.runners.prefect_api``). Call before importing
    Prefect."""
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="voxclust-bench-prefect-"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.pop("PREFECT_API_URL", None)


def grids_by_item(store_url: str) -> tuple[dict[str, Any], Counter[str]]:
    """The stored grid of each item id, and how many manifest records each item id has."""
    from lib.voxels.store import STORED, VoxelStore

    store = VoxelStore.open(store_url)
    recs = store.records(None)
    stored = [r for r in recs if r["status"] == STORED]
    grids = store.read([r["row"] for r in stored]) if stored else []
    return {r["item_id"]: g for r, g in zip(stored, grids, strict=True)}, Counter(r["item_id"] for r in recs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
