"""One trial: an ordinary run of the run engine (checkpointed, resumable) with the trial's options, its
objective reported to the study after every epoch so that the pruner can stop it early."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from lib.tune.study import TuneSpec, load_study, renew, trial_id


class TrialRequest(BaseModel):
    """What a worker needs to train trial ``number`` (small and picklable: it travels to Dask workers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: TuneSpec
    number: int
    values: dict[str, Any]
    owner: dict[str, Any]

    @property
    def options(self) -> dict[str, Any]:
        return {**self.spec.space.options(self.values), "seed": self.spec.seed}

    @property
    def run_url(self) -> str:
        return self.spec.trial_run_url(self.number)


def run_trial(request: TrialRequest, threads: int | None = None) -> dict[str, Any]:
    """Train (or train on) the trial's run epoch by epoch, reporting the objective after each; stop when the
    pruner says so. Returns ``number``, ``state`` (complete, pruned, fail), ``value``, ``run_url``,
    ``epochs_done``, ``train_seconds`` and, for a failure, ``error``. Training errors (a diverging lr) end the
    trial as failed, not the search."""
    from lib.features.base import MethodError
    from lib.features.runs import RunRequest, Session, create_run
    from lib.threads import limit_threads
    from lib.tune.objective import epoch_value
    from lib.voxels.records import Region

    spec = request.spec
    out: dict[str, Any] = {"number": request.number, "run_url": request.run_url}
    t0 = time.perf_counter()
    with limit_threads(threads):
        study = load_study(spec)
        tid = trial_id(study, request.number)
        trial = _trial(study, tid)
        run = RunRequest(
            method=spec.method,
            data_url=spec.data_url,
            options=request.options,
            region=Region(split="auto"),
            run_url=request.run_url,
            device=spec.device,
        )
        value: float | None = None
        try:
            ref = create_run(run)
            session = Session(ref.run_url)
            reported = set(study._storage.get_trial(tid).intermediate_values)
            last = int(session.ckpt["epochs_done"]) - 1
            if last >= 0 and last not in reported:
                # Killed between storing an epoch and reporting it: the state is that epoch's, report it now.
                value = epoch_value(session, spec.objective, spec.k, spec.seed)
                trial.report(value, last)
            for epoch in range(session.ckpt["epochs_done"], ref.epochs):
                session.prepare(epoch)
                session.train(epoch)
                value = epoch_value(session, spec.objective, spec.k, spec.seed)
                if epoch not in reported:
                    trial.report(value, epoch)
                renew(study, tid, request.owner)
                if epoch + 1 < ref.epochs and trial.should_prune():
                    return {**out, **_done(session), "state": "pruned", "value": value}
            if value is None:  # trained before (a resumed trial that had finished its epochs) or nothing to train
                value = epoch_value(session, spec.objective, spec.k, spec.seed)
            return {**out, **_done(session), "state": "complete", "value": value}
        except MethodError as exc:
            return {
                **out,
                "state": "fail",
                "value": None,
                "error": str(exc),
                "epochs_done": None,
                "train_seconds": time.perf_counter() - t0,
            }


def _trial(study: Any, tid: int) -> Any:
    import optuna

    return optuna.trial.Trial(study, tid)


def _done(session: Any) -> dict[str, Any]:
    seconds = sum(h.get("train_seconds", 0.0) + h.get("prepare_seconds", 0.0) for h in session.history)
    return {"epochs_done": int(session.ckpt["epochs_done"]), "train_seconds": float(seconds)}
