"""The voxel grids of the report's 3D views: each cluster's central members, small enough to embed in the page.

Choices:

* **Encoding.** A grid is stored as ``"<R>:<base64>"``: the (R, R, R) occupancy in C order, packed 8 voxels
  a byte (``numpy.packbits``, first voxel in the high bit) and zlib-compressed. Scans are solid and smooth,
  so this is small: about 0.5 KB a grid at R = 32 (a list of surface voxel coordinates would be 7 KB). The
  page inflates it with the browser's own ``DecompressionStream("deflate")`` (the zlib format), so the viewer
  needs no library and no network.
* **File.** :func:`previews_file` is what ``lib.compare.figures`` writes beside a method's pictures
  (``<method>-previews.json``): ``grids``, item id -> encoded grid, for the members its thumbnails show (the
  report record lists which, per cluster: ``MethodResult.central_members``). :func:`read_previews` reads one
  back and never fails: a missing or malformed file gives {} (the report then lists the item ids, no 3D).
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

FORMAT = 1


def encode_grid(grid: npt.ArrayLike) -> str:
    """``"<R>:<base64 of zlib(packbits(grid))>"`` for an (R, R, R) occupancy grid."""
    g = np.asarray(grid).astype(bool, copy=False)
    if g.ndim != 3 or len(set(g.shape)) != 1:
        raise ValueError(f"encode_grid: expected an (R, R, R) grid, got shape {g.shape}")
    packed = np.packbits(np.ascontiguousarray(g).reshape(-1)).tobytes()
    return f"{g.shape[0]}:{base64.b64encode(zlib.compress(packed, 9)).decode('ascii')}"


def decode_grid(text: str) -> np.ndarray:
    """The (R, R, R) bool grid of :func:`encode_grid`'s string (ValueError when it is not one)."""
    size, sep, data = text.partition(":")
    if not sep or not size.isdigit():
        raise ValueError("decode_grid: not '<R>:<base64>'")
    r = int(size)
    try:
        bits = np.frombuffer(zlib.decompress(base64.b64decode(data, validate=True)), np.uint8)
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"decode_grid: {exc}") from exc
    flat = np.unpackbits(bits)
    if len(flat) < r**3:
        raise ValueError(f"decode_grid: {len(flat)} voxels for R = {r}")
    return flat[: r**3].astype(bool).reshape(r, r, r)


def previews_file(items: Sequence[str], grids: npt.ArrayLike) -> bytes:
    """The previews file of one method: the JSON bytes of ``{"format": 1, "grids": {item id: encoded grid}}``
    for ``items`` and their (m, R, R, R) ``grids`` (an item listed twice is stored once)."""
    arr = np.asarray(grids)
    if len(items) != len(arr):
        raise ValueError(f"previews_file: {len(items)} item ids but {len(arr)} grids")
    out: dict[str, str] = {}
    for item, grid in zip(items, arr, strict=True):
        out.setdefault(str(item), encode_grid(grid))
    return json.dumps({"format": FORMAT, "grids": out}).encode()


def read_previews(data: bytes | None) -> dict[str, str]:
    """item id -> encoded grid from a previews file; {} when ``data`` is missing or not one (never raises)."""
    if not data:
        return {}
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    grids = doc.get("grids") if isinstance(doc, Mapping) else None
    if not isinstance(grids, Mapping):
        return {}
    return {str(k): v for k, v in grids.items() if isinstance(v, str) and v.partition(":")[0].isdigit()}
