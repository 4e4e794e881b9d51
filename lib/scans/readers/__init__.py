"""Read 3D scans (meshes and point clouds) from bytes into plain numpy geometry: the public API.

:func:`read_geometry` picks the reader for a source's extension from :data:`READERS`, the one table of
formats, then checks what it returns (:mod:`lib.scans.readers.validate`). Adding a format is one module
with a ``read_<ext>(data, limits)`` function and one line in :data:`READERS`.

Modules
-------
* :mod:`lib.scans.readers.base`        result types, limits, the error type and its reasons
* :mod:`lib.scans.readers.mesh`        ``.off .ply .stl .obj .glb`` (pre-checks, then trimesh)
* :mod:`lib.scans.readers.pointcloud`  ``.pcd .xyz`` (parsed here)
* :mod:`lib.scans.readers.validate`    the checks every read geometry passes

Any mesh format whose file holds vertices but no faces is returned as a point cloud.
The writers of PCD and XYZ files are in :mod:`lib.scans.writers`.

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

import os
from pathlib import PurePosixPath

from lib.scans.readers.base import (
    Geometry,
    InvalidInput,
    MeshData,
    PointCloudData,
    Reader,
    ReadError,
    ReadLimits,
    _printable,
    _too_big,
)
from lib.scans.readers.mesh import read_glb, read_obj, read_off, read_ply, read_stl
from lib.scans.readers.pointcloud import read_pcd, read_xyz
from lib.scans.readers.validate import _validate

__all__ = [
    "MESH_EXTENSIONS",
    "POINT_EXTENSIONS",
    "READERS",
    "SUPPORTED_EXTENSIONS",
    "Geometry",
    "MeshData",
    "PointCloudData",
    "ReadError",
    "ReadLimits",
    "Reader",
    "read_geometry",
    "read_path",
]

# the formats: file extension (lower case) -> its reader
READERS: dict[str, Reader] = {
    ".off": read_off,
    ".ply": read_ply,
    ".stl": read_stl,
    ".obj": read_obj,
    ".glb": read_glb,
    ".pcd": read_pcd,
    ".xyz": read_xyz,
}

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(READERS)
# what each extension can give (a PLY gives either)
MESH_EXTENSIONS: frozenset[str] = frozenset({".off", ".ply", ".stl", ".obj", ".glb"})
POINT_EXTENSIONS: frozenset[str] = frozenset({".pcd", ".xyz", ".ply"})


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
    except InvalidInput as exc:
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


def _extension(source: str) -> str:
    return PurePosixPath(source.replace("\\", "/")).suffix.lower()


def _read(source: str, data: bytes, limits: ReadLimits) -> Geometry:
    if not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > limits.max_bytes:
        raise InvalidInput(_too_big(len(data), limits))
    ext = _extension(source)
    reader = READERS.get(ext)
    if reader is None:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        shown = ext or "(none)"
        raise InvalidInput(f"unsupported extension '{shown}'; supported: {supported}")
    if not data[:64].strip() and not data.strip():
        raise InvalidInput("empty file")
    return _validate(reader(data, limits), limits)
