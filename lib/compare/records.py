"""The comparison's records: one typed row per method (:class:`MethodResult`) and the report holding them.

Written by the evaluation (an ``ok`` row) or by :meth:`MethodResult.failed`, validated when built and again
when ``report.json`` is read back (:func:`read_report`); the renderers in :mod:`lib.report` take the JSON form
(``Report.model_dump(mode="json")``) so that they also render a report written by an older release.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lib.storage import Storage

REPORT_JSON = "report.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitMetrics(_Record):
    """Clustering metrics of one method on one split (``lib.evaluation.metrics.cluster_summary`` plus the item
    count). Label metrics are absent (None) when the split is unlabelled."""

    n_rows: int
    n_items: int | None = None
    n_clusters: int
    clusters: list[int]  # the distinct clusters' (stable) ids, in k-means label order; ``sizes`` follows it
    sizes: list[int]
    inertia: float
    silhouette: float | None = None
    n_scored: int | None = None  # rows with a known class
    nmi: float | None = None
    ari: float | None = None
    acc: float | None = None
    purity: float | None = None
    classes: list[int] | None = None  # row names of ``contingency``
    contingency: list[list[int]] | None = None  # classes x clusters


class PartitionSummary(_Record):
    """A partition of the method's features beside k-means, over all items: PIC (which picks its own number
    of clusters) or spectral clustering on the k-NN graph (with the comparison's k)."""

    n_clusters: int
    largest: int
    nmi: float | None = None
    ari: float | None = None


class Spread(_Record):
    """How a row's scores move, on the scored split: over its training seeds (one run each, each embedding
    clustered with its own k-means seed: ``seeds[i]`` trains, the comparison's seed + i clusters), and over
    k-means restarts alone (``restart_seeds``) on the first seed's embedding. A method that does not train
    (raw voxels) has one embedding: its seeds differ in the k-means seed only."""

    seeds: list[int]
    nmi: list[float | None]
    ari: list[float | None]
    acc: list[float | None]
    restart_seeds: list[int] = Field(default_factory=list)
    restart_nmi: list[float | None] = Field(default_factory=list)


class ClusterMembers(_Record):
    """The members of one cluster that the report shows (thumbnails, 3D views): those nearest its centre."""

    cluster: int  # the cluster's stable id
    size: int  # its members, all of them
    items: list[str]  # the item ids shown, nearest the centre first (left to right in the thumbnails)


class MethodResult(_Record):
    """One row of a comparison: what was compared, how it went, its scores and where its pictures are."""

    name: str
    method: str
    options: dict[str, Any] = Field(default_factory=dict)
    supervised: bool
    status: Literal["ok", "failed"]
    error: str | None = None
    dim: int | None = None
    n_items: int | None = None
    k: int | None = None
    train_seconds: float | None = None
    metrics: dict[str, SplitMetrics] = Field(default_factory=dict)  # split ("train", "test", "all") -> metrics
    scored_split: str | None = None
    # NMI between the clusters and how each item was captured (mesh, cloud, grid), over all items; None when
    # the store holds one kind of capture only. Near 0: the groups do not follow the scanner.
    capture_nmi: float | None = None
    # A method that assigns clusters itself (SCAN's heads): its own partition, arg-max of the embedding, on the
    # scored split (the k-means partition of the same embedding is ``metrics``).
    own: SplitMetrics | None = None
    method_metrics: dict[str, float | None] = Field(default_factory=dict)  # e.g. test_accuracy
    elbow: list[tuple[int, float]] | None = None  # (k, inertia) pairs
    knee: int | None = None  # suggested k
    pic: PartitionSummary | None = None
    spectral: PartitionSummary | None = None
    images: dict[str, str] = Field(default_factory=dict)  # kind -> file name in the report folder
    central_members: list[ClusterMembers] = Field(default_factory=list)  # per cluster, in the thumbnails' order
    previews: str | None = None  # file of the central members' grids for the 3D views (lib.report.previews)
    run_url: str | None = None
    assignments_url: str | None = None
    history: list[dict[str, int | float]] = Field(default_factory=list)  # per-epoch scalars
    latest_batch: str | None = None  # the store's newest batch
    latest_members: dict[int, list[str]] = Field(default_factory=dict)  # cluster id -> its item ids of that batch
    note: str | None = None  # e.g. why its run is a new one (the store grew: see ``retrain_growth``)
    seed: int | None = None  # the training seed of this record's run
    spread: Spread | None = None  # over the row's seeds (the record itself is the first seed's)

    @field_validator("train_seconds", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        return v if v is None or (isinstance(v, int | float) and math.isfinite(float(v))) else None

    @classmethod
    def failed(
        cls, name: str, method: str, options: dict[str, Any], supervised: bool, error: str, run_url: str | None = None
    ) -> MethodResult:
        return cls(
            name=name,
            method=method,
            options=options,
            supervised=supervised,
            status="failed",
            error=error,
            run_url=run_url,
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Report(_Record):
    """A whole comparison: the store, how it was clustered, the shared pictures and every method's row."""

    title: str = "voxclust: feature methods compared"
    data_url: str
    created: str  # ISO time
    n_items: int
    labelled: bool
    classes: list[str] = Field(default_factory=list)
    k: int | None = None
    scored_split: str
    config: dict[str, Any] = Field(default_factory=dict)  # the CompareConfig used
    images: dict[str, str] = Field(default_factory=dict)  # elbow, loss, deepcluster_nmi -> file name
    methods: list[MethodResult]
    seeds: int = 1  # training runs per row
    best_method: str | None = None
    best_methods: list[str] = Field(default_factory=list)  # the best and every method within noise of it


def read_report(storage: Storage) -> Report:
    """The report in ``storage`` (a report folder), validated."""
    return Report.model_validate(storage.read_json(REPORT_JSON))
