"""tune: a Bayesian search over a method's options, each trial a ``tune-trial`` task on the task runner
(side by side on Dask workers), the study in a database; artifacts and a report when it ends."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture, wait

from lib.progress import emit
from lib.threads import cpu_share
from lib.tune.report import finish
from lib.tune.study import TuneSpec, ask, counts, open_study, owner, renew, take_over_stale, tell, trial_id
from lib.tune.trial import TrialRequest
from tasks.tune import run_trial

LEASE_EVERY_S = 30.0


@flow(name="tune")
def tune(spec: TuneSpec, parallel: int = 1) -> dict[str, Any]:
    """Run ``spec``'s search until its study holds ``spec.trials`` finished trials, ``parallel`` at a time.

    A stopped search of the same study resumes: its stale trials are trained on from their checkpoints
    before new ones are asked for (see :mod:`lib.tune.study`)."""
    log = get_run_logger()
    study = open_study(spec)
    me = owner()
    threads = cpu_share(parallel)
    resumed = take_over_stale(study, spec)
    if resumed:
        log.info("resuming trial(s) %s of study %s", [n for n, _ in resumed], spec.study_name)
    in_flight: dict[PrefectFuture[Any], int] = {}

    def finished() -> int:
        c = counts(study)
        return c.get("complete", 0) + c.get("pruned", 0) + c.get("fail", 0)

    while True:
        while len(in_flight) < parallel:
            asked = resumed.pop(0) if resumed else ask(study, spec)
            if asked is None:
                break
            number, values = asked
            request = TrialRequest(spec=spec, number=number, values=values, owner=me)
            fut = run_trial.with_options(task_run_name=f"trial-{number}").submit(request, threads)
            in_flight[fut] = number
            log.info("trial %d: %s", number, values)
        emit("tune trials", finished(), spec.trials)
        if not in_flight:
            break
        done, _ = wait(list(in_flight), timeout=LEASE_EVERY_S)
        for fut in done:
            number = in_flight.pop(fut)
            try:
                result = fut.result()
            except Exception as exc:  # the task's own error after its retry: the trial failed, the search goes on
                result = {"number": number, "state": "fail", "error": f"{type(exc).__name__}: {exc}"}
            tell(study, result)
            log.info("trial %d %s: %s", number, result["state"], result.get("value", result.get("error")))
        for number in in_flight.values():
            renew(study, trial_id(study, number), me)
    emit("tune trials", finished(), spec.trials)

    summary = finish(spec, study)
    key = f"tune-{spec.study_name}".lower().replace("_", "-").replace(".", "-")
    create_table_artifact(summary["trials"], key=f"{key}-trials", description=f"trials of study {spec.study_name}")
    best = summary["best"]
    lines = [f"# Tune {spec.method}: study {spec.study_name}", "", f"objective: {spec.objective} (maximised)"]
    if best:
        lines += [
            f"best: trial {best['trial']}, {best['value']:.4f}, options `{best['params']}`",
            f"held-out: {summary['test']}",
            f"use: `{summary['use']}` or `{summary['set_flags']}`",
        ]
    create_markdown_artifact("\n".join(lines), key=f"{key}-summary", description="search summary")
    create_link_artifact(summary["html_url"], link_text="search report (HTML)", key=f"{key}-report")
    return summary


def run_tune(spec: TuneSpec, workers: int = 1, dask_address: str | None = None) -> dict[str, Any]:
    """Run ``tune`` ad hoc: ``workers`` trials side by side on a Dask runner (``dask_address``, else a
    LocalCluster of that many single-threaded workers); one at a time in this process otherwise."""
    from flows.runners import dask_runner, run_flow

    flow_ = tune
    if workers > 1 or dask_address:
        flow_ = tune.with_options(task_runner=dask_runner(dask_address, workers))  # type: ignore[arg-type]
    return run_flow(flow_, spec, workers)
