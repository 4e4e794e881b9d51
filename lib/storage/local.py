"""A local directory as storage (the embedded default): temporary files renamed into place, ``O_EXCL`` links.

Every file is created with mode 0o666 for the kernel to apply the umask (and a folder's default ACL) to, as
``open()`` and zarr's own chunk writes do: the temporary file is not made with :func:`tempfile.mkstemp`,
whose files stay 0600 once renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lib.storage.base import TMP_SUFFIX, ObjectInfo, Storage, StorageError, is_temporary

if TYPE_CHECKING:
    import zarr.abc.store


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

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / prefix.strip("/") if prefix.strip("/") else self.root
        if not base.exists():
            return
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
                yield ObjectInfo(path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime)

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
        fd, tmp = _create_beside(path)
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
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"{self.root}: exists and is not a directory")
        if must_exist and not self.root.is_dir():
            raise StorageError(f"{self.root}: no such directory")


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _create_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder, named as :func:`is_temporary` expects, open for writing
    (its descriptor and path); mode 0o666 less the umask, as ``open()`` gives. The name has 122 random bits:
    ``O_EXCL`` still refuses one that exists rather than write into it."""
    tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    return os.open(tmp, _CREATE_FLAGS, 0o666), tmp
