"""The manifest's item records as typed data, and which stored items a use takes.

:class:`ItemRecord` is one record of a batch's part (``manifest/<h>.json``), built from the stored dict (the
format on disk is unchanged); :meth:`lib.voxels.store.VoxelStore.items` is the one way to read them.
:class:`Region` says which stored items a run trains on or embeds, and is the one place that filters by it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One stored scan's record: its row in the voxel array and where it came from."""

    row: int
    item_id: str  # "<batch>/<key in the batch>"
    source: str  # the scan file's URL
    batch: str
    label: int | None  # an index into the store's classes (None: unlabelled)
    split: str | None  # "train", "test" or None
    status: str  # pending, stored or failed
    reason: str = ""  # why it failed
    capture: str | None = None  # mesh, cloud or grid (imported); None until stored, or in stores made before

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> ItemRecord:
        return cls(
            row=int(rec["row"]),
            item_id=str(rec["item_id"]),
            source=str(rec.get("source") or ""),
            batch=str(rec.get("batch") or ""),
            label=rec.get("label"),
            split=rec.get("split"),
            status=str(rec["status"]),
            reason=str(rec.get("reason") or ""),
            capture=rec.get("capture") or None,
        )


class Region(BaseModel):
    """Which stored items: a split (``auto`` = the train split when the store has one, else all items),
    optionally only some batches. All-empty grids (failed scans, binvox failures) are dropped by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: Literal["auto", "all", "train", "test"] = "all"
    batches: tuple[str, ...] | None = None
    drop_empty: bool = True

    def resolve(self, stored: Iterable[ItemRecord]) -> Region:
        """The region with ``auto`` made concrete from the store's stored items (of every batch)."""
        if self.split != "auto":
            return self
        has_train = any(r.split == "train" for r in stored)
        return self.model_copy(update={"split": "train" if has_train else "all"})

    def holds(self, item: ItemRecord) -> bool:
        """Whether the item is of the region's batches and split (its status is the reader's choice)."""
        if self.split == "auto":
            raise ValueError("an auto region holds nothing until resolved (Region.resolve)")
        in_batches = self.batches is None or item.batch in self.batches
        return in_batches and (self.split == "all" or item.split == self.split)

    def select(self, items: Iterable[ItemRecord]) -> list[ItemRecord]:
        return [r for r in items if self.holds(r)]

    def kept(self, grids: np.ndarray) -> np.ndarray:
        """Which of the region's grids it keeps: every one, or the non-empty ones with ``drop_empty``."""
        if not self.drop_empty or not len(grids):
            return np.ones(len(grids), dtype=bool)
        return np.asarray(grids.reshape(len(grids), -1).any(axis=1))
