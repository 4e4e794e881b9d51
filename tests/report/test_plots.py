"""lib.report.plots: every figure is a real PNG, 2-D maps behave, voxel thumbnails keep up pointing up."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lib.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
R = 16


def decode(png: bytes, *, max_side: int = 4000) -> np.ndarray:
    """Check ``png`` is a sane PNG and return it as an (H, W, 3) uint8 array."""
    assert isinstance(png, bytes)
    assert png[:8] == PNG_SIGNATURE
    assert len(png) < 1_000_000
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        im.load()
        w, h = im.size
        assert 80 <= w <= max_side and 60 <= h <= max_side, im.size
        return np.asarray(im.convert("RGB"))


def bluish(rgb: np.ndarray) -> np.ndarray:
    """Pixels drawn as voxels (blue shades), as opposed to text (grey/black) and backgrounds."""
    c = rgb.astype(np.int32)
    return (c[..., 2] - c[..., 0]) > 25


def blobs(rng: np.random.Generator, n_per: int = 15, d: int = 60) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(scale=8.0, size=(3, d))
    x = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(3), n_per)


# -------------------------------------------------------------------------------------------- map_2d


def test_map_2d_pca_shape_and_separation() -> None:
    x, y = blobs(np.random.default_rng(0))
    xy = plots.map_2d(x, "pca")
    assert xy.shape == (len(x), 2) and xy.dtype == np.float32
    # three well separated blobs stay separated: every point is nearer its own blob's centre
    centres = np.stack([xy[y == c].mean(axis=0) for c in range(3)])
    nearest = np.argmin(((xy[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == y).all()


def test_map_2d_tsne_deterministic_and_wide_input() -> None:
    x, _ = blobs(np.random.default_rng(1), n_per=12, d=70)  # wider than pca_first: PCA first
    a = plots.map_2d(x, "tsne", seed=3)
    b = plots.map_2d(x, "tsne", seed=3)
    assert a.shape == (len(x), 2) and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


def test_map_2d_tiny_inputs() -> None:
    xy = plots.map_2d(np.array([[0.0], [1.0], [3.0]]), "tsne")  # 3 rows, 1 column
    assert xy.shape == (3, 2)
    assert plots.map_2d(np.array([[0.0], [1.0], [3.0]]), "pca").shape == (3, 2)
    np.testing.assert_array_equal(plots.map_2d(np.ones((5, 4)), "tsne"), np.zeros((5, 2), np.float32))


@pytest.mark.parametrize(
    ("x", "method", "match"),
    [
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0], [2.0, 0.0]]), "pca", "NaN"),
        (np.array([[0.0, 1.0], [1.0, np.inf], [1.0, 1.0]]), "tsne", "NaN"),
        (np.zeros((2, 3)), "pca", "at least 3 rows"),
        (np.zeros(5), "pca", r"\(N, D\)"),
        (np.eye(4), "umap", "unknown method"),
    ],
)
def test_map_2d_errors(x: np.ndarray, method: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plots.map_2d(x, method)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------- plots


def test_scatter_2d_with_names_and_unknown() -> None:
    rng = np.random.default_rng(2)
    xy = rng.normal(size=(60, 2))
    colors = rng.integers(-1, 4, size=60)
    rgb = decode(plots.scatter_2d(xy, colors, names=["chair", "table", "lamp", "sofa"], title="by class"))
    assert rgb.shape[1] > rgb.shape[0] * 0.8  # room for the legend


def test_scatter_2d_many_groups_and_errors() -> None:
    rng = np.random.default_rng(3)
    decode(plots.scatter_2d(rng.normal(size=(90, 2)), np.arange(90) % 30, title="30 clusters, no legend"))
    decode(plots.scatter_2d(rng.normal(size=(5, 2)), -np.ones(5, int), title="all unknown"))
    with pytest.raises(ValueError):
        plots.scatter_2d(np.zeros((4, 2)), np.zeros(3, int), title="mismatch")


def test_elbow_plot() -> None:
    curves = {
        "raw": [(2, 5000.0), (3, 3000.0), (4, 2500.0), (6, 2300.0)],
        "autoencoder": [(2, 2.0), (3, 1.0), (4, 0.9), (6, 0.85)],
        "empty": [],
    }
    decode(plots.elbow_plot(curves, {"raw": 3, "autoencoder": None, "missing": 4}))
    decode(plots.elbow_plot({}, {}))


def test_contingency_heatmap() -> None:
    table = np.array([[10, 0, 2], [1, 8, 0]])
    decode(plots.contingency_heatmap(table, ["chair", "table"], None, title="ae"))
    decode(plots.contingency_heatmap(table, ["chair", "table"], ["c0", "c1", "c2"], title="named clusters"))
    big = np.random.default_rng(4).integers(0, 30, size=(25, 30))  # no annotations
    decode(plots.contingency_heatmap(big, [f"class {i}" for i in range(25)], None, title="big"))
    decode(plots.contingency_heatmap(np.zeros((0, 0)), [], None, title="empty"))
    with pytest.raises(ValueError, match="names"):
        plots.contingency_heatmap(table, ["only one"], None, title="bad")


def test_nmi_per_epoch() -> None:
    history = [
        {"epoch": 0, "nmi_labels": 0.2, "loss": 3.0},
        {"epoch": 1, "nmi_previous": 0.4, "nmi_labels": 0.3},
        {"epoch": 2, "nmi_previous": None, "nmi_labels": None},
        {"epoch": 3, "nmi_previous": 0.8},
    ]
    decode(plots.nmi_per_epoch(history))
    decode(plots.nmi_per_epoch([]))
    decode(plots.nmi_per_epoch([{"epoch": 0}]))


def test_loss_curves() -> None:
    with_losses = decode(
        plots.loss_curves(
            {
                "autoencoder": [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(6)],
                "triplet": [{"epoch": e, "loss": 0.5 - 0.05 * e} for e in range(4)] + [{"epoch": 4, "loss": None}],
                "raw": [],
                "voxnet": [{"epoch": 0}],
            }
        )
    )
    nothing = decode(plots.loss_curves({"raw": [], "pca": [{"epoch": 0}]}))
    assert nothing.shape[0] < with_losses.shape[0]  # a one-line message, not panels
    decode(plots.loss_curves({}))


# -------------------------------------------------------------------------------------------- thumbnails


def slab(z0: int, z1: int) -> np.ndarray:
    g = np.zeros((R, R, R), bool)
    g[2:-2, 2:-2, z0:z1] = True
    return g


def test_depth_view_orientation_and_shading() -> None:
    g = np.zeros((R, R, R), bool)
    g[0, :, :] = True  # wall at x = 0 (left in the front view)
    g[:, :, R - 1] = True  # ceiling at z = R - 1 (top row in every view)
    g[R - 1, R - 1, 0] = True  # a far voxel in the front view
    front = plots.depth_view(g, "front")
    assert front.shape == (R, R)
    assert np.isfinite(front[:, 0]).all()  # x = 0 is the left column
    assert np.isfinite(front[0, :]).all()  # z = R - 1 is the top row
    assert front[-1, -1] == pytest.approx(1.0)  # x = R-1, z = 0: hit at the far end of the ray
    assert np.isnan(front[-1, 1])
    side = plots.depth_view(g, "side")  # seen from +x: the x = 0 wall is the far background
    assert np.isfinite(side[0, :]).all() and (side[1:, :-1] == 1.0).all()
    top = plots.depth_view(g, "top")
    assert (top == 0.0).all()  # the ceiling is nearest everywhere

    near, far = np.zeros((R, R, R), bool), np.zeros((R, R, R), bool)
    near[:, 1, :] = True
    far[:, R - 2, :] = True
    brightness_near = plots.thumbnail(near, ["front"]).sum(-1).mean()
    brightness_far = plots.thumbnail(far, ["front"]).sum(-1).mean()
    assert brightness_far < brightness_near  # darker when farther


@pytest.mark.parametrize("views", [("front",), ("front", "side"), ("front", "side", "top")])
def test_thumbnail_up_is_up(views: tuple[plots.View, ...]) -> None:
    for grid, expect_bottom in ((slab(0, 3), True), (slab(R - 3, R), False)):
        img = plots.thumbnail(grid, views)
        assert img.shape == (R, len(views) * R + len(views) - 1, 3)
        mask = bluish((img * 255).astype(np.uint8))
        if "top" in views:
            mask = mask[:, : 2 * R + 1]  # the top view of a slab is full whichever its height
        rows = np.flatnonzero(mask.any(axis=1))
        assert rows.size
        if expect_bottom:
            assert rows.min() >= R - 3
        else:
            assert rows.max() < 3


def test_cluster_strips_up_is_up_in_png() -> None:
    def vertical_centre(png: bytes) -> float:
        rgb = decode(png)
        ys = np.flatnonzero(bluish(rgb).any(axis=1))
        thumb = np.flatnonzero((np.abs(rgb.astype(int) - 242).max(-1) <= 4).any(axis=1))  # grey thumbnail background
        assert ys.size and thumb.size
        return float((ys.mean() - thumb.min()) / (thumb.max() - thumb.min() + 1))

    bottom = vertical_centre(plots.cluster_strips([("bottom slab", np.stack([slab(0, 3)] * 2))]))
    top = vertical_centre(plots.cluster_strips([("top slab", np.stack([slab(R - 3, R)] * 2))]))
    assert bottom > 0.75
    assert top < 0.25


def test_cluster_strips_empty_grids_and_clusters() -> None:
    empty = np.zeros((3, R, R, R), np.uint8)
    rgb = decode(plots.cluster_strips([("empty grids", empty), ("no members", np.zeros((0, R, R, R), bool))]))
    assert not bluish(rgb).any()
    many = np.stack([slab(0, 3 + i % 5) for i in range(20)]).astype(np.uint8)
    decode(plots.cluster_strips([(f"cluster {i}", many) for i in range(6)], max_per_cluster=5))
    decode(plots.cluster_strips([("single grid", slab(0, 4))]))
    decode(plots.cluster_strips([]))
