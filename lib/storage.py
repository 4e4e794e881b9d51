"""Storage addressed by URL: a local directory (the embedded default) or an S3 prefix.

``open_storage(url)`` accepts
  * a plain path (``./store``, ``/data/store``) or ``file:///data/store``;
  * ``s3://bucket/prefix``: AWS S3, MinIO or any S3-compatible server. The endpoint and credentials come
    from the standard AWS environment (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION``, profiles) or from :class:`S3Settings` passed explicitly.

Listing and small objects go through boto3; arrays through zarr v3 (``zarr_store()``), backed by obstore
for S3 (about 2x faster than s3fs and free of botocore pins) and by zarr's ``LocalStore`` for directories.

Every write of a whole object is atomic for a reader: S3 PUTs are, and local writes go to a temporary file
renamed into place. ``write_if_absent`` (S3 ``If-None-Match: *``, local ``O_EXCL``) gives the lock that
serialises store metadata updates (:meth:`Storage.lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import socket
import stat
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import zarr.abc.store


class StorageError(Exception):
    """A storage URL that cannot be used: malformed, unreachable, missing, or refused."""


class LockTimeout(StorageError):
    """A store lock could not be taken in time."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the storage root, '/'-separated
    size: int
    mtime: float = 0.0  # last modified, seconds since the epoch


class S3Settings(BaseSettings):
    """S3 connection settings. Empty fields fall back to the standard AWS environment and config files."""

    model_config = SettingsConfigDict(env_prefix="VOXCLUST_S3_", extra="ignore")

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    connect_timeout_s: float = 10.0
    max_attempts: int = 5

    def resolved_endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None

    def resolved_region(self) -> str:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


TMP_SUFFIX = ".voxclust-tmp"
# Names of in-flight writes that a listing must never report: ours (``.<name>.<random>.voxclust-tmp``; older
# releases wrote ``.<name>.<8 random>.tmp``) and zarr LocalStore's (``<stem>.<uuid4 hex>.partial``).
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]+\.voxclust-tmp$|^\..+\.[a-z0-9_]{8}\.tmp$|\.[0-9a-f]{32}\.partial$")


def is_temporary(name: str) -> bool:
    """True for the name (last path part) of a temporary file that a write in progress uses."""
    return bool(_TEMP_NAME.search(name))


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class Storage(ABC):
    """A root (directory or S3 prefix) holding objects addressed by '/'-separated relative keys."""

    url: str

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """All objects under ``prefix`` (recursive), sorted by key.

        Safe while other writers work under the same prefix: an object that vanishes during the listing is
        left out, one that appears may or may not be in it, and temporary files of writes in progress never
        are (:func:`is_temporary`)."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a whole object atomically (readers see the old or the new content, never a part)."""

    @abstractmethod
    def write_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist; True when this call created it. ``data`` must be unique to
        the caller (a token): on S3 a retried request that meets its own first attempt is recognised by it."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""

    @abstractmethod
    def child(self, sub: str) -> Storage:
        """The storage rooted at ``sub`` below this root."""

    @abstractmethod
    def zarr_store(self, read_only: bool = False) -> zarr.abc.store.Store:
        """A zarr v3 store rooted here."""

    @abstractmethod
    def check(self, must_exist: bool = False) -> None:
        """Raise StorageError now if the root is unreachable (or missing, with ``must_exist``)."""

    @abstractmethod
    def browser_url(self, key: str, expires_s: int = 7 * 86400) -> str:
        """A URL a web browser on a machine that can reach this storage opens ``key`` with (file:// for a
        local directory, a presigned GET URL valid ``expires_s`` seconds for S3)."""

    def _check_key(self, key: str) -> str:
        parts = key.replace("\\", "/").split("/")
        if key.startswith("/") or any(p in ("..", ".") for p in parts) or not key.strip("/"):
            raise StorageError(f"{self.url}: key {key!r} escapes or does not name an object under the root")
        return "/".join(p for p in parts if p)

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, value: Any) -> None:
        self.write_bytes(key, json.dumps(value, separators=(",", ":"), sort_keys=True).encode())

    @contextlib.contextmanager
    def lock(self, name: str, ttl_s: float = 300.0, timeout_s: float = 120.0) -> Iterator[None]:
        """Mutual exclusion between processes and machines sharing this storage.

        The lock is an object created with put-if-absent. A holder that died leaves it behind; it is
        broken once older than ``ttl_s`` (hold it only for short metadata updates).
        """
        key = f"_locks/{name}.lock"
        token = {"owner": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}", "expires": 0.0}
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            token["expires"] = time.time() + ttl_s
            if self.write_if_absent(key, json.dumps(token).encode()):
                break
            try:
                raw = self.read_bytes(key)
                held = json.loads(raw)
                stale = float(held.get("expires", 0)) < time.time()
            except (FileNotFoundError, KeyError, ValueError, TypeError, AttributeError):
                stale = False  # vanished or half-visible: just retry
            if stale:
                # Of several waiters that see the same stale lock, only the one that creates its breaker
                # deletes it; otherwise a late waiter could delete the lock a faster one has just taken.
                breaker = f"_locks/{name}.broken-{hashlib.sha256(raw).hexdigest()[:16]}"
                if self.write_if_absent(breaker, json.dumps(token).encode()):
                    self.delete(key)
                continue
            if time.monotonic() > deadline:
                raise LockTimeout(f"{self.url}: could not take lock {name!r} within {timeout_s:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        try:
            yield
        finally:
            try:
                if self.read_json(key).get("owner") == token["owner"]:
                    self.delete(key)
            except (FileNotFoundError, ValueError):
                pass


class LocalStorage(Storage):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = self.root / self._check_key(key)
        # No linked folder on the way out of the root (a linked *file* is refused by read_bytes).
        if not path.parent.resolve().is_relative_to(self.root.resolve()):
            raise StorageError(f"{self.url}: {key!r} passes through a symbolic link out of the root; refused")
        return path

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.exists():
            return []
        out: list[ObjectInfo] = []
        # os.walk skips folders that vanish under it (onerror=None); a file can vanish between the walk
        # naming it and the lstat (another writer's temporary file renamed or removed): it is not listed.
        for dirpath, _dirs, files in os.walk(base, followlinks=False):
            for name in files:
                if is_temporary(name):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue  # a link can point outside the root: never follow it; a FIFO would block a read
                rel = path.relative_to(self.root).as_posix()
                out.append(ObjectInfo(rel, st.st_size, st.st_mtime))
        return sorted(out, key=lambda o: o.key)

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if path.is_symlink():
            raise StorageError(f"{self.url}: {key!r} is a symbolic link (it can point out of the root); refused")
        return path.read_bytes()

    @contextlib.contextmanager
    def _aside(self, key: str, data: bytes) -> Iterator[tuple[Path, str]]:
        """``data`` written to a temporary file beside ``key``'s path (removed afterwards unless moved)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            yield path, tmp
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def write_bytes(self, key: str, data: bytes) -> None:
        with self._aside(key, data) as (path, tmp):
            os.replace(tmp, path)

    def write_if_absent(self, key: str, data: bytes) -> bool:
        # link() fails if the name exists, so the object appears complete or not at all.
        with self._aside(key, data) as (path, tmp):
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def browser_url(self, key: str, expires_s: int = 7 * 86400) -> str:
        return self._path(key).as_uri()

    def child(self, sub: str) -> LocalStorage:
        return LocalStorage(self._path(sub))

    def zarr_store(self, read_only: bool = False) -> zarr.abc.store.Store:
        import zarr.storage

        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        return zarr.storage.LocalStore(self.root, read_only=read_only)

    def check(self, must_exist: bool = False) -> None:
        if must_exist and not self.root.is_dir():
            raise StorageError(f"{self.root}: no such directory")
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"{self.root}: exists and is not a directory")


class S3Storage(Storage):
    def __init__(self, bucket: str, prefix: str = "", settings: S3Settings | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings or S3Settings()
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Clients are rebuilt on the other side of a pickle (Dask workers).
        return {"bucket": self.bucket, "prefix": self.prefix, "settings": self.settings, "url": self.url}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @cached_property
    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        s = self.settings
        return boto3.session.Session().client(
            "s3",
            endpoint_url=s.resolved_endpoint(),
            region_name=s.resolved_region(),
            aws_access_key_id=s.access_key_id,
            aws_secret_access_key=s.secret_access_key,
            aws_session_token=s.session_token,
            config=Config(
                connect_timeout=s.connect_timeout_s,
                retries={"max_attempts": s.max_attempts, "mode": "adaptive"},
                s3={"addressing_style": "path"},
            ),
        )

    def _key(self, key: str) -> str:
        return _join(self.prefix, self._check_key(key))

    def _err(self, exc: Exception, what: str) -> StorageError:
        return StorageError(f"{self.url}: {what}: {exc}")

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        full = _join(self.prefix, prefix)
        full = full + "/" if full else ""
        out: list[ObjectInfo] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                    if rel and not rel.endswith("/") and not is_temporary(posixpath.basename(rel)):
                        out.append(ObjectInfo(rel, int(obj["Size"]), obj["LastModified"].timestamp()))
        except Exception as exc:  # botocore raises many types; all mean "cannot list"
            raise self._err(exc, "cannot list objects") from exc
        return sorted(out, key=lambda o: o.key)

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{self.url}/{key}") from exc
            raise
        return body

    def write_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def write_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                # The client retries a PUT whose answer was lost; the retry then meets the first attempt's
                # object. It is ours when it holds our bytes (callers write unique contents).
                try:
                    return self.read_bytes(key) == data
                except FileNotFoundError:
                    return False
            raise
        return True

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def browser_url(self, key: str, expires_s: int = 7 * 86400) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=int(expires_s)
        )
        return url

    def child(self, sub: str) -> S3Storage:
        return S3Storage(self.bucket, _join(self.prefix, self._check_key(sub)), self.settings)

    def zarr_store(self, read_only: bool = False) -> zarr.abc.store.Store:
        import zarr.storage
        from obstore.store import S3Store

        s = self.settings
        creds = self.client._request_signer._credentials  # the same credential chain boto3 resolved
        frozen = creds.get_frozen_credentials() if creds is not None else None
        endpoint = s.resolved_endpoint()
        kwargs: dict[str, Any] = {"region": s.resolved_region()}
        if endpoint:
            kwargs["endpoint"] = endpoint
        if frozen is not None:
            kwargs["access_key_id"] = frozen.access_key
            kwargs["secret_access_key"] = frozen.secret_key
            if frozen.token:
                kwargs["session_token"] = frozen.token
        else:
            kwargs["skip_signature"] = True
        client_options: Any = {"connect_timeout": f"{int(s.connect_timeout_s)}s"}
        if endpoint and endpoint.startswith("http://"):
            client_options["allow_http"] = True
        obj = S3Store(
            self.bucket,
            prefix=self.prefix or None,
            client_options=client_options,
            retry_config={
                "max_retries": s.max_attempts,
                "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=10)},
                "retry_timeout": timedelta(seconds=120),
            },
            **kwargs,
        )
        return zarr.storage.ObjectStore(obj, read_only=read_only)

    def check(self, must_exist: bool = False) -> None:
        # A listing under our own prefix, not HeadBucket: a least-privilege policy (infra/k8s/bucket-policy.json)
        # allows s3:ListBucket only under the prefixes the workers use, and HeadBucket needs it unconditioned.
        prefix = _join(self.prefix) + "/" if self.prefix else ""
        try:
            resp = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        except Exception as exc:
            raise self._err(exc, "bucket is not reachable") from exc
        if must_exist and not resp.get("KeyCount"):
            raise StorageError(f"{self.url}: no objects under this prefix")


def open_storage(url: str | os.PathLike[str], s3: S3Settings | None = None) -> Storage:
    """Storage for a local path, ``file://`` URL or ``s3://bucket/prefix`` URL."""
    text = os.fspath(url).strip()
    if not text:
        raise StorageError("empty storage URL")
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        path = parsed.path if scheme == "file" else text
        if scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{text}: file URLs must be file:///absolute/path")
        return LocalStorage(path)
    if scheme in ("s3", "s3a"):
        bucket = parsed.netloc
        if not bucket or "/" in bucket or parsed.query or parsed.fragment:
            raise StorageError(f"{text}: expected s3://bucket/prefix")
        return S3Storage(bucket, parsed.path, s3)
    raise StorageError(f"{text}: unsupported storage URL scheme {scheme!r} (use a path, file:// or s3://)")
