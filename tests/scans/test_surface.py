"""The ``field-v1`` representation: the same shape gives about the same grid whatever captured it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from lib.scans.readers import MeshData, PointCloudData, read_path
from lib.scans.surface import cloud_samples, distance_field, parity_votes
from lib.scans.voxelize import VoxelConfig, voxelize
from lib.voxels.store import MANIFEST, VoxelStore
from tests.conftest import shared_data
from tests.support import MESH_PCD_PAIRS, density_shapes

FIELD = VoxelConfig(resolution=32, mode="surface", representation="field-v1")
SOLID = VoxelConfig(resolution=32, mode="solid", representation="field-v1")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _mesh(m: trimesh.Trimesh) -> MeshData:
    return MeshData(np.asarray(m.vertices, float), np.asarray(m.faces, np.int64))


def _even_cloud(m: trimesh.Trimesh, n: int, seed: int) -> PointCloudData:
    """``n`` evenly spread points on the surface, as a scanner or the shared PCDs (Poisson-disk) give."""
    return PointCloudData(np.asarray(trimesh.sample.sample_surface_even(m, n, seed=seed)[0], float))


@pytest.mark.parametrize("model", sorted(MESH_PCD_PAIRS))
def test_a_mesh_and_its_point_cloud_give_about_the_same_grid(model: str) -> None:
    mesh = read_path(shared_data("meshes", f"{model}.off"))
    cloud = read_path(shared_data("modelnet10", "pcd", *MESH_PCD_PAIRS[model].split("/"), f"{model}.pcd"))
    assert iou(voxelize(mesh, FIELD), voxelize(cloud, FIELD)) >= 0.7


@pytest.mark.parametrize("shape", sorted(density_shapes()))
def test_the_density_of_a_cloud_hardly_changes_its_grid(shape: str) -> None:
    m = density_shapes()[shape]
    dense = voxelize(PointCloudData(np.asarray(trimesh.sample.sample_surface(m, 100_000, seed=1)[0])), FIELD)
    for n in (256, 1024, 10_000):
        assert iou(voxelize(_even_cloud(m, n, seed=2), FIELD), dense) >= 0.8, n


def test_solid_mode_fills_meshes_with_holes() -> None:
    box = trimesh.creation.box()
    closed = voxelize(_mesh(box), SOLID).sum()
    no_top = box.faces[box.face_normals[:, 2] < 0.9]
    assert abs(voxelize(MeshData(box.vertices, no_top), SOLID).sum() / closed - 1) <= 0.1
    cyl = trimesh.creation.cylinder(radius=0.5, height=1.5, sections=48)
    uncapped = cyl.faces[np.abs(cyl.face_normals[:, 2]) < 0.5]
    ratio = voxelize(MeshData(cyl.vertices, uncapped), SOLID).sum() / voxelize(_mesh(cyl), SOLID).sum()
    assert abs(ratio - 1) <= 0.1


@pytest.mark.parametrize("r", [32, 64])
def test_solid_sphere_volume_in_the_field_representation(r: int) -> None:
    grid = voxelize(_mesh(trimesh.creation.icosphere(subdivisions=4)), SOLID.model_copy(update={"resolution": r}))
    exact = 4 / 3 * np.pi * ((r - 2) / 2) ** 3
    assert abs(grid.sum() / exact - 1) <= 0.03


def test_flipped_normals_and_duplicate_faces_change_nothing() -> None:
    m = trimesh.creation.icosphere(subdivisions=3)
    want = voxelize(_mesh(m), SOLID)
    flipped = MeshData(m.vertices, m.faces[:, ::-1])
    doubled = MeshData(m.vertices, np.concatenate([m.faces, m.faces]))
    assert iou(voxelize(flipped, SOLID), want) >= 0.97 and iou(voxelize(doubled, SOLID), want) >= 0.97


@pytest.mark.parametrize(
    "points",
    [
        np.c_[np.linspace(0, 1, 50), np.zeros(50), np.zeros(50)],  # a line
        np.c_[np.random.default_rng(0).random((200, 2)), np.zeros(200)],  # a plane
        np.repeat(np.random.default_rng(1).random((5, 3)), 40, axis=0),  # duplicated points
        np.random.default_rng(2).random((3, 3)),  # a handful
    ],
    ids=["line", "plane", "duplicates", "three-points"],
)
def test_degenerate_clouds_still_give_a_grid(points: np.ndarray) -> None:
    for cfg in (FIELD, SOLID):
        grid = voxelize(PointCloudData(points), cfg)
        assert grid.shape == (32, 32, 32) and grid.any()


def test_a_line_has_no_normals_and_its_field_is_the_distance_to_its_points() -> None:
    s = cloud_samples(np.c_[np.arange(10.0), np.zeros(10), np.zeros(10)])
    assert not s.normals.any()
    field = distance_field(s, 12)
    assert field[5, 0, 0] == 0 and field[5, 3, 0] == pytest.approx(3.0)


def test_parity_votes_tell_inside_from_outside_of_a_closed_shell() -> None:
    shell = np.zeros((12, 12, 12), bool)
    shell[2:10, 2:10, 2:10] = True
    shell[3:9, 3:9, 3:9] = False
    votes = parity_votes(shell)
    assert (votes[3:9, 3:9, 3:9] == 6).all() and votes[0, 0, 0] == 0 and (votes[shell] == 0).all()


def test_new_stores_use_the_field_and_old_stores_keep_binning(tmp_path: Path) -> None:
    assert VoxelConfig().representation == "field-v1"
    store = VoxelStore.open_or_create(str(tmp_path / "s"))
    assert store.voxel_config().representation == "field-v1"
    old = store.storage.read_json(MANIFEST)  # a manifest written before the setting existed
    del old["voxel"]["representation"]
    store.storage.write_json(MANIFEST, old)
    assert VoxelStore.open(str(tmp_path / "s")).voxel_config().representation == "binned"


@pytest.mark.parametrize("pose", ["upright", "full"])
@pytest.mark.parametrize("representation", ["binned", "field-v1"])
def test_a_canonical_pose_undoes_a_turn_about_the_up_axis(pose: str, representation: str) -> None:
    # An L-shaped block (no symmetry to confuse the principal axes or their signs).
    a = trimesh.creation.box(extents=(3.0, 1.0, 0.6))
    b = trimesh.creation.box(extents=(1.0, 1.2, 0.6))
    b.apply_translation((1.0, 1.1, 0.0))
    shape = trimesh.util.concatenate([a, b])
    cfg = VoxelConfig(resolution=32, mode="surface", representation=representation, pose=pose)
    want = voxelize(_mesh(shape), cfg)
    for angle in (0.4, 1.9, 3.7):
        turned = shape.copy()
        turned.apply_transform(trimesh.transformations.rotation_matrix(angle, (0, 0, 1)))
        assert iou(voxelize(_mesh(turned), cfg), want) >= 0.8, angle
        as_scanned = voxelize(_mesh(turned), cfg.model_copy(update={"pose": "as-scanned"}))
        assert iou(as_scanned, want) < 0.8
