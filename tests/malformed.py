"""Malformed scan inputs, generated (nothing is stored in the repository).

``KINDS`` maps a kind name to a maker returning one :class:`Malformed` entry: a relative key in a batch, its
bytes, how it is put there (``action``) and what must happen to it:

* listed items (``listed=True``) must be marked failed, with a reason that contains ``reason``;
* entries the batch listing never shows (``listed=False``: symbolic links, a FIFO, a folder named like a
  file, a key with a ``..`` part, a hidden file) must not become items at all, and where a read can be
  attempted (``refused=True``), the storage layer must refuse it with an error containing ``reason``.

``content_bad`` says whether the bytes themselves are bad under the key's extension (the readers reject
them); when False only the name is (the readers accept the bytes, the pipeline refuses the key).
``targets`` says where the entry can exist: a local folder (``"local"``) and/or an S3 prefix (``"s3"``).

``write_mixed_batch(url, n_good, seed)`` writes good files (lib.scans.demo's generator plus a few odd but valid
ones, ``odd_good``) and every bad kind that fits the target into one batch and returns the
:class:`Expected` outcome; run it with ``LIMITS`` (the "over the size limit" kind relies on its small
``max_bytes``). Used by tests/scans/test_malformed.py and tests/benchmarks/faults.py.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from lib.scans.batch import batch_name_from_url
from lib.scans.demo import iter_demo_batch
from lib.scans.readers import ReadLimits
from lib.scans.writers import encode_pcd, encode_xyz
from lib.storage import LocalStorage, S3Storage, Storage, open_storage

MAX_BYTES = 1 << 20  # 1 MiB: every good file is far below it, the "over-size-limit" kind just above
LIMITS = ReadLimits(max_bytes=MAX_BYTES)
LOCAL, S3 = "local", "s3"
BOTH = frozenset({LOCAL, S3})
BAD_DIR = "malformed"
HUGE = 100_000_000  # claimed vertex counts: 10^8 vertices would take 2.4 GB

FILE, RAW_KEY, SYMLINK, SYMLINK_DIR, FIFO, DIRECTORY = "file", "raw-key", "symlink", "symlink-dir", "fifo", "directory"


@dataclass(frozen=True)
class Malformed:
    kind: str
    key: str  # relative to the batch root; local raw-key names may hold surrogate-escaped bytes
    data: bytes
    reason: str  # substring of the failure reason (of the storage's refusal when not listed)
    action: str = FILE  # how it is written: file | raw-key | symlink | symlink-dir | fifo | directory
    listed: bool = True
    refused: bool = False  # not listed, and reading ``key`` must raise StorageError containing ``reason``
    content_bad: bool = True
    targets: frozenset[str] = BOTH


@dataclass(frozen=True)
class Expected:
    """What a run of the mixed batch must produce."""

    batch: str  # the batch name (item ids are ``f"{batch}/{key}"``)
    target: str  # "local" or "s3"
    good: dict[str, bytes]  # key -> content: must be stored
    bad: dict[str, Malformed]  # key -> entry: must be failed, reason containing entry.reason
    unlisted: dict[str, Malformed] = field(default_factory=dict)  # key -> entry: must never be an item
    limits: ReadLimits = LIMITS

    def item_id(self, key: str) -> str:
        return f"{self.batch}/{key}"

    @property
    def flow_kwargs(self) -> dict[str, int]:
        """The voxelize-batch parameters the batch must run with (its read limits)."""
        return {"max_bytes": self.limits.max_bytes, "max_vertices": self.limits.max_vertices}


# --------------------------------------------------------------------------- building blocks

OFF_TRIANGLE = b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"
OFF_TETRA = b"OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n"


def _export(mesh: Any, file_type: str, **kw: Any) -> bytes:
    out = mesh.export(file_type=file_type, **kw)
    return out.encode() if isinstance(out, str) else bytes(out)


def _box() -> trimesh.Trimesh:
    return trimesh.creation.box(extents=(1.0, 2.0, 3.0))


def _garbage(n: int = 4096, seed: int = 7) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _points(n: int = 64, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3))


def ascii_ply(vertices: Sequence[str], faces: Sequence[str] = (), fmt: str = "ascii") -> bytes:
    head = f"ply\nformat {fmt} 1.0\nelement vertex {len(vertices)}\n"
    head += "property float x\nproperty float y\nproperty float z\n"
    if faces:
        head += f"element face {len(faces)}\nproperty list uchar int vertex_indices\n"
    return (head + "end_header\n" + "".join(v + "\n" for v in vertices) + "".join(f + "\n" for f in faces)).encode()


def glb_parts(glb: bytes) -> tuple[dict[str, Any], bytes]:
    """A GLB's JSON chunk (parsed) and everything after it."""
    length = struct.unpack("<I", glb[12:16])[0]
    return json.loads(glb[20 : 20 + length]), glb[20 + length :]


def build_glb(doc: dict[str, Any], rest: bytes) -> bytes:
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + rest
    return b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body


def _ascii_pcd(points: np.ndarray) -> bytes:
    return encode_pcd(points, binary=False)


# --------------------------------------------------------------------------- the kinds

KINDS: dict[str, Callable[[], Malformed]] = {}


def _kind(name: str) -> Callable[[Callable[[str], Malformed]], Callable[[str], Malformed]]:
    def register(make: Callable[[str], Malformed]) -> Callable[[str], Malformed]:
        KINDS[name] = lambda: make(name)
        return make

    return register


def _bad(kind: str, name: str, data: bytes, reason: str, **kw: Any) -> Malformed:
    return Malformed(kind, f"{BAD_DIR}/{name}", data, reason, **kw)


@_kind("empty-file")
def _empty(k: str) -> Malformed:
    return _bad(k, "empty.off", b"", "empty file")


@_kind("zero-byte-pcd")
def _empty_pcd(k: str) -> Malformed:
    return _bad(k, "zero-bytes.pcd", b"", "empty file")


@_kind("blank-xyz")
def _blank(k: str) -> Malformed:
    return _bad(k, "blank.xyz", b" \n\t\n\n", "empty file")


@_kind("truncated-binary-ply")
def _trunc_ply(k: str) -> Malformed:
    data = _export(_box(), "ply")
    return _bad(k, "truncated.ply", data[: len(data) // 2], "truncated binary PLY")


@_kind("truncated-binary-stl")
def _trunc_stl(k: str) -> Malformed:
    data = _export(_box(), "stl")
    return _bad(k, "truncated.stl", data[:-20], "truncated")


@_kind("stl-shorter-than-header")
def _stl_header(k: str) -> Malformed:
    return _bad(k, "header-only.stl", _export(_box(), "stl")[:50], "shorter than the 84-byte header")


@_kind("binary-stl-zero-triangles")
def _stl_zero(k: str) -> Malformed:
    return _bad(k, "no-triangles.stl", b"\0" * 80 + struct.pack("<I", 0), "no vertices")


@_kind("stl-ascii-non-numeric-vertex")
def _stl_nonnum(k: str) -> Malformed:
    data = _export(_box(), "stl_ascii").replace(b"vertex 0.5", b"vertex zero", 1)
    return _bad(k, "non-numeric.stl", data, "STL")


@_kind("off-wrong-counts")
def _off_counts(k: str) -> Malformed:
    return _bad(k, "wrong-counts.off", OFF_TRIANGLE.replace(b"3 1 0", b"5 1 0"), "truncated OFF")


@_kind("off-negative-counts")
def _off_negative(k: str) -> Malformed:
    return _bad(k, "negative-counts.off", OFF_TRIANGLE.replace(b"3 1 0", b"-3 1 0"), "bad header")


@_kind("fused-off-header-wrong-counts")
def _fused(k: str) -> Malformed:
    # ModelNet's fused header "OFF490 518 0" is accepted (see ODD_GOOD); these counts do not match the body
    return _bad(k, "fused-header.off", b"OFF490 518 0\n" + OFF_TRIANGLE.split(b"\n", 2)[2], "truncated OFF")


@_kind("off-short-face")
def _off_short_face(k: str) -> Malformed:
    return _bad(k, "short-face.off", OFF_TRIANGLE.replace(b"3 0 1 2", b"3 0 1"), "malformed")


@_kind("nan-vertex")
def _nan(k: str) -> Malformed:
    return _bad(k, "nan.off", OFF_TETRA.replace(b"1 0 0", b"nan 0 0"), "NaN")


@_kind("inf-vertex")
def _inf(k: str) -> Malformed:
    data = ascii_ply(["0 0 0", "1 0 0", "0 inf 0", "0 0 1"], ["3 0 1 2", "3 0 1 3"])
    return _bad(k, "inf.ply", data, "inf")


@_kind("nan-point-pcd")
def _nan_pcd(k: str) -> Malformed:
    pts = _points()
    pts[3, 1] = np.nan
    return _bad(k, "nan.pcd", _ascii_pcd(pts), "NaN")


@_kind("face-past-vertex-list")
def _past(k: str) -> Malformed:
    return _bad(k, "face-past-end.off", OFF_TETRA.replace(b"3 1 2 3", b"3 1 2 9"), "face index")


@_kind("ply-face-past-vertex-list")
def _past_ply(k: str) -> Malformed:
    data = ascii_ply(["0 0 0", "1 0 0", "0 1 0", "0 0 1"], ["3 0 1 2", "3 1 2 7"])
    return _bad(k, "face-past-end.ply", data, "past the vertex list")


@_kind("obj-face-index-zero")
def _obj_zero(k: str) -> Malformed:
    data = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 0 1 2\nf 1 2 3\n"
    return _bad(k, "index-zero.obj", data, "index 0")


@_kind("obj-negative-index-past-range")
def _obj_negative(k: str) -> Malformed:
    return _bad(k, "negative-index.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf -1 -2 -9\n", "out of bounds")


@_kind("obj-without-geometry")
def _obj_text(k: str) -> Malformed:
    return _bad(k, "prose.obj", b"this is not a mesh\njust some notes\n", "no vertices")


@_kind("zero-area-mesh")
def _zero_area(k: str) -> Malformed:
    return _bad(k, "zero-area.off", b"OFF\n3 1 0\n0 0 0\n1 1 1\n2 2 2\n3 0 1 2\n", "zero-area")


@_kind("all-vertices-identical")
def _identical(k: str) -> Malformed:
    data = OFF_TETRA.split(b"\n")
    body = [data[0], data[1], *([b"1.5 -2 3"] * 4), *data[6:]]
    return _bad(k, "identical-vertices.off", b"\n".join(body), "all points coincide")


@_kind("single-point")
def _single(k: str) -> Malformed:
    return _bad(k, "single-point.xyz", b"1 2 3\n", "all points coincide")


@_kind("off-claims-1e8-vertices")
def _huge_off(k: str) -> Malformed:
    return _bad(k, "claims-1e8.off", f"OFF\n{HUGE} 1 0\n0 0 0\n1 0 0\n".encode(), "too many vertices")


@_kind("ply-claims-1e8-vertices")
def _huge_ply(k: str) -> Malformed:
    head = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {HUGE}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    return _bad(k, "claims-1e8.ply", head.encode() + b"\0" * 36, "too many vertices")


@_kind("pcd-claims-1e8-points")
def _huge_pcd(k: str) -> Malformed:
    data = encode_pcd(_points(10)).replace(b"WIDTH 10", f"WIDTH {HUGE}".encode())
    return _bad(k, "claims-1e8.pcd", data.replace(b"POINTS 10", f"POINTS {HUGE}".encode()), "too many points")


@_kind("pcd-wrong-points-count")
def _pcd_points(k: str) -> Malformed:
    data = encode_pcd(_points(10)).replace(b"POINTS 10", b"POINTS 11")
    return _bad(k, "wrong-points.pcd", data, "disagrees with WIDTH*HEIGHT")


@_kind("pcd-binary-compressed")
def _pcd_compressed(k: str) -> Malformed:
    data = encode_pcd(_points(10)).replace(b"DATA binary", b"DATA binary_compressed")
    return _bad(k, "compressed.pcd", data, "binary_compressed")


@_kind("pcd-truncated-data")
def _pcd_truncated(k: str) -> Malformed:
    return _bad(k, "truncated.pcd", encode_pcd(_points(10))[:-7], "truncated PCD")


@_kind("garbage-stl")
def _garbage_stl(k: str) -> Malformed:
    return _bad(k, "garbage.stl", _garbage(), "STL")


@_kind("garbage-glb")
def _garbage_glb(k: str) -> Malformed:
    return _bad(k, "garbage.glb", _garbage(seed=8), "glTF")


@_kind("garbage-ply")
def _garbage_ply(k: str) -> Malformed:
    return _bad(k, "garbage.ply", _garbage(seed=9), "PLY")


@_kind("garbage-off")
def _garbage_off(k: str) -> Malformed:
    return _bad(k, "garbage.off", _garbage(seed=10), "not an OFF file")


@_kind("wrong-extension-stl-as-off")
def _wrong_ext(k: str) -> Malformed:
    return _bad(k, "really-an-stl.off", _export(_box(), "stl"), "not an OFF file")


@_kind("wrong-extension-off-as-ply")
def _wrong_ext_ply(k: str) -> Malformed:
    return _bad(k, "really-an-off.ply", OFF_TETRA, "missing 'ply' magic")


@_kind("unknown-extension")
def _unknown_ext(k: str) -> Malformed:
    return _bad(k, "model.abc", OFF_TETRA, "unsupported extension '.abc'")


@_kind("no-extension")
def _no_ext(k: str) -> Malformed:
    return _bad(k, "README", b"a note, not a scan\n", "unsupported extension")


@_kind("glb-bad-magic")
def _glb_magic(k: str) -> Malformed:
    return _bad(k, "bad-magic.glb", b"glTX" + _export(_box(), "glb")[4:], "missing 'glTF' magic")


@_kind("glb-truncated-json-chunk")
def _glb_trunc(k: str) -> Malformed:
    return _bad(k, "truncated-json.glb", _export(_box(), "glb")[:40], "truncated GLB")


@_kind("glb-corrupt-json")
def _glb_json(k: str) -> Malformed:
    glb = _export(_box(), "glb")
    length = struct.unpack("<I", glb[12:16])[0]
    data = glb[:20] + b"{" + b"x" * (length - 1) + glb[20 + length :]
    return _bad(k, "corrupt-json.glb", data, "GLB")


@_kind("glb-accessor-count-1e9")
def _glb_count(k: str) -> Malformed:
    doc, rest = glb_parts(_export(_box(), "glb"))
    doc["accessors"][1]["count"] = 10**9
    return _bad(k, "accessor-count.glb", build_glb(doc, rest), "GLB")


@_kind("ply-binary-header-ascii-body")
def _ply_fmt(k: str) -> Malformed:
    data = _export(trimesh.creation.icosphere(subdivisions=2), "ply", encoding="ascii")
    return _bad(k, "ascii-body.ply", data.replace(b"format ascii", b"format binary_little_endian"), "PLY")


@_kind("ply-missing-end-header")
def _ply_end(k: str) -> Malformed:
    data = ascii_ply(["0 0 0", "1 0 0", "0 1 0"], ["3 0 1 2"]).replace(b"end_header\n", b"")
    return _bad(k, "no-end-header.ply", data, "end_header")


@_kind("xyz-text-columns")
def _xyz_text(k: str) -> Malformed:
    return _bad(k, "text-columns.xyz", b"x y z\nleft right up\n", "not numeric")


@_kind("xyz-two-columns")
def _xyz_two(k: str) -> Malformed:
    return _bad(k, "two-columns.xyz", b"0 0\n1 1\n2 2\n", "fewer than 3 columns")


@_kind("coordinates-overflow")
def _overflow(k: str) -> Malformed:
    # coordinates of 1e300 are fine now (ODD_GOOD); a spread of 2e308 is not representable
    data = OFF_TETRA.replace(b"\n1 0 0\n", b"\n1e308 0 0\n").replace(b"\n0 0 0\n", b"\n-1e308 0 0\n")
    return _bad(k, "overflow.off", data, "out of range")


@_kind("coordinates-near-float-max")
def _near_max(k: str) -> Malformed:
    return _bad(k, "near-max.xyz", b"1e308 0 0\n1.6e308 1 1\n1.2e308 0 5\n", "out of range")


@_kind("denormal-extent")
def _denormal(k: str) -> Malformed:
    return _bad(k, "denormal.xyz", b"0 0 0\n1e-320 0 0\n0 5e-324 0\n", "out of range")


@_kind("over-size-limit")
def _too_big(k: str) -> Malformed:
    # a valid cloud, only too big for LIMITS.max_bytes
    pts = encode_xyz(_points(20_000, seed=11))
    assert len(pts) > MAX_BYTES
    return _bad(k, "too-big.xyz", pts, "limit")


@_kind("non-utf8-name")
def _non_utf8(k: str) -> Malformed:
    # a latin-1 file name: valid bytes inside, but the name would break every text output (S3 keys are UTF-8)
    key = f"{BAD_DIR}/caf" + os.fsdecode(b"\xe9") + ".off"
    return Malformed(k, key, OFF_TETRA, "not valid UTF-8", RAW_KEY, content_bad=False, targets=frozenset({LOCAL}))


@_kind("backslash-escaping-name")
def _backslash(k: str) -> Malformed:
    key = f"{BAD_DIR}/sub\\..\\..\\..\\escape.off"  # storage turns '\\' into '/': this would leave the batch
    return Malformed(k, key, OFF_TETRA, "not a plain relative path", RAW_KEY, content_bad=False)


@_kind("double-slash-key")
def _double_slash(k: str) -> Malformed:
    # an S3 key "<prefix>/malformed//abs.off": storage would read "malformed/abs.off", another object
    key = f"{BAD_DIR}//abs.off"
    return Malformed(
        k, key, OFF_TETRA, "not a plain relative path", RAW_KEY, content_bad=False, targets=frozenset({S3})
    )


@_kind("dotdot-key-escaping-prefix")
def _dotdot(k: str) -> Malformed:
    # "<prefix>/../outside.off": a legal S3 key; never an item ('.'-names are hidden), refused by the storage
    return Malformed(
        k, "../outside.off", OFF_TETRA, "escapes", RAW_KEY, listed=False, refused=True, targets=frozenset({S3})
    )


@_kind("symlink-escaping-batch")
def _symlink(k: str) -> Malformed:
    return Malformed(
        k,
        "escape-link.off",
        OFF_TETRA,
        "symbolic link",
        SYMLINK,
        listed=False,
        refused=True,
        targets=frozenset({LOCAL}),
    )


@_kind("symlinked-folder-escaping-batch")
def _symlink_dir(k: str) -> Malformed:
    return Malformed(
        k,
        "escape-dir/outside.off",
        OFF_TETRA,
        "symbolic link",
        SYMLINK_DIR,
        listed=False,
        refused=True,
        targets=frozenset({LOCAL}),
    )


@_kind("fifo-with-mesh-extension")
def _fifo(k: str) -> Malformed:
    # reading it would block forever: the listing must skip it
    return Malformed(k, f"{BAD_DIR}/pipe.off", b"", "", FIFO, listed=False, targets=frozenset({LOCAL}))


@_kind("folder-named-like-a-file")
def _folder(k: str) -> Malformed:
    return Malformed(k, f"{BAD_DIR}/folder.off", b"", "", DIRECTORY, listed=False)


@_kind("hidden-file")
def _hidden(k: str) -> Malformed:
    return Malformed(k, f"{BAD_DIR}/.hidden.off", _garbage(seed=12), "", FILE, listed=False)


def make_all(target: str | None = None) -> list[Malformed]:
    """One entry of every kind (that can exist on ``target``, when given), in KINDS order."""
    entries = [make() for make in KINDS.values()]
    return [e for e in entries if target is None or target in e.targets]


# --------------------------------------------------------------------------- good files


def _fused_off(seed: int) -> bytes:
    from lib.scans.demo import demo_mesh

    data = _export(demo_mesh("cone", np.random.default_rng([seed, 99])), "off")
    first, second, rest = data.split(b"\n", 2)
    assert first == b"OFF"
    return b"OFF" + second.strip() + b"\n" + rest


def textured_glb(side: int = 64) -> bytes:
    """A box with an embedded ``side`` x ``side`` PNG texture."""
    from PIL import Image

    mesh = trimesh.creation.box(extents=(1.0, 2.0, 0.5))
    uv = np.random.default_rng(side).random((len(mesh.vertices), 2))
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.new("RGB", (side, side), (200, 10, 10)))
    return _export(mesh, "glb")


def odd_good(seed: int) -> dict[str, bytes]:
    """Unusual but valid files: they must be stored like any other."""
    from lib.scans.demo import demo_mesh

    mesh = demo_mesh("torus", np.random.default_rng([seed, 98]))
    cloud = np.asarray(trimesh.sample.sample_surface(mesh, 512, seed=seed)[0], dtype=np.float64)
    ico = trimesh.creation.icosphere(subdivisions=1)
    big = f"OFF\n{len(ico.vertices)} {len(ico.faces)} 0\n".encode() + encode_xyz(ico.vertices * 1e300)
    big += b"".join(b"3 %d %d %d\n" % tuple(f) for f in ico.faces)
    return {
        "odd/textured.glb": textured_glb(),  # the texture is never decoded, the geometry is stored
        "odd/fused-header.off": _fused_off(seed),  # ModelNet's "OFF<n> <m> <k>" first line
        "odd/one-face.off": OFF_TRIANGLE,
        "odd/crlf.off": OFF_TETRA.replace(b"\n", b"\r\n"),
        "odd/UPPER CASE.PLY": _export(mesh, "ply"),
        "odd/ünï cödé ✓ 50%.xyz": encode_xyz(cloud),
        "odd/relative-indices.obj": b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n"
        + b"f -4 -2 -3\nf -4 -3 -1\nf -4 -1 -2\nf -3 -2 -1\n",  # negative indices count back from the last
        "odd/coordinates-1e300.off": big,  # their spread is finite
    }


def good_files(n_good: int, seed: int) -> dict[str, bytes]:
    """``n_good`` demo files (round-robin over the classes, so every format turns up) plus ``odd_good``."""
    per_class = max(1, -(-n_good // 7))
    by_class: dict[str, list[tuple[str, bytes]]] = {}
    for f in iter_demo_batch(n_per_class=per_class, seed=seed, point_cloud_share=0.5):
        by_class.setdefault(f.label, []).append((f.key, f.data))
    picked: list[tuple[str, bytes]] = []
    for i in range(per_class):
        picked += [files[i] for files in by_class.values() if i < len(files)]
    return dict(picked[:n_good]) | odd_good(seed)


# --------------------------------------------------------------------------- writing batches


def write_files(url: str | Storage, files: dict[str, bytes]) -> None:
    storage = url if isinstance(url, Storage) else open_storage(url)
    for key, data in files.items():
        storage.write_bytes(key, data)


def _write_local(root: Path, entry: Malformed) -> None:
    path = root / entry.key  # a surrogate-escaped key is written as the raw bytes it stands for
    if entry.action in (SYMLINK, SYMLINK_DIR):
        outside = root.parent / f"{root.name}.outside"  # beside the batch folder, never inside it
        outside.mkdir(parents=True, exist_ok=True)
        (outside / path.name).write_bytes(entry.data)
        target, link = (outside / path.name, path) if entry.action == SYMLINK else (outside, path.parent)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if entry.action in (FILE, RAW_KEY):
        path.write_bytes(entry.data)
    elif entry.action == FIFO:
        os.mkfifo(path)
    elif entry.action == DIRECTORY:
        path.mkdir(parents=True, exist_ok=True)
    else:
        raise ValueError(f"unknown action {entry.action!r}")


def _write_s3(storage: S3Storage, entry: Malformed) -> None:
    if entry.action == FILE:
        storage.write_bytes(entry.key, entry.data)
    elif entry.action in (RAW_KEY, DIRECTORY):
        # the key verbatim, past the storage's own key checks (another tool could write it like this)
        key = f"{storage.prefix}/{entry.key}" if storage.prefix else entry.key
        body = b"" if entry.action == DIRECTORY else entry.data
        storage.client.put_object(
            Bucket=storage.bucket, Key=key + ("/" if entry.action == DIRECTORY else ""), Body=body
        )
    else:
        raise ValueError(f"{entry.kind}: action {entry.action!r} has no S3 form")


def write_entry(url: str | Storage, entry: Malformed) -> None:
    """Put one malformed entry into the batch at ``url`` (a folder or an s3:// prefix)."""
    storage = url if isinstance(url, Storage) else open_storage(url)
    if isinstance(storage, LocalStorage):
        _write_local(storage.root, entry)
    elif isinstance(storage, S3Storage):
        _write_s3(storage, entry)
    else:  # pragma: no cover
        raise TypeError(type(storage).__name__)


def target_of(url: str) -> str:
    return S3 if url.startswith(("s3://", "s3a://")) else LOCAL


def write_mixed_batch(url_or_dir: str | os.PathLike[str], n_good: int = 10, seed: int = 0) -> Expected:
    """Good files plus one entry of every malformed kind that can exist there, in one batch."""
    url = os.fspath(url_or_dir)
    target = target_of(url)
    storage = open_storage(url)  # one client for every write
    good = good_files(n_good, seed)
    write_files(storage, good)
    bad: dict[str, Malformed] = {}
    unlisted: dict[str, Malformed] = {}
    for entry in make_all(target):
        write_entry(storage, entry)
        (bad if entry.listed else unlisted)[entry.key] = entry
    assert not set(good) & set(bad), "a good and a bad file share a key"
    return Expected(batch_name_from_url(url), target, good, bad, unlisted)


def readable(reason: str) -> bool:
    """A reason fit for a person: one printable line, not a traceback, not too long."""
    return (
        bool(reason.strip())
        and reason.isprintable()
        and "Traceback" not in reason
        and 'File "' not in reason
        and len(reason) <= 400
    )


# --------------------------------------------------------------------------- valid seeds for fuzzing


def valid_samples() -> list[tuple[str, bytes]]:
    """Small valid files of every format (extension, bytes): the seeds the fuzz tests mutate."""
    box = _box()
    pts = _points(24)
    fields_dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    rec = np.zeros(len(pts), dtype=fields_dtype)
    rec["x"], rec["y"], rec["z"] = pts.T.astype(np.float32)
    pcd_fields = (
        f"VERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nWIDTH {len(pts)}\nHEIGHT 1\n"
        f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(pts)}\nDATA binary\n"
    ).encode() + rec.tobytes()
    return [
        (".off", OFF_TETRA),
        (".off", b"OFF4 4 0\n" + OFF_TETRA.split(b"\n", 2)[2]),
        (".off", _export(box, "off")),
        (".ply", _export(box, "ply")),
        (".ply", _export(box, "ply", encoding="ascii")),
        (".ply", _export(trimesh.PointCloud(pts), "ply")),
        (".stl", _export(box, "stl")),
        (".stl", _export(box, "stl_ascii")),
        (".obj", _export(box, "obj")),
        (".glb", _export(box, "glb")),
        (".pcd", encode_pcd(pts)),
        (".pcd", encode_pcd(pts, binary=False)),
        (".pcd", pcd_fields),
        (".xyz", encode_xyz(pts)),
    ]
