"""train-features end to end: the CLI and the Prefect flow (one task per epoch step, tagged gpu), a store and
runs on real S3 (moto's server), resume after a worker died, and the user errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lib.features.runs import Region, RunRequest, Session, create_run, load_region, read_embedding
from tests.support import assert_user_error, task_runs
from voxclust.cli import app

DC = ["--set", "k=6", "--set", "width=4", "--set", "feature_dim=16", "--set", "batch_size=8"]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("NO_COLOR", "1")
    return CliRunner()


def test_deepcluster_flow_on_s3_resumes_after_a_dead_worker(prefect_api: str, s3_store: str) -> None:
    from flows.features import train_features

    run_url = f"{s3_store}/runs/dc"
    options = {"epochs": 3, "k": 6, "width": 4, "feature_dim": 16, "batch_size": 8}
    request = RunRequest(method="deepcluster", data_url=s3_store, options=options, run_url=run_url, device="cpu")
    ref = create_run(request)
    s = Session(ref.run_url)  # a worker finished epoch 0, then re-clustered for epoch 1 and died
    s.prepare(0)
    s.train(0)
    s.prepare(1)
    state = train_features(request, return_state=True)  # type: ignore[call-arg]
    result = state.result()
    tasks = task_runs(state.state_details.flow_run_id)
    names = sorted(name.rsplit("-", 1)[0] for name, _ in tasks)
    # epoch 0 is not redone; epoch 1 was prepared already (its prepare-epoch task returns the logged values)
    assert names.count("train-epoch") == 2 and names.count("prepare-epoch") == 2
    assert all(tags == ["gpu"] for name, tags in tasks if not name.startswith("create-run"))
    x, rows, attrs = read_embedding(result["run"], "all")
    assert x.shape == (59, 16) and len(rows) == 59
    assert [h["epoch"] for h in attrs["history"]] == [0, 1, 2]
    assert all("nmi_labels" in h and "cluster_sizes" in h for h in attrs["history"])
    assert attrs["checkpoint"] == f"{run_url}/checkpoint.pt"


def test_cli_train_and_embed(prefect_api: str, runner: CliRunner, tiny_store: str, tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    args = ["train", "-m", "voxnet", "--store", tiny_store, "--epochs", "1", "--run", run]
    result = runner.invoke(app, [*args, "--set", "fc=8", "--set", "augment.rotation=none", "--json"])
    assert result.exit_code == 0, result.output
    assert "test_accuracy" in result.stdout
    result = runner.invoke(app, ["embed", "--run", run, "--split", "test"])
    assert result.exit_code == 0, result.output
    x, rows, attrs = read_embedding(run, "test")
    assert x.shape == (12, 8) and attrs["config"]["augment"]["rotation"] == "none"
    test = load_region(tiny_store, Region(split="test"))
    np.testing.assert_array_equal(rows, test.rows)
    np.testing.assert_allclose(x, Session(run).method.embed(test.grids), rtol=1e-6, atol=1e-6)


def test_methods_lists_methods_and_options_and_train_help_points_there(runner: CliRunner) -> None:
    listing = runner.invoke(app, ["methods"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    for text in ("raw", "voxnet", "vrn", "autoencoder", "deepcluster", "triplet", "softtriple", "views_per_shape"):
        assert text in listing.stdout
    assert "over-clustering" in listing.stdout
    result = runner.invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "voxclust methods" in result.stdout and "views_per_shape" not in result.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["-m", "kmeans"], ["unknown method 'kmeans'", "deepcluster", "softtriple"]),
        (["-m", "voxnet", "--set", "colour=red"], ["option colour", "options:", "vote_rotations"]),
        (["-m", "voxnet", "--set", "lr=-1"], ["option lr"]),
        (["-m", "voxnet", "--set", "oops"], ["key=value"]),
    ],
)
def test_train_bad_method_or_option(runner: CliRunner, tiny_store: str, args: list[str], fragments: list[str]) -> None:
    result = runner.invoke(app, ["train", "--store", tiny_store, *args])
    if "key=value" in fragments:
        assert result.exit_code == 2 and "key=value" in result.output
        return
    assert_user_error(result, *fragments)


def test_train_user_errors_before_training(
    prefect_api: str, runner: CliRunner, unlabelled_store: str, tiny_store: str, tmp_path: Path
) -> None:
    run = str(tmp_path / "r")
    assert_user_error(
        runner.invoke(app, ["train", "-m", "vrn", "--store", unlabelled_store, "--run", run]), "needs a label"
    )
    assert_user_error(
        runner.invoke(app, ["train", "-m", "deepcluster", "--store", tiny_store, "--run", run, "--set", "k=500"]),
        "k=500",
    )
    assert_user_error(runner.invoke(app, ["train", "-m", "raw", "--store", str(tmp_path / "none")]), "not a voxclust")
    assert_user_error(runner.invoke(app, ["embed", "--run", str(tmp_path / "none")]), "not a voxclust run")
    assert not (tmp_path / "r" / "run.json").exists()


def test_region_split_choices(tiny_store: str) -> None:
    with pytest.raises(ValueError, match="split"):
        Region.model_validate({"split": "validation"})


def test_epoch_records_in_the_logs_are_rounded() -> None:
    from flows.features import _rounded

    entry = {"epoch": 3, "loss": 0.1723654568195343, "nmi_labels": 0.6074657829575223, "threads": 1, "note": "x"}
    assert _rounded(entry) == "loss 0.1724, nmi_labels 0.6075, threads 1"
