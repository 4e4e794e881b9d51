"""The voxel store: one zarr v3 group per dataset, on a local directory or an S3 prefix.

Layout under the store URL::

    zarr.json            group; attributes: format, resolution, chunk_items, voxelizer config
    voxels/              (N, R, R, R) bool, chunks of ``chunk_items`` whole items, Blosc zstd + bitshuffle
    manifest.json        the index: settings, classes, rows used; per batch its part, row ranges, counts
    manifest/<h>.json    one batch's records (one per row: item id, source, label, split, status, reason),
                         read as ``ItemRecord`` (lib.voxels.records) by ``VoxelStore.items``
    _commits/<chunk>.json  results of a written chunk not yet merged into its batch's records
    _locks/              the store lock (metadata updates only)
    _*                   any other key starting with '_' is not the store's: others' bookkeeping beside it
                         (the inbox's claims), which may precede the store's creation

A batch's plan and finalize read and write the index and that batch's part only, so their cost follows the
batch, not the store (format 2). Stores of format 1 (every record in ``manifest.json``) open as they are and
are migrated by their first write.

How writes stay safe ("prepare once, write disjoint pieces, finalise once"):

1. ``plan`` (under the store lock) merges any leftover chunk commits, skips items already stored or
   failed, keeps the rows of items reserved earlier but never committed (a run that died), and reserves
   rows for new items starting at a chunk boundary, so every chunk belongs to one reservation. It grows
   the array and writes the batch's part with those items ``pending``, then the index that gives it the
   rows (records of rows the index does not give a batch are ignored: a plan that died in between).
2. Workers each own whole chunks: ``write_chunk`` writes the chunk's rows, then a commit record. A
   retried or re-run chunk rewrites the same bytes (voxelization is deterministic). Rows of items that
   failed stay zero.
3. ``finalize`` (under the lock) merges commit records into the parts of the batches they name.

Rows already stored are never written again, so appending a batch cannot damage earlier ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lib.errors import VoxclustError
from lib.scans.batch import BatchItem
from lib.scans.voxelize import VoxelConfig
from lib.storage import Storage, StorageError, open_storage
from lib.voxels.index import FAILED as FAILED  # the statuses and the index's name: imported from here too
from lib.voxels.index import FORMAT, FORMAT_V1, PENDING, STORED, Index, from_v1, reserved, status_counts
from lib.voxels.index import MANIFEST as MANIFEST
from lib.voxels.records import ItemRecord, Region

if TYPE_CHECKING:
    import zarr

PART_FORMAT = "voxclust-batch/1"
COMMITS = "_commits"
LOCK = "store"
COMMIT_IO_THREADS = 10  # concurrent requests when merging commit records (botocore keeps 10 connections)

BESIDE_LEGACY = ("inbox-claims/",)  # others' bookkeeping from before it moved under '_': still not the store's
SPLIT_CODES = {"train": 0, "test": 1}


class StoreError(VoxclustError):
    """A store that cannot be used: missing, not a voxclust store, or made with other settings."""


@dataclass(frozen=True)
class JobItem:
    row: int
    item_id: str
    key: str  # relative to the batch root
    size: int


@dataclass(frozen=True)
class ChunkJob:
    """One chunk to write: its rows and the items in them (rows without an item stay zero)."""

    chunk: int
    start: int
    stop: int
    items: tuple[JobItem, ...]
    batch: str = ""  # the batch that reserved the chunk's rows (its commit record names it)


@dataclass(frozen=True)
class ItemResult:
    row: int
    status: str  # STORED or FAILED
    reason: str = ""
    occupied: int = 0
    capture: str = ""  # how the scan was captured: mesh, cloud or grid (imported); "" when it failed


@dataclass
class BatchPlan:
    batch: str
    source: str
    voxel: VoxelConfig  # the store's settings, used for every item
    chunk_items: int
    jobs: list[ChunkJob]
    total: int  # items in the batch
    skipped: int  # already stored or failed earlier
    reserved: int  # new rows reserved now
    resumed: int  # pending rows of an earlier run redone now


def _compressor() -> Any:
    import zarr.codecs

    return zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")


class VoxelStore:
    """Open with :meth:`open` (existing) or :meth:`open_or_create`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.url = storage.url

    # -- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | Storage) -> VoxelStore:
        storage = url if isinstance(url, Storage) else open_storage(url)
        store = cls(storage)
        if not storage.exists(MANIFEST):
            try:  # say why: nothing there, a file, or a folder without a manifest
                storage.check(must_exist=True)
            except StorageError as exc:
                raise StoreError(f"not a voxclust store: {exc}") from None
            raise StoreError(f"{storage.url}: not a voxclust store (the folder exists but has no {MANIFEST})")
        return store

    @classmethod
    def open_or_create(
        cls, url: str | Storage, voxel: VoxelConfig | None = None, chunk_items: int | None = None
    ) -> VoxelStore:
        """Open the store, or create it with these settings (default: VoxelConfig()).

        An existing store must agree with the settings given; ``None`` accepts the store's own.
        """
        storage = url if isinstance(url, Storage) else open_storage(url)
        storage.check()
        store = cls(storage)
        with storage.lock(LOCK):
            if storage.exists(MANIFEST):
                m = store.index()
                have = VoxelConfig.model_validate(m.voxel)
                if voxel is not None and have != voxel:
                    raise StoreError(
                        f"{storage.url}: store was made with {have.model_dump()}, asked for {voxel.model_dump()}"
                    )
                if chunk_items is not None and chunk_items != m.chunk_items:
                    raise StoreError(f"{storage.url}: store has chunk_items={m.chunk_items}, asked for {chunk_items}")
                return store
            store._refuse_foreign_data()
            voxel = voxel or VoxelConfig()
            c = chunk_items or default_chunk_items(voxel.resolution)
            r = voxel.resolution
            import zarr

            group = zarr.open_group(storage.zarr_store(), mode="a", zarr_format=3)
            group.attrs.update({"format": FORMAT, "resolution": r, "chunk_items": c, "voxel": voxel.model_dump()})
            group.create_array(
                "voxels",
                shape=(0, r, r, r),
                chunks=(c, r, r, r),
                dtype="bool",
                compressors=_compressor(),
                fill_value=False,
                dimension_names=("item", "x", "y", "z"),
                overwrite=True,
            )
            store._write_index(Index(resolution=r, chunk_items=c, voxel=voxel.model_dump()))
        return store

    def _refuse_foreign_data(self) -> None:
        """A new store only goes where nothing is, or where a store creation died before its manifest."""
        leftovers: set[str] = set()
        for o in self.storage.iter_objects():  # streamed: a foreign prefix may hold millions of objects
            if not o.key.startswith(("_", *BESIDE_LEGACY)):
                leftovers.add(o.key)
                if not leftovers <= {"zarr.json", "voxels/zarr.json"}:
                    raise StoreError(f"{self.url}: holds objects but is not a voxclust store; refusing to write")
        if not leftovers:
            return
        if "zarr.json" in leftovers:
            attrs = self.storage.read_json("zarr.json").get("attributes", {})
            if attrs.get("format") in (FORMAT, FORMAT_V1):
                return
        raise StoreError(f"{self.url}: holds objects but is not a voxclust store; refusing to write")

    # -- metadata ------------------------------------------------------------------------------------------
    def _load(self) -> tuple[Index, dict[str, list[dict[str, Any]]] | None]:
        """The index, and for a format-1 store every batch's records too (None for format 2: read parts)."""
        data = self.storage.read_json(MANIFEST)
        fmt = data.get("format")
        if fmt == FORMAT:
            return Index.from_json(data), None
        if fmt == FORMAT_V1:
            return from_v1(data)
        raise StoreError(f"{self.url}: unknown manifest format {fmt!r}")

    def index(self) -> Index:
        """The store's settings and per-batch summary, without reading any batch's records."""
        return self._load()[0]

    def _read_part(self, index: Index, batch: str) -> list[dict[str, Any]]:
        """A batch's records: only rows the index says it reserved (a plan that died between writing the part
        and the index left records of rows it never got)."""
        info = index.batches.get(batch)
        if info is None:
            return []
        try:
            data = self.storage.read_json(info["part"])
        except FileNotFoundError:
            return []
        return [rec for rec in data["items"] if reserved(rec["row"], info["rows"])]

    def _read_parts(self, index: Index, batches: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        with ThreadPoolExecutor(COMMIT_IO_THREADS) as pool:
            return dict(zip(batches, pool.map(lambda b: self._read_part(index, b), batches), strict=True))

    def _write_part(self, index: Index, batch: str, items: list[dict[str, Any]]) -> None:
        info = index.batches[batch]
        info["counts"] = status_counts(items)
        self.storage.write_json(info["part"], {"format": PART_FORMAT, "batch": batch, "items": items})

    def _write_index(self, index: Index) -> None:
        self.storage.write_json(MANIFEST, index.to_json())

    def _load_for_write(self) -> Index:
        """The index, a format-1 store migrated first: every batch's part, then the index (a crash in between
        leaves the format-1 manifest, which migrates again). Caller holds the lock."""
        index, parts = self._load()
        if parts is not None:
            with ThreadPoolExecutor(COMMIT_IO_THREADS) as pool:
                list(pool.map(lambda b: self._write_part(index, b, parts[b]), list(parts)))
            self._write_index(index)
        return index

    def voxel_config(self) -> VoxelConfig:
        return VoxelConfig.model_validate(self.index().voxel)

    def array(self, read_only: bool = False) -> zarr.Array:
        import zarr

        group = zarr.open_group(self.storage.zarr_store(read_only=read_only), mode="r" if read_only else "r+")
        arr = group["voxels"]
        assert isinstance(arr, zarr.Array)
        return arr

    # -- step 1: plan ----------------------------------------------------------------------------------------
    def plan(self, batch: str, source: str, items: Sequence[BatchItem]) -> BatchPlan:
        """Reserve rows for the batch's new items; return the chunks that still need writing.

        Reads and writes the index and this batch's records only, whatever the store's size."""
        with self.storage.lock(LOCK):
            index = self._load_for_write()
            self._merge_commits(index)
            records = self._read_part(index, batch)
            status = {rec["item_id"]: rec["status"] for rec in records}
            c = index.chunk_items
            new = [it for it in items if f"{batch}/{it.key}" not in status]
            skipped = sum(status.get(f"{batch}/{it.key}") in (STORED, FAILED) for it in items)
            # Rows reserved by an earlier run of this batch that never committed: redo their chunks whole,
            # from the records (an item whose file has gone since then fails with that reason).
            sizes = {it.key: it.size for it in items}
            todo: dict[int, list[JobItem]] = {}
            for rec in records:
                if rec["status"] == PENDING:
                    key = rec["item_id"][len(batch) + 1 :]
                    job = JobItem(rec["row"], rec["item_id"], key, sizes.get(key, 0))
                    todo.setdefault(rec["row"] // c, []).append(job)
            resumed = sum(len(v) for v in todo.values())
            info = index.batch(batch, source)
            start = -(-index.n_rows // c) * c if new else index.n_rows  # new reservations start on a chunk boundary
            for i, it in enumerate(new):
                row = start + i
                label = None
                if it.label is not None:
                    if it.label not in index.classes:
                        index.classes.append(it.label)
                    label = index.classes.index(it.label)
                records.append(
                    {
                        "row": row,
                        "item_id": f"{batch}/{it.key}",
                        "source": f"{source.rstrip('/')}/{it.key}",
                        "batch": batch,
                        "label": label,
                        "split": it.split,
                        "status": PENDING,
                        "reason": "",
                    }
                )
                todo.setdefault(row // c, []).append(JobItem(row, f"{batch}/{it.key}", it.key, it.size))
            if new:
                index.n_rows = start + len(new)
                info["rows"].append([start, index.n_rows])
                self.array().resize((index.n_rows, index.resolution, index.resolution, index.resolution))
            info["runs"] += 1
            # The records first, then the index that makes their rows this batch's (see _read_part).
            self._write_part(index, batch, records)
            self._write_index(index)
        jobs = []
        for chunk in sorted(todo):
            its = tuple(sorted(todo[chunk], key=lambda j: j.row))
            jobs.append(ChunkJob(chunk, chunk * c, its[-1].row + 1, its, batch))
        voxel = VoxelConfig.model_validate(index.voxel)
        return BatchPlan(batch, source, voxel, c, jobs, len(items), skipped, len(new), resumed)

    # -- step 2: write chunks (workers) -------------------------------------------------------------------
    def write_chunk(self, job: ChunkJob, grids: dict[int, np.ndarray], results: Iterable[ItemResult]) -> None:
        """Write the whole chunk (rows without a grid are zero), then its commit record."""
        arr = self.array()
        r = arr.shape[1]
        stop = min(job.start + arr.chunks[0], arr.shape[0])
        block = np.zeros((stop - job.start, r, r, r), dtype=bool)
        for row, grid in grids.items():
            block[row - job.start] = grid
        arr[job.start : stop] = block
        record = {"chunk": job.chunk, "batch": job.batch, "results": [res.__dict__ for res in results]}
        self.storage.write_json(f"{COMMITS}/{job.chunk:010d}.json", record)

    # -- step 3: finalize ---------------------------------------------------------------------------------
    def finalize(self) -> int:
        """Merge chunk commits into the records; returns how many items changed status."""
        with self.storage.lock(LOCK):
            return self._merge_commits(self._load_for_write())

    def _merge_commits(self, index: Index) -> int:
        """Apply commit records to the parts of the batches they name, write those parts and the index, then
        delete the records. Caller holds the lock.

        Writing before deleting means a crash in between only leaves records that merge again harmlessly.
        """
        keys = [o.key for o in self.storage.iter_objects(COMMITS) if o.key.endswith(".json")]
        if not keys:
            return 0
        # One small object per chunk: read (and later delete) them concurrently, not one round trip each
        # after the other (3,125 records for a 100k-item batch).
        with ThreadPoolExecutor(COMMIT_IO_THREADS) as pool:
            contents = list(pool.map(self.storage.read_json, keys))
        results: dict[str, list[dict[str, Any]]] = {}
        for content in contents:
            for res in content["results"]:
                # Records written before format 2 name no batch: the rows' reservation tells.
                batch = content.get("batch") or index.owner(res["row"])
                if batch in index.batches:
                    results.setdefault(batch, []).append(res)
        parts = self._read_parts(index, sorted(results))
        changed = 0
        for batch, found in results.items():
            by_row = {rec["row"]: rec for rec in parts[batch]}
            for res in found:
                rec = by_row.get(res["row"])
                if rec is None:
                    continue
                if rec["status"] != res["status"] or rec["reason"] != res["reason"]:
                    changed += 1
                rec["status"], rec["reason"] = res["status"], res["reason"]
                if res.get("capture"):
                    rec["capture"] = res["capture"]
        with ThreadPoolExecutor(COMMIT_IO_THREADS) as pool:
            list(pool.map(lambda b: self._write_part(index, b, parts[b]), list(parts)))
        self._write_index(index)
        with ThreadPoolExecutor(COMMIT_IO_THREADS) as pool:
            list(pool.map(self.storage.delete, keys))
        return changed

    # -- reading -------------------------------------------------------------------------------------------
    def items(self, status: str | None = STORED, region: Region | None = None) -> list[ItemRecord]:
        """The item records with ``status`` (None: every status) in ``region`` (its batches and split; None:
        every item), sorted by row. Reads the index and the parts of the region's batches only."""
        return self._items(*self._load(), status, region)

    def _items(
        self,
        index: Index,
        parts: dict[str, list[dict[str, Any]]] | None,
        status: str | None,
        region: Region | None,
    ) -> list[ItemRecord]:
        batches = region.batches if region is not None else None
        names = list(index.batches) if batches is None else [b for b in batches if b in index.batches]
        if parts is None:
            parts = self._read_parts(index, names)
        recs = (ItemRecord.from_json(rec) for name in names for rec in parts.get(name, []))
        out = [r for r in recs if (status is None or r.status == status) and (region is None or region.holds(r))]
        return sorted(out, key=lambda r: r.row)

    def read(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Grids of the given rows, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            r = self.index().resolution
            return np.zeros((0, r, r, r), dtype=bool)
        arr = self.array(read_only=True)
        order = np.argsort(rows)
        lo, hi = int(rows[order[0]]), int(rows[order[-1]]) + 1
        out = np.empty((rows.size, *arr.shape[1:]), dtype=bool)
        if hi - lo <= 4 * rows.size:  # dense enough: one contiguous read
            block = np.asarray(arr[lo:hi])
            out[:] = block[rows - lo]
        else:
            out[:] = np.asarray(arr.get_orthogonal_selection((rows, slice(None), slice(None), slice(None))))
        return out

    def summary(self) -> dict[str, Any]:
        index, parts = self._load()
        m, items = index, self._items(index, parts, None, None)
        status = Counter(r.status for r in items)
        per_class = Counter(m.classes[r.label] for r in items if r.status == STORED and r.label is not None)
        splits = Counter(r.split or "none" for r in items if r.status == STORED)
        return {
            "store": self.url,
            "resolution": m.resolution,
            "mode": m.voxel.get("mode"),
            "chunk_items": m.chunk_items,
            "rows": m.n_rows,
            "items": len(items),
            "stored": status.get(STORED, 0),
            "failed": status.get(FAILED, 0),
            "pending": status.get(PENDING, 0),
            "batches": sorted(m.batches),
            "classes": {c: per_class.get(c, 0) for c in m.classes},
            "splits": dict(splits),
        }


def default_chunk_items(resolution: int) -> int:
    """Whole items per chunk: 32 at 32^3 (1 MB raw, ~20 KB stored), 8 at 64^3 (2 MB raw).

    The chunk is the smallest unit of work, so it sets load balance on small batches: 252 demo meshes over
    2 workers ran 0.74x of a bare pool with 64-item chunks (4 tasks) and 0.90x with 32 (8 tasks).
    """
    return {32: 32, 64: 8}.get(resolution, max(1, min(256, 2**21 // resolution**3)))
