"""Write (N, 3) point arrays as PCD and XYZ files, two of the formats :mod:`lib.scans.readers` reads.

Used by the demo batch (:mod:`lib.scans.demo`) and the tests; the readers never write.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["encode_pcd", "encode_xyz"]


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
