"""Training runs: create, prepare/train one epoch at a time with a checkpoint after every step, evaluate, embed.

A run lives at a storage URL (default ``<store>/runs/<run_id>``, next to the voxels; any local path or
``s3://`` URL works)::

    run.json         what was asked: method, full config, data store URL, training region, device
    checkpoint.pt    torch checkpoint: method state, epochs done, epoch prepared, history, metrics
    zarr.json        zarr v3 group
    <name>/          (N, D) float32 embedding of a store region; attributes: method, config, data, region,
                     checkpoint URL, training history, metrics
    <name>_rows/     (N,) int64: the store rows of the embedding

Every step reads the checkpoint, does one piece of work and writes the checkpoint atomically, so steps can
run as separate (Prefect) tasks on different workers and a run that dies resumes at its last finished step.
Steps are idempotent: a step already done returns its logged values without redoing anything. Randomness is
seeded from (seed, epoch, step), so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections import OrderedDict
from typing import Any

import faiss  # noqa: F401  (before torch: some builds crash the other way round)
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lib.features.base import DataInfo, FeatureMethod, MethodConfig, MethodError, VoxelData
from lib.features.registry import get_method
from lib.storage import Storage, open_storage
from lib.voxels.records import ItemRecord, Region
from lib.voxels.store import VoxelStore

RUN_JSON = "run.json"
CHECKPOINT = "checkpoint.pt"
RUN_FORMAT = "voxclust-run/1"


class RunRef(BaseModel):
    """A small, picklable handle on a run (what tasks pass around)."""

    run_url: str
    method: str
    epochs: int
    epochs_done: int
    has_prepare: bool
    trainable: bool


class EmbeddingRef(BaseModel):
    run_url: str
    name: str
    n: int
    dim: int
    region: Region


class RunRequest(BaseModel):
    """What to train: a registered method with its options on a store's region, where the run lives, on which
    device. The one argument of every entry point that creates or trains a run (lib, tasks, flows, CLI)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    data_url: str
    options: dict[str, Any] = Field(default_factory=dict)
    region: Region | None = None  # default: the store's train split when it has one, else every item
    run_url: str | None = None  # default: <data_url>/runs/<method>-<time>
    device: str = "auto"


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = RUN_FORMAT
    method: str
    config: dict[str, Any]
    data: str
    region: Region
    device: str = "auto"
    created: float = Field(default_factory=time.time)
    trained_items: int | None = None  # items of its region when the run was created (None: made before)

    def same_as(self, other: RunSpec) -> bool:
        keys = ("method", "config", "data", "region")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


# -- data ------------------------------------------------------------------------------------------------------
# In-process caches per store version (the digest of its index, see Index.version): a run's steps (create, each
# epoch, finish, embed, evaluate) each open the run and load its region, often in one process; the stored
# records they need are read once per version, not once per step (their grids once per region).
_CACHE: OrderedDict[tuple[Any, ...], VoxelData] = OrderedDict()
_STORED: OrderedDict[tuple[Any, ...], tuple[ItemRecord, ...]] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def _stored_items(store: VoxelStore, version: str, batches: tuple[str, ...] | None) -> tuple[ItemRecord, ...]:
    """The stored items of ``batches`` (None: every batch) of this version of the store (cached)."""
    key = (store.url, version, batches)
    with _CACHE_LOCK:
        if key in _STORED:
            _STORED.move_to_end(key)
            return _STORED[key]
    # Stored records change only with the index (their status is in its counts); a record's row, batch, label
    # and split never change once planned.
    items = tuple(store.items(region=Region(split="all", batches=batches)))
    with _CACHE_LOCK:
        _STORED[key] = items
        while len(_STORED) > _CACHE_SIZE:
            _STORED.popitem(last=False)
    return items


def resolve_region(store: VoxelStore, region: Region, version: str | None = None) -> Region:
    """``region`` with ``auto`` made concrete from the store's stored items now."""
    if region.split != "auto":
        return region
    return region.resolve(_stored_items(store, version or store.index().version(), None))


def region_size(data_url: str, region: Region) -> int:
    """How many stored items a region holds now (read from the manifest: no grid is read)."""
    store = VoxelStore.open(data_url)
    version = store.index().version()
    region = resolve_region(store, region, version)
    return len(region.select(_stored_items(store, version, region.batches)))


def load_region(data_url: str, region: Region) -> VoxelData:
    """The grids, labels and rows of a store region (cached in-process per store version)."""
    store = VoxelStore.open(data_url)
    index = store.index()
    version = index.version()
    region = resolve_region(store, region, version)
    key = (store.url, region.model_dump_json(), version)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    recs = region.select(_stored_items(store, version, region.batches))  # sorted by row
    rows = np.array([r.row for r in recs], dtype=np.int64)
    labels = np.array([-1 if r.label is None else r.label for r in recs], dtype=np.int64)
    grids = store.read(rows)
    keep = region.kept(grids)
    data = VoxelData(grids[keep], labels[keep], rows[keep], list(index.classes))
    with _CACHE_LOCK:
        _CACHE[key] = data
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return data


# -- method construction ---------------------------------------------------------------------------------------
def make_config(method: str, options: dict[str, Any] | None) -> MethodConfig:
    """Validate options for ``method``; unknown or bad options raise :class:`MethodError` naming the choices."""
    cls = get_method(method)
    try:
        return cls.config_cls.model_validate(options or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        known = ", ".join(cls.config_cls.model_fields)
        raise MethodError(f"{method}: option {where}: {first['msg']} (options: {known})") from None


def _instantiate(spec: RunSpec, data: VoxelData) -> FeatureMethod:
    from lib.features.torchbase import resolve_device

    cls = get_method(spec.method)
    cfg = cls.config_cls.model_validate(spec.config)
    info = DataInfo(resolution=data.resolution, n_items=len(data), n_classes=data.n_classes)
    return cls(cfg, info, resolve_device(spec.device))


# -- checkpoints -------------------------------------------------------------------------------------------------
def _save(storage: Storage, ckpt: dict[str, Any]) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    storage.write_bytes(CHECKPOINT, buf.getvalue())


def _load(storage: Storage) -> dict[str, Any]:
    import torch

    ckpt: dict[str, Any] = torch.load(io.BytesIO(storage.read_bytes(CHECKPOINT)), weights_only=True)
    return ckpt


def _spec(storage: Storage) -> RunSpec:
    if not storage.exists(RUN_JSON):
        raise MethodError(f"{storage.url}: not a voxclust run (no {RUN_JSON})")
    return RunSpec.model_validate(storage.read_json(RUN_JSON))


def _ref(storage: Storage, spec: RunSpec, ckpt: dict[str, Any]) -> RunRef:
    cls = get_method(spec.method)
    return RunRef(
        run_url=storage.url,
        method=spec.method,
        epochs=cls.total_epochs(cls.config_cls.model_validate(spec.config)),
        epochs_done=int(ckpt["epochs_done"]),
        has_prepare=cls.has_prepare,
        trainable=cls.trainable,
    )


def finished_run(run_url: str, data_url: str | None = None) -> tuple[RunSpec, dict[str, Any]]:
    """The spec and checkpoint of a run that has trained every epoch (of the store ``data_url`` when given);
    :class:`MethodError` naming what is wrong otherwise."""
    storage = open_storage(run_url)
    spec = _spec(storage)
    if data_url is not None and spec.data.rstrip("/") != data_url.rstrip("/"):
        raise MethodError(f"{run_url}: a run of another store ({spec.data}), not of {data_url}")
    if not storage.exists(CHECKPOINT):
        raise MethodError(f"{run_url}: the run has no checkpoint")
    ckpt = _load(storage)
    ref = _ref(storage, spec, ckpt)
    if ref.epochs_done < ref.epochs:
        raise MethodError(f"{run_url}: unfinished ({ref.epochs_done} of {ref.epochs} epochs trained)")
    return spec, ckpt


def default_run_url(data_url: str, method: str, run_id: str | None = None) -> str:
    run_id = run_id or f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    return f"{data_url.rstrip('/')}/runs/{run_id}"


def create_run(request: RunRequest) -> RunRef:
    """Check everything and write the run's spec and first checkpoint; an existing run with the same spec is
    resumed (its ref says how many epochs are done), one with another spec is refused."""
    method, options, device = request.method, request.options, request.device
    cfg = make_config(method, options)
    cls = get_method(method)
    store = VoxelStore.open(request.data_url)
    region = resolve_region(store, request.region or Region(split="auto"))
    data = load_region(request.data_url, region)
    cls.check(cfg, data)
    cls.check_sources(cfg, store.url)
    spec = RunSpec(
        method=method,
        config=cfg.model_dump(mode="json"),
        data=store.url,
        region=region,
        device=device,
        trained_items=len(data),
    )
    storage = open_storage(request.run_url or default_run_url(store.url, method))
    storage.check()
    with storage.lock("run", timeout_s=30):
        if storage.exists(RUN_JSON):
            have = _spec(storage)
            if not have.same_as(spec):
                raise MethodError(f"{storage.url}: a run with another method, config or data is there already")
            return _ref(storage, have, _load(storage))
        if any(not o.key.startswith("_locks/") for o in storage.list()):
            raise MethodError(f"{storage.url}: holds other data; choose an empty location for the run")
        import zarr

        zarr.open_group(storage.zarr_store(), mode="w", zarr_format=3).attrs.update({"format": RUN_FORMAT})
        storage.write_json(RUN_JSON, spec.model_dump(mode="json"))
        m = _instantiate(spec, data)
        ckpt = {"epochs_done": 0, "prepared": -1, "state": m.state_dict(), "history": [], "metrics": {}}
        _save(storage, ckpt)
    return _ref(storage, spec, ckpt)


def _trained_with(method: FeatureMethod) -> dict[str, Any]:
    """What an epoch trained with besides its seed, which can move results: the device and the CPU threads."""
    import torch

    return {"device": str(getattr(method, "device", "cpu")), "threads": int(torch.get_num_threads())}


class Session:
    """A run opened in this process: spec, data, method with the checkpoint's state."""

    def __init__(self, run_url: str) -> None:
        self.storage = open_storage(run_url)
        self.spec = _spec(self.storage)
        self.ckpt = _load(self.storage)
        self.data = load_region(self.spec.data, self.spec.region)
        self.method = _instantiate(self.spec, self.data)
        self.method.load_state_dict(self.ckpt["state"])

    @property
    def ref(self) -> RunRef:
        return _ref(self.storage, self.spec, self.ckpt)

    def _seed(self, epoch: int, step: int) -> np.random.Generator:
        from lib.features.torchbase import seed_everything

        seed = int(self.spec.config.get("seed", 0))
        seed_everything(seed * 1_000_003 + epoch * 2 + step)
        return np.random.default_rng([seed, epoch, step])

    def _entry(self, epoch: int) -> dict[str, Any]:
        hist: list[dict[str, Any]] = self.ckpt["history"]
        while len(hist) <= epoch:
            hist.append({"epoch": len(hist)})
        return hist[epoch]

    def _commit(self) -> None:
        self.ckpt["state"] = self.method.state_dict()
        _save(self.storage, self.ckpt)

    def prepare(self, epoch: int) -> dict[str, Any]:
        if not self.method.has_prepare or self.ckpt["epochs_done"] > epoch or self.ckpt["prepared"] == epoch:
            return self._entry(epoch) if epoch < len(self.ckpt["history"]) else {}
        self._expect(epoch)
        t = time.perf_counter()
        logged = self.method.prepare_epoch(self.data, epoch, self._seed(epoch, 0))
        entry = self._entry(epoch)
        entry.update(logged)
        entry["prepare_seconds"] = time.perf_counter() - t
        self.ckpt["prepared"] = epoch
        self._commit()
        return entry

    def train(self, epoch: int) -> dict[str, Any]:
        if self.ckpt["epochs_done"] > epoch:
            return self._entry(epoch)
        self._expect(epoch)
        if self.method.has_prepare and self.ckpt["prepared"] != epoch:
            raise MethodError(f"{self.spec.method}: epoch {epoch} must be prepared before it is trained")
        t = time.perf_counter()
        logged = self.method.train_epoch(self.data, epoch, self._seed(epoch, 1))
        entry = self._entry(epoch)
        entry.update(logged)
        entry["train_seconds"] = time.perf_counter() - t
        entry.update(_trained_with(self.method))
        for key, value in logged.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise MethodError(f"{self.spec.method}: {key} became {value} in epoch {epoch}; lower the lr")
        self.ckpt["epochs_done"] = epoch + 1
        self._commit()
        return entry

    def _expect(self, epoch: int) -> None:
        if self.ckpt["epochs_done"] != epoch:
            raise MethodError(f"{self.storage.url}: next epoch is {self.ckpt['epochs_done']}, not {epoch}")

    def finish(self) -> dict[str, Any]:
        """Held-out metrics: when the run trained on the train split, evaluate on the test split (labels are
        used here only, to report classifier accuracy or reconstruction quality)."""
        if self.ckpt["metrics"]:
            return dict(self.ckpt["metrics"])
        metrics: dict[str, Any] = {
            "train_seconds": float(sum(h.get("train_seconds", 0) + h.get("prepare_seconds", 0) for h in self.history))
        }
        if self.spec.region.split == "train":
            test = load_region(self.spec.data, self.spec.region.model_copy(update={"split": "test"}))
            if len(test):
                metrics.update(self.method.evaluate(test))
        self.ckpt["metrics"] = metrics
        self._commit()
        return metrics

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.ckpt["history"])

    def embed(self, region: Region | None = None, name: str | None = None, reuse: bool = False) -> EmbeddingRef:
        """Embed a store region (default: every stored item) into the ``name`` array of the run.

        With ``reuse``, an existing complete embedding of exactly the region's current rows by the same
        checkpoint is kept instead of being computed again."""
        import zarr

        region = region or Region(split="all")
        data = load_region(self.spec.data, region)
        name = name or region.split
        if not name.isidentifier():
            raise MethodError(f"embedding name {name!r}: use letters, digits and _")
        group = zarr.open_group(self.storage.zarr_store(), mode="a", zarr_format=3)
        if reuse and name in group and f"{name}_rows" in group:
            have, have_rows = group[name], group[f"{name}_rows"]
            assert isinstance(have, zarr.Array) and isinstance(have_rows, zarr.Array)
            attrs = dict(have.attrs)
            if (
                attrs.get("complete")
                and attrs.get("epochs_done") == int(self.ckpt["epochs_done"])
                and attrs.get("region") == region.model_dump(mode="json")
                and np.array_equal(np.asarray(have_rows[:]), data.rows)
            ):
                return EmbeddingRef(
                    run_url=self.storage.url, name=name, n=int(have.shape[0]), dim=int(have.shape[1]), region=region
                )
        emb = self.method.embed(data.grids)
        rows_arr = group.create_array(f"{name}_rows", shape=data.rows.shape, dtype="int64", overwrite=True)
        rows_arr[:] = data.rows
        arr = group.create_array(
            name,
            shape=emb.shape,
            chunks=(max(1, min(len(emb), 4096)), emb.shape[1]),
            dtype="float32",
            overwrite=True,
            dimension_names=("item", "feature"),
        )
        arr[:] = emb
        arr.attrs.update(
            {
                "method": self.spec.method,
                "config": self.spec.config,
                "data": self.spec.data,
                "train_region": self.spec.region.model_dump(mode="json"),
                "region": region.model_dump(mode="json"),
                "checkpoint": f"{self.storage.url}/{CHECKPOINT}",
                "epochs_done": int(self.ckpt["epochs_done"]),
                "history": _jsonable(self.history),
                "metrics": _jsonable(self.ckpt["metrics"]),
                "rows": f"{name}_rows",
                "complete": True,
            }
        )
        return EmbeddingRef(run_url=self.storage.url, name=name, n=len(emb), dim=int(emb.shape[1]), region=region)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_embedding(run_url: str, name: str = "all") -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(embedding, store rows, attributes) of a run's embedding array."""
    import zarr

    storage = open_storage(run_url)
    try:
        group = zarr.open_group(storage.zarr_store(read_only=True), mode="r")
        arr, rows = group[name], group[f"{name}_rows"]
    except (KeyError, FileNotFoundError):
        raise MethodError(f"{run_url}: no embedding named {name!r}") from None
    assert isinstance(arr, zarr.Array) and isinstance(rows, zarr.Array)
    return np.asarray(arr[:]), np.asarray(rows[:]), dict(arr.attrs)


# -- convenience: the whole run in this process --------------------------------------------------------------------
def train_run(ref: RunRef, on_epoch: Any = None) -> Session:
    """Prepare/train every remaining epoch in this process (checkpointing after each step), then finish."""
    s = Session(ref.run_url)
    for epoch in range(s.ckpt["epochs_done"], ref.epochs):
        s.prepare(epoch)
        entry = s.train(epoch)
        if on_epoch is not None:
            on_epoch(entry)
    s.finish()
    return s


def fit(request: RunRequest, embed: Region | None = None) -> tuple[RunRef, EmbeddingRef]:
    """Create (or resume) a run, train it, and embed ``embed`` (default: all stored items)."""
    s = train_run(create_run(request))
    return s.ref, s.embed(embed)


def train_and_embed(request: RunRequest, threads: int | None = None) -> dict[str, Any]:
    """:func:`fit`, embedding every item, with at most ``threads`` CPU threads; returns the run and embedding
    references (JSON)."""
    from lib.threads import limit_threads

    with limit_threads(threads):
        ref, emb = fit(request, Region(split="all"))
    return {"run": ref.model_dump(mode="json"), "embedding": emb.model_dump(mode="json")}
