"""The storage contract: objects under a root addressed by '/'-separated keys, and the errors it raises.

Every write of a whole object is atomic for a reader; ``write_if_absent`` gives the lock that serialises
store metadata updates (:meth:`Storage.lock`); listings are safe while other writers work.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lib.errors import VoxclustError

if TYPE_CHECKING:
    import zarr.abc.store


class StorageError(VoxclustError):
    """A storage URL that cannot be used: malformed, unreachable, missing, or refused."""


class LockTimeout(StorageError):
    """A store lock could not be taken in time."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the storage root, '/'-separated
    size: int
    mtime: float = 0.0  # last modified, seconds since the epoch


TMP_SUFFIX = ".voxclust-tmp"
# Names of in-flight writes that a listing must never report: ours (``.<name>.<random>.voxclust-tmp``; older
# releases wrote ``.<name>.<8 random>.tmp``) and zarr LocalStore's (``<stem>.<uuid4 hex>.partial``).
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]+\.voxclust-tmp$|^\..+\.[a-z0-9_]{8}\.tmp$|\.[0-9a-f]{32}\.partial$")


def is_temporary(name: str) -> bool:
    """True for the name (last path part) of a temporary file that a write in progress uses."""
    return bool(_TEMP_NAME.search(name))


def join_keys(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class Storage(ABC):
    """A root (directory or S3 prefix) holding objects addressed by '/'-separated relative keys."""

    url: str

    @abstractmethod
    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The objects under ``prefix`` (recursive) as the storage pages them out (a page at a time, never
        the whole key list in memory), in no promised order.

        Safe while other writers work under the same prefix: an object that vanishes during the listing is
        left out, one that appears may or may not be in it, and temporary files of writes in progress never
        are (:func:`is_temporary`)."""

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """All objects under ``prefix`` (see :meth:`iter_objects`), sorted by key."""
        return sorted(self.iter_objects(prefix), key=lambda o: o.key)

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

    def _break(self, key: str, stale: bytes, token: bytes) -> None:
        """Delete the lock ``key`` if it still holds ``stale``. Of several waiters that judged the same lock
        stale, only the one that creates its *breaker* (put-if-absent) may delete it, and only after reading it
        again: otherwise a late waiter could delete the lock a faster one has just taken. The breaker goes
        once the stale lock has: a waiter that comes later finds the lock changed and deletes nothing."""
        breaker = f"{key}.broken-{hashlib.sha256(stale).hexdigest()[:16]}"
        if not self.write_if_absent(breaker, token):
            return
        try:
            if self.read_bytes(key) == stale:
                self.delete(key)
        except FileNotFoundError:
            pass
        finally:
            self.delete(breaker)

    @contextlib.contextmanager
    def lock(self, name: str, ttl_s: float = 300.0, timeout_s: float = 120.0) -> Iterator[None]:
        """Mutual exclusion between processes and machines sharing this storage.

        The lock is an object created with put-if-absent. A holder that died leaves it behind; it is
        broken once older than ``ttl_s`` (hold it only for short metadata updates), or at once when the
        holder was a process of this machine (same boot, same PID namespace) that no longer runs: a flow
        killed while it held the lock does not make its re-run wait.
        """
        key = f"_locks/{name}.lock"
        token: dict[str, Any] = {
            "owner": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}",
            "expires": 0.0,
            "pid": os.getpid(),
            "process_space": process_space(),
        }
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            token["expires"] = time.time() + ttl_s
            if self.write_if_absent(key, json.dumps(token).encode()):
                break
            try:
                raw = self.read_bytes(key)
                held = json.loads(raw)
                stale = float(held.get("expires", 0)) < time.time() or holder_gone(held)
            except (FileNotFoundError, KeyError, ValueError, TypeError, AttributeError):
                stale = False  # vanished or half-visible: just retry
            if stale:
                self._break(key, raw, json.dumps(token).encode())
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


@functools.cache
def process_space() -> str | None:
    """Where a process id means one process: this boot of this machine and this PID namespace (None where
    that cannot be told, e.g. off Linux)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def holder_gone(held: dict[str, Any]) -> bool:
    """Whether a lock's holder was a process in this process space that has ended."""
    space = process_space()
    pid = held.get("pid")
    if space is None or held.get("process_space") != space or not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False  # this process holds it (another thread): it is alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:  # killed but not yet reaped (a zombie) is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False
