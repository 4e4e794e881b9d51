"""Studies: an Optuna study in a real database, the trials it asks for, and how a stopped search resumes.

Where the study lives (``storage``, any SQLAlchemy URL):

* default, a local store: SQLite beside the voxels, ``<store>/tune/studies.db`` (one file for every study of
  the store: ``optuna-dashboard sqlite:///<store>/tune/studies.db`` shows them all);
* default, an S3 store: SQLite cannot live in object storage, so the file is local,
  ``$VOXCLUST_HOME/tune/<bucket>/<prefix>/studies.db`` (``voxclust-data`` by default), and the search's
  outputs (trials table, plots, report, preset) still go to ``<store>/tune/<study>/``. Give a PostgreSQL
  URL (``--storage postgresql+psycopg://...``) to share a study between machines;
* ``--storage URL``: e.g. ``postgresql+psycopg://user:pw@host/db``; two tune processes on one PostgreSQL
  study share it (each asks the sampler for new trials and counts the other's toward ``--trials``).

Resuming: a trial is RUNNING while a process trains it; the process records itself (``owner``) and renews a
lease (``lease``, a time) after every epoch and every ~30 s. A RUNNING trial whose owner process on this
machine has ended, or whose lease is older than ``grace_s``, is *stale*: the next search of the study takes it
over and trains it on from its run's last checkpoint (the run URL is the trial's own), so a killed search
loses no trial and runs none twice.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

from lib.storage.base import holder_gone, process_space
from lib.tune.space import SearchSpace, TuneError, suggest

Sampler = Literal["tpe", "gp", "random"]
Pruner = Literal["median", "hyperband", "none"]


class TuneSpec(BaseModel):
    """One search: what is tuned, how, and where the study and the outputs live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    data_url: str
    space: SearchSpace
    trials: int = Field(12, ge=1, le=10_000, description="trials the study should hold when the search ends")
    objective: Literal["val_accuracy", "silhouette"]
    storage: str
    study_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    sampler: Sampler = "tpe"
    pruner: Pruner = "median"
    seed: int = Field(0, ge=0, description="the sampler's seed and every trial's training seed")
    k: int = Field(10, ge=2, description="clusters of the silhouette objective and the final test NMI")
    device: str = "auto"
    out_url: str
    grace_s: float = Field(300.0, gt=0, description="a RUNNING trial whose lease is older than this is stale")

    @property
    def epochs(self) -> int:
        from lib.features.registry import get_method
        from lib.features.runs import make_config

        cls = get_method(self.method)
        return cls.total_epochs(make_config(self.method, self.space.options({})))

    def trial_run_url(self, number: int) -> str:
        return f"{self.out_url.rstrip('/')}/runs/t{number:04d}"


# -- where -----------------------------------------------------------------------------------------------------
def default_storage(data_url: str) -> str:
    """The default study database of a store (see the module docstring)."""
    from lib.storage import open_storage
    from lib.storage.local import LocalStorage

    storage = open_storage(data_url)
    if isinstance(storage, LocalStorage):
        path = storage.root / "tune" / "studies.db"
    else:
        parsed = urlparse(data_url)
        home = Path(os.environ.get("VOXCLUST_HOME", "voxclust-data")).absolute()
        path = home / "tune" / parsed.netloc / parsed.path.strip("/") / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    # SQLite would create it 0o644 less the umask (its journals copy the database's mode): made here, empty
    # (an empty database to SQLite), it gets open()'s 0o666 less the umask like every file voxclust writes.
    path.touch()
    return f"sqlite:///{path}"


def default_out_url(data_url: str, study_name: str) -> str:
    return f"{data_url.rstrip('/')}/tune/{study_name}"


def redact(url: str) -> str:
    """A database URL without its password (for messages)."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


# -- the study -------------------------------------------------------------------------------------------------
_DATABASES: dict[str, Any] = {}
_DATABASES_LOCK = threading.Lock()


def open_storage_db(url: str) -> Any:
    """Optuna's RDBStorage for ``url``, one per process and URL (each holds a connection pool: a storage per
    call would exhaust a PostgreSQL server's connections); TuneError before anything starts when the
    database cannot be reached."""
    import optuna
    import sqlalchemy.exc

    with _DATABASES_LOCK:
        if url in _DATABASES:
            return _DATABASES[url]
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TuneError(f"cannot reach the study database {redact(url)}: {reason}") from None
        _DATABASES[url] = storage
        return storage


def make_sampler(spec: TuneSpec) -> Any:
    import optuna

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=spec.seed, n_startup_trials=min(10, max(2, spec.trials // 3)))
    # Optuna's default of 10 random start-up trials would leave a 12-trial budget almost unguided.
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, max(2, spec.trials // 3)))


def make_pruner(pruner: Pruner, epochs: int) -> Any:
    """The pruner reading each trial's per-epoch objective: median (after 2 trials and a third of the
    epochs), Hyperband (1 .. ``epochs`` epochs), or none."""
    import optuna

    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, epochs // 3))
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs))
    return optuna.pruners.NopPruner()


def _identity(spec: TuneSpec) -> dict[str, Any]:
    """What a study searches: a resumed search must search the same."""
    return {
        "method": spec.method,
        "data_url": spec.data_url.rstrip("/"),
        "objective": spec.objective,
        "space": spec.space.model_dump(mode="json"),
        "seed": spec.seed,
        "k": spec.k,
        "out_url": spec.out_url.rstrip("/"),
    }


def open_study(spec: TuneSpec, storage: Any | None = None) -> Any:
    """Create the study, or load it when it exists and searches the same (else TuneError)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage or open_storage_db(spec.storage)
    study = optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        sampler=make_sampler(spec),
        pruner=make_pruner(spec.pruner, spec.epochs),
        direction="maximize",
        load_if_exists=True,
    )
    have = study.user_attrs.get("voxclust")
    want = _identity(spec)
    if have is None:
        study.set_user_attr("voxclust", want)
    elif have != want:
        differ = sorted(k for k in want if have.get(k) != want[k])
        raise TuneError(
            f"study {spec.study_name!r} in {redact(spec.storage)} searches something else ({', '.join(differ)} "
            "differ): choose another --study name"
        )
    return study


def load_study(spec: TuneSpec) -> Any:
    """The study as a worker opens it (to report per-epoch values and ask the pruner)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(
        study_name=spec.study_name,
        storage=open_storage_db(spec.storage),
        pruner=make_pruner(spec.pruner, spec.epochs),
    )


# -- owners, leases, stale trials ------------------------------------------------------------------------------
def owner() -> dict[str, Any]:
    """This process, as a trial's owner."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "process_space": process_space()}


def renew(study: Any, trial_id: int, who: dict[str, Any] | None = None) -> None:
    """Record ``who`` (default: this process) as the trial's owner, with a fresh lease."""
    storage = study._storage
    storage.set_trial_user_attr(trial_id, "owner", who or owner())
    storage.set_trial_user_attr(trial_id, "lease", time.time())


def _stale(trial: Any, grace_s: float, now: float) -> bool:
    who = trial.user_attrs.get("owner")
    lease = trial.user_attrs.get("lease")
    if not isinstance(who, dict) or not isinstance(lease, int | float):
        return now - trial.datetime_start.timestamp() > grace_s if trial.datetime_start else True
    if who.get("pid") == os.getpid() and who.get("process_space") == process_space():
        return False
    return holder_gone(who) or now - float(lease) > grace_s


def take_over_stale(study: Any, spec: TuneSpec) -> list[tuple[int, dict[str, Any]]]:
    """The study's stale RUNNING trials (number, params), now owned by this process: the ones a stopped
    search left, to be trained on from their checkpoints."""
    import optuna

    now = time.time()
    taken = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if _stale(t, spec.grace_s, now):
            renew(study, t._trial_id)
            taken.append((t.number, dict(t.params)))
    if taken:  # another process taking the same trial at the same moment: the last writer keeps it
        time.sleep(0.2)
        mine = owner()
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        taken = [(n, p) for n, p in taken if by_number[n].user_attrs.get("owner") == mine]
    return taken


def counts(study: Any) -> dict[str, int]:
    """Trials per state (complete, pruned, fail, running, waiting)."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] = out.get(t.state.name.lower(), 0) + 1
    return out


def ask(study: Any, spec: TuneSpec) -> tuple[int, dict[str, Any]] | None:
    """A new trial from the sampler, owned by this process: (number, values of the searched options); None
    when the study already holds ``spec.trials`` trials (finished or running). Counting and asking hold the
    search's lock in its output folder, so two processes sharing a study never ask for more than that."""
    from lib.storage import open_storage

    with open_storage(spec.out_url).lock("tune-ask", ttl_s=120, timeout_s=120):
        c = counts(study)
        if c.get("complete", 0) + c.get("pruned", 0) + c.get("fail", 0) + c.get("running", 0) >= spec.trials:
            return None
        trial = study.ask()
        values = suggest(trial, spec.space)
        renew(study, trial._trial_id)
    return trial.number, values


def trial_id(study: Any, number: int) -> int:
    return int(study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number))


def tell(study: Any, result: dict[str, Any]) -> None:
    """Record a finished trial: complete with its value, pruned, or failed (with why)."""
    import optuna

    number = int(result["number"])
    tid = trial_id(study, number)
    storage = study._storage
    for key in ("run_url", "epochs_done", "train_seconds", "error"):
        if result.get(key) is not None:
            storage.set_trial_user_attr(tid, key, result[key])
    state = result["state"]
    if state == "complete":
        study.tell(number, float(result["value"]))
    elif state == "pruned":
        study.tell(number, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(number, state=optuna.trial.TrialState.FAIL)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """A row per trial: number, state, objective value, params, epochs, seconds, run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "value": None if t.value is None else round(float(t.value), 4),
                **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in t.params.items()},
                "epochs_trained": t.user_attrs.get("epochs_done"),
                "seconds": round(float(t.user_attrs["train_seconds"]), 1) if "train_seconds" in t.user_attrs else None,
                "run": t.user_attrs.get("run_url"),
                **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {}),
            }
        )
    return rows


def best_trial(study: Any) -> Any | None:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None
