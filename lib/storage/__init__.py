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

import os
from urllib.parse import urlparse

from lib.storage.base import LockTimeout, ObjectInfo, Storage, StorageError, is_temporary
from lib.storage.local import LocalStorage
from lib.storage.s3 import S3Settings, S3Storage

__all__ = [
    "LocalStorage",
    "LockTimeout",
    "ObjectInfo",
    "S3Settings",
    "S3Storage",
    "Storage",
    "StorageError",
    "is_temporary",
    "open_storage",
]


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
