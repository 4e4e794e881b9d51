"""Scan batches on a local folder: items, labels and splits from the tree or labels.csv, what is skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lib.scans.batch import LABELS_FILE, BatchError, BatchItem, batch_name_from_url, is_item, list_batch
from lib.storage import LocalStorage, StorageError, open_storage


def _write(root: Path, files: dict[str, bytes | str]) -> None:
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)


def _items(root: Path) -> dict[str, BatchItem]:
    return {it.key: it for it in list_batch(open_storage(str(root)))}


def test_class_split_tree_gives_labels_and_splits(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "chair/train/chair_0001.off": b"OFF\n",
            "chair/test/chair_0002.off": b"OFF\n...",
            "table/train/t.ply": b"ply",
            "table/val/t2.ply": b"ply",  # not a split we know: no label either
            "loose.stl": b"solid",  # at the root
            "chair/c.obj": b"v 0 0 0",  # depth 2
            "a/b/train/deep.xyz": b"0 0 0",  # depth 4
        },
    )
    items = _items(tmp_path)
    assert set(items) == {
        "chair/train/chair_0001.off",
        "chair/test/chair_0002.off",
        "table/train/t.ply",
        "table/val/t2.ply",
        "loose.stl",
        "chair/c.obj",
        "a/b/train/deep.xyz",
    }
    assert items["chair/train/chair_0001.off"] == BatchItem("chair/train/chair_0001.off", 4, "chair", "train")
    assert (items["chair/test/chair_0002.off"].label, items["chair/test/chair_0002.off"].split) == ("chair", "test")
    assert items["chair/test/chair_0002.off"].size == 7
    assert (items["table/train/t.ply"].label, items["table/train/t.ply"].split) == ("table", "train")
    for key in ("table/val/t2.ply", "loose.stl", "chair/c.obj", "a/b/train/deep.xyz"):
        assert (items[key].label, items[key].split) == (None, None), key


def test_keys_are_sorted(tmp_path: Path) -> None:
    names = ["z.off", "a.off", "m/train/b.ply", "B.stl", "m/test/a.ply", "k/x.xyz", "a0.off"]
    _write(tmp_path, {n: b"x" for n in names})
    keys = [it.key for it in list_batch(LocalStorage(tmp_path))]
    assert keys == sorted(names)


def test_labels_csv_overrides_the_tree(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "chair/train/a.off": b"1",
            "chair/train/b.off": b"2",
            "scans/c.ply": b"3",
            "scans/d.ply": b"4",
            LABELS_FILE: "file,label,split\nchair/train/a.off,sofa,test\n./scans/c.ply,lamp,train\nscans/d.ply,desk,\n",
        },
    )
    items = _items(tmp_path)
    assert LABELS_FILE not in items
    assert set(items) == {"chair/train/a.off", "chair/train/b.off", "scans/c.ply", "scans/d.ply"}
    assert (items["chair/train/a.off"].label, items["chair/train/a.off"].split) == ("sofa", "test")
    assert (items["chair/train/b.off"].label, items["chair/train/b.off"].split) == ("chair", "train")  # not listed
    assert (items["scans/c.ply"].label, items["scans/c.ply"].split) == ("lamp", "train")
    assert (items["scans/d.ply"].label, items["scans/d.ply"].split) == ("desk", None)


def test_labels_csv_without_split_column_and_odd_header(tmp_path: Path) -> None:
    # A BOM, upper-case and padded header names, no split column.
    _write(tmp_path, {"x.off": b"1", "y.off": b"2", LABELS_FILE: "\ufeff File , LABEL \nx.off, cup \n"})
    items = _items(tmp_path)
    assert (items["x.off"].label, items["x.off"].split) == ("cup", None)
    assert (items["y.off"].label, items["y.off"].split) == (None, None)


def test_labels_csv_in_a_subfolder_is_an_item(tmp_path: Path) -> None:
    _write(tmp_path, {"x.off": b"1", f"sub/{LABELS_FILE}": "file,label\n../x.off,cup\n"})
    items = _items(tmp_path)
    assert set(items) == {"x.off", f"sub/{LABELS_FILE}"}
    assert items["x.off"].label is None


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("name,class\nx.off,cup\n", "needs a 'file' and a 'label' column"),
        ("file,split\nx.off,train\n", "needs a 'file' and a 'label' column"),
        ("", "needs a 'file' and a 'label' column"),
        ("file,label,split\nx.off,cup,validation\n", "line 2: split must be train or test"),
        ("file,label\nx.off,cup\n,lamp\n", "line 3 has no file"),
    ],
)
def test_bad_labels_csv(tmp_path: Path, csv: str, message: str) -> None:
    _write(tmp_path, {"x.off": b"1", LABELS_FILE: csv})
    with pytest.raises(BatchError, match=message):
        list_batch(LocalStorage(tmp_path))


def test_labels_csv_not_utf8(tmp_path: Path) -> None:
    _write(tmp_path, {"x.off": b"1", LABELS_FILE: b"file,label\nx.off,\xff\xfe\xfa\n"})
    with pytest.raises(BatchError, match="not UTF-8"):
        list_batch(LocalStorage(tmp_path))


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            ".DS_Store": b"x",
            "chair/train/.a.off.swp": b"x",
            ".git/objects/ab": b"x",
            "chair/.cache/train/x.off": b"x",
            "chair/train/a.off": b"x",
        },
    )
    assert list(_items(tmp_path)) == ["chair/train/a.off"]


def test_is_item_is_the_listing_rule() -> None:
    # the batch listing and the inbox's item count share this one rule
    assert is_item("a.off") and is_item("chair/train/a.off") and is_item("sub/labels.csv")
    for key in (LABELS_FILE, ".ready", ".DS_Store", "chair/.cache/train/x.off", "chair/train/.a.off.swp"):
        assert not is_item(key), key


def test_empty_batch(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="holds no files"):
        list_batch(LocalStorage(tmp_path))
    # Only hidden files and labels.csv: still empty.
    _write(tmp_path, {".hidden": b"x", LABELS_FILE: "file,label\n", "sub/.x": b"x"})
    with pytest.raises(BatchError, match="holds no files"):
        list_batch(LocalStorage(tmp_path))


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="no such directory"):
        list_batch(LocalStorage(tmp_path / "nope"))
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(BatchError, match="file"):
        list_batch(LocalStorage(tmp_path / "file"))


def test_symlinks_are_not_listed_nor_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside, {"secret.off": b"secret", "dir/inner.off": b"inner"})
    root = tmp_path / "batch"
    _write(root, {"chair/train/a.off": b"a"})
    os.symlink(outside / "secret.off", root / "chair" / "train" / "link.off")
    os.symlink(outside / "dir", root / "chair" / "linkdir")
    os.symlink(outside / "secret.off", root / LABELS_FILE)  # a linked labels.csv is not read either

    storage = LocalStorage(root)
    assert [o.key for o in storage.list()] == ["chair/train/a.off"]
    items = list_batch(storage)
    assert items == [BatchItem("chair/train/a.off", 1, "chair", "train")]
    with pytest.raises(StorageError, match="symbolic link"):
        storage.read_bytes("chair/train/link.off")
    with pytest.raises(StorageError, match="symbolic link"):
        storage.read_bytes("chair/linkdir/inner.off")  # through a linked folder
    with pytest.raises(StorageError, match="symbolic link"):
        storage.write_bytes("chair/linkdir/planted.off", b"x")  # writes cannot escape that way either
    assert not (outside / "dir" / "planted.off").exists()
    assert storage.read_bytes("chair/train/a.off") == b"a"


def test_open_storage_gives_local_storage(tmp_path: Path) -> None:
    _write(tmp_path, {"a/train/x.off": b"x"})
    for url in (str(tmp_path), tmp_path.as_uri(), tmp_path.as_uri() + "/"):
        storage = open_storage(url)
        assert isinstance(storage, LocalStorage)
        assert [it.key for it in list_batch(storage)] == ["a/train/x.off"]
    with pytest.raises(StorageError, match="unsupported storage URL scheme"):
        open_storage("ftp://x/y")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/data/scans/batch-07", "batch-07"),
        ("/data/scans/batch-07/", "batch-07"),
        ("s3://bucket/scans/2024-05", "2024-05"),
        ("s3://bucket/scans/2024-05/", "2024-05"),
        ("file:///data/demo", "demo"),
        ("relative/dir", "dir"),
        ("s3://bucket", "bucket"),
    ],
)
def test_batch_name_from_url(url: str, name: str) -> None:
    assert batch_name_from_url(url) == name


@pytest.mark.parametrize("url", ["", "/", ".", "..", "s3://bucket/scans/..", "file:///", "s3://"])
def test_batch_name_from_url_refuses(url: str) -> None:
    with pytest.raises(BatchError, match="cannot derive a batch name"):
        batch_name_from_url(url)
