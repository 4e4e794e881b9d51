"""Importing grids people already have (.npz) into a voxel store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib.scans.voxelize import resample
from lib.voxels.importer import NpzImportError, import_npz
from lib.voxels.store import VoxelStore
from tests.conftest import shared_data

CLASSES = ["chair", "table", "lamp"]
MODELNET10 = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


def _grids(n: int, r: int, seed: int, empty: tuple[int, ...] = (), dtype: type = np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.random((n, r, r, r)) < 0.05).astype(dtype)
    x[list(empty)] = 0
    return x


@pytest.fixture
def modelnet_like(tmp_path: Path) -> dict[str, np.ndarray]:
    arrays = {
        "X_train": _grids(70, 32, 0, empty=(3, 66), dtype=np.int32) * 3,  # any non-zero value is occupied
        "y_train": np.arange(70) % 3,
        "X_test": _grids(9, 32, 1, empty=(0,)),
        "y_test": np.array([2, 1, 0, 2, 1, 0, 2, 1, 0]),
    }
    np.savez(tmp_path / "mn.npz", **arrays)
    return arrays


def _by_item(store: VoxelStore) -> dict[str, dict]:
    return {r.item_id: r for r in store.items(None)}


def test_import_modelnet_layout(tmp_path: Path, modelnet_like: dict[str, np.ndarray]) -> None:
    url = str(tmp_path / "store")
    counts = import_npz(tmp_path / "mn.npz", url, classes=CLASSES, keep_frame=True)
    assert counts == {"items": 79, "skipped": 0, "stored": 76, "failed": 3}

    store = VoxelStore.open(url)
    s = store.summary()
    assert (s["items"], s["stored"], s["failed"], s["pending"]) == (79, 76, 3, 0)
    assert s["resolution"] == 32
    assert s["batches"] == ["mn"]
    assert set(s["classes"]) == set(CLASSES)
    assert s["splits"] == {"train": 68, "test": 8}

    recs = _by_item(store)
    assert {r.capture for r in store.items()} == {"grid"}
    m = store.index()
    for split in ("train", "test"):
        x, y = modelnet_like[f"X_{split}"], modelnet_like[f"y_{split}"]
        for i in range(len(x)):
            rec = recs[f"mn/{split}/{i:06d}"]
            assert rec.split == split
            assert m.classes[rec.label] == CLASSES[int(y[i])]
            if x[i].any():
                assert rec.status == "stored" and rec.reason == ""
            else:
                assert rec.status == "failed" and rec.reason == "empty grid"

    failed = {r.item_id for r in store.items("failed")}
    assert failed == {"mn/train/000003", "mn/train/000066", "mn/test/000000"}

    # The grids read back equal the input (as bool), in the row order of the records.
    stored = store.items()
    got = store.read([r.row for r in stored])
    assert got.dtype == np.bool_ and got.shape == (76, 32, 32, 32)
    for rec, grid in zip(stored, got, strict=True):
        split, idx = rec.item_id.split("/")[1:]
        assert np.array_equal(grid, modelnet_like[f"X_{split}"][int(idx)] != 0)
    # Rows of failed items stay empty.
    assert not store.read([r.row for r in store.items("failed")]).any()


def test_reimport_stores_nothing_twice(tmp_path: Path, modelnet_like: dict[str, np.ndarray]) -> None:
    url = str(tmp_path / "store")
    import_npz(tmp_path / "mn.npz", url, classes=CLASSES, keep_frame=True)
    before = VoxelStore.open(url).summary()
    rows_before = VoxelStore.open(url).index().n_rows
    again = import_npz(tmp_path / "mn.npz", url, classes=CLASSES, keep_frame=True)
    assert again == {"items": 79, "skipped": 79, "stored": 0, "failed": 0}
    after = VoxelStore.open(url).summary()
    assert after["items"] == before["items"] == 79
    assert after["stored"] == before["stored"]
    assert VoxelStore.open(url).index().n_rows == rows_before


def test_same_file_under_another_batch_name_is_new(tmp_path: Path, modelnet_like: dict[str, np.ndarray]) -> None:
    url = str(tmp_path / "store")
    import_npz(tmp_path / "mn.npz", url, keep_frame=True)
    counts = import_npz(tmp_path / "mn.npz", url, batch_name="again", keep_frame=True)
    assert counts["stored"] == 76 and counts["skipped"] == 0
    s = VoxelStore.open(url).summary()
    assert s["items"] == 158 and s["batches"] == ["again", "mn"]


def test_labels_without_classes_use_numbers_or_file_classes(tmp_path: Path) -> None:
    x = _grids(4, 16, 2)
    np.savez(tmp_path / "plain.npz", X=x, y=np.array([0, 1, 1, 7]))
    import_npz(tmp_path / "plain.npz", str(tmp_path / "a"), keep_frame=True)
    store = VoxelStore.open(str(tmp_path / "a"))
    assert store.summary()["classes"] == {"0": 1, "1": 2, "7": 1}
    recs = _by_item(store)
    assert set(recs) == {f"plain/{i:06d}" for i in range(4)}
    assert all(r.split is None for r in recs.values())

    np.savez(tmp_path / "named.npz", X=x, y=np.array([0, 1, 1, 7]), classes=np.array(["cup", "bowl"]))
    import_npz(tmp_path / "named.npz", str(tmp_path / "b"), keep_frame=True)
    # Names from the file; a label outside the list keeps its number.
    assert VoxelStore.open(str(tmp_path / "b")).summary()["classes"] == {"cup": 1, "bowl": 2, "7": 1}
    # classes= wins over the file's.
    import_npz(
        tmp_path / "named.npz", str(tmp_path / "c"), classes=["a", "b", "c", "d", "e", "f", "g", "h"], keep_frame=True
    )
    assert VoxelStore.open(str(tmp_path / "c")).summary()["classes"] == {"a": 1, "b": 2, "h": 1}


def test_x_y_split_layout(tmp_path: Path) -> None:
    x = _grids(6, 16, 3, empty=(4,))
    split = np.array(["train", "test", "train", "train", "test", "test"])
    np.savez(tmp_path / "xys.npz", X=x, y=np.array([0, 1, 0, 1, 0, 1]), split=split)
    counts = import_npz(tmp_path / "xys.npz", str(tmp_path / "s"), classes=["p", "q"], keep_frame=True)
    assert counts == {"items": 6, "skipped": 0, "stored": 5, "failed": 1}
    store = VoxelStore.open(str(tmp_path / "s"))
    recs = _by_item(store)
    # Items are numbered within their split, in file order.
    assert {k: (r.split, store.index().classes[r.label]) for k, r in recs.items()} == {
        "xys/train/000000": ("train", "p"),
        "xys/train/000001": ("train", "p"),
        "xys/train/000002": ("train", "q"),
        "xys/test/000000": ("test", "q"),
        "xys/test/000001": ("test", "p"),
        "xys/test/000002": ("test", "q"),
    }
    assert recs["xys/test/000001"].status == "failed"
    got = store.read([recs["xys/train/000002"].row, recs["xys/test/000002"].row])
    assert np.array_equal(got[0], x[3] != 0) and np.array_equal(got[1], x[5] != 0)
    assert store.summary()["splits"] == {"train": 3, "test": 2}


def test_x_only_layout(tmp_path: Path) -> None:
    x = _grids(3, 16, 4).astype(bool)
    np.savez(tmp_path / "xonly.npz", X=x)
    assert import_npz(tmp_path / "xonly.npz", str(tmp_path / "s"), keep_frame=True)["stored"] == 3
    store = VoxelStore.open(str(tmp_path / "s"))
    assert store.summary()["classes"] == {}
    assert all(r.label is None for r in store.items())
    assert np.array_equal(store.read([r.row for r in store.items()]), x)


def test_resampled_to_the_store_resolution(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    np.savez(tmp_path / "r32.npz", X=_grids(3, 32, 5), y=np.array([0, 1, 2]))
    import_npz(tmp_path / "r32.npz", url, keep_frame=True)
    x64 = np.zeros((4, 64, 64, 64), dtype=np.uint8)
    x64[0, 10, 20, 30] = 1  # a single voxel survives max-pooling
    x64[1, 8:56, 8:56, 8:56] = 1
    x64[2] = _grids(1, 64, 6)[0]
    # x64[3] stays empty
    np.savez(tmp_path / "r64.npz", X=x64, y=np.array([0, 1, 2, 0]))
    counts = import_npz(tmp_path / "r64.npz", url, batch_name="big", keep_frame=True)
    assert counts == {"items": 4, "skipped": 0, "stored": 3, "failed": 1}

    store = VoxelStore.open(url)
    assert store.summary()["resolution"] == 32
    recs = _by_item(store)
    got = store.read([recs[f"big/{i:06d}"].row for i in range(3)])
    assert got.shape == (3, 32, 32, 32)
    assert got[0].sum() == 1 and got[0, 5, 10, 15]
    assert got[1].sum() == 24**3
    assert np.array_equal(got, resample(x64[:3], 32))
    assert recs["big/000003"].status == "failed"


def test_new_store_at_requested_resolution(tmp_path: Path) -> None:
    x = np.zeros((1, 16, 16, 16), dtype=bool)
    x[0, 4:12, 4:12, 4:12] = True
    np.savez(tmp_path / "small.npz", X=x)
    import_npz(tmp_path / "small.npz", str(tmp_path / "s"), resolution=32, keep_frame=True)
    store = VoxelStore.open(str(tmp_path / "s"))
    assert store.summary()["resolution"] == 32
    assert store.read([0])[0].sum() == 16**3


def _bad(tmp_path: Path, name: str, **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("text", "not a readable .npz"),
        ("npy", "not a .npz archive"),
        ("truncated", "not a readable .npz"),
        ("missing", "not a readable .npz"),
        ("wrong_keys", "expected arrays X_train"),
        ("not_cubic", r"must be numeric \(N, r, r, r\)"),
        ("three_d", r"must be numeric \(N, r, r, r\)"),
        ("label_count", "5 grids but labels of shape"),
        ("split_count", "5 grids but split has shape"),
        ("split_value", "split values must be 'train' or 'test'"),
        ("mixed_sizes", "must share one size"),
        ("object_array", "not a readable .npz"),
        ("string_labels", "labels in X must be whole numbers"),
    ],
)
def test_bad_files(tmp_path: Path, case: str, message: str) -> None:
    x = _grids(5, 8, 7)
    if case == "text":
        path = tmp_path / "t.npz"
        path.write_text("hello, not an archive\n")
    elif case == "npy":
        path = tmp_path / "a.npz"
        with path.open("wb") as f:
            np.save(f, x)
    elif case == "truncated":
        good = _bad(tmp_path, "good.npz", X=x)
        path = tmp_path / "cut.npz"
        path.write_bytes(good.read_bytes()[:300])
    elif case == "missing":
        path = tmp_path / "nope.npz"
    elif case == "wrong_keys":
        path = _bad(tmp_path, "k.npz", grids=x, labels=np.zeros(5))
    elif case == "not_cubic":
        path = _bad(tmp_path, "c.npz", X_train=np.zeros((5, 8, 8, 4)), y_train=np.zeros(5, int))
    elif case == "three_d":
        path = _bad(tmp_path, "d.npz", X=np.zeros((8, 8, 8)))
    elif case == "label_count":
        path = _bad(tmp_path, "l.npz", X=x, y=np.zeros(4, int))
    elif case == "split_count":
        path = _bad(tmp_path, "s.npz", X=x, split=np.array(["train"] * 4))
    elif case == "split_value":
        path = _bad(tmp_path, "v.npz", X=x, split=np.array(["train", "val", "test", "train", "test"]))
    elif case == "mixed_sizes":
        path = _bad(tmp_path, "m.npz", X_train=x, X_test=_grids(2, 16, 8))
    elif case == "object_array":
        path = tmp_path / "o.npz"
        np.savez(path, X=np.array([np.zeros(2), np.zeros(3)], dtype=object))
    else:
        path = _bad(tmp_path, "sl.npz", X=x, y=np.array(["a", "b", "a", "b", "a"]))
    store = tmp_path / "store"
    with pytest.raises(NpzImportError, match=message) as info:
        import_npz(path, str(store), keep_frame=True)
    assert str(path.name) in str(info.value)
    assert "\n" not in str(info.value)
    # Nothing was written: the file is checked before the store is touched.
    assert not store.exists()


def test_real_modelnet10(tmp_path: Path) -> None:
    path = shared_data("modelnet10", "voxels32.npz")
    url = str(tmp_path / "store")
    counts = import_npz(path, url, classes=MODELNET10, keep_frame=True)
    assert counts == {"items": 4899, "skipped": 0, "stored": 4865, "failed": 34}
    store = VoxelStore.open(url)
    s = store.summary()
    assert (s["items"], s["stored"], s["failed"], s["pending"]) == (4899, 4865, 34, 0)
    assert s["resolution"] == 32
    assert set(s["classes"]) == set(MODELNET10)
    assert sum(s["classes"].values()) == 4865
    assert all(n > 0 for n in s["classes"].values())
    assert {r.reason for r in store.items("failed")} == {"empty grid"}
    recs = store.items(None)
    assert sum(r.split == "train" for r in recs) == 3991
    assert sum(r.split == "test" for r in recs) == 908
    # Spot-check one stored grid against the file.
    with np.load(path) as data:
        first = next(r for r in store.items() if r.item_id.startswith("voxels32/test/"))
        i = int(first.item_id.rsplit("/", 1)[1])
        assert np.array_equal(store.read([first.row])[0], data["X_test"][i] != 0)


def _ball(r: int, radius: float) -> np.ndarray:
    c = (r - 1) / 2
    idx = np.indices((r, r, r)) - c
    return np.asarray((idx**2).sum(axis=0) <= radius**2)


def test_into_a_field_store_grids_are_conformed_to_its_frame_and_representation(tmp_path: Path) -> None:
    from lib.scans.voxelize import VoxelConfig

    full = _ball(32, 15.5)  # spans the whole cube
    padded = np.zeros((32, 32, 32), bool)
    padded[4:28, 4:28, 4:28] = _ball(24, 11.5)  # the same shape, smaller, padded in the middle
    speck = np.zeros((32, 32, 32), bool)
    speck[3, 4, 5] = True  # one voxel: no extent to scale, a failed item (the rest goes on)
    np.savez(tmp_path / "g.npz", X=np.stack([full, padded, speck]).astype(np.uint8))
    voxel = VoxelConfig(resolution=32, mode="surface", representation="field-v1")
    store_url = str(tmp_path / "store")
    counts = import_npz(tmp_path / "g.npz", store_url, voxel=voxel)
    assert counts["stored"] == 2 and counts["failed"] == 1
    assert "zero extent" in VoxelStore.open(store_url).items("failed")[0].reason
    store = VoxelStore.open(store_url)
    a, b = store.read([0, 1])
    assert (a & b).sum() / (a | b).sum() >= 0.8  # the same frame (as they are: IoU 0.41)
    assert not a[12:20, 12:20, 12:20].any() and a.sum() < full.sum()  # a shell now, not the solid ball

    kept = str(tmp_path / "kept")
    import_npz(tmp_path / "g.npz", kept, voxel=voxel, keep_frame=True)
    same = VoxelStore.open(kept).read([0, 1])
    assert np.array_equal(same[0], full) and np.array_equal(same[1], padded)  # and the speck stays
    assert (full & padded).sum() / (full | padded).sum() < 0.5
