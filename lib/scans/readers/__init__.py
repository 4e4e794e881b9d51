"""Read 3D scans (meshes and point clouds) from bytes into plain numpy geometry.

Formats
-------
Meshes (parsed by trimesh, ``process=False`` so vertices/faces are kept as given;
quads and polygons are triangulated by trimesh):

* ``.off``  Object File Format. ModelNet's broken "fused" header, where the first
  line reads ``OFF<nverts> <nfaces> <nedges>`` (e.g. ``OFF490 518 0``), is accepted.
  The header counts are checked against the content (truncated files are rejected).
* ``.ply``  ASCII or binary PLY. A PLY with faces gives :class:`MeshData`; a PLY with
  only vertices gives :class:`PointCloudData`.
* ``.stl``  ASCII or binary STL.
* ``.obj``  Wavefront OBJ (materials and textures are ignored).
* ``.glb``  binary glTF. A scene with several meshes is concatenated into one mesh,
  with the scene-graph transforms applied. Materials are skipped: embedded textures are
  never decoded.

Point clouds:

* ``.pcd``  PCL's Point Cloud Data v0.7 (parsed here; ``DATA ascii`` and
  ``DATA binary``; ``binary_compressed`` is not supported). Only ``x y z`` are kept;
  other fields (rgb, intensity, normals, padding ...) are skipped.
* ``.xyz``  text, one point per line, whitespace or comma separated, at least three
  numeric columns (the first three are used), ``#`` starts a comment.

Any mesh format whose file holds vertices but no faces is returned as a point cloud.

Limits and errors
-----------------
Every failure is raised as :class:`ReadError` (``str(err) == f"{source}: {reason}"``);
no other exception type escapes :func:`read_geometry`. Rejected inputs include: data
larger than ``ReadLimits.max_bytes`` (checked first, and in :func:`read_path` before the
file is read), empty data, unknown extensions, more vertices/points than
``ReadLimits.max_vertices`` (checked from the header before parsing for OFF, PLY and
PCD, so a tiny file claiming 10^8 vertices fails without allocating, and after parsing
for every format), truncated files, NaN/inf coordinates, coordinates whose spread overflows
float64, face indices outside the vertex list (and OBJ's invalid index 0), empty geometry,
meshes whose faces all have zero area
("zero-area mesh") and geometry whose points all coincide
("degenerate: all points coincide").

Returned arrays are float64 ``(N, 3)`` vertices/points and int64 ``(F, 3)`` faces.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from lib.errors import VoxclustError

__all__ = [
    "MESH_EXTENSIONS",
    "POINT_EXTENSIONS",
    "SUPPORTED_EXTENSIONS",
    "Geometry",
    "MeshData",
    "PointCloudData",
    "ReadError",
    "ReadLimits",
    "encode_pcd",
    "encode_xyz",
    "read_geometry",
    "read_path",
]


class ReadError(VoxclustError):
    """The one error type for unreadable input. ``str(err) == f"{source}: {reason}"``."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason

    def __reduce__(self) -> tuple[type[ReadError], tuple[str, str]]:
        return (type(self), (self.source, self.reason))

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass(frozen=True)
class ReadLimits:
    """Resource limits applied while reading one input."""

    max_bytes: int = 256 * 1024 * 1024
    max_vertices: int = 5_000_000  # vertices of a mesh or points of a cloud


@dataclass(frozen=True)
class MeshData:
    """A triangle mesh: ``vertices`` (V, 3) float64 and ``faces`` (F, 3) int64."""

    vertices: np.ndarray
    faces: np.ndarray


@dataclass(frozen=True)
class PointCloudData:
    """A point cloud: ``points`` (P, 3) float64."""

    points: np.ndarray


Geometry = MeshData | PointCloudData

MESH_EXTENSIONS: frozenset[str] = frozenset({".off", ".ply", ".stl", ".obj", ".glb"})
POINT_EXTENSIONS: frozenset[str] = frozenset({".pcd", ".xyz", ".ply"})
SUPPORTED_EXTENSIONS: frozenset[str] = MESH_EXTENSIONS | POINT_EXTENSIONS

# how far into a file we look for a text header before giving up
_MAX_HEADER_BYTES = 64 * 1024


class _Invalid(Exception):
    """Internal: a reason why the input is unreadable (turned into ReadError)."""


# --------------------------------------------------------------------------- encoders


def _as_points(points: np.ndarray) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {arr.shape}")
    return arr


def _format_rows(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.StringIO()
    if arr.shape[0]:
        np.savetxt(buf, arr, fmt=fmt, delimiter=" ")
    return buf.getvalue().encode("ascii")


def encode_pcd(points: np.ndarray, binary: bool = True) -> bytes:
    """Encode (N, 3) points as a PCD v0.7 file with float32 ``x y z`` fields."""
    arr = _as_points(points).astype("<f4")
    n = arr.shape[0]
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        "FIELDS x y z\n"
        "SIZE 4 4 4\n"
        "TYPE F F F\n"
        "COUNT 1 1 1\n"
        f"WIDTH {n}\n"
        "HEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {n}\n"
        f"DATA {'binary' if binary else 'ascii'}\n"
    ).encode("ascii")
    if binary:
        return header + np.ascontiguousarray(arr).tobytes()
    # 9 significant digits round-trip float32 exactly
    return header + _format_rows(arr.astype(np.float64), "%.9g")


def encode_xyz(points: np.ndarray) -> bytes:
    """Encode (N, 3) points as text, one ``x y z`` line per point (float64 exact)."""
    return _format_rows(_as_points(points), "%.17g")


# --------------------------------------------------------------------------- public readers


def read_geometry(source: str, data: bytes, limits: ReadLimits = ReadLimits()) -> Geometry:
    """Parse ``data`` into a :class:`MeshData` or :class:`PointCloudData`.

    ``source`` is a name used for the extension (case-insensitive, from the last
    suffix) and in error messages. Raises :class:`ReadError` and nothing else.
    """
    try:
        return _read(source, data, limits)
    except ReadError:
        raise
    except _Invalid as exc:
        raise ReadError(source, _printable(str(exc))) from None
    except Exception as exc:  # anything from trimesh/numpy/json/...: keep its message
        kind = _extension(source)[1:].upper() or "input"
        msg = _printable(" ".join(str(exc).split())[:300]) or "no message"
        raise ReadError(source, f"cannot parse {kind} ({type(exc).__name__}): {msg}") from exc


def read_path(path: str | os.PathLike[str], limits: ReadLimits = ReadLimits()) -> Geometry:
    """Read a file from disk (size checked against ``limits.max_bytes`` before reading)."""
    source = os.fspath(path)
    try:
        size = os.stat(source).st_size
        if size > limits.max_bytes:
            raise ReadError(source, _too_big(size, limits))
        with open(source, "rb") as fh:
            data = fh.read(limits.max_bytes + 1)
    except OSError as exc:
        raise ReadError(source, f"cannot read file: {exc.strerror or exc}") from exc
    return read_geometry(source, data, limits)


# --------------------------------------------------------------------------- dispatch


def _printable(text: str) -> str:
    """One printable line: control characters quoted from the input (a NUL, a newline) are escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _too_big(size: int, limits: ReadLimits) -> str:
    return f"file too large: {size} bytes exceeds the limit of {limits.max_bytes} bytes"


def _too_many(count: int, limits: ReadLimits, what: str = "vertices") -> str:
    return f"too many {what}: {count} exceeds the limit of {limits.max_vertices}"


def _extension(source: str) -> str:
    return PurePosixPath(source.replace("\\", "/")).suffix.lower()


def _read(source: str, data: bytes, limits: ReadLimits) -> Geometry:
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > limits.max_bytes:
        raise _Invalid(_too_big(len(data), limits))
    ext = _extension(source)
    if ext not in SUPPORTED_EXTENSIONS:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        shown = ext or "(none)"
        raise _Invalid(f"unsupported extension '{shown}'; supported: {supported}")
    if not data[:64].strip() and not data.strip():
        raise _Invalid("empty file")

    geometry: Geometry
    if ext == ".pcd":
        geometry = PointCloudData(_parse_pcd(data, limits))
    elif ext == ".xyz":
        geometry = PointCloudData(_parse_xyz(data, limits))
    else:
        if ext == ".off":
            data = _check_off(data, limits)
        elif ext == ".ply":
            _check_ply(data, limits)
        elif ext == ".stl":
            _check_stl(data, limits)
        elif ext == ".glb":
            _check_glb(data)
        elif ext == ".obj":
            _check_obj(data)
        geometry = _load_trimesh(data, ext[1:])
    return _validate(geometry, limits)


# --------------------------------------------------------------------------- validation


def _validate(geometry: Geometry, limits: ReadLimits) -> Geometry:
    if isinstance(geometry, PointCloudData):
        pts = np.ascontiguousarray(geometry.points, dtype=np.float64).reshape(-1, 3)
        if len(pts) == 0:
            raise _Invalid("no points")
        if len(pts) > limits.max_vertices:
            raise _Invalid(_too_many(len(pts), limits, "points"))
        _check_finite(pts, "point")
        _check_extent(pts)
        return PointCloudData(pts)

    verts = np.ascontiguousarray(geometry.vertices, dtype=np.float64).reshape(-1, 3)
    faces_in = np.asarray(geometry.faces)
    if faces_in.size == 0:
        faces = np.zeros((0, 3), dtype=np.int64)
    else:
        if faces_in.ndim != 2 or faces_in.shape[1] != 3:
            raise _Invalid(f"faces must be triangles, got array of shape {faces_in.shape}")
        faces = np.ascontiguousarray(faces_in, dtype=np.int64)
    if len(verts) == 0 and len(faces) == 0:
        raise _Invalid("mesh has no vertices and no faces")
    if len(verts) == 0:
        raise _Invalid("mesh has faces but no vertices")
    if len(verts) > limits.max_vertices:
        raise _Invalid(_too_many(len(verts), limits))
    _check_finite(verts, "vertex")
    if len(faces):
        lo, hi = int(faces.min()), int(faces.max())
        if lo < 0:
            raise _Invalid(f"face index {lo} is negative")
        if hi >= len(verts):
            raise _Invalid(f"face index {hi} is past the vertex list ({len(verts)} vertices)")
    _check_extent(verts)
    if len(faces) == 0:
        # vertices only: a point cloud
        return PointCloudData(verts)
    # areas relative to the bounding box (finite and > 0 here): raw cross products of huge coordinates overflow
    scale = float(np.ptp(verts, axis=0).max())
    tri = (verts[faces] - verts.min(axis=0)) / scale
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    areas = np.sqrt(np.einsum("ij,ij->i", cross, cross))
    if not np.any(areas > 1e-12):
        raise _Invalid(f"zero-area mesh: all {len(faces)} faces have zero area")
    return MeshData(verts, faces)


def _check_finite(arr: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.nonzero(bad.any(axis=1))[0][0])
        kind = "NaN" if np.isnan(arr[row]).any() else "inf"
        raise _Invalid(f"non-finite coordinate ({kind}) in {what} {row}")


def _check_extent(arr: np.ndarray) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        span = np.ptp(arr, axis=0)
    if not np.isfinite(span).all():
        biggest = float(np.abs(arr).max())
        raise _Invalid(f"coordinates out of range: their spread overflows float64 (|coordinate| up to {biggest:.3g})")
    if not np.any(span > 0):
        raise _Invalid(f"degenerate: all points coincide ({len(arr)} points)")


# --------------------------------------------------------------------------- trimesh


def _load_trimesh(data: bytes, file_type: str) -> Geometry:
    import trimesh  # imported lazily: heavy and only needed for meshes

    # geometry only: a GLB's embedded texture is never decoded (a 260 KB PNG can decode to 600 MB)
    extra: dict[str, Any] = {"skip_materials": True} if file_type == "glb" else {}
    loaded: Any = trimesh.load(io.BytesIO(data), file_type=file_type, process=False, **extra)
    parts: list[Any] = list(loaded.dump()) if isinstance(loaded, trimesh.Scene) else [loaded]
    meshes = [p for p in parts if isinstance(p, trimesh.Trimesh)]
    clouds = [p for p in parts if isinstance(p, trimesh.PointCloud)]
    if meshes:
        if len(meshes) == 1:
            mesh = meshes[0]
            return MeshData(np.asarray(mesh.vertices), np.asarray(mesh.faces))
        verts: list[np.ndarray] = []
        faces: list[np.ndarray] = []
        offset = 0
        for mesh in meshes:
            v = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
            f = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
            verts.append(v)
            faces.append(f + offset)
            offset += len(v)
        return MeshData(np.concatenate(verts), np.concatenate(faces))
    if clouds:
        return PointCloudData(np.concatenate([np.asarray(c.vertices).reshape(-1, 3) for c in clouds]))
    if not parts:
        raise _Invalid("mesh has no vertices and no faces")
    raise _Invalid(f"no mesh or point geometry found (got {type(loaded).__name__})")


# --------------------------------------------------------------------------- OFF

_COMMENT = re.compile(r"#[^\n]*")
_OFF_HEADER = re.compile(r"\A\s*(C?OFF)[ \t]*\r?\n?\s*(\d+)[ \t]+(\d+)(?:[ \t]+(\d+))?[ \t]*(?:\r?\n|\Z)")


def _check_off(data: bytes, limits: ReadLimits) -> bytes:
    """Check an OFF's header counts against its content; return normalized bytes for trimesh."""
    text = _COMMENT.sub("", data.decode("utf-8", errors="replace"))
    match = _OFF_HEADER.match(text)
    if match is None:
        head = text.lstrip()[:20]
        raise _Invalid(f"not an OFF file: bad header {head!r}")
    nverts, nfaces = int(match.group(2)), int(match.group(3))
    if nverts > limits.max_vertices:
        raise _Invalid(_too_many(nverts, limits))
    lines = [ln for ln in (s.strip() for s in text[match.end() :].splitlines()) if ln]
    if len(lines) < nverts + nfaces:
        raise _Invalid(
            f"truncated OFF: header declares {nverts} vertices and {nfaces} faces "
            f"but only {len(lines)} data lines follow"
        )
    for i, line in enumerate(lines[:nverts]):
        if len(line.split()) < 3:
            raise _Invalid(f"OFF vertex {i} has fewer than 3 coordinates: {line[:40]!r}")
    for i, line in enumerate(lines[nverts : nverts + nfaces]):
        tokens = line.split()
        try:
            k = int(tokens[0])
        except ValueError:
            raise _Invalid(f"OFF face {i} does not start with a vertex count: {line[:40]!r}") from None
        if k < 3 or len(tokens) < k + 1:
            raise _Invalid(f"OFF face {i} is malformed: {line[:40]!r}")
    body = "\n".join(lines)
    return f"OFF\n{nverts} {nfaces} {match.group(4) or 0}\n{body}\n".encode()


# --------------------------------------------------------------------------- PLY

_PLY_SCALAR_SIZES = {
    "char": 1,
    "uchar": 1,
    "int8": 1,
    "uint8": 1,
    "short": 2,
    "ushort": 2,
    "int16": 2,
    "uint16": 2,
    "int": 4,
    "uint": 4,
    "int32": 4,
    "uint32": 4,
    "float": 4,
    "float32": 4,
    "double": 8,
    "float64": 8,
}


def _check_ply(data: bytes, limits: ReadLimits) -> None:
    """Parse the PLY header; reject huge vertex counts and truncated bodies before trimesh."""
    if not data.startswith(b"ply"):
        raise _Invalid("not a PLY file: missing 'ply' magic")
    end = data.find(b"end_header", 0, _MAX_HEADER_BYTES)
    if end < 0:
        raise _Invalid("not a PLY file: no 'end_header' in the header")
    newline = data.find(b"\n", end)
    body_start = len(data) if newline < 0 else newline + 1
    header = data[:end].decode("ascii", errors="replace")
    fmt = ""
    elements: list[tuple[str, int, int]] = []  # name, count, minimal bytes per element
    for raw in header.splitlines():
        tokens = raw.split()
        if not tokens:
            continue
        key = tokens[0]
        if key == "format" and len(tokens) >= 2:
            fmt = tokens[1]
        elif key == "element":
            if len(tokens) < 3 or not tokens[2].isdigit():
                raise _Invalid(f"malformed PLY element line: {raw.strip()[:60]!r}")
            elements.append((tokens[1], int(tokens[2]), 0))
        elif key == "property" and elements:
            name, count, size = elements[-1]
            if len(tokens) >= 2 and tokens[1] == "list":
                # a list costs at least its count field
                size += _PLY_SCALAR_SIZES.get(tokens[2], 1) if len(tokens) >= 3 else 1
            elif len(tokens) >= 2:
                size += _PLY_SCALAR_SIZES.get(tokens[1], 1)
            elements[-1] = (name, count, size)
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise _Invalid(f"unknown PLY format {fmt!r}")
    for name, count, _ in elements:
        if name == "vertex" and count > limits.max_vertices:
            raise _Invalid(_too_many(count, limits))
    body = len(data) - body_start
    if fmt == "ascii":
        total = sum(count for _, count, _ in elements)
        if total > body:  # every element needs at least one byte
            raise _Invalid(f"truncated PLY: header declares {total} elements in {body} bytes")
    else:
        need = sum(count * size for _, count, size in elements)
        if need > body:
            raise _Invalid(f"truncated binary PLY: header needs at least {need} bytes, got {body}")


# --------------------------------------------------------------------------- STL


def _check_stl(data: bytes, limits: ReadLimits) -> None:
    if len(data) >= 84:
        count = int(np.frombuffer(data[80:84], dtype="<u4")[0])
        if len(data) == 84 + 50 * count:
            if 3 * count > limits.max_vertices:
                raise _Invalid(_too_many(3 * count, limits))
            return  # well-formed binary STL
    if data.lstrip()[:5].lower() == b"solid":
        return  # ASCII STL: trimesh parses it
    if len(data) < 84:
        raise _Invalid(f"truncated binary STL: {len(data)} bytes is shorter than the 84-byte header")
    raise _Invalid(
        f"truncated or corrupt binary STL: header declares {count} triangles "
        f"({84 + 50 * count} bytes), file has {len(data)} bytes"
    )


# --------------------------------------------------------------------------- OBJ

# a face whose vertex index (the first field of a corner) is 0: trimesh would silently read it as -1
_OBJ_ZERO_INDEX = re.compile(rb"^[ \t]*f[ \t][^\n#]*?(?<=[ \t])[-+]?0+(?=[/ \t\r\n]|\Z)", re.MULTILINE)


def _check_obj(data: bytes) -> None:
    match = _OBJ_ZERO_INDEX.search(data)
    if match is not None:
        line = data.count(b"\n", 0, match.start()) + 1
        raise _Invalid(f"OBJ face on line {line} uses vertex index 0 (OBJ indices start at 1)")


# --------------------------------------------------------------------------- GLB


def _check_glb(data: bytes) -> None:
    if len(data) < 12 or data[:4] != b"glTF":
        raise _Invalid("not a GLB file: missing 'glTF' magic")
    length = int(np.frombuffer(data[8:12], dtype="<u4")[0])
    if length > len(data):
        raise _Invalid(f"truncated GLB: header declares {length} bytes, file has {len(data)}")


# --------------------------------------------------------------------------- PCD

_PCD_TYPES = {
    ("F", 4): "f4",
    ("F", 8): "f8",
    ("I", 1): "i1",
    ("I", 2): "i2",
    ("I", 4): "i4",
    ("I", 8): "i8",
    ("U", 1): "u1",
    ("U", 2): "u2",
    ("U", 4): "u4",
    ("U", 8): "u8",
}


_PCD_KEYS = frozenset({"VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS"})


def _pcd_ints(key: str, values: list[str]) -> list[int]:
    try:
        out = [int(v) for v in values]
    except ValueError:
        raise _Invalid(f"PCD {key} must be integers, got {' '.join(values)[:60]!r}") from None
    if any(v < 0 for v in out):
        raise _Invalid(f"PCD {key} must not be negative")
    return out


def _parse_pcd(data: bytes, limits: ReadLimits) -> np.ndarray:
    header: dict[str, list[str]] = {}
    pos = 0
    data_kind = ""
    while True:
        if pos >= min(len(data), _MAX_HEADER_BYTES):
            raise _Invalid("not a PCD file: no DATA line in the header")
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        raw = data[pos:end]
        pos = end + 1
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise _Invalid("not a PCD file: non-ASCII bytes in the header") from None
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        key = key.upper()
        if key == "DATA":
            data_kind = values[0].lower() if values else ""
            break
        if key not in _PCD_KEYS:
            raise _Invalid(f"not a PCD file: unknown header line {line[:40]!r}")
        header[key] = values
    body = data[pos:]

    if data_kind == "binary_compressed":
        raise _Invalid("binary_compressed PCD is not supported")
    if data_kind not in ("ascii", "binary"):
        raise _Invalid(f"unknown PCD DATA kind {data_kind!r}")
    fields = header.get("FIELDS")
    if not fields:
        raise _Invalid("PCD header has no FIELDS")
    for axis in "xyz":
        if axis not in fields:
            raise _Invalid(f"PCD has no '{axis}' field (FIELDS {' '.join(fields)})")
    n = len(fields)
    sizes = _pcd_ints("SIZE", header.get("SIZE", ["4"] * n))
    types = [t.upper() for t in header.get("TYPE", ["F"] * n)]
    counts = _pcd_ints("COUNT", header.get("COUNT", ["1"] * n))
    if not (len(sizes) == len(types) == len(counts) == n):
        raise _Invalid("PCD FIELDS, SIZE, TYPE and COUNT have different lengths")
    if "WIDTH" not in header:
        raise _Invalid("PCD header has no WIDTH")
    width = _pcd_ints("WIDTH", header["WIDTH"][:1] or ["x"])[0]
    height = _pcd_ints("HEIGHT", header.get("HEIGHT", ["1"])[:1] or ["x"])[0]
    points = _pcd_ints("POINTS", header["POINTS"][:1] or ["x"])[0] if "POINTS" in header else width * height
    if points > limits.max_vertices:
        raise _Invalid(_too_many(points, limits, "points"))
    if points != width * height:
        raise _Invalid(f"PCD POINTS {points} disagrees with WIDTH*HEIGHT = {width}*{height}")

    dtype_fields: list[tuple[str, str] | tuple[str, str, tuple[int]]] = []
    columns: dict[str, int] = {}  # field -> first column (ascii)
    column = 0
    for i, (name, size, typ, count) in enumerate(zip(fields, sizes, types, counts, strict=True)):
        base = _PCD_TYPES.get((typ, size))
        if base is None:
            raise _Invalid(f"PCD field {name!r} has unsupported TYPE {typ} SIZE {size}")
        if count < 1:
            raise _Invalid(f"PCD field {name!r} has COUNT {count}")
        key = name if name not in columns else f"_{i}_{name}"
        columns.setdefault(name, column)
        column += count
        if count == 1:
            dtype_fields.append((key, "<" + base))
        else:
            dtype_fields.append((key, "<" + base, (count,)))

    if data_kind == "binary":
        dtype = np.dtype(dtype_fields)
        need = points * dtype.itemsize
        if len(body) < need:
            raise _Invalid(f"truncated PCD: {points} points need {need} bytes of binary data, got {len(body)}")
        records = np.frombuffer(body, dtype=dtype, count=points)
        cols = []
        for axis in "xyz":
            col = records[axis]
            cols.append(col if col.ndim == 1 else col[:, 0])
        return np.stack(cols, axis=1).astype(np.float64)

    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise _Invalid("PCD ascii data contains non-ASCII bytes") from None
    rows = [ln for ln in (s.strip() for s in text.splitlines()) if ln and not ln.startswith("#")]
    if len(rows) < points:
        raise _Invalid(f"truncated PCD: POINTS {points} but only {len(rows)} data lines")
    out = np.empty((points, 3), dtype=np.float64)
    idx = [columns["x"], columns["y"], columns["z"]]
    for r, line in enumerate(rows[:points]):
        tokens = line.split()
        if len(tokens) != column:
            raise _Invalid(f"PCD data line {r} has {len(tokens)} values, expected {column}")
        try:
            out[r] = [float(tokens[j]) for j in idx]
        except ValueError:
            raise _Invalid(f"PCD data line {r} is not numeric: {line[:40]!r}") from None
    # store values as the declared field type (float32 text reads like binary float32 data)
    for j, axis in enumerate("xyz"):
        k = fields.index(axis)
        if types[k] == "F" and sizes[k] == 4:
            with np.errstate(over="ignore"):
                out[:, j] = out[:, j].astype(np.float32)
    return out


# --------------------------------------------------------------------------- XYZ


def _parse_xyz(data: bytes, limits: ReadLimits) -> np.ndarray:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Invalid(f"XYZ file is not UTF-8 text (byte {exc.start})") from None
    rows: list[list[str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        if len(line) < 3:
            raise _Invalid(f"XYZ line {number} has fewer than 3 columns: {raw.strip()[:40]!r}")
        rows.append(line[:3])
        if len(rows) > limits.max_vertices:
            raise _Invalid(_too_many(len(rows), limits, "points"))
    if not rows:
        raise _Invalid("no points")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        for line_no, row in enumerate(rows):
            try:
                [float(v) for v in row]
            except ValueError:
                raise _Invalid(f"XYZ point {line_no} is not numeric: {' '.join(row)[:40]!r}") from None
        raise
