"""lib.features.augment: views keep shapes upright, are reproducible, and do what each option says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lib.features.augment import AugmentConfig, StrongViewConfig, augment, rotate_z, shift, strong_views

R = 32
NONE = AugmentConfig(rotation="none", flip_p=0.0, shift=0)


def table() -> np.ndarray:
    """A slab on top (z 20-23), one leg below it, off-centre so rotations and flips show."""
    g = np.zeros((R, R, R), bool)
    g[6:26, 8:22, 20:24] = True
    g[8:11, 9:12, 2:20] = True
    return g


def z_profile(g: np.ndarray) -> np.ndarray:
    return g.sum(axis=(0, 1))


def test_shape_dtype_and_reproducible() -> None:
    g = table()
    a = augment(g, np.random.default_rng(7))
    b = augment(g, np.random.default_rng(7))
    assert a.shape == g.shape and a.dtype == bool
    np.testing.assert_array_equal(a, b)
    many = [augment(g, np.random.default_rng(s)) for s in range(8)]
    assert len({m.tobytes() for m in many}) > 1


def test_default_views_stay_upright() -> None:
    g = table()
    rng = np.random.default_rng(0)
    for v in (augment(g, rng) for _ in range(40)):
        prof = z_profile(v)
        top = prof[18:26].sum()
        assert top > 0.6 * v.sum()  # the slab stays on top: never flipped upside down
        assert np.argmax(prof) >= 18  # the densest layer is still the slab


def test_quarter_turns_are_exact() -> None:
    g = table()
    np.testing.assert_array_equal(rotate_z(g, 90.0), np.rot90(g, 1, axes=(0, 1)))
    np.testing.assert_array_equal(rotate_z(rotate_z(rotate_z(rotate_z(g, 90), 90), 90), 90), g)
    np.testing.assert_array_equal(z_profile(rotate_z(g, 270.0)), z_profile(g))


def test_continuous_rotation_keeps_occupancy_and_height() -> None:
    g = table()
    r = rotate_z(g, 33.0)
    assert abs(int(r.sum()) - int(g.sum())) < 0.1 * g.sum()
    np.testing.assert_allclose(z_profile(r), z_profile(g), rtol=0.15)


def test_flips_are_horizontal_only() -> None:
    g = table()
    out = augment(g, np.random.default_rng(1), AugmentConfig(rotation="none", flip_p=1.0, shift=0))
    np.testing.assert_array_equal(out, g[::-1, ::-1, :])


def test_vertical_flip_only_when_asked() -> None:
    g = table()
    cfg = AugmentConfig(rotation="none", flip_p=0.0, shift=0, vertical_flip=True)
    outs = [augment(g, np.random.default_rng(s), cfg) for s in range(20)]
    assert any(np.array_equal(o, g[:, :, ::-1]) for o in outs)
    assert all(np.array_equal(augment(g, np.random.default_rng(s), NONE), g) for s in range(5))


def test_shift_fills_empty_and_never_wraps() -> None:
    g = np.zeros((R, R, R), bool)
    g[R - 1, 5, 5] = True  # on the border
    g[10, 10, 10] = True
    out = shift(g, (2, -1, 0))
    assert out.sum() == 1 and out[12, 9, 10]  # the border voxel left the grid, nothing wrapped


def test_shift_range() -> None:
    g = np.zeros((R, R, R), bool)
    g[16, 16, 16] = True
    cfg = AugmentConfig(rotation="none", flip_p=0.0, shift=2)
    for s in range(30):
        (x,), (y,), (z,) = np.nonzero(augment(g, np.random.default_rng(s), cfg))
        assert max(abs(x - 16), abs(y - 16), abs(z - 16)) <= 2


def test_tilt_and_elastic_are_small_changes() -> None:
    g = table()
    for cfg in (
        AugmentConfig(rotation="none", flip_p=0.0, shift=0, tilt_deg=8.0),
        AugmentConfig(rotation="none", flip_p=0.0, shift=0, elastic_alpha=1.5),
    ):
        out = augment(g, np.random.default_rng(3), cfg)
        assert not np.array_equal(out, g)
        inter = np.logical_and(out, g).sum() / np.logical_or(out, g).sum()
        assert inter > 0.5 and z_profile(out)[18:26].sum() > 0.6 * out.sum()


@pytest.mark.parametrize(
    "bad", [{"flip_p": 1.5}, {"shift": -1}, {"z_steps": 0}, {"rotation": "spin"}, {"tilt_deg": 90}, {"x": 1}]
)
def test_config_is_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AugmentConfig(**bad)  # type: ignore[arg-type]


def _as_input(g: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(g.astype(np.float32) * 2 - 1)[None, None]


def test_strong_views_are_reproducible_and_keep_the_shape_upright() -> None:
    g = table()
    x = _as_input(g).repeat(24, 1, 1, 1, 1)
    a = strong_views(x, np.random.default_rng(3))
    b = strong_views(x, np.random.default_rng(3))
    assert a.shape == x.shape and torch.equal(a, b)
    assert float(a.min()) >= -1.0 - 1e-6 and float(a.max()) <= 1.0 + 1e-6
    assert len({v.numpy().tobytes() for v in a}) == 24  # every view differs
    top = slice(R // 2, R)
    for v in a:  # the slab stays above the leg: more of the mass in the upper half (array axis 2 is up)
        occupied = (v[0] > 0).numpy()
        assert occupied[:, :, top].sum() > occupied[:, :, : R // 2].sum()


def test_strong_views_without_any_change_return_the_grid() -> None:
    g = table()
    still = StrongViewConfig(flip_p=0.0, anisotropy=1.0, crop_zoom=1.0, shift=0.0, cutout_p=0.0)
    cfg_rng = np.random.default_rng(0)
    out = strong_views(_as_input(g), cfg_rng, still)
    # only the turn about the up axis is left: the height profile is kept
    np.testing.assert_allclose(((out[0, 0] > 0).numpy()).sum(axis=(0, 1)), z_profile(g), rtol=0.15, atol=6)


def test_strong_views_cutout_empties_a_cube() -> None:
    full = torch.ones((4, 1, R, R, R))
    only_cutout = StrongViewConfig(flip_p=0.0, anisotropy=1.0, crop_zoom=1.0, shift=0.0, cutout_p=1.0)
    out = strong_views(full, np.random.default_rng(1), only_cutout)
    side = round(0.25 * R)
    for v in out:
        assert int((v < 0).sum()) >= side**3  # the cube (plus whatever the turn moved out of the corners)
