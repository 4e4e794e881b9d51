"""voxclust tune: search spaces checked against a method's config, bad input refused before any trial, a real
search recorded in SQLite and in PostgreSQL, a killed search resumed, and label-free objectives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from lib.features.runs import CHECKPOINT, Session, _load
from lib.storage import open_storage
from lib.tune import make_spec
from lib.tune.space import TuneError, load_space
from lib.tune.study import TuneSpec, open_storage_db, open_study, renew, take_over_stale
from lib.voxels.importer import import_npz
from tests.support import assert_user_error, write_npz
from voxclust.cli import app

ROOT = Path(__file__).resolve().parents[2]
SPACE = {"lr": {"low": 2e-4, "high": 3e-3, "log": True}, "batch_size": {"choices": [8, 16]}}


def _store(root: Path, labels_seed: int | None = None) -> str:
    """A tiny labelled store of its own (a search writes under it); ``labels_seed`` shuffles the labels."""
    root.mkdir(parents=True, exist_ok=True)
    npz = write_npz(root / "tiny.npz")
    if labels_seed is not None:
        with np.load(npz) as f:
            data = dict(f)
        rng = np.random.default_rng(labels_seed)
        data["y_train"], data["y_test"] = rng.permutation(data["y_train"]), rng.permutation(data["y_test"])
        np.savez(npz, **data)
    url = str(root / "store")
    import_npz(npz, url, classes=["box", "ball", "rod"])
    return url


def _trials(spec: TuneSpec) -> list[Any]:
    """The study's trials as the database holds them now (through this process's one storage per URL)."""
    return optuna.load_study(study_name=spec.study_name, storage=open_storage_db(spec.storage)).get_trials()


# -- the search space ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ({"lrate": {"low": 1e-4, "high": 1e-2}}, "'lrate' is not an option"),
        ({"augment.spin": {"choices": [1, 2]}}, "'augment.spin' is not an option"),
        ({"lr": {"low": -1.0, "high": 1e-2}}, "lr=-1.0 is outside what voxnet accepts"),
        ({"val_fraction": {"low": 0.1, "high": 0.7}}, "val_fraction=0.7 is outside"),
        ({"batch_size": {"choices": [1, 16]}}, "batch_size=1 is outside"),
        ({"batch_size": {"low": 8.5, "high": 64}}, "integer option"),
        ({"optimizer": {"low": 0, "high": 1}}, "not numeric"),
        ({"lr": {"low": 1e-2, "high": 1e-3}}, "must be below"),
        ({"lr": {"low": 1e-3}}, "needs both low and high"),
        ({"seed": {"choices": [0, 1]}}, "'seed' is set by the search"),
        ({"epochs": 3}, "nothing to search"),
        ({"lr": {"low": 1e-4, "high": 1e-2}, "val_fraction": 0.9}, "the fixed options are outside"),
    ],
)
def test_space_is_checked_against_the_method_config(space: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TuneError) as info:
        load_space("voxnet", space)
    assert fragment in str(info.value)


def test_space_file_nested_options_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 1.0e-4, high: 3.0e-3, log: true}\naugment.z_steps: {choices: [1, 4]}\nepochs: 3\n")
    space = load_space("voxnet", path)
    assert space.params["lr"].kind == "float" and space.params["lr"].log
    assert space.params["augment.z_steps"].kind == "categorical"
    assert space.options({"lr": 1e-3, "augment.z_steps": 4}) == {"epochs": 3, "lr": 1e-3, "augment": {"z_steps": 4}}
    (tmp_path / "bad.yaml").write_text("lr: [1, 2\n")
    with pytest.raises(TuneError, match="not YAML or JSON"):
        load_space("voxnet", tmp_path / "bad.yaml")
    with pytest.raises(TuneError, match="nothing to tune"):
        load_space("raw")
    from lib.features.registry import METHODS

    defaults = [name for name, cls in METHODS.items() if cls.search_space]
    assert {"voxnet", "vrn", "autoencoder", "deepcluster", "triplet", "softtriple", "simclr"} <= set(defaults)
    for method in defaults:  # every built-in space fits its method
        assert load_space(method).params


# -- bad input: one clear error before any trial starts --------------------------------------------------------------
def test_bad_input_fails_before_any_trial(tmp_path: Path, unlabelled_store: str) -> None:
    store = _store(tmp_path / "a")
    runner = CliRunner()
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"low": 1e-4, "high": 1e-2}, "dropout": {"low": 0.1, "high": 0.5}}))
    cases = [
        (["-m", "voxnet", "--store", store, "--space", str(space)], "'dropout' is not an option"),
        (["-m", "voxnet", "--store", unlabelled_store], "needs a label on every training item"),
        (["-m", "autoencoder", "--store", unlabelled_store, "--objective", "val_accuracy"], "needs a classifier"),
        (
            ["-m", "voxnet", "--store", store, "--storage", "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"],
            "cannot reach the study database postgresql+psycopg://nobody:***@127.0.0.1:1/none",
        ),
        (["-m", "voxnet", "--store", store, "--set", "lr=0.01"], "searched by the space"),
        (["-m", "voxnet", "--store", str(tmp_path / "nowhere")], "nowhere"),
    ]
    for args, fragment in cases:
        result = runner.invoke(app, ["tune", *args])
        message = assert_user_error(result, fragment)
        assert "secret" not in message
    unknown = runner.invoke(app, ["tune", "-m", "voxnet", "--store", store, "--objective", "nmi"])
    assert unknown.exit_code == 2 and "'val_accuracy', 'silhouette'" in " ".join(unknown.stderr.split())
    assert not (Path(store) / "tune").exists() or not any((Path(store) / "tune").rglob("checkpoint.pt"))


# -- a search, its outputs, and its study in SQLite ------------------------------------------------------------------
def test_search_in_sqlite_writes_report_and_preset(tmp_path: Path, prefect_api: str) -> None:
    from flows.tune import run_tune
    from lib.compare.rows import resolve_entries

    store = _store(tmp_path / "s")
    spec = make_spec("voxnet", store, trials=3, space=SPACE, fixed={"epochs": 3}, pruner="none")
    assert spec.storage == f"sqlite:///{Path(store).absolute()}/tune/studies.db"
    summary = run_tune(spec, workers=2)  # two trials side by side on a Dask LocalCluster

    trials = _trials(spec)
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:  # each trial is an ordinary finished run with the trial's options
        session = Session(t.user_attrs["run_url"])
        assert session.ref.epochs_done == 3 and session.spec.config["lr"] == pytest.approx(t.params["lr"])
        assert sorted(t.intermediate_values) == [0, 1, 2]
        assert t.value == pytest.approx(session.history[-1]["val_accuracy"])
    best = summary["best"]
    assert best["value"] == max(t.value for t in trials)
    assert 0.0 <= summary["test"]["test_accuracy"] <= 1.0 and "test_nmi" in summary["test"]
    out = Path(store) / "tune" / "voxnet"
    for name in ("report.html", "trials.csv", "history.png", "importance.png", "summary.json", "preset.json"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Optimisation history" in html
    (row,) = resolve_entries(preset=str(out / "preset.json"))
    assert (row.name, row.method) == ("voxnet_tuned", "voxnet")
    assert row.options == {"epochs": 3, **best["params"]}

    with pytest.raises(TuneError, match="searches something else"):
        make_spec("voxnet", store, trials=3, space={"lr": SPACE["lr"]}, fixed={"epochs": 3})
    again = run_tune(spec)  # the study is full: nothing more is trained
    assert [t.number for t in _trials(spec)] == [0, 1, 2] and again["best"]["trial"] == best["trial"]


def test_stale_trials_are_taken_over(tmp_path: Path) -> None:
    store = _store(tmp_path / "st")
    spec = make_spec("voxnet", store, trials=3, space=SPACE, fixed={"epochs": 1}, grace_s=60)
    study = open_study(spec)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = {"host": "h", "pid": os.getppid(), "process_space": None}
    gone = {**alive, "pid": dead.pid}
    from lib.storage.base import process_space

    gone["process_space"] = alive["process_space"] = process_space()
    t_dead, t_alive, t_old = study.ask(), study.ask(), study.ask()
    renew(study, t_dead._trial_id, gone)
    renew(study, t_alive._trial_id, alive)
    renew(study, t_old._trial_id, alive)
    study._storage.set_trial_user_attr(t_old._trial_id, "lease", time.time() - 120)
    taken = take_over_stale(study, spec)
    assert sorted(n for n, _ in taken) == [t_dead.number, t_old.number]


# -- a killed search resumes ---------------------------------------------------------------------------------------
def _tune_cmd(store: str, *extra: str) -> list[str]:
    space = Path(store).parent / "space.json"
    space.write_text(json.dumps(SPACE))
    return [sys.executable, "-m", "voxclust.cli", "tune", "-m", "voxnet", "--store", store, "--trials", "3",
            "--pruner", "none", "--json", "--space", str(space), *extra]  # fmt: skip


def _has_checkpoint(run_url: str) -> bool:
    return open_storage(run_url).exists(CHECKPOINT)


def _epochs_done(run_url: str) -> int:
    """The epochs a run's checkpoint holds (written whole: never read half-written)."""
    return int(_load(open_storage(run_url))["epochs_done"])


def _env(prefect_api: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)}


def test_killed_search_resumes_without_losing_or_repeating_a_trial(tmp_path: Path, prefect_api: str) -> None:
    store = _store(tmp_path / "k")
    cmd = _tune_cmd(store, "--epochs", "8")
    spec = make_spec("voxnet", store, trials=3, space=SPACE, fixed={"epochs": 8}, pruner="none")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(prefect_api), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    run_url = spec.trial_run_url(1)
    deadline = time.monotonic() + 240
    killed_at = None
    try:
        # Wait for trial 1's run, then step the search: frozen (SIGSTOP) while its checkpoint is read, let on for
        # a few ms at a time, killed once two epochs are stored. How slow the poll is (a loaded CI machine) then
        # cannot let the trial run past its middle, as a free-running poll could.
        while time.monotonic() < deadline and proc.poll() is None and not _has_checkpoint(run_url):
            time.sleep(0.05)
        while time.monotonic() < deadline and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGSTOP)
            if _epochs_done(run_url) >= 2:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                killed_at = next(t for t in _trials(spec) if t.number == 1)
                break
            os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_at is not None, "the search never reached the middle of its second trial"
    assert killed_at.state == optuna.trial.TrialState.RUNNING
    before = Session(run_url).history  # the epochs trial 1 had finished when it was killed
    assert 2 <= len(before) < 8

    done = subprocess.run(cmd, cwd=ROOT, env=_env(prefect_api), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = _trials(spec)
    assert [t.number for t in trials] == [0, 1, 2], "no trial lost, none added twice"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    resumed = trials[1]
    assert resumed.params == killed_at.params
    assert sorted(resumed.intermediate_values) == list(range(8))
    after = Session(run_url).history
    assert len(after) == 8
    # the epochs done before the kill were not trained again: their logged times are the same entries
    assert [h["train_seconds"] for h in after[: len(before)]] == [h["train_seconds"] for h in before]
    assert json.loads(done.stdout)["best"]["trial"] in (0, 1, 2)


def test_a_trial_killed_between_storing_an_epoch_and_reporting_it_reports_it_on_resume(tmp_path: Path) -> None:
    from lib.features.runs import Region, RunRequest, create_run
    from lib.tune.study import ask, owner
    from lib.tune.trial import TrialRequest, run_trial

    store = _store(tmp_path / "r")
    spec = make_spec("voxnet", store, trials=1, space=SPACE, fixed={"epochs": 3}, pruner="none",
                     storage=f"sqlite:///{tmp_path / 'r.db'}")  # fmt: skip
    study = open_study(spec)
    asked = ask(study, spec)
    assert asked is not None
    request = TrialRequest(spec=spec, number=asked[0], values=asked[1], owner=owner())
    # What a kill leaves: epochs 0 and 1 stored in the run's checkpoint, only epoch 0 reported to the study.
    ref = create_run(RunRequest(method=spec.method, data_url=spec.data_url, options=request.options,
                                region=Region(split="auto"), run_url=request.run_url, device=spec.device))  # fmt: skip
    session = Session(ref.run_url)
    for epoch in range(2):
        session.prepare(epoch)
        session.train(epoch)
    study._storage.set_trial_intermediate_value(study.trials[0]._trial_id, 0, 0.5)

    result = run_trial(request)
    assert result["state"] == "complete" and result["epochs_done"] == 3
    values = _trials(spec)[0].intermediate_values
    assert sorted(values) == [0, 1, 2], "the epoch stored but not reported is reported, none is trained twice"
    assert values[0] == 0.5
    assert len(Session(ref.run_url).history) == 3


# -- PostgreSQL: a study two processes share -----------------------------------------------------------------------
def test_postgres_study_is_shared_by_two_processes(tmp_path: Path, prefect_api: str, postgres_url: str) -> None:
    store = _store(tmp_path / "pg")
    cmd = _tune_cmd(store, "--epochs", "6", "--storage", postgres_url, "--study", "shared")
    cmd[cmd.index("--trials") + 1] = "4"
    spec = make_spec("voxnet", store, trials=4, space=SPACE, fixed={"epochs": 6}, storage=postgres_url,
                     study_name="shared", pruner="none")  # fmt: skip
    first = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(prefect_api), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # Freeze the first process in the middle of a trial: the second then searches beside it, whatever the
        # speed of either (a stopped process is alive and its lease is fresh: its trial is not taken over).
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            try:
                if any(t.intermediate_values and t.state.name == "RUNNING" for t in _trials(spec)):
                    os.kill(first.pid, signal.SIGSTOP)
                    break
            except KeyError:  # the study is not created yet
                pass
            time.sleep(0.05)
        assert first.poll() is None, "the first search ended before it could be frozen mid-trial"
        frozen = [t.number for t in _trials(spec) if t.state == optuna.trial.TrialState.RUNNING]
        second = subprocess.run(cmd, cwd=ROOT, env=_env(prefect_api), capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        during = _trials(spec)
        assert [t.number for t in during] == [0, 1, 2, 3], "the second counted the first's trials toward 4"
        assert [t.number for t in during if t.state == optuna.trial.TrialState.RUNNING] == frozen
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, errs = first.communicate(timeout=300)
    assert first.returncode == 0, errs[-2000:]
    trials = _trials(spec)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    owners = {t.user_attrs["owner"]["pid"] for t in trials}
    assert first.pid in owners and len(owners) == 2, "both processes ran trials of the shared study"


# -- unsupervised objectives never read labels ---------------------------------------------------------------------
def test_unsupervised_objective_ignores_labels(tmp_path: Path, prefect_api: str) -> None:
    from flows.tune import run_tune

    space = {"lr": {"low": 1e-4, "high": 3e-3, "log": True}, "latent": {"choices": [16, 32]}}
    found = []
    for i, labels_seed in enumerate((None, 7)):
        store = _store(tmp_path / f"u{i}", labels_seed)
        spec = make_spec("autoencoder", store, trials=2, space=space, fixed={"epochs": 2}, k=3)
        assert spec.objective == "silhouette"
        run_tune(spec)
        found.append([(t.params, t.value, t.intermediate_values) for t in _trials(spec)])
    assert found[0] == found[1]  # the stores hold the same grids: only their labels differ
