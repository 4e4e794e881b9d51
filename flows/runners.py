"""Task runners and the Prefect API they report to.

* ``dask_runner``: a Dask LocalCluster by default, or an existing scheduler by address.
* ``prefect_api``: with no ``PREFECT_API_URL`` configured, Prefect would start a temporary server in the
  flow process *and another in every Dask worker process* (about 25 s each, and the workers' task runs
  would land in a database nobody sees). This starts one temporary server and points this process and
  the workers it spawns at it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from lib.settings import settings


def dask_runner(address: str | None = None, n_workers: int | None = None) -> DaskTaskRunner:
    """DaskTaskRunner for ``address`` (e.g. ``tcp://10.0.0.5:8786``; also ``VOXCLUST_DASK_ADDRESS``), else a
    LocalCluster of ``n_workers`` single-threaded worker processes (default: one per core). Both also come
    from the settings (environment, config file)."""
    address = address or settings().dask_address or None
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(n_workers))


def local_cluster_kwargs(n_workers: int | None = None) -> dict[str, Any]:
    """LocalCluster settings: ``n_workers`` single-threaded processes (``VOXCLUST_DASK_WORKERS``, else one per
    core).

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand memory back after
    every large temporary: the voxelizer (mesh subdivision) then runs 1.8x slower (measured: 4.6 s -> 8.3 s
    for 64 meshes; any explicit threshold, even a large one, costs 1.4x). The workers we start keep the
    allocator's default. Dask's statistical profiler (a stack sample of the task thread every 10 ms) costs
    another 8% and is turned off. For workers of your own, start them with ``DASK_CONFIG=infra/dask`` (a
    config file with both settings; an environment variable cannot unset the first).
    """
    dask.config.set(
        {
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
            "distributed.worker.profile.enabled": False,
        }
    )
    n = n_workers or settings().dask_workers or os.cpu_count() or 1
    return {"n_workers": n, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}


def _drain_prefect_workers(timeout_s: float = 15.0) -> None:
    """Send queued logs and events before the server they go to stops (else the process hangs retrying)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s, at_exit=False)


def dask_worker_threads() -> int:
    """Worker threads of the Dask cluster the current flow runs on (the CPU count when not on Dask).

    Asking the flow's task runner connects it (or starts its LocalCluster) now rather than at the first
    submit."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = ctx.task_runner if ctx is not None else None
    if isinstance(runner, DaskTaskRunner):
        return max(1, sum(runner.client.nthreads().values()))
    return os.cpu_count() or 1


@contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the Prefect API URL in use, starting one shared temporary server when none is configured."""
    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url  # inherited by spawned Dask workers
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        _drain_prefect_workers()
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before
        server.stop()
