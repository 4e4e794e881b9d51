"""Stable cluster ids: a new comparison's clusters keep the ids of the previous report's clusters they match.

k-means numbers its clusters 0..k-1 in no meaningful order, so without this a cluster's number changes from
report to report. Each new cluster is matched to at most one cluster of the previous report by Hungarian
matching (scipy's ``linear_sum_assignment``) on the members they share (store rows in both), most shared
members first; a matched pair keeps the old id, a new cluster that shares no member with its match (or has
none) gets a fresh id, one above every id issued before (``next_id``), so an id is never reused for
another group. Without a previous report the ids are 0..k-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np
from scipy.optimize import linear_sum_assignment

from lib.storage import Storage


@dataclass(frozen=True)
class PreviousClusters:
    """A method's clusters in the previous report: the id of each store row it assigned, and the next free id."""

    ids_by_row: dict[int, int]
    next_id: int


def id_index(centroids: np.ndarray, ids: Sequence[int]) -> faiss.Index:
    """An exact faiss index of the centroids that answers with their stable ids (what the report saves)."""
    index = faiss.IndexIDMap(faiss.IndexFlatL2(int(centroids.shape[1])))
    index.add_with_ids(np.ascontiguousarray(centroids, dtype=np.float32), np.asarray(ids, np.int64))
    return index


def read_previous(report: Storage, name: str) -> PreviousClusters | None:
    """The clusters of method ``name`` in the report folder ``report`` (None when it has none). Reports made
    before ids were stable hold k-means labels: those are their ids."""
    key = f"clusters/{name}.json"
    if not report.exists(key):
        return None
    doc = report.read_json(key)
    ids = {int(r): int(c) for r, c in zip(doc["rows"], doc["clusters"], strict=True)}
    return PreviousClusters(ids, int(doc.get("next_id", max(ids.values(), default=-1) + 1)))


def match_ids(labels: np.ndarray, rows: np.ndarray, k: int, previous: PreviousClusters | None) -> tuple[list[int], int]:
    """``ids[label]`` for the new labels 0..k-1 (of the items at ``rows``), and the next free id afterwards."""
    if previous is None:
        return list(range(k)), k
    old = np.array([previous.ids_by_row.get(int(r), -1) for r in rows], dtype=np.int64)
    shared = old >= 0
    old_ids = np.unique(old[shared])
    overlap = np.zeros((k, len(old_ids)), dtype=np.int64)
    if shared.any():
        np.add.at(overlap, (labels[shared], np.searchsorted(old_ids, old[shared])), 1)
    ids = [-1] * k
    if overlap.size:
        new_idx, old_idx = linear_sum_assignment(overlap, maximize=True)
        for a, b in zip(new_idx, old_idx, strict=True):
            if overlap[a, b] > 0:
                ids[int(a)] = int(old_ids[b])
    next_id = max(previous.next_id, int(old_ids.max()) + 1 if len(old_ids) else 0)
    for label in range(k):
        if ids[label] < 0:
            ids[label] = next_id
            next_id += 1
    return ids, next_id
