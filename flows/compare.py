"""compare-methods: train or reuse each method's run, evaluate every method, publish the report as artifacts."""

from __future__ import annotations

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

from flows.features import train_features
from lib import compare, report
from lib.compare import CompareConfig, MethodEntry
from lib.features.base import MethodError
from lib.features.runs import Region
from lib.progress import emit
from lib.settings import settings
from lib.storage import open_storage
from tasks.compare import evaluate_method, publish


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


def _train(entry: MethodEntry, data_url: str, run_url: str, device: str) -> str | None:
    """Train (or resume) ``entry``'s run; None when it finished, else why not."""
    target = train_deployment()
    if target is not None:
        params = {
            "method": entry.method,
            "data_url": data_url,
            "options": entry.options,
            "run_url": run_url,
            "device": device,
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
    state = train_features(
        entry.method, data_url, entry.options, None, run_url, device, Region(split="all"), return_state=True
    )
    return None if state.is_completed() else str(state.result(raise_on_failure=False))


@flow(name="compare-methods")
def compare_methods(
    data_url: str,
    methods: list[MethodEntry] | None = None,
    config: CompareConfig | None = None,
    train: bool = True,
    device: str = "auto",
    report_url: str | None = None,
    artifact_prefix: str = "voxclust-compare",
) -> dict[str, Any]:
    """Compare feature methods on the voxel store at ``data_url`` (default: every registered method).

    With ``train`` each method's run (``<store>/runs/<name>-<hash>``) is trained or resumed by the
    train-features flow; without, only finished runs are evaluated. A method that fails is reported as
    failed and the rest of the report is produced. Artifacts use stable keys under ``artifact_prefix``.
    """
    log = get_run_logger()
    cfg = config or CompareConfig()
    entries = methods or compare.default_entries()
    out_url = report_url or compare.new_report_url(data_url)
    records: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        emit("compare methods", i, len(entries))
        try:
            run_url = compare.run_url_for(data_url, entry)
        except MethodError as exc:
            records.append(compare.failed_record(entry, str(exc)))
            continue
        if train:
            error = _train(entry, data_url, run_url, device)
            if error is not None:
                records.append(compare.failed_record(entry, f"training failed: {error}", run_url))
                log.warning("%s: training failed: %s", entry.name, error)
                continue
        rec = evaluate_method(data_url, entry, run_url, out_url, cfg)
        if rec["status"] != "ok":
            log.warning("%s: %s", entry.name, rec["error"])
        records.append(rec)

    emit("compare methods", len(entries), len(entries))
    result = publish(data_url, out_url, records, cfg)
    rep = result["report"]
    out = open_storage(out_url)
    html = out.browser_url("report.html")
    rows = report.table_rows(rep)
    create_table_artifact(rows, key=_key(artifact_prefix, "table"), description="metrics per method")
    create_markdown_artifact(
        report.render_markdown(rep, {"HTML report": html, "assignments (CSV)": out.browser_url("assignments.csv")}),
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
        "rows": rows,
    }
