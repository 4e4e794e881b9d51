"""Settings come from flags, then VOXCLUST_* environment variables, then a TOML file; the operations commands
end user mistakes with one line and a non-zero exit code; progress reaches listeners; training hand-off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib import progress
from lib.settings import Settings, settings

VOXCLUST = str(Path(sys.executable).with_name("voxclust"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("VOXCLUST_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_flags_override_environment_override_config_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().store_url is None and Settings().preset == "default"
    (clean_env / "voxclust.toml").write_text(
        'store_url = "s3://from-file/store"\npreset = "demo"\ndask_address = "tcp://file:8786"\n'
        'methods = ["raw", "voxnet"]\n'
    )
    s = settings()
    assert (s.store_url, s.preset, s.dask_address, s.methods) == (
        "s3://from-file/store",
        "demo",
        "tcp://file:8786",
        ["raw", "voxnet"],
    )
    monkeypatch.setenv("VOXCLUST_STORE_URL", "s3://from-env/store")
    monkeypatch.setenv("VOXCLUST_METHODS", "raw, autoencoder")
    s = settings()
    assert s.store_url == "s3://from-env/store" and s.methods == ["raw", "autoencoder"] and s.preset == "demo"
    s = settings(store_url="s3://from-flag/store", preset=None)  # None: the flag was not given
    assert s.store_url == "s3://from-flag/store" and s.preset == "demo"


def test_config_file_named_by_environment_or_home(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home_cfg = clean_env / "home" / ".config" / "voxclust" / "config.toml"
    home_cfg.parent.mkdir(parents=True)
    home_cfg.write_text('inbox_url = "s3://home/inbox"\n')
    assert settings().inbox_url == "s3://home/inbox"
    other = clean_env / "site.toml"
    other.write_text('inbox_url = "s3://site/inbox"\n')
    monkeypatch.setenv("VOXCLUST_CONFIG", str(other))
    assert settings().inbox_url == "s3://site/inbox"
    monkeypatch.setenv("VOXCLUST_CONFIG", str(clean_env / "missing.toml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        settings()


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VOXCLUST_", "PREFECT_API_URL"))}
    return subprocess.run(
        [VOXCLUST, *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=120
    )


def test_the_cli_reads_the_store_from_a_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'store_url = "{tmp_path / "no-store"}"\n')
    done = _cli("--config", str(cfg), "compare", cwd=tmp_path)
    assert done.returncode == 2 and "no-store" in done.stderr and "not a voxclust store" in done.stderr
    assert "Traceback" not in done.stderr
    done = _cli("compare", cwd=tmp_path)
    assert done.returncode == 2 and "--store" in done.stderr and "VOXCLUST_STORE_URL" in done.stderr


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("notify", "batch", "--json"), "PREFECT_API_URL"),
        (("watch", "--json"), "PREFECT_API_URL"),
        (("deploy",), "PREFECT_API_URL"),
        (("stack", "up", "--auth", "no-colon", "--dir", "{tmp}"), "USER:PASSWORD"),
        (("stack", "up", "--env", "NOEQUALS", "--dir", "{tmp}"), "KEY=VALUE"),
    ],
)
def test_operations_commands_refuse_mistakes_in_one_line(args: tuple[str, ...], expect: str, tmp_path: Path) -> None:
    done = _cli(*(a.format(tmp=tmp_path / "stack") for a in args), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expect in done.stderr and "Traceback" not in done.stderr


def test_stack_status_without_a_stack(tmp_path: Path) -> None:
    done = _cli("stack", "status", "--dir", str(tmp_path / "none"), "--json", cwd=tmp_path)
    assert done.returncode == 1 and '"running": false' in done.stdout
    done = _cli("stack", "down", "--dir", str(tmp_path / "none"), cwd=tmp_path)
    assert done.returncode == 0 and "nothing was running" in done.stdout


def test_progress_reaches_listeners_only_while_they_listen() -> None:
    seen: list[tuple[str, float, float]] = []
    progress.emit("voxelize", 0, 10)  # nobody listens: nothing happens
    with progress.listen(lambda *a: seen.append(a)):
        progress.emit("voxelize", 3, 10)
    progress.emit("voxelize", 10, 10)
    assert seen == [("voxelize", 3, 10)]


def test_training_is_handed_to_the_gpu_deployment_only_under_deployments(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.compare import train_deployment

    monkeypatch.delenv("VOXCLUST_TRAIN_HANDOFF", raising=False)
    assert train_deployment() is None  # ad hoc: in this process
    monkeypatch.setenv("VOXCLUST_TRAIN_HANDOFF", "deployment")
    assert train_deployment() == "train-features/train"
    monkeypatch.setenv("VOXCLUST_TRAIN_DEPLOYMENT", "train-features/train-big-gpu")
    assert train_deployment() == "train-features/train-big-gpu"
    monkeypatch.setenv("VOXCLUST_TRAIN_HANDOFF", "inprocess")
    assert train_deployment() is None
