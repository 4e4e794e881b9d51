"""Meshes and point clouds to R^3 occupancy grids in the binned representation: volume, shape, padding,
orientation, invariance, resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import trimesh
from pydantic import ValidationError

from lib.scans.readers import MeshData, PointCloudData
from lib.scans.voxelize import VoxelConfig, normalise, resample, voxelize, voxelize_mesh, voxelize_points


def binned(**options: object) -> VoxelConfig:
    """The first representation, which these tests pin down (stores made before ``field-v1`` keep it;
    tests/scans/test_surface.py covers ``field-v1``)."""
    return VoxelConfig.model_validate({"representation": "binned", **options})


def _mesh(m: trimesh.Trimesh) -> MeshData:
    return MeshData(np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64))


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=5)


def _table(top_at: str = "z") -> trimesh.Trimesh:
    """A slab on one central leg, z-up (or with its top at +y when ``top_at == "y"``)."""
    top = trimesh.creation.box(extents=(2.0, 2.0, 0.3))
    top.apply_translation((0, 0, 1.85))
    leg = trimesh.creation.box(extents=(0.3, 0.3, 1.7))
    leg.apply_translation((0, 0, 0.85))
    table = trimesh.util.concatenate([top, leg])
    if top_at == "y":
        # Rotate +z onto +y (about x by -90 degrees).
        table.apply_transform(trimesh.transformations.rotation_matrix(-math.pi / 2, (1, 0, 0)))
    return table


def _extent(grid: np.ndarray) -> np.ndarray:
    idx = np.argwhere(grid)
    return idx.max(axis=0) - idx.min(axis=0) + 1


def _sphere_points(n: int = 20000) -> np.ndarray:
    rng = np.random.default_rng(0)
    p = rng.normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


# -- volume ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("r", "tol"), [(64, 0.03), (32, 0.05)])
def test_solid_sphere_volume(sphere: trimesh.Trimesh, r: int, tol: float) -> None:
    grid = voxelize(_mesh(sphere), binned(resolution=r, mode="solid", padding=1))
    radius = (r - 2 * 1) / 2
    expected = 4 / 3 * math.pi * radius**3
    assert abs(int(grid.sum()) - expected) / expected < tol
    c = r // 2
    assert grid[c, c, c] and grid[c - 1, c - 1, c - 1]


def test_surface_sphere_is_hollow(sphere: trimesh.Trimesh) -> None:
    solid = voxelize(_mesh(sphere), binned(resolution=32, mode="solid"))
    surface = voxelize(_mesh(sphere), binned(resolution=32, mode="surface"))
    assert not surface[16, 16, 16] and not surface[15, 15, 15]
    assert surface.sum() < 0.5 * solid.sum()
    assert surface.sum() > 0
    # The shell spans the same box as the solid.
    assert (_extent(surface) == _extent(solid)).all()


# -- shape and padding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [32, 64])
@pytest.mark.parametrize("kind", ["mesh", "points"])
def test_shape_dtype_and_longest_side(sphere: trimesh.Trimesh, r: int, kind: str) -> None:
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    geom = _mesh(box) if kind == "mesh" else PointCloudData(np.asarray(box.sample(5000, seed=1), dtype=np.float64))
    grid = voxelize(geom, binned(resolution=r))
    assert grid.shape == (r, r, r)
    assert grid.dtype == np.bool_
    ext = _extent(grid)
    assert ext[2] == r - 2  # the longest side (z) spans R - 2*padding voxels
    assert ext[0] < ext[1] < ext[2]


@pytest.mark.parametrize("padding", [0, 1, 3])
@pytest.mark.parametrize("mode", ["solid", "surface"])
def test_padding_layers_empty(sphere: trimesh.Trimesh, padding: int, mode: str) -> None:
    r = 32
    grid = voxelize(_mesh(sphere), binned(resolution=r, mode=mode, padding=padding))
    inner = slice(padding, r - padding)
    assert grid.sum() == grid[inner, inner, inner].sum()
    # The sphere touches the inner box on every face: extent is exactly R - 2*padding along each axis.
    assert (_extent(grid) == r - 2 * padding).all()
    idx = np.argwhere(grid)
    assert idx.min() == padding and idx.max() == r - 1 - padding


def test_point_cloud_padding_and_shape() -> None:
    cfg = binned(resolution=64, padding=2)
    grid = voxelize(PointCloudData(_sphere_points()), cfg)
    assert grid.shape == (64, 64, 64)
    idx = np.argwhere(grid)
    assert idx.min() == 2 and idx.max() == 61


# -- orientation ---------------------------------------------------------------------------------------


def test_tall_box_is_tall_along_axis_2() -> None:
    box = trimesh.creation.box(extents=(1.0, 1.0, 4.0))
    grid = voxelize(_mesh(box), binned(resolution=32))
    ext = _extent(grid)
    assert ext[2] == 30
    assert ext[2] > 3 * ext[0] and ext[2] > 3 * ext[1]


def test_table_top_is_at_high_z() -> None:
    grid = voxelize(_mesh(_table()), binned(resolution=32))
    per_layer = grid.sum(axis=(0, 1))
    assert per_layer[24:].sum() > 5 * per_layer[:8].sum()
    assert per_layer[:8].sum() > 0  # the leg reaches the bottom
    top_layer = int(np.nonzero(per_layer)[0].max())
    assert per_layer[top_layer] == per_layer.max()


def test_up_axis_y_turns_y_to_axis_2() -> None:
    box = trimesh.creation.box(extents=(1.0, 4.0, 1.0))  # tall along y
    as_z = voxelize(_mesh(box), binned(resolution=32, up_axis="z"))
    as_y = voxelize(_mesh(box), binned(resolution=32, up_axis="y"))
    assert _extent(as_z)[1] == 30 and _extent(as_z)[2] < 10
    assert _extent(as_y)[2] == 30 and _extent(as_y)[1] < 10


def test_up_axis_y_keeps_top_up() -> None:
    z_up = voxelize(_mesh(_table("z")), binned(resolution=32, up_axis="z"))
    y_up = voxelize(_mesh(_table("y")), binned(resolution=32, up_axis="y"))
    per_layer = y_up.sum(axis=(0, 1))
    assert per_layer[24:].sum() > 5 * per_layer[:8].sum()  # not flipped
    # The same table, read with its own up axis, gives the same occupancy profile along z.
    assert np.array_equal(per_layer, z_up.sum(axis=(0, 1)))


@pytest.mark.parametrize("axis", ["x", "-x", "y", "-y", "z", "-z"])
def test_every_up_axis_goes_to_plus_z(axis: str) -> None:
    # A point cloud: many points at the "up" end, few at the other.
    sign = -1.0 if axis.startswith("-") else 1.0
    col = "xyz".index(axis[-1])
    pts = np.zeros((11, 3))
    pts[:10, col] = sign * 1.0
    pts[:10, (col + 1) % 3] = np.linspace(-0.1, 0.1, 10)
    pts[10, col] = -sign * 1.0
    grid = voxelize_points(pts, binned(resolution=16, up_axis=axis, padding=0))  # type: ignore[arg-type]
    per_layer = grid.sum(axis=(0, 1))
    assert per_layer[15] > per_layer[0] >= 1


# -- invariance and determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["solid", "surface"])
def test_translation_and_scale_invariance(mode: str) -> None:
    table = _table()
    moved = table.copy()
    moved.apply_scale(7.0)
    moved.apply_translation((100.0, -50.0, 3.0))
    cfg = binned(resolution=32, mode=mode)
    a = voxelize(_mesh(table), cfg)
    b = voxelize(_mesh(moved), cfg)
    assert a.any()
    assert np.array_equal(a, b)


def test_normalise_centres_and_scales() -> None:
    pts = np.array([[10.0, 0.0, 0.0], [12.0, 1.0, 4.0]])
    out, scale = normalise(pts, binned(resolution=32, padding=1))
    assert scale == pytest.approx(30 / 4)
    assert out.mean(axis=0) == pytest.approx([15.5, 15.5, 15.5])
    assert (out[1] - out[0]) == pytest.approx([15.0, 7.5, 30.0])
    with pytest.raises(ValueError, match="zero extent"):
        normalise(np.ones((5, 3)), binned())


def test_deterministic(sphere: trimesh.Trimesh) -> None:
    cfg = binned(resolution=32)
    assert np.array_equal(voxelize(_mesh(sphere), cfg), voxelize(_mesh(sphere), cfg))
    pts = PointCloudData(_sphere_points())
    assert np.array_equal(voxelize(pts, cfg), voxelize(pts, cfg))


# -- point clouds --------------------------------------------------------------------------------------


def test_points_on_sphere_give_a_shell(sphere: trimesh.Trimesh) -> None:
    grid = voxelize(PointCloudData(_sphere_points()), binned(resolution=32))
    solid = voxelize(_mesh(sphere), binned(resolution=32))
    assert not grid[12:20, 12:20, 12:20].any()  # hollow
    assert 0 < grid.sum() < 0.5 * solid.sum()
    assert (_extent(grid) == 30).all()


def test_points_on_box_surface_lie_on_the_boundary() -> None:
    box = trimesh.creation.box(extents=(2.0, 2.0, 2.0))
    pts = np.asarray(box.sample(20000, seed=3), dtype=np.float64)
    grid = voxelize(PointCloudData(pts), binned(resolution=32))
    idx = np.argwhere(grid)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    assert (lo == 1).all() and (hi == 30).all()
    on_face = ((idx == lo) | (idx == hi)).any(axis=1)
    assert on_face.all()
    # Each face is well covered.
    assert grid[1, 1:31, 1:31].mean() > 0.9 and grid[:, :, 30].sum() > 0.9 * 30 * 30


def test_voxelize_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        voxelize(np.zeros((3, 3)), binned())  # type: ignore[arg-type]


# -- thin structures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [32, 64])
def test_thin_sheet_survives_solid_mode(r: int) -> None:
    sheet = trimesh.creation.box(extents=(1.0, 1.0, 0.001))
    solid = voxelize_mesh(sheet.vertices, sheet.faces, binned(resolution=r, mode="solid"))
    surface = voxelize_mesh(sheet.vertices, sheet.faces, binned(resolution=r, mode="surface"))
    assert (solid & surface).sum() > 0.8 * surface.sum()
    # Seen from above, the sheet still covers its square (its one-voxel rim may be trimmed).
    footprint = solid.any(axis=2)
    assert footprint[2 : r - 2, 2 : r - 2].all()
    assert footprint[1 : r - 1, 1 : r - 1].mean() > 0.85


def test_thin_leg_survives_solid_mode() -> None:
    grid = voxelize(_mesh(_table()), binned(resolution=32, mode="solid"))
    # Every layer from the floor to the top holds something (the leg is not cleared away).
    assert grid.any(axis=(0, 1))[1:31].all()


# -- config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [{"resolution": 7}, {"resolution": 512}, {"mode": "hollow"}, {"up_axis": "w"}, {"padding": -1}, {"x": 1}]
)
def test_config_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        VoxelConfig.model_validate(bad)


def test_config_is_frozen() -> None:
    cfg = VoxelConfig()
    assert (cfg.resolution, cfg.mode, cfg.up_axis, cfg.padding) == (32, "solid", "z", 1)
    with pytest.raises(ValidationError):
        cfg.resolution = 64  # type: ignore[misc]


# -- resample -------------------------------------------------------------------------------------------


def test_resample_down_max_pools() -> None:
    g = np.zeros((2, 64, 64, 64), dtype=bool)
    g[0, 37, 5, 62] = True
    out = resample(g, 32)
    assert out.shape == (2, 32, 32, 32) and out.dtype == np.bool_
    assert out[0].sum() == 1 and out[0, 18, 2, 31]
    assert not out[1].any()


def test_resample_up_nearest() -> None:
    rng = np.random.default_rng(0)
    g = rng.random((3, 32, 32, 32)) < 0.1
    out = resample(g, 64)
    assert out.shape == (3, 64, 64, 64)
    assert out.sum() == 8 * g.sum()
    assert np.array_equal(out, g.repeat(2, axis=1).repeat(2, axis=2).repeat(2, axis=3))
    # Down again: back to the original.
    assert np.array_equal(resample(out, 32), g)


def test_resample_same_resolution_is_identity() -> None:
    g = np.random.default_rng(1).random((2, 32, 32, 32)) < 0.3
    assert np.array_equal(resample(g, 32), g)
    ints = g.astype(np.int32) * 5
    out = resample(ints, 32)
    assert out.dtype == np.bool_ and np.array_equal(out, g)


def test_resample_non_integer_factor() -> None:
    g = np.ones((1, 48, 48, 48), dtype=bool)
    assert resample(g, 32).shape == (1, 32, 32, 32) and resample(g, 32).all()


@pytest.mark.parametrize("shape", [(32, 32, 32), (1, 32, 32, 16), (2, 32, 32), (1, 1, 32, 32, 32)])
def test_resample_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected"):
        resample(np.zeros(shape, dtype=bool), 32)
