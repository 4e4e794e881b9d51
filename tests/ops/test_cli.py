"""The command line, for the commands and failures that do not start Prefect."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lib.voxels.store import VoxelStore
from tests.support import assert_user_error, cli_stderr
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
        ("voxelize", ["BATCH_URL", "--store", "--resolution", "--mode", "--up-axis", "--batch-name", "--json"]),
        ("import", ["FILE", "--store", "--classes", "--batch-name", "--resolution", "--json"]),
        ("info", ["STORE_URL", "--store", "--failed", "--json"]),
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
    result = runner.invoke(app, ["import", str(npz), "--store", str(store), "--classes", "cup, bowl", "--json"])
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
    first = runner.invoke(app, ["import", str(npz), "--store", store])
    assert first.exit_code == 0, first.output
    text = " ".join(first.stdout.split())  # the human-readable output may be wrapped
    assert "9 items, 0 already there, 8 stored, 1 failed" in text
    assert "classes 0 3, 1 5" in text
    again = runner.invoke(app, ["import", str(npz), "--store", store, "--json"])
    assert json.loads(again.stdout) == {"items": 9, "skipped": 9, "stored": 0, "failed": 0}
    assert VoxelStore.open(store).summary()["items"] == 9


def test_import_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", str(tmp_path / "nope.npz"), "--store", str(tmp_path / "s")])
    assert_user_error(result, "no such file")
    assert not (tmp_path / "s").exists()


def test_import_bad_file(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "scan[v2][red].npz"  # brackets are not taken for console markup
    np.savez(bad, grids=np.zeros((2, 8, 8, 8)))
    result = runner.invoke(app, ["import", str(bad), "--store", str(tmp_path / "s")])
    assert_user_error(result, "scan[v2][red].npz", "expected arrays X_train")
    assert not (tmp_path / "s").exists()

    npy = tmp_path / "one.npz"
    with npy.open("wb") as f:
        np.save(f, np.zeros((2, 8, 8, 8)))
    assert_user_error(runner.invoke(app, ["import", str(npy), "--store", str(tmp_path / "s")]), "not a .npz archive")


def test_info_missing_store(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", str(tmp_path / "no" / "such" / "store" / "with" / "a" / "long" / "path")])
    assert_user_error(result, "not a voxclust store")
    assert not (tmp_path / "no").exists()


# -- voxelize: failures before any work -------------------------------------------------------------------


def test_voxelize_missing_batch(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["voxelize", str(tmp_path / "missing"), "--store", str(tmp_path / "store")])
    assert_user_error(result, "missing", "no such directory")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("where", ["batch", "store"])
def test_unsupported_url_scheme(runner: CliRunner, tmp_path: Path, where: str) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "a.off").write_text("OFF\n")
    batch, store = (
        ("ftp://x/y", str(tmp_path / "store")) if where == "batch" else (str(tmp_path / "batch"), "ftp://x/y")
    )
    result = runner.invoke(app, ["voxelize", batch, "--store", store])
    assert_user_error(result, "ftp://x/y", "unsupported storage URL scheme")
    assert not (tmp_path / "store").exists()


def test_unsupported_url_scheme_info_and_import(runner: CliRunner, tmp_path: Path) -> None:
    assert_user_error(runner.invoke(app, ["info", "ftp://x/y"]), "unsupported storage URL scheme")
    npz = _npz(tmp_path / "g.npz")
    assert_user_error(
        runner.invoke(app, ["import", str(npz), "--store", "ftp://x/y"]), "unsupported storage URL scheme"
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--resolution", "7"], "resolution: Input should be greater than or equal to 8"),
        (["-r", "1024"], "resolution: Input should be less than or equal to 256"),
    ],
)
def test_voxelize_bad_settings(runner: CliRunner, tmp_path: Path, args: list[str], fragment: str) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "a.off").write_text("OFF\n")
    result = runner.invoke(app, ["voxelize", str(tmp_path / "batch"), "--store", str(tmp_path / "store"), *args])
    assert_user_error(result, fragment)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("args", "choices"),
    [
        (["--mode", "hollow"], ["solid", "surface"]),
        (["--up-axis", "w"], ["x", "-z"]),
        (["--pose", "sideways"], ["as-scanned", "upright", "full"]),
        (["--representation", "mesh"], ["field-v1", "binned"]),
    ],
)
def test_fixed_value_options_name_their_choices(
    runner: CliRunner, tmp_path: Path, args: list[str], choices: list[str]
) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "a.off").write_text("OFF\n")
    result = runner.invoke(app, ["voxelize", str(tmp_path / "batch"), "--store", str(tmp_path / "store"), *args])
    assert result.exit_code == 2
    text = " ".join(cli_stderr(result).replace("│", " ").split())
    assert args[0] in text and args[1] in text, text
    for choice in choices:
        assert f"'{choice}'" in text, text
    assert not (tmp_path / "store").exists()


def test_voxelize_into_a_file_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / "a.off").write_text("OFF\n")
    (tmp_path / "store").write_text("not a folder")
    result = runner.invoke(app, ["voxelize", str(tmp_path / "batch"), "--store", str(tmp_path / "store")])
    assert_user_error(result, "not a directory")


def test_the_comparison_table_fits_80_columns_without_eliding(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from voxclust import output

    console = Console(width=80, record=True)
    monkeypatch.setattr(output, "out", console)
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
    output.print_report({**result, "scored_split": "all", "n_items": 140}, False)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "0.95" in text and "softtriple_supervised" in text and "20 min 34 s" in text
    assert "NMI, ARI, ACC: all 140 items" in text
    assert "its clusters vs capture (mesh / cloud / grid): NMI 0.01" in text


def test_the_report_path_is_printed_whole_on_one_line_and_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from voxclust import output

    console = Console(width=80, record=True)
    monkeypatch.setattr(output, "out", console)
    where = "/srv/museum [jomon]/stores/pottery-2026/reports/compare-20261207-231257/report.html"
    output.print_report({"rows": [], "html_url": "file://" + where.replace(" ", "%20")}, False)
    lines = console.export_text().splitlines()
    assert f"report: {where}" in lines, lines  # one line: soft wrap, the terminal wraps it, a copy gets it whole


# -- one vocabulary ---------------------------------------------------------------------------------------


def test_version_short_help_and_python_dash_m(runner: CliRunner) -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"voxclust {version('voxclust')}"
    short = runner.invoke(app, ["-h"])
    assert short.exit_code == 0 and "Usage" in short.stdout and "--store" not in short.stdout
    assert runner.invoke(app, ["info", "-h"]).exit_code == 0
    done = subprocess.run([sys.executable, "-m", "voxclust", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("voxclust "), done.stderr
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout  # completion is on


def test_top_level_help_gives_one_whole_line_per_command(runner: CliRunner) -> None:
    text = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    lines = {ln.split()[1]: ln for ln in text.splitlines() if ln.startswith("│ ") and len(ln.split()) > 2}
    for cmd in COMMANDS:
        summary = lines[cmd].strip("│ ").removeprefix(cmd).strip()
        assert summary and not summary.endswith(("...", "…")), lines[cmd]
    assert "``" not in text


@pytest.mark.parametrize("cmd", ["train", "tune"])
def test_train_and_tune_help_show_options_not_the_method_list(runner: CliRunner, cmd: str) -> None:
    text = runner.invoke(app, [cmd, "--help"], env={"COLUMNS": "100"}).stdout
    assert len(text.splitlines()) < 80, len(text.splitlines())
    assert "--store" in text and "--method" in text and "voxclust methods" in text
    assert "<auto|cpu|cuda|cuda:N>" in text


def test_methods_as_text_and_json(runner: CliRunner) -> None:
    from lib.features.registry import METHODS

    text = runner.invoke(app, ["methods"], env={"COLUMNS": "200"}).stdout
    assert "``" not in text and "raw: the voxels themselves" in text
    listing = json.loads(runner.invoke(app, ["methods", "--json"]).stdout)
    assert set(listing) == set(METHODS) and {"simclr", "scan"} <= set(listing)
    assert listing["raw"]["options"]["pool"]["default"] == 1 and listing["raw"]["summary"].startswith("the voxels")


def test_old_store_spellings_still_work_with_a_note(runner: CliRunner, tmp_path: Path) -> None:
    npz = _npz(tmp_path / "grids.npz")
    store = str(tmp_path / "store")
    old = runner.invoke(app, ["import", str(npz), "--out", store, "--json"])
    assert old.exit_code == 0, old.output
    assert json.loads(old.stdout)["stored"] == 8
    assert "--out is now --store" in cli_stderr(old)
    for cmd in (["export"], ["assign"], ["train", "-m", "raw"], ["report"], ["compare"]):
        res = runner.invoke(app, [*cmd, "--data", str(tmp_path / "nowhere")])
        assert res.exit_code == 2 and "--data is now --store" in cli_stderr(res), (cmd, res.output)
        assert "nowhere: no such directory" in cli_stderr(res), (cmd, res.output)
    both = runner.invoke(app, ["export", "--store", store, "--data", str(tmp_path / "other")])
    assert both.exit_code == 2 and "give the store once" in cli_stderr(both)
    assert runner.invoke(app, ["info", "--store", store, "--json"]).exit_code == 0
    assert runner.invoke(app, ["info", store, "--json"]).exit_code == 0


def test_not_a_store_says_why(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    cases = {"missing": "no such directory", "a-file": "is not a directory", "a-folder": "has no manifest.json"}
    for name, why in cases.items():
        for cmd in (["info"], ["export"], ["similar", "some/item"], ["compare"]):
            res = runner.invoke(app, [*cmd, "--store", str(tmp_path / name)])
            assert_user_error(res, "not a voxclust store", why)
    assert "no comparison report yet" not in cli_stderr(runner.invoke(app, ["export", "--store", "/no/such/store"]))


def test_info_prints_a_readable_table(runner: CliRunner, tmp_path: Path) -> None:
    npz = _npz(tmp_path / "grids.npz")
    store = str(tmp_path / "store[1]")  # brackets are printed, not taken for markup
    assert runner.invoke(app, ["import", str(npz), "--store", store, "--classes", "cup,bowl"]).exit_code == 0
    text = runner.invoke(app, ["info", store], env={"COLUMNS": "80"}).stdout
    assert store in text
    assert "['" not in text and "{'" not in text
    assert "splits" in text and "train 5, test 3" in text and "batches" in text and "grids" in text
    assert "cup 3, bowl 5" in text


def test_deploy_finds_its_file_or_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from voxclust import ops

    monkeypatch.chdir(tmp_path)
    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "prefect.yaml").write_text("deployments: []\n")
    assert ops.deployments_file(None) == Path("deployments/prefect.yaml")
    (tmp_path / "deployments" / "prefect.yaml").unlink()
    monkeypatch.setattr(ops, "ROOT", tmp_path / "site-packages")
    with pytest.raises(FileNotFoundError, match="pass --file"):
        ops.deployments_file(None)
