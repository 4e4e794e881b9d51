"""The procedural demo batch: determinism, layout, formats, readability and orientation."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import PurePosixPath

import numpy as np
import pytest
import trimesh

from lib.scans.demo import DEMO_CLASSES, DemoFile, demo_mesh, iter_demo_batch
from lib.scans.readers import MeshData, PointCloudData, read_geometry

KEY_RE = re.compile(r"^(?P<cls>[a-z_]+)/(?P<split>train|test)/(?P=cls)_(?P<idx>\d{4})\.(?P<ext>[a-z]+)$")
ALL_EXTS = {"off", "ply", "stl", "obj", "glb", "pcd", "xyz"}


@pytest.fixture(scope="module")
def batch() -> list[DemoFile]:
    return list(iter_demo_batch())


def _read(f: DemoFile) -> MeshData | PointCloudData:
    geometry = read_geometry(f.key, f.data)
    assert isinstance(geometry, MeshData | PointCloudData), f.key
    return geometry


def _up_down_area(vertices: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """Area of the up-facing faces at the very top and of the down-facing faces at the very bottom."""
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    z = mesh.triangles[:, :, 2]
    zmin, zmax = mesh.bounds[:, 2]
    tol = 1e-4 * (zmax - zmin)
    nz = mesh.face_normals[:, 2]
    top = (np.abs(z - zmax) < tol).all(axis=1) & (nz > 0.99)
    bottom = (np.abs(z - zmin) < tol).all(axis=1) & (nz < -0.99)
    return float(mesh.area_faces[top].sum()), float(mesh.area_faces[bottom].sum())


def test_deterministic(batch: list[DemoFile]) -> None:
    again = list(iter_demo_batch())
    assert [f.key for f in again] == [f.key for f in batch]
    assert all(a.data == b.data for a, b in zip(again, batch, strict=True))
    assert again == batch


def test_seed_changes_content(batch: list[DemoFile]) -> None:
    other = list(iter_demo_batch(seed=1))
    assert len(other) == len(batch)
    assert sum(a.data != b.data for a, b in zip(other, batch, strict=True)) > 0.9 * len(batch)


def test_items_do_not_depend_on_batch_size() -> None:
    # Each item has its own (seed, class, index) generator: a bigger batch starts with the same files.
    small = list(iter_demo_batch(n_per_class=3, point_cloud_share=0.0, test_share=0.0))
    big = {f.key: f.data for f in iter_demo_batch(n_per_class=6, point_cloud_share=0.0, test_share=0.0)}
    assert len(small) == 3 * len(DEMO_CLASSES)
    assert all(big[f.key] == f.data for f in small)


def test_classes_and_counts(batch: list[DemoFile]) -> None:
    assert len(DEMO_CLASSES) >= 6
    assert len(set(DEMO_CLASSES)) == len(DEMO_CLASSES)
    assert Counter(f.label for f in batch) == dict.fromkeys(DEMO_CLASSES, 20)
    assert len(batch) == 20 * len(DEMO_CLASSES)
    assert Counter(f.label for f in iter_demo_batch(n_per_class=3)) == dict.fromkeys(DEMO_CLASSES, 3)
    assert list(iter_demo_batch(n_per_class=0)) == []


def test_keys_layout(batch: list[DemoFile]) -> None:
    keys = [f.key for f in batch]
    assert len(set(keys)) == len(keys)
    for f in batch:
        m = KEY_RE.match(f.key)
        assert m is not None, f.key
        assert m["cls"] == f.label
        assert m["split"] == f.split
    for cls in DEMO_CLASSES:
        idx = sorted(int(KEY_RE.match(f.key)["idx"]) for f in batch if f.label == cls)  # type: ignore[index]
        assert idx == list(range(20))


def test_every_format_appears(batch: list[DemoFile]) -> None:
    exts = Counter(PurePosixPath(f.key).suffix[1:] for f in batch)
    assert set(exts) == ALL_EXTS
    pcd = [f.data for f in batch if f.key.endswith(".pcd")]
    assert any(b"DATA binary" in d for d in pcd)
    assert any(b"DATA ascii" in d for d in pcd)
    assert any(d.startswith(b"ply") and b"element face" not in d[:400] for d in (f.data for f in batch))


def test_point_cloud_share(batch: list[DemoFile]) -> None:
    clouds = [f for f in batch if f.key.endswith((".pcd", ".xyz"))]
    assert clouds
    none = list(iter_demo_batch(n_per_class=5, point_cloud_share=0.0))
    assert not [f for f in none if f.key.endswith((".pcd", ".xyz"))]
    only = list(iter_demo_batch(n_per_class=5, point_cloud_share=1.0))
    assert not [f for f in only if f.key.endswith((".off", ".stl", ".obj", ".glb"))]


def test_splits(batch: list[DemoFile]) -> None:
    assert {f.split for f in batch} == {"train", "test"}
    for cls in DEMO_CLASSES:
        splits = Counter(f.split for f in batch if f.label == cls)
        assert splits == {"train": 16, "test": 4}
    assert {f.split for f in iter_demo_batch(n_per_class=4, test_share=0.0)} == {"train"}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        list(iter_demo_batch(n_per_class=-1))
    with pytest.raises(ValueError):
        list(iter_demo_batch(point_cloud_share=1.5))
    with pytest.raises(ValueError):
        demo_mesh("teapot", np.random.default_rng(0))


def test_every_file_reads_back(batch: list[DemoFile]) -> None:
    kinds: Counter[str] = Counter()
    for f in batch:
        geometry = _read(f)
        if isinstance(geometry, MeshData):
            kinds["mesh"] += 1
            assert geometry.vertices.ndim == 2 and geometry.vertices.shape[1] == 3
            assert len(geometry.faces) > 0
            assert np.isfinite(geometry.vertices).all(), f.key
            assert geometry.faces.max() < len(geometry.vertices)
        else:
            kinds["points"] += 1
            assert geometry.points.shape == (2048, 3), f.key
            assert np.isfinite(geometry.points).all(), f.key
    assert kinds["mesh"] > kinds["points"] > 0


def test_meshes_are_closed_upright_and_varied() -> None:
    for cls in DEMO_CLASSES:
        extents = []
        for i in range(8):
            mesh = demo_mesh(cls, np.random.default_rng([7, i]))
            assert all(part.is_watertight for part in mesh.split(only_watertight=False)), cls
            assert np.isfinite(mesh.vertices).all()
            extents.append(mesh.extents)
        ext = np.array(extents)
        sizes = ext.max(axis=1)
        assert sizes.max() / sizes.min() > 1.5, cls  # absolute sizes vary
        aspect = ext[:, 2] / ext[:, :2].mean(axis=1)
        if cls != "sphere":
            assert aspect.max() - aspect.min() > 0.05, cls  # proportions vary


def test_table_top_is_up() -> None:
    for i in range(10):
        table = demo_mesh("table", np.random.default_rng([3, i]))
        top, bottom = _up_down_area(table.vertices, table.faces)
        # The slab faces up at max z; only the four leg ends face down at min z.
        assert top > 4.0 * bottom > 0.0
        zmin, zmax = table.bounds[:, 2]
        assert table.center_mass[2] > (zmin + zmax) / 2.0


def test_table_files_are_upright(batch: list[DemoFile]) -> None:
    checked = 0
    for f in batch:
        if f.label != "table":
            continue
        geometry = _read(f)
        if isinstance(geometry, MeshData):
            top, bottom = _up_down_area(np.asarray(geometry.vertices), np.asarray(geometry.faces))
            assert top > 4.0 * bottom > 0.0, f.key
            checked += 1
        else:
            pts = np.asarray(geometry.points)
            z = pts[:, 2]
            # The slab's large flat faces put far more surface near the top than near the bottom.
            h = z.max() - z.min()
            assert (z > z.max() - 0.1 * h).sum() > 2 * (z < z.min() + 0.1 * h).sum(), f.key
    assert checked >= 10
