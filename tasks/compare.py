"""Prefect task wrappers for the comparison (logic in lib.compare)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lib.compare import assign, evaluate
from lib.compare import publish as report_folder
from lib.compare.records import MethodResult
from lib.compare.rows import CompareConfig, MethodEntry
from lib.threads import limit_threads


@task(name="evaluate-method", tags=["gpu"], retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def evaluate_method(
    data_url: str,
    entry: MethodEntry,
    run_url: str,
    out_url: str,
    config: CompareConfig,
    threads: int | None = None,
    index: int = 0,
) -> MethodResult:
    """Embed (when stale), cluster, score and draw one method (its ``index``-th seed's run: scored only when
    above 0), with at most ``threads`` CPU threads; returns its report record."""
    with limit_threads(threads):
        return evaluate.evaluate_method(data_url, entry, run_url, out_url, config, index)


@task(name="assign-batch", tags=["gpu"], retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def assign_batch(data_url: str, batches: list[str] | None, methods: list[str] | None) -> dict[str, Any]:
    """Place the items of ``batches`` in the latest report's clusters; per method the clusters they joined
    and how many are novel, as table rows."""
    report_url, found = assign.assign(data_url, batches, methods)
    rows = [assign.summary_row(a, batches) for a in found]
    return {"report_url": report_url, "rows": rows}


@task(name="publish-report", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish(data_url: str, out_url: str, records: list[MethodResult], config: CompareConfig) -> dict[str, Any]:
    return report_folder.publish(data_url, out_url, records, config)
