"""Procedural demo scan batch: the embedded default input of voxclust.

Real users bring their own scans; this module synthesises a small, fully deterministic
batch of upright (z-up) shapes in several classes so the pipeline can run end to end
without any dataset on disk. Each item is a real file in one of the formats the readers
understand: meshes as OFF / PLY / STL / OBJ / GLB, point clouds as PCD (binary and
ascii) / XYZ / vertex-only PLY.

Determinism: every item draws from its own generator seeded with ``(seed, class, index)``,
and all exporters used here write no timestamps or random names, so the same
``(n_per_class, seed)`` always yields byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import trimesh

from lib.scans.writers import encode_pcd, encode_xyz

DEMO_CLASSES: tuple[str, ...] = ("box", "cylinder", "sphere", "cone", "torus", "table", "chair")

MESH_FORMATS: tuple[str, ...] = ("off", "ply", "stl", "obj", "glb")
# (format name, file extension); the two PCD flavours share the ".pcd" extension.
POINT_FORMATS: tuple[tuple[str, str], ...] = (
    ("pcd_binary", "pcd"),
    ("pcd_ascii", "pcd"),
    ("xyz", "xyz"),
    ("ply_points", "ply"),
)
SPLITS: tuple[str, str] = ("train", "test")
N_POINTS = 2048

_MAX_Z_ROTATION = math.radians(15.0)


@dataclass(frozen=True)
class DemoFile:
    """One synthetic scan file.

    ``key`` is a relative path ``"<class>/<split>/<class>_NNNN.<ext>"``.
    """

    key: str
    data: bytes
    label: str
    split: str


# ---------------------------------------------------------------------------
# Shape generators: each returns an upright (z-up) mesh of roughly unit size.
# ---------------------------------------------------------------------------


def _box_at(extents: tuple[float, float, float], center: tuple[float, float, float]) -> trimesh.Trimesh:
    transform = np.eye(4)
    transform[:3, 3] = center
    return trimesh.creation.box(extents=extents, transform=transform)


def _leg(x: float, y: float, height: float, size: float, round_legs: bool) -> trimesh.Trimesh:
    """A vertical leg standing on z=0 at (x, y)."""
    if round_legs:
        transform = np.eye(4)
        transform[:3, 3] = (x, y, height / 2.0)
        return trimesh.creation.cylinder(radius=size / 2.0, height=height, sections=12, transform=transform)
    return _box_at((size, size, height), (x, y, height / 2.0))


def _concatenate(parts: list[trimesh.Trimesh]) -> trimesh.Trimesh:
    """Join overlapping closed parts into one mesh (each part stays watertight)."""
    mesh = trimesh.util.concatenate(parts)
    if not isinstance(mesh, trimesh.Trimesh):  # pragma: no cover - concatenate of Trimesh parts
        raise TypeError(f"expected a Trimesh, got {type(mesh).__name__}")
    return mesh


def _make_box(rng: np.random.Generator) -> trimesh.Trimesh:
    extents = rng.uniform(0.35, 1.0, size=3)
    return trimesh.creation.box(extents=extents)


def _make_cylinder(rng: np.random.Generator) -> trimesh.Trimesh:
    radius = 0.5
    height = 2.0 * radius * rng.uniform(0.8, 2.5)
    mesh = trimesh.creation.cylinder(radius=radius, height=height, sections=32)
    # Slightly elliptic cross-sections for intra-class variety.
    mesh.apply_scale((rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15), 1.0))
    return mesh


def _make_sphere(rng: np.random.Generator) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    mesh.apply_scale(rng.uniform(0.85, 1.15, size=3))
    return mesh


def _make_cone(rng: np.random.Generator) -> trimesh.Trimesh:
    radius = 0.5
    height = 2.0 * radius * rng.uniform(0.8, 2.2)
    mesh = trimesh.creation.cone(radius=radius, height=height, sections=32)
    mesh.apply_scale((rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15), 1.0))
    return mesh


def _make_torus(rng: np.random.Generator) -> trimesh.Trimesh:
    major = 0.5
    minor = major * rng.uniform(0.2, 0.45)
    mesh = trimesh.creation.torus(major_radius=major, minor_radius=minor, major_sections=32, minor_sections=16)
    mesh.apply_scale((rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15), rng.uniform(0.8, 1.2)))
    return mesh


def _make_table(rng: np.random.Generator) -> trimesh.Trimesh:
    length = rng.uniform(1.0, 2.0)
    width = length * rng.uniform(0.45, 1.0)
    height = rng.uniform(0.55, 0.9)
    top = rng.uniform(0.04, 0.08)
    leg = rng.uniform(0.05, 0.1)
    inset = rng.uniform(0.0, 0.12)
    round_legs = bool(rng.random() < 0.5)
    parts = [_box_at((length, width, top), (0.0, 0.0, height - top / 2.0))]
    leg_h = height - top / 2.0  # legs reach into the slab, so the parts overlap
    dx = length / 2.0 - leg / 2.0 - inset * length / 2.0
    dy = width / 2.0 - leg / 2.0 - inset * width / 2.0
    for sx in (-1.0, 1.0):
        for sy in (-1.0, 1.0):
            parts.append(_leg(sx * dx, sy * dy, leg_h, leg, round_legs))
    return _concatenate(parts)


def _make_chair(rng: np.random.Generator) -> trimesh.Trimesh:
    width = rng.uniform(0.4, 0.6)
    depth = width * rng.uniform(0.85, 1.2)
    seat_h = rng.uniform(0.4, 0.55)
    seat_t = rng.uniform(0.04, 0.08)
    back_h = rng.uniform(0.35, 0.7)
    back_t = rng.uniform(0.03, 0.07)
    leg = rng.uniform(0.035, 0.06)
    round_legs = bool(rng.random() < 0.5)
    parts = [_box_at((width, depth, seat_t), (0.0, 0.0, seat_h - seat_t / 2.0))]
    # Backrest: a vertical slab along the back (+y) edge, from the seat upwards.
    back_bottom = seat_h - seat_t
    parts.append(
        _box_at(
            (width, back_t, back_h + seat_t),
            (0.0, depth / 2.0 - back_t / 2.0, back_bottom + (back_h + seat_t) / 2.0),
        )
    )
    leg_h = seat_h - seat_t / 2.0
    dx = width / 2.0 - leg / 2.0
    dy = depth / 2.0 - leg / 2.0
    for sx in (-1.0, 1.0):
        for sy in (-1.0, 1.0):
            parts.append(_leg(sx * dx, sy * dy, leg_h, leg, round_legs))
    return _concatenate(parts)


_GENERATORS: dict[str, Callable[[np.random.Generator], trimesh.Trimesh]] = {
    "box": _make_box,
    "cylinder": _make_cylinder,
    "sphere": _make_sphere,
    "cone": _make_cone,
    "torus": _make_torus,
    "table": _make_table,
    "chair": _make_chair,
}
assert set(_GENERATORS) == set(DEMO_CLASSES)


def demo_mesh(cls: str, rng: np.random.Generator) -> trimesh.Trimesh:
    """One random, upright (z-up) shape of class ``cls``.

    The shape gets random proportions (class specific), a global scale drawn
    log-uniformly from a 1-10x range, a small rotation about the z axis only and a
    random offset; it is never tilted or flipped.
    """
    try:
        make = _GENERATORS[cls]
    except KeyError:
        raise ValueError(f"unknown demo class {cls!r}; expected one of {DEMO_CLASSES}") from None
    mesh = make(rng)
    scale = 10.0 ** rng.uniform(0.0, 1.0)
    angle = rng.uniform(-_MAX_Z_ROTATION, _MAX_Z_ROTATION)
    offset = rng.uniform(-5.0, 5.0, size=3) * scale
    transform = trimesh.transformations.rotation_matrix(angle, (0.0, 0.0, 1.0))
    transform[:3, :3] *= scale
    transform[:3, 3] = offset
    mesh.apply_transform(transform)
    return mesh


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def _to_bytes(data: object) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytes):
        return data
    raise TypeError(f"exporter returned {type(data).__name__}, expected str or bytes")


def _encode_mesh(mesh: trimesh.Trimesh, fmt: str) -> bytes:
    return _to_bytes(mesh.export(file_type=fmt))


def _encode_points(points: np.ndarray, fmt: str) -> bytes:
    if fmt == "pcd_binary":
        return encode_pcd(points, binary=True)
    if fmt == "pcd_ascii":
        return encode_pcd(points, binary=False)
    if fmt == "xyz":
        return encode_xyz(points)
    if fmt == "ply_points":
        return _to_bytes(trimesh.PointCloud(points).export(file_type="ply"))
    raise ValueError(f"unknown point cloud format {fmt!r}")


def _choose(rng: np.random.Generator, n: int, k: int) -> set[int]:
    """A deterministic random subset of ``k`` indices out of ``range(n)``."""
    return {int(i) for i in rng.permutation(n)[:k]}


def _n_test(n: int, share: float) -> int:
    k = round(share * n)
    if share > 0.0 and n >= 2:
        k = min(max(k, 1), n - 1)
    return min(max(k, 0), n)


def iter_demo_batch(
    n_per_class: int = 20,
    seed: int = 0,
    point_cloud_share: float = 0.2,
    test_share: float = 0.2,
) -> Iterator[DemoFile]:
    """Yield ``n_per_class`` demo files for each class in :data:`DEMO_CLASSES`.

    About ``point_cloud_share`` of each class's items are surface point clouds
    (``N_POINTS`` points) instead of meshes and about ``test_share`` are in the
    ``"test"`` split. Mesh formats cycle over :data:`MESH_FORMATS`, point cloud
    formats over :data:`POINT_FORMATS`. The output depends only on the arguments.
    """
    if n_per_class < 0:
        raise ValueError(f"n_per_class must be >= 0, got {n_per_class}")
    for name, share in (("point_cloud_share", point_cloud_share), ("test_share", test_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share}")

    for ci, cls in enumerate(DEMO_CLASSES):
        plan_rng = np.random.default_rng([seed, ci, 0x5EED])
        clouds = _choose(plan_rng, n_per_class, round(point_cloud_share * n_per_class))
        tests = _choose(plan_rng, n_per_class, _n_test(n_per_class, test_share))
        n_mesh = n_pc = 0
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, ci, i])
            mesh = demo_mesh(cls, rng)
            if i in clouds:
                fmt, ext = POINT_FORMATS[(ci + n_pc) % len(POINT_FORMATS)]
                n_pc += 1
                points, _ = trimesh.sample.sample_surface(mesh, N_POINTS, seed=rng)
                data = _encode_points(np.asarray(points, dtype=np.float64), fmt)
            else:
                ext = MESH_FORMATS[(ci + n_mesh) % len(MESH_FORMATS)]
                n_mesh += 1
                data = _encode_mesh(mesh, ext)
            split = SPLITS[1] if i in tests else SPLITS[0]
            yield DemoFile(key=f"{cls}/{split}/{cls}_{i:04d}.{ext}", data=data, label=cls, split=split)


def write_demo_batch(url: str, n_per_class: int = 20, seed: int = 0, point_cloud_share: float = 0.2) -> int:
    """Write the demo batch to a storage URL (path or s3://); returns the number of files.

    Files already there with the same content are left alone, so writing twice changes nothing.
    """
    from lib.storage import open_storage

    storage = open_storage(url)
    storage.check()
    existing = {o.key: o.size for o in storage.list()}
    n = 0
    for f in iter_demo_batch(n_per_class=n_per_class, seed=seed, point_cloud_share=point_cloud_share):
        if existing.get(f.key) != len(f.data) or storage.read_bytes(f.key) != f.data:
            storage.write_bytes(f.key, f.data)
        n += 1
    return n
