"""The pictures of one method in a comparison: contingency heat map, PCA and t-SNE maps, cluster strips, and the
grids of the members those strips show (the report's 3D views, :mod:`lib.report.previews`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lib.compare.records import ClusterMembers
from lib.compare.rows import CompareConfig
from lib.evaluation.score import EmbeddingScore
from lib.report import plots, previews
from lib.storage import Storage
from lib.voxels.store import VoxelStore


@dataclass(frozen=True, eq=False)
class FigureInputs:
    """What one method's pictures are drawn from: its embedding, the stored items it embeds, and its score."""

    name: str  # the comparison row
    embedding: np.ndarray  # (N, D), one row per embedded item
    rows: np.ndarray  # the store rows of those items
    labels: np.ndarray  # class index per item, -1 when unknown
    classes: list[str]
    score: EmbeddingScore
    store: VoxelStore  # for the thumbnails of cluster members
    ids: list[int] | None = None  # the stable id of each k-means label (None: the labels)
    item_ids: list[str] | None = None  # the item id of each embedded row (None: "row <store row>")


@dataclass
class MethodFigures:
    """What :func:`method_images` wrote: picture kind -> file name, the members its thumbnails show (per
    cluster, nearest the centre first) and the file of their grids (None without thumbnails)."""

    images: dict[str, str] = field(default_factory=dict)
    members: list[ClusterMembers] = field(default_factory=list)
    previews: str | None = None


def method_images(inputs: FigureInputs, out: Storage, cfg: CompareConfig) -> MethodFigures:
    """Draw the method's pictures into ``out``, and write the grids of the thumbnails' members for the 3D
    views (``<name>-previews.json``)."""
    name, x, rows, labels, classes = inputs.name, inputs.embedding, inputs.rows, inputs.labels, inputs.classes
    assign, centroids, feats = inputs.score.kmeans.labels, inputs.score.kmeans.centroids, inputs.score.feats
    metrics, scored, store = inputs.score.metrics, inputs.score.scored_split, inputs.store
    images: dict[str, str] = {}

    def put(kind: str, png: bytes) -> None:
        key = f"{name}-{kind}.png"
        out.write_bytes(key, png)
        images[kind] = key

    labelled = bool((labels >= 0).any())
    sm = metrics.get(scored, {})
    if labelled and "contingency" in sm:
        names = [classes[int(c)] if 0 <= int(c) < len(classes) else str(c) for c in sm["classes"]]
        put(
            "contingency",
            plots.contingency_heatmap(
                np.asarray(sm["contingency"]),
                names,
                [str(c) for c in sm["clusters"]],
                title=f"{name}: classes x clusters ({scored} split)",
            ),
        )
    ids = inputs.ids or list(range(len(centroids)))
    cluster_names = [f"cluster {ids[c]}" for c in range(int(assign.max()) + 1)]
    label_names = classes if labelled else None
    put(
        "pca",
        plots.scatter_2d(
            plots.map_2d(x, "pca", seed=cfg.seed),
            labels if labelled else assign,
            names=label_names if labelled else cluster_names,
            title=f"{name}: PCA, coloured by {'label' if labelled else 'cluster'}",
        ),
    )
    if cfg.tsne:
        rng = np.random.default_rng(cfg.seed)
        idx = np.arange(len(x))
        if len(x) > cfg.tsne_max_points:
            idx = np.sort(rng.choice(len(x), cfg.tsne_max_points, replace=False))
        xy = plots.map_2d(x[idx], "tsne", seed=cfg.seed)
        sample = f", sample of {len(idx)}" if len(idx) < len(x) else ""
        if labelled:
            put(
                "tsne",
                plots.scatter_2d(xy, labels[idx], names=label_names, title=f"{name}: t-SNE, coloured by label{sample}"),
            )
        put(
            "tsne_clusters",
            plots.scatter_2d(xy, assign[idx], names=cluster_names, title=f"{name}: t-SNE, coloured by cluster{sample}"),
        )
    # Thumbnails: the members of each cluster nearest its centroid.
    groups: list[tuple[str, np.ndarray]] = []
    shown: list[ClusterMembers] = []
    for c in range(len(centroids)):
        members = np.flatnonzero(assign == c)
        if not len(members):
            continue
        d = ((feats[members] - centroids[c]) ** 2).sum(axis=1)
        pick = members[np.argsort(d, kind="stable")[: cfg.strip_members]]
        groups.append((f"{ids[c]} ({len(members)})", store.read(rows[pick])))
        names = [inputs.item_ids[int(i)] if inputs.item_ids else f"row {int(rows[i])}" for i in pick]
        shown.append(ClusterMembers(cluster=int(ids[c]), size=len(members), items=names))
    result = MethodFigures(images, shown)
    if groups:
        put("strips", plots.cluster_strips(groups, max_per_cluster=cfg.strip_members))
        key = f"{name}-previews.json"
        items = [item for cm in shown for item in cm.items]
        out.write_bytes(key, previews.previews_file(items, np.concatenate([g for _, g in groups])))
        result.previews = key
    return result
