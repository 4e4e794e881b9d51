"""Meshes and point clouds to exact R^3 occupancy grids.

Normalisation: the source's up axis is turned to +z (array axis 2), the bounding box is centred, and the
longest side is scaled to ``R - 2 * padding`` voxels, so a ``padding``-voxel border stays empty. Voxel
``(i, j, k)`` is the cell centred on the point ``(i, j, k)`` of the normalised frame.

Two representations (``VoxelConfig.representation``, recorded in the store):

``field-v1``: a mesh and a point cloud of the same shape give about the same grid, whatever the cloud's
density or the mesh's holes. Both become surface samples and a voxel is on the surface when its centre is
within ``shell_width`` voxels of the surface they describe; solid mode fills that shell by parity voting
and keeps what lies inside the surface (:mod:`lib.scans.surface`). The surface itself keeps the padding;
its shell may reach into it. Measured at 32^3 (surface mode), IoU of
a ModelNet mesh with its 1,024-point cloud: 0.84-0.94 (binned: 0.20-0.61); a 256-point cloud of a sphere,
cube or torus with its 100,000-point cloud: 0.84-0.89 (``tests/benchmarks/modality.py``).

``binned`` (the first one; stores made before the choice existed keep it):

* Point clouds (``surface`` occupancy): a voxel is set when a point falls in its cell.
* Meshes, ``surface``: a voxel is set when the surface passes through its cell. The mesh is subdivided by
  trimesh until every edge is shorter than half a voxel, and the vertices are binned.
* Meshes, ``solid``: the surface voxels are filled (scipy's hole filling, as trimesh's ``VoxelGrid.fill``),
  which alone over-counts by the outer half of the surface shell (+6% volume for a sphere at 64^3, +14% at
  32^3). Each surface voxel whose centre lies outside the surface is then cleared: the outward direction
  comes from the smoothed filled grid, and the voxel's centre is outside when the surface samples inside
  the cell lie, on average, on its inner side. Voxels of structures thinner than a voxel (sheets, thin
  legs), where no side is clearly outward, stay set. A sphere's volume then comes out within 1% at 32^3
  and 64^3.

Everything is deterministic (``field-v1`` samples meshes with a fixed seed).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.ndimage as ndi
import trimesh
from pydantic import BaseModel, ConfigDict, Field

from lib.scans import surface
from lib.scans.readers import Geometry, MeshData, PointCloudData, ReadError, ReadLimits, read_geometry

UpAxis = Literal["x", "y", "z", "-x", "-y", "-z"]

# Rotations taking the named source axis to +z, right-handed (rows are the new x, y, z).
_TO_Z_UP: dict[str, np.ndarray] = {
    "z": np.eye(3),
    "-z": np.array([[1, 0, 0], [0, -1, 0], [0, 0, -1]], float),
    "y": np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float),
    "-y": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float),
    "x": np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]], float),
    "-x": np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], float),
}


class VoxelConfig(BaseModel):
    """How sources become grids. Stored with the voxel store; every batch of a store uses the same."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resolution: int = Field(32, ge=8, le=256, description="grid side R; 32 default, 64 option")
    mode: Literal["solid", "surface"] = Field("solid", description="meshes: fill the interior or not")
    up_axis: UpAxis = Field("z", description="the sources' up axis; turned to +z (array axis 2)")
    padding: int = Field(1, ge=0, le=8, description="empty voxels kept on each side")
    sliver: float = Field(
        0.2, ge=0.0, description="solid mode: outward-gradient strength below which a surface voxel is kept"
    )
    representation: Literal["binned", "field-v1"] = Field(
        "field-v1",
        description="field-v1: every capture as surface samples and the distance field they define, about the "
        "same grid whatever the capture (lib.scans.surface); binned: vertices and points binned (the first "
        "representation, which stores made before this setting existed keep)",
    )
    shell_width: float = Field(1.5, gt=0.0, le=8.0, description="field: voxels within this many voxels of the surface")
    pose: Literal["as-scanned", "upright", "full"] = Field(
        "as-scanned",
        description="as-scanned: as the source lies; upright: keep the up axis, turn about it to the principal "
        "horizontal axis; full: all three axes to the principal axes (signs from the third moments)",
    )


def canonical_rotation(points: np.ndarray, weights: np.ndarray | None, pose: str) -> np.ndarray:
    """The rotation (3x3, rows the new axes) that brings a z-up shape into its canonical pose.

    ``upright`` turns about z so that the principal horizontal axis of the (weighted) points becomes +x;
    ``full`` takes all three principal axes, largest spread first, to x, y, z. Each axis points where the
    third moment along it is positive (the heavier tail), and the frame stays right-handed."""
    if pose == "as-scanned":
        return np.eye(3)
    pts = np.asarray(points, np.float64)
    w = np.ones(len(pts)) if weights is None else np.asarray(weights, np.float64)
    w = w / max(float(w.sum()), 1e-300)
    centred = pts - w @ pts
    dims = 2 if pose == "upright" else 3
    sub = centred[:, :dims]
    _evals, evecs = np.linalg.eigh((sub * w[:, None]).T @ sub)
    axes = evecs[:, ::-1].T  # rows: principal axes, largest spread first
    skew = ((sub @ axes.T) ** 3 * w[:, None]).sum(axis=0)
    axes = axes * np.where(skew < 0, -1.0, 1.0)[:, None]
    rot = np.eye(3)
    rot[:dims, :dims] = axes
    if np.linalg.det(rot) < 0:  # keep it a rotation: flip the least certain axis
        rot[dims - 1] *= -1
    return rot


def normalise(
    points: np.ndarray, cfg: VoxelConfig, moments: tuple[np.ndarray, np.ndarray | None] | None = None
) -> tuple[np.ndarray, float]:
    """Rotate to z-up (and into the canonical pose, from the ``moments`` points and weights when given, else
    from ``points``), centre the bounding box, scale the longest side to R - 2*padding voxels.

    Returns the points in voxel coordinates and the scale factor applied.
    """
    up = _TO_Z_UP[cfg.up_axis]
    pts = np.asarray(points, dtype=np.float64) @ up.T
    if cfg.pose != "as-scanned" and len(pts):
        sample, weights = (np.asarray(moments[0], np.float64) @ up.T, moments[1]) if moments else (pts, None)
        pts = pts @ canonical_rotation(sample, weights, cfg.pose).T
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    with np.errstate(over="ignore", invalid="ignore"):
        extent = float((hi - lo).max())
    if np.isfinite(extent) and extent <= 0:
        raise ValueError("cannot normalise geometry with zero extent")
    side = cfg.resolution - 2 * cfg.padding
    # A hair inside the grid so the extreme points bin into the outermost non-padding voxels.
    scale = (side - 1e-6) / extent
    centre = (cfg.resolution - 1) / 2.0
    with np.errstate(over="ignore", invalid="ignore"):
        out = (pts - (lo + hi) / 2.0) * scale + centre
    # near float64's limits the extent, the scale or the centre overflows: garbage, not a grid
    if not (np.isfinite(extent) and np.isfinite(scale) and np.isfinite(out).all()):
        raise ValueError(f"coordinates out of range: an extent of {extent:.3g} cannot be scaled onto the grid")
    return out, scale


def _bin(points: np.ndarray, r: int) -> np.ndarray:
    return np.clip(np.floor(points + 0.5).astype(np.int64), 0, r - 1)


def voxelize_points(points: np.ndarray, cfg: VoxelConfig) -> np.ndarray:
    r = cfg.resolution
    idx = _bin(normalise(points, cfg)[0], r)
    grid = np.zeros((r, r, r), dtype=bool)
    grid[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return grid


def _surface_samples(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Vertices of the mesh subdivided until every edge is shorter than half a voxel (voxel units)."""
    longest = float(np.linalg.norm(vertices[faces[:, [1, 2, 0]]] - vertices[faces], axis=2).max(initial=0.0))
    iters = max(1, int(np.ceil(np.log2(max(longest, 1e-9) / 0.5))) + 1)
    v, _f = trimesh.remesh.subdivide_to_size(vertices, faces, max_edge=0.5, max_iter=iters)
    return np.asarray(v, dtype=np.float64)


def _mesh_moments(vertices: np.ndarray, faces: np.ndarray, cfg: VoxelConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """Face centroids weighted by face area (the surface's moments, whatever the tessellation) when ``cfg``
    asks for a canonical pose; None otherwise."""
    if cfg.pose == "as-scanned":
        return None
    v, f = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    centroids = (v[f[:, 0]] + v[f[:, 1]] + v[f[:, 2]]) / 3.0
    return centroids, surface.double_areas(v, f)


def voxelize_mesh(vertices: np.ndarray, faces: np.ndarray, cfg: VoxelConfig) -> np.ndarray:
    r = cfg.resolution
    vox, _scale = normalise(vertices, cfg, _mesh_moments(vertices, faces, cfg))
    samples = _surface_samples(vox, np.asarray(faces, dtype=np.int64))
    idx = _bin(samples, r)
    surface = np.zeros((r, r, r), dtype=bool)
    surface[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    if cfg.mode == "surface":
        return surface
    filled = ndi.binary_fill_holes(surface)
    # Outward direction per voxel: minus the gradient of the smoothed solid.
    smooth = ndi.gaussian_filter(filled.astype(np.float32), sigma=1.0)
    outward = -np.stack(np.gradient(smooth), axis=-1).reshape(-1, 3)
    strength = np.linalg.norm(outward, axis=1)
    lin = np.ravel_multi_index((idx[:, 0], idx[:, 1], idx[:, 2]), (r, r, r))
    # Offset of each surface sample from its voxel centre along the outward direction.
    offset = np.einsum("ij,ij->i", samples - idx, outward[lin])
    total = np.bincount(lin, weights=offset, minlength=r**3)
    count = np.bincount(lin, minlength=r**3)
    # Mean offset < 0: the surface runs inside the centre, so the centre is outside the shape.
    outside = (count > 0) & (total < 0) & (strength > cfg.sliver)
    solid: np.ndarray = np.asarray(filled) & ~outside.reshape(r, r, r)
    return solid


def voxelize_field(geometry: Geometry, cfg: VoxelConfig) -> np.ndarray:
    """The ``field-v1`` representation: the voxels within ``shell_width`` of the surface the capture's samples
    describe (surface mode), or the voxels inside it (solid mode); see :mod:`lib.scans.surface`."""
    if isinstance(geometry, MeshData):
        vox, _scale = normalise(geometry.vertices, cfg, _mesh_moments(geometry.vertices, geometry.faces, cfg))
        samples = surface.mesh_samples(vox, geometry.faces)
    else:
        samples = surface.cloud_samples(normalise(geometry.points, cfg)[0])
    # Work on a grid grown beyond the shell's reach, so that the outside surrounds the shape, then crop.
    m = int(np.ceil(cfg.shell_width)) + 2
    field = surface.distance_field(samples, cfg.resolution, margin=m, reach=cfg.shell_width)
    shell = field <= cfg.shell_width
    grid = shell if cfg.mode == "surface" else surface.solid_from_shell(shell, field, cfg.shell_width)
    out: np.ndarray = grid[m:-m, m:-m, m:-m]
    return out


def voxelize(geometry: Geometry, cfg: VoxelConfig) -> np.ndarray:
    """An (R, R, R) bool grid for a mesh or a point cloud."""
    if not isinstance(geometry, MeshData | PointCloudData):
        raise TypeError(f"not a geometry: {type(geometry).__name__}")
    if cfg.representation == "field-v1":
        return voxelize_field(geometry, cfg)
    if isinstance(geometry, MeshData):
        return voxelize_mesh(geometry.vertices, geometry.faces, cfg)
    if isinstance(geometry, PointCloudData):
        return voxelize_points(geometry.points, cfg)
    raise TypeError(f"not a geometry: {type(geometry).__name__}")


def voxelize_geometry(source: str, geometry: MeshData | PointCloudData, voxel: VoxelConfig) -> np.ndarray:
    """Voxelize what a reader gave; ReadError when it cannot be voxelized or gives an empty grid."""
    try:
        grid = voxelize(geometry, voxel)
    except (ValueError, IndexError, MemoryError) as exc:
        raise ReadError(source, f"cannot voxelize: {exc}") from exc
    if not grid.any():
        raise ReadError(source, "voxelized to an empty grid")
    return grid


def voxelize_item(source: str, data: bytes, voxel: VoxelConfig, limits: ReadLimits) -> np.ndarray:
    """Read and voxelize one file; ReadError for anything wrong with it."""
    return voxelize_geometry(source, read_geometry(source, data, limits), voxel)


def voxelize_scan(source: str, data: bytes, voxel: VoxelConfig, limits: ReadLimits) -> tuple[np.ndarray, str]:
    """Read and voxelize one file: its grid and its capture (:func:`capture_of`); ReadError for anything wrong."""
    geometry = read_geometry(source, data, limits)
    return voxelize_geometry(source, geometry, voxel), capture_of(geometry)


def capture_of(geometry: MeshData | PointCloudData) -> str:
    """How a scan was captured, as the store records it: ``mesh`` or ``cloud`` (imported grids: ``grid``)."""
    return "cloud" if isinstance(geometry, PointCloudData) else "mesh"


def resample(grids: np.ndarray, resolution: int) -> np.ndarray:
    """Resample (N, r, r, r) occupancy grids to (N, R, R, R).

    Downsampling by an integer factor keeps a voxel when any of its sub-voxels is set (max-pooling, so
    thin parts survive); other factors use nearest-neighbour sampling of voxel centres.
    """
    grids = np.asarray(grids).astype(bool, copy=False)
    if grids.ndim != 4 or len(set(grids.shape[1:])) != 1:
        raise ValueError(f"expected (N, r, r, r) grids, got shape {grids.shape}")
    n, r = grids.shape[0], grids.shape[1]
    if r == resolution:
        return grids
    if r > resolution and r % resolution == 0:
        f = r // resolution
        blocks = grids.reshape(n, resolution, f, resolution, f, resolution, f)
        pooled: np.ndarray = np.asarray(blocks.any(axis=(2, 4, 6)))
        return pooled
    src = np.minimum(((np.arange(resolution) + 0.5) * r / resolution).astype(np.int64), r - 1)
    return grids[:, src][:, :, src][:, :, :, src]
