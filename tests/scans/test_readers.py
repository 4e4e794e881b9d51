"""Tests for lib.scans.readers: real files, round trips through trimesh exporters, bad input, fuzzing."""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.scans.readers import (
    MESH_EXTENSIONS,
    POINT_EXTENSIONS,
    SUPPORTED_EXTENSIONS,
    MeshData,
    PointCloudData,
    ReadError,
    ReadLimits,
    read_geometry,
    read_path,
)
from lib.scans.writers import encode_pcd, encode_xyz

MESH_DIR = Path("/work/shared/data/meshes")
REAL_PCD = Path("/work/shared/data/modelnet10/pcd/chair/train/chair_0001.pcd")


def _real_offs() -> list[Path]:
    return sorted(MESH_DIR.glob("*.off")) if MESH_DIR.is_dir() else []


def _export(mesh: trimesh.Trimesh | trimesh.Scene, file_type: str) -> bytes:
    out = mesh.export(file_type=file_type)
    return out.encode() if isinstance(out, str) else bytes(out)


def _box() -> trimesh.Trimesh:
    return trimesh.creation.box(extents=(1.0, 2.0, 3.0))


def _ascii_ply_points(points: np.ndarray) -> bytes:
    header = (
        "ply\nformat ascii 1.0\n"
        f"element vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    return header.encode() + encode_xyz(points)


OFF_TRIANGLE = b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize("path", _real_offs() or [None], ids=lambda p: p.name if p else "missing")
def test_real_off_reads_as_mesh(path: Path | None) -> None:
    if path is None:
        pytest.skip(f"{MESH_DIR} missing")
    geom = read_path(path)
    assert isinstance(geom, MeshData)
    header = path.read_text().splitlines()[1].split()
    nverts, nfaces = int(header[0]), int(header[1])
    assert geom.vertices.shape == (nverts, 3)
    assert geom.vertices.dtype == np.float64
    assert geom.faces.ndim == 2 and geom.faces.shape[1] == 3
    assert geom.faces.shape[0] >= nfaces  # polygons may be triangulated
    assert geom.faces.dtype == np.int64
    assert geom.faces.min() >= 0 and geom.faces.max() < nverts
    assert np.isfinite(geom.vertices).all()


def test_fused_off_header_matches_normal_read() -> None:
    offs = _real_offs()
    if not offs:
        pytest.skip(f"{MESH_DIR} missing")
    data = offs[0].read_bytes()
    first, second, rest = data.split(b"\n", 2)
    assert first.strip() == b"OFF"
    fused = b"OFF" + second.strip() + b"\n" + rest
    normal = read_geometry("a.off", data)
    broken = read_geometry("a.off", fused)
    assert isinstance(normal, MeshData) and isinstance(broken, MeshData)
    np.testing.assert_array_equal(normal.vertices, broken.vertices)
    np.testing.assert_array_equal(normal.faces, broken.faces)


def test_fused_off_header_small() -> None:
    geom = read_geometry("t.off", b"OFF3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    assert isinstance(geom, MeshData)
    assert geom.faces.tolist() == [[0, 1, 2]]


def test_real_pcd() -> None:
    if not REAL_PCD.is_file():
        pytest.skip(f"{REAL_PCD} missing")
    geom = read_path(REAL_PCD)
    assert isinstance(geom, PointCloudData)
    assert geom.points.shape == (1024, 3)
    assert geom.points.dtype == np.float64


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("file_type", ["off", "ply", "stl", "obj", "glb"])
@pytest.mark.parametrize("shape", ["box", "icosphere"])
def test_mesh_round_trip(file_type: str, shape: str) -> None:
    mesh = _box() if shape == "box" else trimesh.creation.icosphere(subdivisions=2, radius=1.5)
    geom = read_geometry(f"m.{file_type.upper()}", _export(mesh, file_type))
    assert isinstance(geom, MeshData)
    assert geom.vertices.dtype == np.float64 and geom.faces.dtype == np.int64
    assert geom.faces.shape == mesh.faces.shape
    lo, hi = geom.vertices.min(axis=0), geom.vertices.max(axis=0)
    np.testing.assert_allclose(np.stack([lo, hi]), mesh.bounds, atol=1e-5)


def test_glb_scene_concatenated() -> None:
    box = _box()
    sphere = trimesh.creation.icosphere(subdivisions=1)
    scene = trimesh.Scene()
    scene.add_geometry(box, node_name="box")
    shift = trimesh.transformations.translation_matrix([10.0, 0.0, 0.0])
    scene.add_geometry(sphere, node_name="sphere", transform=shift)
    geom = read_geometry("scene.glb", _export(scene, "glb"))
    assert isinstance(geom, MeshData)
    assert len(geom.faces) == len(box.faces) + len(sphere.faces)
    assert len(geom.vertices) == len(box.vertices) + len(sphere.vertices)
    assert geom.faces.max() < len(geom.vertices)
    np.testing.assert_allclose(geom.vertices.max(axis=0), [11.0, 1.0, 1.5], atol=1e-5)
    np.testing.assert_allclose(geom.vertices.min(axis=0), [-0.5, -1.0, -1.5], atol=1e-5)


def test_ply_vertices_only_is_point_cloud() -> None:
    pts = np.random.default_rng(0).random((50, 3))
    for data in (_export(trimesh.PointCloud(pts), "ply"), _ascii_ply_points(pts)):
        geom = read_geometry("cloud.ply", data)
        assert isinstance(geom, PointCloudData)
        np.testing.assert_allclose(geom.points, pts, rtol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_pcd_round_trip(binary: bool) -> None:
    pts = np.random.default_rng(1).normal(size=(200, 3)) * 100
    geom = read_geometry("c.pcd", encode_pcd(pts, binary=binary))
    assert isinstance(geom, PointCloudData)
    np.testing.assert_array_equal(geom.points, pts.astype(np.float32).astype(np.float64))


def test_pcd_header_layout() -> None:
    head = encode_pcd(np.array([[0.0, 0, 0], [1, 1, 1]]), binary=False).decode()
    for line in (
        "VERSION 0.7",
        "FIELDS x y z",
        "SIZE 4 4 4",
        "TYPE F F F",
        "COUNT 1 1 1",
        "WIDTH 2",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        "POINTS 2",
        "DATA ascii",
    ):
        assert line + "\n" in head


def test_pcd_extra_fields_binary_and_ascii() -> None:
    rng = np.random.default_rng(2)
    n = 30
    dtype = np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("normal_x", "<f8"), ("intensity", "<u2")]
    )
    rec = np.zeros(n, dtype=dtype)
    xyz = rng.random((n, 3)).astype(np.float32)
    rec["x"], rec["y"], rec["z"] = xyz.T
    rec["rgb"] = 0xFF00FF
    rec["intensity"] = 7
    header = (
        "# comment\nVERSION .7\nFIELDS x y z rgb normal_x intensity\nSIZE 4 4 4 4 8 2\n"
        f"TYPE F F F U F U\nCOUNT 1 1 1 1 1 1\nWIDTH {n}\nHEIGHT 1\n"
        f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
    )
    binary = (header + "DATA binary\n").encode() + rec.tobytes()
    lines = "".join(f"{r['x']:.9g} {r['y']:.9g} {r['z']:.9g} {r['rgb']} 0.5 7\n" for r in rec)
    ascii_ = (header + "DATA ascii\n" + lines).encode()
    for data in (binary, ascii_):
        geom = read_geometry("f.pcd", data)
        assert isinstance(geom, PointCloudData)
        np.testing.assert_array_equal(geom.points, xyz.astype(np.float64))


def test_xyz_round_trip() -> None:
    pts = np.random.default_rng(3).normal(size=(100, 3))
    geom = read_geometry("p.xyz", encode_xyz(pts))
    assert isinstance(geom, PointCloudData)
    np.testing.assert_array_equal(geom.points, pts)


def test_xyz_commas_comments_extra_columns() -> None:
    data = b"# header\n1,2,3,9\n\n4, 5, 6  # trailing\n7 8 9 0.5 0.5\n"
    geom = read_geometry("p.XYZ", data)
    assert isinstance(geom, PointCloudData)
    assert geom.points.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_read_path(tmp_path: Path) -> None:
    path = tmp_path / "tri.off"
    path.write_bytes(OFF_TRIANGLE)
    assert isinstance(read_path(path), MeshData)
    assert isinstance(read_path(str(path)), MeshData)
    with pytest.raises(ReadError, match="too large"):
        read_path(path, ReadLimits(max_bytes=10))
    with pytest.raises(ReadError) as info:
        read_path(tmp_path / "missing.off")
    assert str(info.value).startswith(str(tmp_path / "missing.off"))


def test_extensions() -> None:
    assert {".off", ".ply", ".stl", ".obj", ".glb"} == MESH_EXTENSIONS
    assert {".pcd", ".xyz", ".ply"} == POINT_EXTENSIONS
    assert MESH_EXTENSIONS | POINT_EXTENSIONS == SUPPORTED_EXTENSIONS


# --------------------------------------------------------------------------- bad input


def _bad_cases() -> list[tuple[str, str, bytes, ReadLimits, str]]:
    box = _box()
    ply_bin = _export(box, "ply")
    stl_bin = _export(box, "stl")
    rng = np.random.default_rng(4)
    garbage = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    huge = 100_000_000
    pcd_ok = encode_pcd(rng.random((10, 3)))
    limits = ReadLimits()
    cases: list[tuple[str, str, bytes, ReadLimits, str]] = [
        ("empty", "e.off", b"", limits, "empty file"),
        ("blank", "e.xyz", b"  \n\n", limits, "empty file"),
        # slightly short: trimesh notices ("PLY is unexpected length"); very short: our header check
        ("truncated-ply", "t.ply", ply_bin[: len(ply_bin) - 20], limits, "length"),
        ("truncated-ply-half", "t.ply", ply_bin[: len(ply_bin) // 2], limits, "truncated binary PLY"),
        ("truncated-stl", "t.stl", stl_bin[: len(stl_bin) - 20], limits, "truncated"),
        ("truncated-stl-header", "t.stl", stl_bin[:50], limits, "truncated"),
        ("off-wrong-counts", "w.off", OFF_TRIANGLE.replace(b"3 1 0", b"4 1 0"), limits, "truncated"),
        ("off-missing-face", "w.off", OFF_TRIANGLE.replace(b"3 1 0", b"3 2 0"), limits, "truncated"),
        ("off-short-face", "w.off", OFF_TRIANGLE.replace(b"3 0 1 2", b"3 0 1"), limits, "face"),
        ("nan-vertex", "n.off", OFF_TRIANGLE.replace(b"1 0 0", b"nan 0 0"), limits, "NaN"),
        ("inf-vertex", "n.off", OFF_TRIANGLE.replace(b"1 0 0", b"inf 0 0"), limits, "inf"),
        ("nan-xyz", "n.xyz", b"0 0 0\n1 nan 2\n", limits, "NaN"),
        ("inf-pcd", "n.pcd", encode_pcd(np.array([[0, 0, 0], [np.inf, 1, 1]])), limits, "inf"),
        ("face-past-off", "f.off", OFF_TRIANGLE.replace(b"3 0 1 2", b"3 0 1 3"), limits, "face index"),
        (
            "face-past-ply",
            "f.ply",
            b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
            b"property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
            b"0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
            limits,
            "face index",
        ),
        ("face-past-obj", "f.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", limits, ""),
        ("zero-area", "z.off", b"OFF\n3 1 0\n0 0 0\n1 1 1\n2 2 2\n3 0 1 2\n", limits, "zero-area"),
        (
            "zero-area-stl",
            "z.stl",
            b"solid a\nfacet normal 0 0 0\nouter loop\nvertex 0 0 0\n"
            b"vertex 1 0 0\nvertex 2 0 0\nendloop\nendfacet\nendsolid a\n",
            limits,
            "zero-area",
        ),
        ("single-point-xyz", "s.xyz", b"1 2 3\n", limits, "all points coincide"),
        ("same-points-pcd", "s.pcd", encode_pcd(np.ones((5, 3))), limits, "all points coincide"),
        ("single-vertex-ply", "s.ply", _ascii_ply_points(np.ones((1, 3))), limits, "all points coincide"),
        ("huge-off", "h.off", f"OFF\n{huge} 1 0\n0 0 0\n".encode(), limits, "too many vertices"),
        ("huge-off-fused", "h.off", f"OFF{huge} 1 0\n0 0 0\n".encode(), limits, "too many vertices"),
        (
            "huge-ply",
            "h.ply",
            f"ply\nformat binary_little_endian 1.0\nelement vertex {huge}\nproperty float x\n"
            "property float y\nproperty float z\nend_header\n".encode()
            + b"\0" * 24,
            limits,
            "too many vertices",
        ),
        (
            "huge-ply-faces",
            "h.ply",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
            b"property float z\nelement face 100000000\nproperty list uchar int vertex_indices\n"
            b"end_header\n" + b"\0" * 40,
            limits,
            "truncated",
        ),
        (
            "huge-pcd",
            "h.pcd",
            pcd_ok.replace(b"WIDTH 10", f"WIDTH {huge}".encode()).replace(b"POINTS 10", f"POINTS {huge}".encode()),
            limits,
            "too many points",
        ),
        ("small-limit-off", "l.off", OFF_TRIANGLE, ReadLimits(max_vertices=2), "too many vertices"),
        ("small-limit-xyz", "l.xyz", b"0 0 0\n1 1 1\n2 2 2\n", ReadLimits(max_vertices=2), "too many"),
        ("small-limit-stl", "l.stl", stl_bin, ReadLimits(max_vertices=10), "too many"),
        ("pcd-wrong-points", "p.pcd", pcd_ok.replace(b"POINTS 10", b"POINTS 11"), limits, "POINTS"),
        ("pcd-truncated", "p.pcd", pcd_ok[:-7], limits, "truncated"),
        (
            "pcd-ascii-truncated",
            "p.pcd",
            encode_pcd(rng.random((10, 3)), binary=False).rsplit(b"\n", 3)[0],
            limits,
            "truncated",
        ),
        (
            "pcd-compressed",
            "p.pcd",
            pcd_ok.replace(b"DATA binary", b"DATA binary_compressed"),
            limits,
            "binary_compressed PCD is not supported",
        ),
        ("pcd-no-z", "p.pcd", pcd_ok.replace(b"FIELDS x y z", b"FIELDS x y w"), limits, "'z'"),
        ("too-big", "b.off", OFF_TRIANGLE, ReadLimits(max_bytes=16), "too large"),
        ("unknown-ext", "model.foo", OFF_TRIANGLE, limits, "unsupported extension '.foo'; supported:"),
        ("no-ext", "model", OFF_TRIANGLE, limits, "unsupported extension"),
        ("non-utf8-off", "u.off", b"\xff\xfeOFF\n3 1 0\n" + OFF_TRIANGLE[10:], limits, "OFF"),
        ("non-utf8-pcd", "u.pcd", b"# \xff\xfe\xfa\nVERSION 0.7\xff\n" + pcd_ok, limits, "PCD"),
        ("non-utf8-xyz", "u.xyz", b"1 2 3\n\xff\xfe 5 6\n", limits, "UTF-8"),
        ("text-obj", "g.obj", b"hello world\n", limits, ""),
    ]
    for ext in (".stl", ".ply", ".off", ".glb", ".obj", ".pcd", ".xyz"):
        cases.append((f"garbage{ext}", f"garbage{ext}", garbage, limits, ""))
    return cases


@pytest.mark.parametrize(("source", "data", "limits", "needle"), [pytest.param(*c[1:], id=c[0]) for c in _bad_cases()])
def test_bad_input_raises_read_error(source: str, data: bytes, limits: ReadLimits, needle: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ReadError) as info:
            read_geometry(source, data, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = info.value
    assert str(err).startswith(f"{source}: ")
    assert err.source == source
    assert str(err) == f"{source}: {err.reason}"
    assert needle in err.reason
    # huge claimed counts fail before allocating (10^8 vertices would take 2.4 GB)
    assert peak < 64 * 2**20


def test_non_utf8_ply_header_never_leaks_unicode_error() -> None:
    data = _export(_box(), "ply").replace(b"ply\n", b"ply\ncomment \xff\xfe\xfa\n", 1)
    try:
        geom = read_geometry("u.ply", data)
    except ReadError:
        return
    assert isinstance(geom, MeshData)


def test_read_error_pickles() -> None:
    err = ReadError("s3://bucket/a.off", "truncated OFF: something")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ReadError)
    assert str(back) == str(err) == "s3://bucket/a.off: truncated OFF: something"
    assert back.source == err.source and back.reason == err.reason
    assert back.args == err.args


def test_unexpected_errors_are_wrapped() -> None:
    # trimesh's own exception types must never escape
    with pytest.raises(ReadError) as info:
        read_geometry("x.glb", b"glTF" + b"\x02\0\0\0" + b"\x40\0\0\0" + b"\0" * 52)
    assert str(info.value).startswith("x.glb: ")


# --------------------------------------------------------------------------- fuzz

_EXTS = sorted(SUPPORTED_EXTENSIONS)


def _valid_samples() -> list[tuple[str, bytes]]:
    box = _box()
    pts = np.random.default_rng(5).random((20, 3))
    return [
        (".off", OFF_TRIANGLE),
        (".off", _export(box, "off")),
        (".ply", _export(box, "ply")),
        (".ply", _ascii_ply_points(pts)),
        (".pcd", encode_pcd(pts)),
        (".pcd", encode_pcd(pts, binary=False)),
        (".stl", _export(box, "stl")),
        (".obj", _export(box, "obj")),
        (".xyz", encode_xyz(pts)),
    ]


_SAMPLES = _valid_samples()
_FUZZ = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _returns_geometry_or_read_error(source: str, data: bytes) -> None:
    try:
        geom = read_geometry(source, data, ReadLimits(max_vertices=100_000))
    except ReadError as err:
        assert str(err).startswith(f"{source}: ")
        return
    if isinstance(geom, MeshData):
        assert geom.vertices.dtype == np.float64 and geom.faces.dtype == np.int64
        assert geom.faces.ndim == 2 and geom.faces.shape[1] == 3
        assert np.isfinite(geom.vertices).all()
        assert geom.faces.min() >= 0 and geom.faces.max() < len(geom.vertices)
    else:
        assert isinstance(geom, PointCloudData)
        assert geom.points.dtype == np.float64 and np.isfinite(geom.points).all()


@_FUZZ
@given(ext=st.sampled_from(_EXTS), data=st.binary(max_size=512))
def test_fuzz_random_bytes(ext: str, data: bytes) -> None:
    _returns_geometry_or_read_error(f"fuzz{ext}", data)


@_FUZZ
@given(
    sample=st.sampled_from(_SAMPLES),
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 3), st.binary(min_size=1, max_size=4)),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_mutated_valid_files(sample: tuple[str, bytes], edits: list[tuple[float, int, bytes]]) -> None:
    ext, original = sample
    data = bytearray(original)
    for where, op, chunk in edits:
        pos = int(where * len(data)) if data else 0
        if op == 0:  # overwrite
            data[pos : pos + len(chunk)] = chunk
        elif op == 1:  # insert
            data[pos:pos] = chunk
        elif op == 2:  # delete
            del data[pos : pos + len(chunk)]
        else:  # truncate
            del data[pos:]
    _returns_geometry_or_read_error(f"mutant{ext}", bytes(data))
