"""Read mesh files (OFF, PLY, STL, OBJ, GLB): a pre-check of each format's header, then trimesh.

Meshes are parsed by trimesh with ``process=False`` so vertices/faces are kept as given; quads and
polygons are triangulated by trimesh. Each format is checked first, where trimesh would be slow,
silent or wrong: the vertex counts a header declares are checked against ``ReadLimits.max_vertices``
before parsing (OFF, PLY, binary STL), so a tiny file claiming 10^8 vertices fails without allocating,
and truncated files are rejected.

* ``.off``  Object File Format. ModelNet's broken "fused" header, where the first
  line reads ``OFF<nverts> <nfaces> <nedges>`` (e.g. ``OFF490 518 0``), is accepted.
  The header counts are checked against the content (truncated files are rejected).
* ``.ply``  ASCII or binary PLY. A PLY with faces gives :class:`MeshData`; a PLY with
  only vertices gives :class:`PointCloudData` (see :mod:`lib.scans.readers.validate`).
* ``.stl``  ASCII or binary STL.
* ``.obj``  Wavefront OBJ (materials and textures are ignored); a face using vertex index 0 is rejected.
* ``.glb``  binary glTF. A scene with several meshes is concatenated into one mesh,
  with the scene-graph transforms applied. Materials are skipped: embedded textures are
  never decoded.

Any mesh format whose file holds vertices but no faces is returned as a point cloud.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

from lib.scans.readers.base import (
    _MAX_HEADER_BYTES,
    Geometry,
    InvalidInput,
    MeshData,
    PointCloudData,
    ReadLimits,
    _too_many,
)

# --------------------------------------------------------------------------- readers, one per extension


def read_off(data: bytes, limits: ReadLimits) -> Geometry:
    return _load_trimesh(_check_off(data, limits), "off")


def read_ply(data: bytes, limits: ReadLimits) -> Geometry:
    _check_ply(data, limits)
    return _load_trimesh(data, "ply")


def read_stl(data: bytes, limits: ReadLimits) -> Geometry:
    _check_stl(data, limits)
    return _load_trimesh(data, "stl")


def read_obj(data: bytes, limits: ReadLimits) -> Geometry:
    _check_obj(data)
    return _load_trimesh(data, "obj")


def read_glb(data: bytes, limits: ReadLimits) -> Geometry:
    _check_glb(data)
    return _load_trimesh(data, "glb")


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
        raise InvalidInput("mesh has no vertices and no faces")
    raise InvalidInput(f"no mesh or point geometry found (got {type(loaded).__name__})")


# --------------------------------------------------------------------------- OFF

_COMMENT = re.compile(r"#[^\n]*")
_OFF_HEADER = re.compile(r"\A\s*(C?OFF)[ \t]*\r?\n?\s*(\d+)[ \t]+(\d+)(?:[ \t]+(\d+))?[ \t]*(?:\r?\n|\Z)")


def _check_off(data: bytes, limits: ReadLimits) -> bytes:
    """Check an OFF's header counts against its content; return normalized bytes for trimesh."""
    text = _COMMENT.sub("", data.decode("utf-8", errors="replace"))
    match = _OFF_HEADER.match(text)
    if match is None:
        head = text.lstrip()[:20]
        raise InvalidInput(f"not an OFF file: bad header {head!r}")
    nverts, nfaces = int(match.group(2)), int(match.group(3))
    if nverts > limits.max_vertices:
        raise InvalidInput(_too_many(nverts, limits))
    lines = [ln for ln in (s.strip() for s in text[match.end() :].splitlines()) if ln]
    if len(lines) < nverts + nfaces:
        raise InvalidInput(
            f"truncated OFF: header declares {nverts} vertices and {nfaces} faces "
            f"but only {len(lines)} data lines follow"
        )
    for i, line in enumerate(lines[:nverts]):
        if len(line.split()) < 3:
            raise InvalidInput(f"OFF vertex {i} has fewer than 3 coordinates: {line[:40]!r}")
    for i, line in enumerate(lines[nverts : nverts + nfaces]):
        tokens = line.split()
        try:
            k = int(tokens[0])
        except ValueError:
            raise InvalidInput(f"OFF face {i} does not start with a vertex count: {line[:40]!r}") from None
        if k < 3 or len(tokens) < k + 1:
            raise InvalidInput(f"OFF face {i} is malformed: {line[:40]!r}")
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
        raise InvalidInput("not a PLY file: missing 'ply' magic")
    end = data.find(b"end_header", 0, _MAX_HEADER_BYTES)
    if end < 0:
        raise InvalidInput("not a PLY file: no 'end_header' in the header")
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
                raise InvalidInput(f"malformed PLY element line: {raw.strip()[:60]!r}")
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
        raise InvalidInput(f"unknown PLY format {fmt!r}")
    for name, count, _ in elements:
        if name == "vertex" and count > limits.max_vertices:
            raise InvalidInput(_too_many(count, limits))
    body = len(data) - body_start
    if fmt == "ascii":
        total = sum(count for _, count, _ in elements)
        if total > body:  # every element needs at least one byte
            raise InvalidInput(f"truncated PLY: header declares {total} elements in {body} bytes")
    else:
        need = sum(count * size for _, count, size in elements)
        if need > body:
            raise InvalidInput(f"truncated binary PLY: header needs at least {need} bytes, got {body}")


# --------------------------------------------------------------------------- STL


def _check_stl(data: bytes, limits: ReadLimits) -> None:
    if len(data) >= 84:
        count = int(np.frombuffer(data[80:84], dtype="<u4")[0])
        if len(data) == 84 + 50 * count:
            if 3 * count > limits.max_vertices:
                raise InvalidInput(_too_many(3 * count, limits))
            return  # well-formed binary STL
    if data.lstrip()[:5].lower() == b"solid":
        return  # ASCII STL: trimesh parses it
    if len(data) < 84:
        raise InvalidInput(f"truncated binary STL: {len(data)} bytes is shorter than the 84-byte header")
    raise InvalidInput(
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
        raise InvalidInput(f"OBJ face on line {line} uses vertex index 0 (OBJ indices start at 1)")


# --------------------------------------------------------------------------- GLB


def _check_glb(data: bytes) -> None:
    if len(data) < 12 or data[:4] != b"glTF":
        raise InvalidInput("not a GLB file: missing 'glTF' magic")
    length = int(np.frombuffer(data[8:12], dtype="<u4")[0])
    if length > len(data):
        raise InvalidInput(f"truncated GLB: header declares {length} bytes, file has {len(data)}")
