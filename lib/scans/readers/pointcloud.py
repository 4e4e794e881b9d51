"""Read point cloud files (PCD, XYZ): parsed here, without trimesh.

* ``.pcd``  PCL's Point Cloud Data v0.7 (``DATA ascii`` and ``DATA binary``; ``binary_compressed``
  is not supported). Only ``x y z`` are kept; other fields (rgb, intensity, normals, padding ...)
  are skipped. The point count is checked against ``ReadLimits.max_vertices`` from the header,
  before the data is parsed.
* ``.xyz``  text, one point per line, whitespace or comma separated, at least three
  numeric columns (the first three are used), ``#`` starts a comment.

A vertex-only PLY is a point cloud too, but it is read by :mod:`lib.scans.readers.mesh`.
"""

from __future__ import annotations

import numpy as np

from lib.scans.readers.base import _MAX_HEADER_BYTES, Geometry, InvalidInput, PointCloudData, ReadLimits, _too_many

# --------------------------------------------------------------------------- readers, one per extension


def read_pcd(data: bytes, limits: ReadLimits) -> Geometry:
    return PointCloudData(_parse_pcd(data, limits))


def read_xyz(data: bytes, limits: ReadLimits) -> Geometry:
    return PointCloudData(_parse_xyz(data, limits))


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
        raise InvalidInput(f"PCD {key} must be integers, got {' '.join(values)[:60]!r}") from None
    if any(v < 0 for v in out):
        raise InvalidInput(f"PCD {key} must not be negative")
    return out


def _parse_pcd(data: bytes, limits: ReadLimits) -> np.ndarray:
    header: dict[str, list[str]] = {}
    pos = 0
    data_kind = ""
    while True:
        if pos >= min(len(data), _MAX_HEADER_BYTES):
            raise InvalidInput("not a PCD file: no DATA line in the header")
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        raw = data[pos:end]
        pos = end + 1
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise InvalidInput("not a PCD file: non-ASCII bytes in the header") from None
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        key = key.upper()
        if key == "DATA":
            data_kind = values[0].lower() if values else ""
            break
        if key not in _PCD_KEYS:
            raise InvalidInput(f"not a PCD file: unknown header line {line[:40]!r}")
        header[key] = values
    body = data[pos:]

    if data_kind == "binary_compressed":
        raise InvalidInput("binary_compressed PCD is not supported")
    if data_kind not in ("ascii", "binary"):
        raise InvalidInput(f"unknown PCD DATA kind {data_kind!r}")
    fields = header.get("FIELDS")
    if not fields:
        raise InvalidInput("PCD header has no FIELDS")
    for axis in "xyz":
        if axis not in fields:
            raise InvalidInput(f"PCD has no '{axis}' field (FIELDS {' '.join(fields)})")
    n = len(fields)
    sizes = _pcd_ints("SIZE", header.get("SIZE", ["4"] * n))
    types = [t.upper() for t in header.get("TYPE", ["F"] * n)]
    counts = _pcd_ints("COUNT", header.get("COUNT", ["1"] * n))
    if not (len(sizes) == len(types) == len(counts) == n):
        raise InvalidInput("PCD FIELDS, SIZE, TYPE and COUNT have different lengths")
    if "WIDTH" not in header:
        raise InvalidInput("PCD header has no WIDTH")
    width = _pcd_ints("WIDTH", header["WIDTH"][:1] or ["x"])[0]
    height = _pcd_ints("HEIGHT", header.get("HEIGHT", ["1"])[:1] or ["x"])[0]
    points = _pcd_ints("POINTS", header["POINTS"][:1] or ["x"])[0] if "POINTS" in header else width * height
    if points > limits.max_vertices:
        raise InvalidInput(_too_many(points, limits, "points"))
    if points != width * height:
        raise InvalidInput(f"PCD POINTS {points} disagrees with WIDTH*HEIGHT = {width}*{height}")

    dtype_fields: list[tuple[str, str] | tuple[str, str, tuple[int]]] = []
    columns: dict[str, int] = {}  # field -> first column (ascii)
    column = 0
    for i, (name, size, typ, count) in enumerate(zip(fields, sizes, types, counts, strict=True)):
        base = _PCD_TYPES.get((typ, size))
        if base is None:
            raise InvalidInput(f"PCD field {name!r} has unsupported TYPE {typ} SIZE {size}")
        if count < 1:
            raise InvalidInput(f"PCD field {name!r} has COUNT {count}")
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
            raise InvalidInput(f"truncated PCD: {points} points need {need} bytes of binary data, got {len(body)}")
        records = np.frombuffer(body, dtype=dtype, count=points)
        cols = []
        for axis in "xyz":
            col = records[axis]
            cols.append(col if col.ndim == 1 else col[:, 0])
        return np.stack(cols, axis=1).astype(np.float64)

    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput("PCD ascii data contains non-ASCII bytes") from None
    rows = [ln for ln in (s.strip() for s in text.splitlines()) if ln and not ln.startswith("#")]
    if len(rows) < points:
        raise InvalidInput(f"truncated PCD: POINTS {points} but only {len(rows)} data lines")
    out = np.empty((points, 3), dtype=np.float64)
    idx = [columns["x"], columns["y"], columns["z"]]
    for r, line in enumerate(rows[:points]):
        tokens = line.split()
        if len(tokens) != column:
            raise InvalidInput(f"PCD data line {r} has {len(tokens)} values, expected {column}")
        try:
            out[r] = [float(tokens[j]) for j in idx]
        except ValueError:
            raise InvalidInput(f"PCD data line {r} is not numeric: {line[:40]!r}") from None
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
        raise InvalidInput(f"XYZ file is not UTF-8 text (byte {exc.start})") from None
    rows: list[list[str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        if len(line) < 3:
            raise InvalidInput(f"XYZ line {number} has fewer than 3 columns: {raw.strip()[:40]!r}")
        rows.append(line[:3])
        if len(rows) > limits.max_vertices:
            raise InvalidInput(_too_many(len(rows), limits, "points"))
    if not rows:
        raise InvalidInput("no points")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError:
        for line_no, row in enumerate(rows):
            try:
                [float(v) for v in row]
            except ValueError:
                raise InvalidInput(f"XYZ point {line_no} is not numeric: {' '.join(row)[:40]!r}") from None
        raise
