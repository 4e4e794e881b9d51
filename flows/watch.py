"""watch-inbox: start the pipeline deployment for every new, ready, unprocessed scan batch in the inbox.

Runs on a cron schedule (deployments/prefect.yaml) and on the ``voxclust.scan-batch.arrived`` event
(``voxclust notify``), which names one batch. Never starts a batch twice, even when watchers overlap: see
``lib.voxels.inbox`` (manifest check, then a put-if-absent claim in the store, then a flow run created with an
idempotency key).
"""

from __future__ import annotations

from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from lib.settings import settings
from lib.voxels import inbox

BATCH_ARRIVED = "voxclust.scan-batch.arrived"


def _run_state(flow_run_id: str) -> str | None:
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(flow_run_id))
        except (ObjectNotFound, ValueError):
            return None
    return run.state.type.value if run.state is not None else None


@flow(name="watch-inbox")
def watch_inbox(
    inbox_url: str | None = None,
    store_url: str | None = None,
    batch_url: str | None = None,
    preset: str | None = None,
    methods: list[str] | None = None,
    settle_seconds: float | None = None,
) -> dict[str, Any]:
    """Start ``pipeline`` for each batch under ``inbox_url`` that is ready and not processed into
    ``store_url`` (both default to the settings ``VOXCLUST_INBOX_URL`` / ``VOXCLUST_STORE_URL``), or only
    for the batch at ``batch_url`` (an event names it; it counts as ready). Returns what happened to each."""
    log = get_run_logger()
    s = settings(
        inbox_url=inbox_url, store_url=store_url, preset=preset, methods=methods, settle_seconds=settle_seconds
    )
    if not s.store_url or not (s.inbox_url or batch_url):
        log.warning("no inbox or store configured (VOXCLUST_INBOX_URL, VOXCLUST_STORE_URL): nothing to watch")
        return {"started": [], "skipped": {}}
    if batch_url:
        batches = [inbox.describe_batch(batch_url)]
        ready = {b.name for b in batches if b.n_items}
    else:
        assert s.inbox_url is not None
        batches = inbox.list_inbox(s.inbox_url)
        ready = {b.name for b in batches if b.ready(s.settle_seconds)}
    done = inbox.processed(s.store_url, batches)
    started: list[dict[str, str]] = []
    skipped: dict[str, str] = {}
    for b in batches:
        if b.name not in ready:
            skipped[b.name] = "not ready (still changing, or empty)"
            continue
        if b.name in done:
            skipped[b.name] = "already processed"
            continue
        claim = inbox.try_claim(s.store_url, b, _run_state, max_attempts=s.max_attempts)
        if claim is None:
            skipped[b.name] = "claimed by another run"
            continue
        params = {
            "batch_url": b.url,
            "store_url": s.store_url,
            "batch_name": b.name,
            "preset": s.preset,
            "methods": s.methods,
        }
        run = cast(
            FlowRun,
            run_deployment(
                s.pipeline_deployment,
                parameters=params,
                flow_run_name=f"pipeline-{b.name}-{b.fingerprint[:8]}-{claim.attempt}",
                timeout=0,
                idempotency_key=claim.idempotency_key,
                tags=["voxclust", "inbox"],
            ),
        )
        inbox.record_run(s.store_url, claim, str(run.id), run.name)
        log.info("batch %s: started %s (%s)", b.name, run.name, run.id)
        started.append({"batch": b.name, "flow_run_id": str(run.id), "flow_run_name": run.name})
    for name, why in skipped.items():
        log.info("batch %s: %s", name, why)
    return {"started": started, "skipped": skipped}
