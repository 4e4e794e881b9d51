"""Check the geometry a reader returns and normalize it: the last step of every read, whatever the format.

Rejected here: more vertices/points than ``ReadLimits.max_vertices`` (after parsing, for every format),
NaN/inf coordinates, coordinates whose spread overflows float64, face indices outside the vertex list,
empty geometry, meshes whose faces all have zero area ("zero-area mesh") and geometry whose points all
coincide ("degenerate: all points coincide").

A mesh whose file holds vertices but no faces is returned as a :class:`PointCloudData`.
Returned arrays are contiguous float64 ``(N, 3)`` vertices/points and int64 ``(F, 3)`` faces.
"""

from __future__ import annotations

import numpy as np

from lib.scans.readers.base import Geometry, InvalidInput, MeshData, PointCloudData, ReadLimits, _too_many


def _validate(geometry: Geometry, limits: ReadLimits) -> Geometry:
    if isinstance(geometry, PointCloudData):
        pts = np.ascontiguousarray(geometry.points, dtype=np.float64).reshape(-1, 3)
        if len(pts) == 0:
            raise InvalidInput("no points")
        if len(pts) > limits.max_vertices:
            raise InvalidInput(_too_many(len(pts), limits, "points"))
        _check_finite(pts, "point")
        _check_extent(pts)
        return PointCloudData(pts)

    verts = np.ascontiguousarray(geometry.vertices, dtype=np.float64).reshape(-1, 3)
    faces_in = np.asarray(geometry.faces)
    if faces_in.size == 0:
        faces = np.zeros((0, 3), dtype=np.int64)
    else:
        if faces_in.ndim != 2 or faces_in.shape[1] != 3:
            raise InvalidInput(f"faces must be triangles, got array of shape {faces_in.shape}")
        faces = np.ascontiguousarray(faces_in, dtype=np.int64)
    if len(verts) == 0 and len(faces) == 0:
        raise InvalidInput("mesh has no vertices and no faces")
    if len(verts) == 0:
        raise InvalidInput("mesh has faces but no vertices")
    if len(verts) > limits.max_vertices:
        raise InvalidInput(_too_many(len(verts), limits))
    _check_finite(verts, "vertex")
    if len(faces):
        lo, hi = int(faces.min()), int(faces.max())
        if lo < 0:
            raise InvalidInput(f"face index {lo} is negative")
        if hi >= len(verts):
            raise InvalidInput(f"face index {hi} is past the vertex list ({len(verts)} vertices)")
    _check_extent(verts)
    if len(faces) == 0:
        # vertices only: a point cloud
        return PointCloudData(verts)
    # areas relative to the bounding box (finite and > 0 here): raw cross products of huge coordinates overflow
    if not _any_face_with_area(verts, faces):
        raise InvalidInput(f"zero-area mesh: all {len(faces)} faces have zero area")
    return MeshData(verts, faces)


def _any_face_with_area(verts: np.ndarray, faces: np.ndarray, block: int = 1 << 18) -> bool:
    """Whether some face has a non-zero area (relative to the mesh's extent), a block of faces at a time: a
    real mesh answers in its first block, without an (F, 3, 3) copy of a 20-million-face scan."""
    scale = float(np.ptp(verts, axis=0).max())
    low = verts.min(axis=0)
    for s in range(0, len(faces), block):
        tri = (verts[faces[s : s + block]] - low) / scale
        cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        if np.any(np.einsum("ij,ij->i", cross, cross) > 1e-24):  # area > 1e-12
            return True
    return False


def _check_finite(arr: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.nonzero(bad.any(axis=1))[0][0])
        kind = "NaN" if np.isnan(arr[row]).any() else "inf"
        raise InvalidInput(f"non-finite coordinate ({kind}) in {what} {row}")


def _check_extent(arr: np.ndarray) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        span = np.ptp(arr, axis=0)
    if not np.isfinite(span).all():
        biggest = float(np.abs(arr).max())
        raise InvalidInput(
            f"coordinates out of range: their spread overflows float64 (|coordinate| up to {biggest:.3g})"
        )
    if not np.any(span > 0):
        raise InvalidInput(f"degenerate: all points coincide ({len(arr)} points)")
