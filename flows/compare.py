"""compare-methods: train or reuse each method's run, evaluate every method, publish the report as artifacts."""

from __future__ import annotations

import math
import re
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect import runtime as prefect_runtime
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.futures import PrefectFuture, as_completed

from flows.features import train_features
from lib.compare.evaluate import failed_record
from lib.compare.publish import new_report_url
from lib.compare.records import MethodResult
from lib.compare.rows import CompareConfig, MethodEntry, current_run, default_entries, seeded_entry
from lib.compare.spread import combine_seeds
from lib.features.base import MethodError
from lib.features.runs import RunRequest
from lib.progress import emit
from lib.report.markdown import render_markdown
from lib.report.table import rounded_rows, table_rows, verdict_text
from lib.settings import settings
from lib.storage import open_storage
from lib.threads import cpu_share
from lib.voxels.records import Region
from tasks.compare import evaluate_method, publish
from tasks.features import train_method


def _key(*parts: str) -> str:
    """An artifact key: lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def train_deployment() -> str | None:
    """The deployment that trains, or None to train in this process.

    ``train_handoff`` (setting ``VOXCLUST_TRAIN_HANDOFF``): ``auto`` hands training to the
    ``train_deployment`` (``train-features/train``, on the ``gpu`` pool) when this flow runs under a
    deployment (itself or a parent flow), and trains in-process when run ad hoc; ``deployment`` always hands
    off; ``inprocess`` never does."""
    s = settings()
    if s.train_handoff == "inprocess" or (s.train_handoff == "auto" and prefect_runtime.deployment.id is None):
        return None
    return s.train_deployment


def _request(entry: MethodEntry, data_url: str, run_url: str, device: str) -> RunRequest:
    """What training ``entry``'s run means (on the store's default region)."""
    return RunRequest(method=entry.method, data_url=data_url, options=entry.options, run_url=run_url, device=device)


def _train(entry: MethodEntry, data_url: str, run_url: str, device: str) -> str | None:
    """Train (or resume) ``entry``'s run; None when it finished, else why not."""
    request = _request(entry, data_url, run_url, device)
    target = train_deployment()
    if target is not None:
        params = {
            "request": request.model_dump(mode="json"),
            "embed_region": Region(split="all").model_dump(mode="json"),
        }
        try:
            run = cast(
                FlowRun,
                run_deployment(target, parameters=params, flow_run_name=f"train-{entry.name}", poll_interval=3),
            )
        except ObjectNotFound:
            if settings().train_handoff == "deployment":
                return f"deployment {target!r} not found"
            get_run_logger().warning("deployment %s not found: training %s in this process", target, entry.name)
        else:
            if run.state is not None and run.state.is_completed():
                return None
            return f"flow run {run.name} ({run.id}) ended {run.state.name if run.state else 'without a state'}"
    state = train_features(request, Region(split="all"), return_state=True)
    return None if state.is_completed() else str(state.result(raise_on_failure=False))


Jobs = list[list[MethodEntry]]  # per row, the entry of each seed's run (seeded_entry)


def _jobs(entries: list[MethodEntry], seeds: int) -> Jobs:
    def row(entry: MethodEntry) -> list[MethodEntry]:
        try:
            return [seeded_entry(entry, i) for i in range(seeds)]
        except MethodError:  # an unknown method: its one record says so
            return [entry]

    return [row(e) for e in entries]


def _train_one_by_one(
    data_url: str, jobs: Jobs, out_url: str, cfg: CompareConfig, device: str, train: bool
) -> list[list[MethodResult]]:
    log = get_run_logger()
    trained: dict[str, str | None] = {}  # run URL -> why its training failed (None: it finished)
    records: list[list[MethodResult]] = []
    for r, seeded in enumerate(jobs):
        emit("compare methods", r, len(jobs))
        row: list[MethodResult] = []
        for i, entry in enumerate(seeded):
            try:
                run_url, note = current_run(data_url, entry, None if train else math.inf)
            except MethodError as exc:
                row.append(failed_record(entry, str(exc)))
                continue
            if note:
                log.info(note)
            if train:
                if run_url not in trained:  # a method that does not train has one run for all its seeds
                    trained[run_url] = _train(entry, data_url, run_url, device)
                error = trained[run_url]
                if error is not None:
                    row.append(failed_record(entry, f"training failed: {error}", run_url))
                    log.warning("%s: training failed: %s", entry.name, error)
                    continue
            rec = evaluate_method(data_url, entry, run_url, out_url, cfg, None, i)
            if not rec.ok:
                log.warning("%s: %s", entry.name, rec.error)
            row.append(rec.model_copy(update={"note": note}) if note else rec)
        records.append(row)
    return records


def _train_side_by_side(
    data_url: str, jobs: Jobs, out_url: str, cfg: CompareConfig, device: str, workers: int
) -> list[list[MethodResult]]:
    """Every training as a task on the flow's task runner (queued seed by seed, rows in order), each run's
    evaluations submitted when its training ends; records in ``jobs`` order."""
    log = get_run_logger()
    threads = settings().train_threads or cpu_share(workers)
    log.info("training up to %d runs side by side, %d CPU thread(s) each", workers, threads)
    records: dict[tuple[int, int], MethodResult] = {}
    notes: dict[tuple[int, int], str] = {}  # why a run is a new one (the store grew)
    waiting: dict[str, list[tuple[int, int, MethodEntry]]] = {}  # run URL -> the jobs that score it
    for i in range(max(len(seeded) for seeded in jobs) if jobs else 0):
        for r, seeded in enumerate(jobs):
            if i >= len(seeded):
                continue
            try:
                run_url, note = current_run(data_url, seeded[i])
            except MethodError as exc:
                records[r, i] = failed_record(seeded[i], str(exc))
                continue
            if note:
                log.info(note)
                notes[r, i] = note
            waiting.setdefault(run_url, []).append((r, i, seeded[i]))
    trainings: dict[PrefectFuture[Any], str] = {}
    for run_url, scored in waiting.items():
        entry = scored[0][2]
        request = _request(entry, data_url, run_url, device)
        index = scored[0][1]
        name = f"train-{entry.name}" + (f"-seed{entry.options.get('seed')}" if index else "")
        fut = train_method.with_options(task_run_name=name).submit(request, threads)
        trainings[fut] = run_url
    evaluations: dict[tuple[int, int], PrefectFuture[Any]] = {}
    for fut in as_completed(list(trainings)):
        run_url = trainings[fut]
        try:
            fut.result()
        except Exception as exc:  # the task's own error (after its retries)
            for r, i, entry in waiting[run_url]:
                records[r, i] = failed_record(entry, f"training failed: {exc}", run_url)
            log.warning("%s: training failed: %s", waiting[run_url][0][2].name, exc)
            continue
        for r, i, entry in waiting[run_url]:
            evaluations[r, i] = evaluate_method.submit(data_url, entry, run_url, out_url, cfg, threads, i)
        emit("compare methods", len(evaluations), sum(len(s) for s in jobs))
    for (r, i), ev in evaluations.items():
        try:
            records[r, i] = ev.result()
        except Exception as exc:
            records[r, i] = failed_record(jobs[r][i], f"evaluation failed: {exc}")
        if not records[r, i].ok:
            log.warning("%s: %s", jobs[r][i].name, records[r, i].error)
        if (r, i) in notes:
            records[r, i] = records[r, i].model_copy(update={"note": notes[r, i]})
    return [[records[r, i] for i in range(len(seeded))] for r, seeded in enumerate(jobs)]


@flow(name="compare-methods")
def compare_methods(
    data_url: str,
    methods: list[MethodEntry] | None = None,
    config: CompareConfig | None = None,
    train: bool = True,
    device: str = "auto",
    report_url: str | None = None,
    artifact_prefix: str = "voxclust-compare",
    train_workers: int | None = None,
) -> dict[str, Any]:
    """Compare feature methods on the voxel store at ``data_url`` (default: every registered method).

    With ``train`` each method's run (``<store>/runs/<name>-<hash>``) is trained or resumed by the
    train-features flow; without, only finished runs are evaluated. A method that fails is reported as
    failed and the rest of the report is produced. Artifacts use stable keys under ``artifact_prefix``.

    ``train_workers`` (default: setting ``VOXCLUST_TRAIN_WORKERS``, 1) above 1 trains that many methods side
    by side when training in-process: each run is one ``train-method`` task on this flow's task runner (give
    it a Dask runner with that many single-threaded workers, as ``voxclust compare --train-workers`` does),
    each with its share of the cores (``VOXCLUST_TRAIN_THREADS``), and each method is evaluated as soon as
    its training ends.
    """
    log = get_run_logger()
    cfg = config or CompareConfig()
    entries = methods or default_entries()
    out_url = report_url or new_report_url(data_url)
    workers = train_workers or settings().train_workers
    jobs = _jobs(entries, cfg.seeds)
    if train and workers > 1 and train_deployment() is None:
        seeded = _train_side_by_side(data_url, jobs, out_url, cfg, device, workers)
    else:
        seeded = _train_one_by_one(data_url, jobs, out_url, cfg, device, train)
    records = combine_seeds(seeded)

    emit("compare methods", len(entries), len(entries))
    result = publish(data_url, out_url, records, cfg)
    rep = result["report"]
    out = open_storage(out_url)
    html = out.browser_url("report.html")
    rows = table_rows(rep)
    create_table_artifact(rounded_rows(rows), key=_key(artifact_prefix, "table"), description="metrics per method")
    create_markdown_artifact(
        render_markdown(rep, {"HTML report": html, "assignments (CSV)": out.browser_url("assignments.csv")}),
        key=_key(artifact_prefix, "summary"),
        description="comparison summary",
    )
    create_link_artifact(html, link_text="comparison report (HTML)", key=_key(artifact_prefix, "report"))
    for name in result["images"]:
        create_image_artifact(out.browser_url(name), key=_key(artifact_prefix, name.removesuffix(".png")))
    log.info("report: %s", result["html_url"])
    return {
        "report_url": out_url,
        "html_url": result["html_url"],
        "csv_url": result["csv_url"],
        "best_method": rep["best_method"],
        "best_methods": rep["best_methods"],
        "verdict": verdict_text(rep),
        "seeds": rep["seeds"],
        "scored_split": rep["scored_split"],
        "n_items": rep["n_items"],
        "rows": rows,
    }


def run_compare(
    data_url: str,
    entries: list[MethodEntry] | None,
    config: CompareConfig | None = None,
    device: str = "auto",
    train_workers: int | None = None,
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Run ``compare-methods`` ad hoc, training ``train_workers`` methods side by side (default: the setting)
    on a Dask runner (``dask_address``, else a LocalCluster of that many single-threaded workers)."""
    from flows.runners import dask_runner, run_flow

    workers = settings(train_workers=train_workers).train_workers
    flow_ = compare_methods
    if workers > 1:
        flow_ = compare_methods.with_options(task_runner=dask_runner(dask_address, workers))  # type: ignore[arg-type]
    return run_flow(flow_, data_url, entries, config, True, device, train_workers=workers)
