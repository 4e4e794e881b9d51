"""The readers' shared vocabulary: the result types, the limits, the one error type and its reasons.

Every failure of a reader is raised as :class:`ReadError` (``str(err) == f"{source}: {reason}"``).
Inside the package a reader raises :class:`InvalidInput` with the reason; :func:`lib.scans.readers.read_geometry`
turns it into a :class:`ReadError` naming the source.

Returned arrays are float64 ``(N, 3)`` vertices/points and int64 ``(F, 3)`` faces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lib.errors import VoxclustError


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

    # Museum scans carry 1-20 million vertices (hundreds of MB of PLY); a file that claims more than its bytes
    # can hold is refused by the format checks whatever these limits say.
    max_bytes: int = 2 * 1024 * 1024 * 1024
    max_vertices: int = 50_000_000  # vertices of a mesh or points of a cloud


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

# a reader: the bytes of one file to its geometry, before the checks of lib.scans.readers.validate
Reader = Callable[[bytes, ReadLimits], Geometry]

# how far into a file we look for a text header before giving up
_MAX_HEADER_BYTES = 64 * 1024


class InvalidInput(Exception):
    """A reason why the input is unreadable: what a reader raises (the reader table turns it into ReadError)."""


# --------------------------------------------------------------------------- reasons


def _printable(text: str) -> str:
    """One printable line: control characters quoted from the input (a NUL, a newline) are escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _too_big(size: int, limits: ReadLimits) -> str:
    return f"file too large: {size} bytes exceeds the limit of {limits.max_bytes} bytes"


def _too_many(count: int, limits: ReadLimits, what: str = "vertices") -> str:
    return f"too many {what}: {count} exceeds the limit of {limits.max_vertices}"
