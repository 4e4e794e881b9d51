"""Shared fixtures: a real S3 server (moto's, on 127.0.0.1, ephemeral port), Prefect offline settings, and
tiny voxel stores (16^3 synthetic shapes of three kinds, with labels and a train/test split, imported through
the real importer into a real store)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.voxels.importer import import_npz
from tests.support import S3Server, write_npz

# Prefect offline, isolated from the user's home; set before anything imports prefect.
_PREFECT_HOME = tempfile.mkdtemp(prefix="voxclust-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())  # the standard AWS variables, as a user would set them
    try:
        yield server
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One temporary Prefect API for the session, shared with Dask worker processes."""
    from flows.runners import prefect_api as start

    with start() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _cleanup_prefect_home() -> Iterator[None]:
    yield
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


def shared_data(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("tiny")
    url = str(root / "store")
    import_npz(write_npz(root / "tiny.npz"), url, classes=["box", "ball", "rod"])
    return url


@pytest.fixture(scope="session")
def unlabelled_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("unlabelled")
    url = str(root / "store")
    import_npz(write_npz(root / "u.npz", labelled=False), url)
    return url


@pytest.fixture
def s3_store(s3_bucket: str, tmp_path: Path) -> str:
    """The tiny labelled store on moto's S3."""
    url = f"s3://{s3_bucket}/store"
    import_npz(write_npz(tmp_path / "tiny.npz"), url, classes=["box", "ball", "rod"])
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server started for the tests (Debian's package); skipped, with why, where there is none."""
    from tests.support import Postgres
    from voxclust.stack_parts import postgres_missing

    why = postgres_missing()
    if why:
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="voxclust-pg-"))  # not under pytest's 0700 folders: postgres must enter
    server = Postgres(root)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
