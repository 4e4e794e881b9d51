"""The inbox: a folder or S3 prefix where new scan batches land, one sub-prefix per batch.

``<inbox>/<batch>/...`` is one batch (the layout of :func:`lib.scans.batch.list_batch`). A batch is *ready* once
it holds a ``.ready`` marker, or once none of its files changed for ``settle_s`` seconds (an upload still
in progress is left alone). It is *processed* once the store's manifest holds every one of its items as
stored or failed.

Starting a batch's pipeline is guarded by a *claim*: an object ``<store>/_inbox-claims/<batch>/<fp>/
attempt-N.json`` created with put-if-absent (S3 ``If-None-Match: *``, local ``O_EXCL``), where ``fp`` is a
fingerprint of the batch's file list. Of any number of watchers that see the batch at the same moment,
exactly one creates the claim and starts the run; the others see the claim and leave. The same files
dropped again have the same fingerprint, so they are never run twice; a changed file list is a new
fingerprint and runs again (the voxelizer then adds only what is new). A run that ended failed, crashed
or cancelled may be claimed again, up to ``max_attempts``.

Claims live beside the store under an ``_``-prefixed key, which the store leaves to others (so claims may
precede the store's creation). Claims written before they moved there, under ``inbox-claims/``, are still
honoured: a batch fingerprint with an attempt there goes on there.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lib.errors import VoxclustError
from lib.scans.batch import batch_name_from_url, is_item
from lib.storage import ObjectInfo, Storage, StorageError, open_storage
from lib.voxels.store import FAILED, MANIFEST, PENDING, STORED, VoxelStore

READY_MARKER = ".ready"
CLAIMS = "_inbox-claims"  # in the store's storage, beside the store ('_': not the store's data)
LEGACY_CLAIMS = "inbox-claims"  # where claims were written before: still read (see _claim_prefix)
RETRY_STATES = frozenset({"FAILED", "CRASHED", "CANCELLED"})


class InboxError(VoxclustError):
    """An inbox or batch URL that cannot be used."""


@dataclass(frozen=True)
class InboxBatch:
    name: str
    url: str
    fingerprint: str  # of the sorted (key, size) list of the batch's files
    n_items: int  # files that are scan items (hidden files and labels.csv excluded)
    newest: float  # newest modification time of any file
    marked_ready: bool

    def ready(self, settle_s: float, now: float | None = None) -> bool:
        if self.n_items == 0:
            return False
        return self.marked_ready or (now if now is not None else time.time()) - self.newest >= settle_s


@dataclass(frozen=True)
class Claim:
    batch: str
    fingerprint: str
    attempt: int
    key: str  # the claim object's key in the store
    reissue: bool = False  # an earlier claimant died before starting the run: start it again (same key)

    @property
    def idempotency_key(self) -> str:
        return f"voxclust-inbox:{self.batch}:{self.fingerprint}:{self.attempt}"


def _describe(name: str, url: str, objects: list[ObjectInfo]) -> InboxBatch:
    items = [o for o in objects if is_item(o.key)]
    digest = hashlib.sha256()
    for o in sorted(objects, key=lambda o: o.key):
        if o.key != READY_MARKER:
            digest.update(f"{o.key}\0{o.size}\n".encode())
    return InboxBatch(
        name=name,
        url=url,
        fingerprint=digest.hexdigest()[:16],
        n_items=len(items),
        newest=max((o.mtime for o in objects), default=0.0),
        marked_ready=any(o.key == READY_MARKER for o in objects),
    )


def list_inbox(inbox_url: str) -> list[InboxBatch]:
    """Every batch under the inbox (sub-prefixes whose name does not start with '.' or '_'), by name."""
    storage = open_storage(inbox_url)
    try:
        storage.check(must_exist=False)
        objects = storage.list()
    except StorageError as exc:
        raise InboxError(str(exc)) from exc
    groups: dict[str, list[ObjectInfo]] = defaultdict(list)
    for o in objects:
        head, sep, rest = o.key.partition("/")
        if sep and not head.startswith((".", "_")):
            groups[head].append(ObjectInfo(rest, o.size, o.mtime))
    root = storage.url.rstrip("/")
    return [_describe(name, f"{root}/{name}", groups[name]) for name in sorted(groups)]


def describe_batch(batch_url: str, name: str | None = None) -> InboxBatch:
    """One batch at ``batch_url`` (for an event that names it)."""
    storage = open_storage(batch_url)
    try:
        objects = storage.list()
    except StorageError as exc:
        raise InboxError(str(exc)) from exc
    return _describe(name or batch_name_from_url(batch_url), storage.url, objects)


def processed(store_url: str, batches: list[InboxBatch]) -> set[str]:
    """Names of ``batches`` whose items the store holds, every one stored or failed."""
    storage = open_storage(store_url)
    if not storage.exists(MANIFEST):
        return set()
    counts = {name: info["counts"] for name, info in VoxelStore(storage).index().batches.items()}  # no records read
    return {
        b.name
        for b in batches
        if b.name in counts
        and not counts[b.name][PENDING]
        and counts[b.name][STORED] + counts[b.name][FAILED] >= b.n_items
    }


def _attempts(storage: Storage, prefix: str) -> list[int]:
    out = []
    for o in storage.list(prefix):
        base = posixpath.basename(o.key)
        if base.startswith("attempt-") and base.endswith(".json") and not base.endswith(".run.json"):
            try:
                out.append(int(base[len("attempt-") : -len(".json")]))
            except ValueError:
                continue
    return sorted(out)


def _claim_prefix(storage: Storage, batch: InboxBatch) -> str:
    """Where ``batch``'s claims are: under :data:`CLAIMS`, or under :data:`LEGACY_CLAIMS` when an attempt was
    claimed there before claims moved (its run, retries and stale claimant are then handled there)."""
    legacy = f"{LEGACY_CLAIMS}/{batch.name}/{batch.fingerprint}"
    if _attempts(storage, legacy):
        return legacy
    return f"{CLAIMS}/{batch.name}/{batch.fingerprint}"


def try_claim(
    store_url: str,
    batch: InboxBatch,
    run_state: Callable[[str], str | None],
    owner: str | None = None,
    max_attempts: int = 3,
    stale_s: float = 600.0,
) -> Claim | None:
    """Claim ``batch`` for one pipeline run, or return None when another claim stands.

    ``run_state(flow_run_id)`` gives the state type of an earlier attempt's run (``"COMPLETED"``,
    ``"FAILED"``, ...; None when unknown). Only a run in a state of :data:`RETRY_STATES` is retried."""
    storage = open_storage(store_url)
    prefix = _claim_prefix(storage, batch)
    record = {
        "batch": batch.name,
        "batch_url": batch.url,
        "fingerprint": batch.fingerprint,
        "owner": owner or f"{socket.gethostname()}:{os.getpid()}",
        "nonce": uuid.uuid4().hex,  # unique contents: see Storage.write_if_absent
        "claimed_at": time.time(),
    }
    attempts = _attempts(storage, prefix)
    attempt = 1
    if attempts:
        last = attempts[-1]
        run = read_run(storage, prefix, last)
        if run is None:
            claimed = storage.read_json(f"{prefix}/attempt-{last}.json")
            if time.time() - float(claimed.get("claimed_at", 0)) < stale_s:
                return None  # another watcher is starting it right now
            return Claim(batch.name, batch.fingerprint, last, f"{prefix}/attempt-{last}.json", reissue=True)
        if run_state(run["flow_run_id"]) not in RETRY_STATES or last >= max_attempts:
            return None
        attempt = last + 1
    key = f"{prefix}/attempt-{attempt}.json"
    if not storage.write_if_absent(key, json.dumps(record).encode()):
        return None
    return Claim(batch.name, batch.fingerprint, attempt, key)


def read_run(storage: Storage, prefix: str, attempt: int) -> dict[str, Any] | None:
    try:
        run: dict[str, Any] = storage.read_json(f"{prefix}/attempt-{attempt}.run.json")
    except FileNotFoundError:
        return None
    return run


def record_run(store_url: str, claim: Claim, flow_run_id: str, flow_run_name: str) -> None:
    """Note which flow run the claim started (so a failed run can be retried and nobody starts another)."""
    storage = open_storage(store_url)
    storage.write_json(
        claim.key.removesuffix(".json") + ".run.json",
        {"flow_run_id": flow_run_id, "flow_run_name": flow_run_name, "started_at": time.time()},
    )
