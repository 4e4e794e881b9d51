"""The command line, for the commands and failures that do not start Prefect."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lib.voxels.store import VoxelStore
from tests.support import assert_user_error
from voxclust.cli import app

COMMANDS = [
    "demo-batch", "voxelize", "import", "info", "demo", "train", "embed", "methods", "compare", "report", "export",
]  # fmt: skip


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("NO_COLOR", "1")
    return CliRunner()


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    x_train = (rng.random((6, 32, 32, 32)) < 0.05).astype(np.uint8)
    x_train[2] = 0
    x_test = (rng.random((3, 32, 32, 32)) < 0.05).astype(np.uint8)
    np.savez(path, X_train=x_train, y_train=np.array([0, 1, 0, 1, 0, 1]), X_test=x_test, y_test=np.array([1, 1, 0]))
    return path


# -- help -----------------------------------------------------------------------------------------------


def test_top_level_help(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in result.output


def test_no_args_shows_help(runner: CliRunner) -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    assert result.exit_code in (0, 2)


@pytest.mark.parametrize(
    ("cmd", "words"),
    [
        ("demo-batch", ["--out", "--n-per-class", "--seed"]),
        ("voxelize", ["BATCH_URL", "--out", "--resolution", "--mode", "--up-axis", "--batch-name", "--json"]),
        ("import", ["FILE", "--out", "--classes", "--batch-name", "--resolution", "--json"]),
        ("info", ["STORE_URL", "--failed", "--json"]),
        ("demo", ["--store", "--batch", "--n-per-class"]),
    ],
)
def test_command_help(runner: CliRunner, cmd: str, words: list[str]) -> None:
    result = runner.invoke(app, [cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    for w in words:
        assert w.lower() in result.output.lower(), w


# -- demo-batch -----------------------------------------------------------------------------------------


def test_demo_batch_writes_the_same_files_twice(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = runner.invoke(app, ["demo-batch", "--out", str(out), "--n-per-class", "2"])
    assert first.exit_code == 0, first.output
    tree = _tree(out)
    assert len(tree) >= 7 * 2
    assert f"wrote {len(tree)} demo files" in first.stdout
    assert all(k.count("/") == 2 for k in tree)  # <class>/<split>/<file>
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    second = runner.invoke(app, ["demo-batch", "--out", str(out), "--n-per-class", "2"])
    assert second.exit_code == 0, second.output
    assert _tree(out) == tree
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes  # nothing rewritten

    elsewhere = tmp_path / "again"
    assert runner.invoke(app, ["demo-batch", "--out", str(elsewhere), "--n-per-class", "2"]).exit_code == 0
    assert _tree(elsewhere) == tree


def test_demo_batch_rejects_zero_per_class(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo-batch", "--out", str(tmp_path / "d"), "--n-per-class", "0"])
    assert result.exit_code == 2
    assert not (tmp_path / "d").exists()


# -- import and info --------------------------------------------------------------------------------------


def test_import_then_info(runner: CliRunner, tmp_path: Path) -> None:
    npz = _npz(tmp_path / "grids.npz")
    store = tmp_path / "store"
    result = runner.invoke(app, ["import", str(npz), "--out", str(store), "--classes", "cup, bowl", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"items": 9, "skipped": 0, "stored": 8, "failed": 1}

    info = runner.invoke(app, ["info", str(store), "--json"])
    assert info.exit_code == 0, info.output
    summary = json.loads(info.stdout)
    assert summary == VoxelStore.open(str(store)).summary()
    assert (summary["items"], summary["stored"], summary["failed"], summary["pending"]) == (9, 8, 1, 0)
    assert summary["classes"] == {"cup": 3, "bowl": 5}
    assert summary["splits"] == {"train": 5, "test": 3}
    assert summary["batches"] == ["grids"]
    assert summary["resolution"] == 32

    with_failed = runner.invoke(app, ["info", str(store), "--json", "--failed"])
    assert json.loads(with_failed.stdout)["failed_items"] == [{"item_id": "grids/train/000002", "reason": "empty grid"}]

    table = runner.invoke(app, ["info", str(store), "--failed"])
    assert table.exit_code == 0
    assert "failed grids/train/000002: empty grid" in table.stdout
    assert "cup 3" in table.stdout


def test_import_twice_and_text_output(runner: CliRunner, tmp_path: Path) -> None:
    npz = _npz(tmp_path / "grids.npz")
    store = str(tmp_path / "store")
    first = runner.invoke(app, ["import", str(npz), "--out", store])
    assert first.exit_code == 0, first.output
    text = " ".join(first.stdout.split())  # the human-readable output may be wrapped
    assert "9 items, 0 already there, 8 stored, 1 failed" in text
    assert "classes │ 0 3, 1 5" in text
    again = runner.invoke(app, ["import", str(npz), "--out", store, "--json"])
    assert json.loads(again.stdout) == {"items": 9, "skipped": 9, "stored": 0, "failed": 0}
    assert VoxelStore.open(store).summary()["items"] == 9


def test_import_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "s")])
    assert_user_error(result, "no such file")
    assert not (tmp_path / "s").exists()


def test_import_bad_file(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "scan[v2][red].npz"  # brackets are not taken for console markup
    np.savez(bad, grids=np.zeros((2, 8, 8, 8)))
    result = runner.invoke(app, ["import", str(bad), "--out", str(tmp_path / "s")])
    assert_user_error(result, "scan[v2][red].npz", "expected arrays X_train")
    assert not (tmp_path / "s").exists()

    npy = tmp_path / "one.npz"
    with npy.open("wb") as f:
        np.save(f, np.zeros((2, 8, 8, 8)))
    assert_user_error(runner.invoke(app, ["import", str(npy), "--out", str(tmp_path / "s")]), "not a .npz archive")


def test_info_missing_store(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", str(tmp_path / "no" / "such" / "store" / "with" / "a" / "long" / "path")])
    assert_user_error(result, "not a voxclust store")
    assert not (tmp_path / "no").exists()


# -- voxelize: failures before any work -------------------------------------------------------------------


def test_voxelize_missing_batch(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["voxelize", str(tmp_path / "missing"), "--out", str(tmp_path / "store")])
    assert_user_error(result, "missing", "no such directory")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("where", ["batch", "store"])
def test_unsupported_url_scheme(runner: CliRunner, tmp_path: Path, where: str) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "a.off").write_text("OFF\n")
    batch, store = (
        ("ftp://x/y", str(tmp_path / "store")) if where == "batch" else (str(tmp_path / "batch"), "ftp://x/y")
    )
    result = runner.invoke(app, ["voxelize", batch, "--out", store])
    assert_user_error(result, "ftp://x/y", "unsupported storage URL scheme")
    assert not (tmp_path / "store").exists()


def test_unsupported_url_scheme_info_and_import(runner: CliRunner, tmp_path: Path) -> None:
    assert_user_error(runner.invoke(app, ["info", "ftp://x/y"]), "unsupported storage URL scheme")
    npz = _npz(tmp_path / "g.npz")
    assert_user_error(runner.invoke(app, ["import", str(npz), "--out", "ftp://x/y"]), "unsupported storage URL scheme")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--resolution", "7"], "resolution: Input should be greater than or equal to 8"),
        (["-r", "1024"], "resolution: Input should be less than or equal to 256"),
        (["--mode", "hollow"], "mode: "),
        (["--up-axis", "w"], "up_axis: "),
    ],
)
def test_voxelize_bad_settings(runner: CliRunner, tmp_path: Path, args: list[str], fragment: str) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "a.off").write_text("OFF\n")
    result = runner.invoke(app, ["voxelize", str(tmp_path / "batch"), "--out", str(tmp_path / "store"), *args])
    assert_user_error(result, fragment)
    assert not (tmp_path / "store").exists()


def test_voxelize_into_a_file_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "a.off").write_text("OFF\n")
    (tmp_path / "store").write_text("not a folder")
    result = runner.invoke(app, ["voxelize", str(tmp_path / "batch"), "--out", str(tmp_path / "store")])
    assert_user_error(result, "not a directory")


def test_the_comparison_table_fits_80_columns_without_eliding(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from voxclust import cli

    console = Console(width=80, record=True)
    monkeypatch.setattr(cli, "out", console)
    rows = [
        {
            "name": "softtriple_supervised",
            "status": "ok",
            "nmi": 0.9463849645616855,
            "ari": 0.8123,
            "acc": 0.9,
            "n_clusters": 10,
            "train_seconds": 1234.5,
            "test_accuracy": 0.8765,
        },
        {"name": "raw", "status": "failed", "nmi": None, "error": "boom"},
    ]
    rows[0]["capture_nmi"] = 0.0123
    result = {"rows": rows, "best_method": "softtriple_supervised", "html_url": "file:///r.html"}
    cli._print_report({**result, "scored_split": "all", "n_items": 140}, False)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "0.95" in text and "softtriple_supervised" in text and "1234" in text
    assert "NMI, ARI, ACC: all 140 items" in text
    assert "its clusters vs capture (mesh / cloud / grid): NMI 0.01" in text
