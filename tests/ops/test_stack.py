"""The local stack's S3 server keeps its objects on disk: an object put through `voxclust stack up`'s S3 endpoint
(with the keys of the stack's env file, which the server checks) is read back after `stack down` and `stack up`
again, with the same keys, and the server's data lies under the stack folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support import free_ports
from voxclust.stack import S3_DATA, Stack

VOXCLUST = str(Path(sys.executable).with_name("voxclust"))

pytestmark = pytest.mark.timeout(600)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.run([VOXCLUST, "stack", *args], env=env, capture_output=True, text=True, timeout=300)


def _s3(env: dict[str, str], secret: str | None = None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(retries={"max_attempts": 1}),
    )


def test_an_object_put_through_the_stack_survives_down_and_up(tmp_path: Path) -> None:
    directory = tmp_path / "stack"
    s3_port, *_internal, prefect_port, dask_port = free_ports(12)
    up = (
        "up",
        "--dir",
        str(directory),
        "--s3-port",
        str(s3_port),
        "--prefect-port",
        str(prefect_port),
        "--dask-port",
        str(dask_port),
        "--dask-workers",
        "1",
        "--json",
    )
    body = os.urandom(3 << 20)
    try:
        done = _cli(*up)
        assert done.returncode == 0, done.stderr[-3000:]
        env = Stack(directory).env()
        s3 = _s3(env)
        s3.put_object(Bucket="voxclust", Key="stores/main/kept.bin", Body=body)
        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):  # not open to anyone on the machine
            _s3(env, secret="wrong").list_objects_v2(Bucket="voxclust")

        down = _cli("down", "--dir", str(directory))
        assert down.returncode == 0 and "s3" in down.stdout, down.stdout + down.stderr
        done = _cli(*up)
        assert done.returncode == 0, done.stderr[-3000:]

        again = Stack(directory).env()
        assert again["AWS_ACCESS_KEY_ID"] == env["AWS_ACCESS_KEY_ID"]
        got = _s3(again).get_object(Bucket="voxclust", Key="stores/main/kept.bin")["Body"].read()
        assert got == body
        assert any((directory / S3_DATA).iterdir())
    finally:
        down = _cli("down", "--dir", str(directory))
        assert down.returncode == 0, down.stderr
