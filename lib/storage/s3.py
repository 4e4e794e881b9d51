"""An S3 prefix as storage (AWS, MinIO, any S3-compatible server): boto3 for objects, obstore for zarr."""

from __future__ import annotations

import os
import posixpath
import threading
from collections.abc import Iterator
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from lib.storage.base import ObjectInfo, Storage, StorageError, is_temporary, join_keys

if TYPE_CHECKING:
    import zarr.abc.store


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


# The environment a client's credential chain reads when no key is configured (a client is kept per value).
_CREDENTIAL_ENV = (
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()
_MAX_CLIENTS = 32


def shared_client(s: S3Settings) -> Any:
    """One boto3 S3 client per process and connection settings, shared by every storage that uses them.

    Building a client (a boto3 session, the service model read and parsed) costs 0.15-0.3 s of CPU, and a
    voxelize run opens the batch and the store several times; boto3 clients are safe to share between
    threads. A forked child builds its own (the key holds the process id).
    """
    endpoint, region = s.resolved_endpoint(), s.resolved_region()
    key = (
        os.getpid(),
        endpoint,
        region,
        s.access_key_id,
        s.secret_access_key,
        s.session_token,
        s.connect_timeout_s,
        s.max_attempts,
        *(os.environ.get(v) for v in _CREDENTIAL_ENV),
    )
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if len(_clients) >= _MAX_CLIENTS:  # settings that keep changing (tests' servers): start over
                _clients.clear()
            import boto3
            from botocore.config import Config

            client = _clients[key] = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id=s.access_key_id,
                aws_secret_access_key=s.secret_access_key,
                aws_session_token=s.session_token,
                config=Config(
                    connect_timeout=s.connect_timeout_s,
                    retries={"max_attempts": s.max_attempts, "mode": "adaptive"},
                    s3={"addressing_style": "path"},
                    # Shared by every storage of the process: room for several 10-thread transfers at once
                    # (botocore's default of 10 would open and discard connections past that, with a warning).
                    max_pool_connections=50,
                ),
            )
    return client


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
        return shared_client(self.settings)

    def _key(self, key: str) -> str:
        return join_keys(self.prefix, self._check_key(key))

    def _err(self, exc: Exception, what: str) -> StorageError:
        return StorageError(f"{self.url}: {what}: {exc}")

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = join_keys(self.prefix, prefix)
        full = full + "/" if full else ""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                    if rel and not rel.endswith("/") and not is_temporary(posixpath.basename(rel)):
                        yield ObjectInfo(rel, int(obj["Size"]), obj["LastModified"].timestamp())
        except Exception as exc:  # botocore raises many types; all mean "cannot list"
            raise self._err(exc, "cannot list objects") from exc

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
        return S3Storage(self.bucket, join_keys(self.prefix, self._check_key(sub)), self.settings)

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
        prefix = join_keys(self.prefix) + "/" if self.prefix else ""
        try:
            resp = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        except Exception as exc:
            raise self._err(exc, "bucket is not reachable") from exc
        if must_exist and not resp.get("KeyCount"):
            raise StorageError(f"{self.url}: no objects under this prefix")
