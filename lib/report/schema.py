"""The report's schema: TypedDicts that document the JSON-able dict the renderers take.

Renderers take any ``Mapping[str, Any]`` so that callers can pass a dict read back from JSON; these TypedDicts
document the schema and help whoever builds one.
"""

from __future__ import annotations

from typing import Any, Literal, Required, TypedDict


class SplitMetrics(TypedDict, total=False):
    """Clustering metrics of one method on one split. Label metrics are absent when unlabelled."""

    nmi: float
    ari: float
    acc: float
    purity: float
    silhouette: float | None
    inertia: float
    n_clusters: int
    sizes: list[int]  # members per cluster, in the order of ``clusters``
    contingency: list[list[int]]  # classes × clusters
    classes: list[Any]  # row names of ``contingency``
    clusters: list[Any]  # column names of ``contingency`` / cluster ids of ``sizes``


class MethodImages(TypedDict, total=False):
    """Image file names (keys of the ``images`` dict passed to ``render_html``), any subset."""

    contingency: str
    pca: str
    tsne: str
    tsne_clusters: str
    strips: str


class MethodEntry(TypedDict, total=False):
    name: Required[str]
    method: Required[str]
    options: dict[str, Any]
    supervised: Required[bool]
    status: Required[Literal["ok", "failed"]]
    error: str | None
    dim: int | None
    train_seconds: float | None
    metrics: dict[str, SplitMetrics]  # split ("test", "train", "all") -> metrics
    method_metrics: dict[str, float]  # e.g. test_accuracy, reconstruction_iou
    elbow: list[tuple[int, float]] | None  # [k, inertia] pairs
    knee: int | None  # suggested k
    images: MethodImages
    run_url: str | None
    assignments_url: str | None


class SharedImages(TypedDict, total=False):
    elbow: str
    loss: str
    deepcluster_nmi: str


class Report(TypedDict, total=False):
    title: Required[str]
    data_url: str
    created: str  # ISO time
    n_items: int
    labelled: bool
    classes: list[str]
    k: int
    scored_split: str  # "test" | "all" | "train"
    images: SharedImages
    methods: Required[list[MethodEntry]]
