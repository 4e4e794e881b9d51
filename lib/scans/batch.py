"""Scan batches: a folder or object-storage prefix of mesh and point-cloud files.

Every file in the batch is an item, except hidden files (a name starting with '.') and ``labels.csv``.
A file the readers cannot handle is still an item: it is marked failed with its reason when processed.

Labels and splits are optional and come from
  * a ``<class>/<split>/<file>`` folder tree, with split ``train`` or ``test`` (ModelNet's layout), or
  * a ``labels.csv`` at the batch root with columns ``file`` (path relative to the batch), ``label`` and
    optionally ``split``; it takes precedence over the folder tree.
"""

from __future__ import annotations

import csv
import io
import posixpath
from dataclasses import dataclass

from lib.errors import VoxclustError
from lib.storage import Storage, StorageError

LABELS_FILE = "labels.csv"
SPLITS = ("train", "test")


class BatchError(VoxclustError):
    """A batch that cannot be used at all (missing, empty, unreadable labels.csv)."""


@dataclass(frozen=True)
class BatchItem:
    key: str  # path relative to the batch root
    size: int
    label: str | None = None
    split: str | None = None


def batch_name_from_url(url: str) -> str:
    name = posixpath.basename(url.split("://", 1)[-1].rstrip("/"))  # never the scheme ("file:///" -> no name)
    if not name or name in (".", ".."):
        raise BatchError(f"{url}: cannot derive a batch name from this URL; pass one explicitly")
    return name


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot name an item (None when it can): a name that is not UTF-8 (a local file's raw bytes;
    it would break every text output of the store), or not a plain relative path (storage would refuse it,
    or read another object: a backslash or an empty, '.' or '..' part)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = key.encode("utf-8", "surrogateescape")  # the name's bytes as the file system has them
        except UnicodeEncodeError:
            raw = key.encode("utf-8", "backslashreplace")
        return f"file name is not valid UTF-8 ({raw!r}); rename the file"
    if "\\" in key or any(part in ("", ".", "..") for part in key.split("/")):
        return "file name is not a plain relative path (a backslash, or an empty, '.' or '..' part); refused"
    return None


def is_item(key: str) -> bool:
    """Whether the file at ``key`` (relative to the batch root) is an item of the batch: every file is, except
    hidden ones (any part of the path starting with '.') and ``labels.csv``. The one rule of the batch
    listing and the inbox."""
    return key != LABELS_FILE and not any(part.startswith(".") for part in key.split("/"))


def _from_tree(key: str) -> tuple[str | None, str | None]:
    parts = key.split("/")
    if len(parts) == 3 and parts[1] in SPLITS:
        return parts[0], parts[1]
    return None, None


def _read_labels_csv(storage: Storage) -> dict[str, tuple[str | None, str | None]]:
    try:
        text = storage.read_bytes(LABELS_FILE).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BatchError(f"{storage.url}/{LABELS_FILE}: not UTF-8 text") from exc
    reader = csv.DictReader(io.StringIO(text))
    fields = {f.strip().lower() for f in (reader.fieldnames or [])}
    file_col = next((c for c in ("file", "key", "path") if c in fields), None)
    if file_col is None or "label" not in fields:
        raise BatchError(f"{storage.url}/{LABELS_FILE}: needs a 'file' and a 'label' column")
    out: dict[str, tuple[str | None, str | None]] = {}
    for n, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        key = row.get(file_col, "").lstrip("./")
        if not key:
            raise BatchError(f"{storage.url}/{LABELS_FILE}: line {n} has no file")
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise BatchError(f"{storage.url}/{LABELS_FILE}: line {n}: split must be train or test, got {split!r}")
        out[key] = (row.get("label") or None, split)
    return out


def list_batch(storage: Storage) -> list[BatchItem]:
    """Every item of the batch, sorted by key, with labels and splits where the batch gives them."""
    try:
        storage.check(must_exist=True)
        objects = storage.list()
    except StorageError as exc:
        raise BatchError(str(exc)) from exc
    keys = {o.key for o in objects}
    labels = _read_labels_csv(storage) if LABELS_FILE in keys else {}
    items: list[BatchItem] = []
    for obj in objects:
        if not is_item(obj.key):
            continue
        label, split = labels.get(obj.key) or _from_tree(obj.key)
        items.append(BatchItem(obj.key, obj.size, label, split))
    if not items:
        raise BatchError(f"{storage.url}: the batch holds no files")
    return items
