"""The store's index, ``manifest.json``: what every batch shares and, per batch, where its records live, the
rows it reserved and its counts (format 2); and the single document of format 1 that older stores hold."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FORMAT = "voxclust-store/2"
FORMAT_V1 = "voxclust-store/1"  # every record in manifest.json: still read, migrated by the first write
MANIFEST = "manifest.json"  # the index: settings, classes, rows used, and per batch its part, rows and counts
PARTS = "manifest"  # manifest/<hash of the batch name>.json: that batch's item records
PENDING, STORED, FAILED = "pending", "stored", "failed"


@dataclass
class Index:
    """``manifest.json``: what every batch shares, and per batch (``batches[name]``) its ``source``,
    ``first_seen``, ``runs``, ``part`` (the key of its records), ``rows`` (the row ranges it reserved,
    ``[start, stop)``) and ``counts`` (items per status). Its size follows the number of batches, not items."""

    resolution: int
    chunk_items: int
    voxel: dict[str, Any]
    classes: list[str] = field(default_factory=list)
    n_rows: int = 0
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **self.__dict__}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Index:
        names = ("resolution", "chunk_items", "voxel", "classes", "n_rows", "batches")
        fields = {k: data[k] for k in names if k in data}
        # Stores made before the representation was a setting hold binned grids: keep adding binned ones.
        fields["voxel"] = {"representation": "binned", **fields.get("voxel", {})}
        return cls(**fields)

    def batch(self, name: str, source: str) -> dict[str, Any]:
        """The batch's entry, created (no rows, no items) if it is new."""
        if name not in self.batches:
            self.batches[name] = {"source": source, "first_seen": time.time(), "runs": 0, "rows": []}
        info = self.batches[name]
        info.setdefault("part", part_key(name))
        info.setdefault("rows", [])
        return info

    def version(self) -> str:
        """A digest of the whole index: it changes whenever a batch's records change status or rows (every
        write of a part rewrites the index with that batch's counts), so it names a version of the records."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:24]

    def owner(self, row: int) -> str | None:
        """The batch that reserved ``row`` (None: no batch did)."""
        for name, info in self.batches.items():
            if reserved(row, info.get("rows", [])):
                return name
        return None


@dataclass
class Manifest:
    """The single-document layout of format 1 (``to_json``): the index's fields and ``items``, every batch's
    records sorted by row (what stores made before format 2 hold)."""

    resolution: int
    chunk_items: int
    voxel: dict[str, Any]
    classes: list[str] = field(default_factory=list)
    n_rows: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_V1, **self.__dict__}


def part_key(batch: str) -> str:
    """Where a batch's records live (batch names may hold any character; keys should not)."""
    return f"{PARTS}/{hashlib.sha256(batch.encode()).hexdigest()[:24]}.json"


def reserved(row: int, ranges: list[list[int]]) -> bool:
    return any(lo <= row < hi for lo, hi in ranges)


def row_ranges(rows: Iterable[int]) -> list[list[int]]:
    """Sorted rows as ``[start, stop)`` runs."""
    out: list[list[int]] = []
    for row in sorted(rows):
        if out and out[-1][1] == row:
            out[-1][1] = row + 1
        else:
            out.append([row, row + 1])
    return out


def status_counts(items: Iterable[dict[str, Any]]) -> dict[str, int]:
    c = Counter(rec["status"] for rec in items)
    return {s: c.get(s, 0) for s in (STORED, FAILED, PENDING)}


def from_v1(data: dict[str, Any]) -> tuple[Index, dict[str, list[dict[str, Any]]]]:
    """A format-1 manifest (every record in one document) as an index and its batches' records."""
    index = Index.from_json(data)
    index.batches = {name: dict(info) for name, info in index.batches.items()}
    parts: dict[str, list[dict[str, Any]]] = {}
    for rec in data.get("items", []):
        parts.setdefault(rec["batch"], []).append(rec)
    for name in sorted(set(index.batches) | set(parts)):
        items = parts.setdefault(name, [])
        info = index.batch(name, "")
        info["rows"] = row_ranges(rec["row"] for rec in items)
        info["counts"] = status_counts(items)
    return index, parts
