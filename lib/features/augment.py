"""3D augmentation of occupancy grids, shared by every method that trains on views.

Grids are (R, R, R) bool with up = array axis 2. Every transform keeps the shapes upright: rotations turn
about the up axis (plus optional small tilts), flips mirror horizontal axes only, shifts move within the
grid with empty fill (no wrap-around). A vertical flip destroys the upright orientation that scans and
ModelNet shapes share, so it is off unless asked for.

Defaults follow VoxNet (Maturana & Scherer 2015): 12 rotations about the vertical axis, a flip with
p = 0.2 per horizontal axis, shifts of up to +-2 voxels. Elastic deformation (as in volumentations-3D) is
available but off: it costs far more than the rest.

:class:`StrongViewConfig` / :func:`strong_views` are the stronger, batched views of the contrastive pretext
(``simclr``): any turn about the up axis, anisotropic scale, crops, cutout.

All randomness comes from the ``numpy.random.Generator`` passed in, so views are reproducible.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.ndimage as ndi
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.nn import functional as F


class AugmentConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rotation: Literal["none", "discrete", "continuous"] = Field(
        "discrete", description="about the up axis: none, one of `z_steps` angles, or any angle"
    )
    z_steps: int = Field(12, ge=1, le=360, description="discrete rotations per turn (12 = every 30 degrees)")
    tilt_deg: float = Field(0.0, ge=0.0, le=30.0, description="largest tilt about each horizontal axis")
    flip_p: float = Field(0.2, ge=0.0, le=1.0, description="probability of a flip, per horizontal axis")
    shift: int = Field(2, ge=0, le=16, description="largest shift in voxels, per axis")
    elastic_alpha: float = Field(0.0, ge=0.0, description="elastic displacement scale in voxels (0 = off)")
    elastic_sigma: float = Field(4.0, gt=0.0, description="smoothness of the elastic field in voxels")
    vertical_flip: bool = Field(False, description="also flip up/down with p=0.5 (breaks upright shapes)")


def rotate_z(grid: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the up axis; multiples of 90 degrees are exact, others use nearest-voxel resampling."""
    quarter, rest = divmod(degrees % 360.0, 90.0)
    out = np.rot90(grid, k=int(quarter), axes=(0, 1))
    if rest > 1e-9:
        out = ndi.rotate(out, rest, axes=(0, 1), reshape=False, order=0, mode="constant", cval=0)
    return np.ascontiguousarray(out)


def tilt(grid: np.ndarray, degrees_x: float, degrees_y: float) -> np.ndarray:
    """Small rotations about the two horizontal axes (nearest-voxel resampling)."""
    out = grid
    if abs(degrees_x) > 1e-9:
        out = ndi.rotate(out, degrees_x, axes=(1, 2), reshape=False, order=0, mode="constant", cval=0)
    if abs(degrees_y) > 1e-9:
        out = ndi.rotate(out, degrees_y, axes=(0, 2), reshape=False, order=0, mode="constant", cval=0)
    return out


def shift(grid: np.ndarray, offsets: tuple[int, int, int]) -> np.ndarray:
    """Integer shift with empty fill: what leaves the grid is lost, nothing wraps around."""
    out = ndi.shift(grid, offsets, order=0, mode="constant", cval=0)
    return np.asarray(out)


def elastic(grid: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """Smooth random displacement field (Gaussian-filtered noise scaled to ``alpha`` voxels)."""
    r = grid.shape
    coords = np.indices(r, dtype=np.float32)
    for axis in range(3):
        field = ndi.gaussian_filter(rng.uniform(-1.0, 1.0, size=r).astype(np.float32), sigma)
        peak = float(np.abs(field).max()) or 1.0
        coords[axis] += field * (alpha / peak)
    return np.asarray(ndi.map_coordinates(grid, coords, order=0, mode="constant", cval=0))


def augment(grid: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """One random view of ``grid`` (same shape, bool)."""
    cfg = cfg or AugmentConfig()
    out = np.asarray(grid, dtype=bool)
    if cfg.rotation == "discrete":
        out = rotate_z(out, 360.0 * int(rng.integers(cfg.z_steps)) / cfg.z_steps)
    elif cfg.rotation == "continuous":
        out = rotate_z(out, float(rng.uniform(0.0, 360.0)))
    if cfg.tilt_deg > 0:
        out = tilt(out, *rng.uniform(-cfg.tilt_deg, cfg.tilt_deg, size=2))
    flips = [axis for axis in (0, 1) if rng.random() < cfg.flip_p]
    if cfg.vertical_flip and rng.random() < 0.5:
        flips.append(2)
    if flips:
        out = np.flip(out, axis=tuple(flips))
    if cfg.elastic_alpha > 0:
        out = elastic(out, rng, cfg.elastic_alpha, cfg.elastic_sigma)
    if cfg.shift > 0:
        offsets = rng.integers(-cfg.shift, cfg.shift + 1, size=3)
        if offsets.any():
            out = shift(out, (int(offsets[0]), int(offsets[1]), int(offsets[2])))
    return np.ascontiguousarray(out, dtype=bool)


def augment_batch(grids: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """One random view of each grid of a (B, R, R, R) batch."""
    if len(grids) == 0:
        return np.asarray(grids, dtype=bool)
    return np.stack([augment(g, rng, cfg) for g in grids])


class StrongViewConfig(BaseModel):
    """The strong views a contrastive pretext trains on (SimCLR's recipe carried to 3D grids), made in one
    batched resampling on the training device: a turn by any angle about the up axis, a mirror of one
    horizontal axis, an anisotropic scale, a crop (a zoom into a random sub-box, rescaled to the grid), a
    shift, then a cutout (one empty cube). Trilinear resampling of the {-1, 1} input gives soft edges.
    Every parameter is drawn from the ``numpy.random.Generator`` passed in, so views are reproducible."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flip_p: float = Field(0.5, ge=0.0, le=1.0, description="probability of mirroring a horizontal axis")
    anisotropy: float = Field(1.25, ge=1.0, le=2.0, description="largest scale factor per axis (and 1/it)")
    crop_zoom: float = Field(1.3, ge=1.0, le=2.0, description="largest zoom into a sub-box (1 = no crops)")
    shift: float = Field(0.15, ge=0.0, le=0.5, description="largest shift, as a share of the half-grid")
    cutout_p: float = Field(0.5, ge=0.0, le=1.0, description="probability of emptying one cube")
    cutout_size: float = Field(0.25, gt=0.0, le=0.5, description="the cube's side, as a share of the grid")


def strong_views(x: torch.Tensor, rng: np.random.Generator, cfg: StrongViewConfig | None = None) -> torch.Tensor:
    """One strong view of each grid of a (B, 1, R, R, R) float tensor (empty = -1, occupied = 1; array axis
    2 is up), as a tensor of the same shape on the same device."""
    cfg = cfg or StrongViewConfig()
    b, r = x.shape[0], x.shape[-1]
    if b == 0:
        return x
    angle = rng.uniform(0.0, 2.0 * np.pi, b)
    scale = np.exp(rng.uniform(-np.log(cfg.anisotropy), np.log(cfg.anisotropy), (b, 3)))
    scale *= np.exp(rng.uniform(0.0, np.log(cfg.crop_zoom), (b, 1)))
    flip = np.where(rng.random(b) < cfg.flip_p, -1.0, 1.0)
    # affine_grid's coordinates (x, y, z) index the tensor's (W, H, D) = array axes (2, 1, 0): up is x.
    theta = np.zeros((b, 3, 4))
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1], theta[:, 1, 2] = np.cos(angle), -np.sin(angle)
    theta[:, 2, 1], theta[:, 2, 2] = np.sin(angle) * flip, np.cos(angle) * flip
    theta[:, :, :3] /= scale[:, :, None]
    theta[:, :, 3] = rng.uniform(-cfg.shift, cfg.shift, (b, 3))
    t = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    grid = F.affine_grid(t, list(x.shape), align_corners=False)
    out = F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0
    side = max(1, round(cfg.cutout_size * r))
    for i in np.flatnonzero(rng.random(b) < cfg.cutout_p):
        a, c, d = (int(v) for v in rng.integers(0, r - side + 1, 3))
        out[i, :, a : a + side, c : c + side, d : d + side] = -1.0
    return out
