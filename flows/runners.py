"""Task runners and the Prefect API they report to.

* ``dask_runner``: a Dask LocalCluster by default, or an existing scheduler by address. Its workers report to
  the flow's Prefect API whatever cluster they belong to (:class:`ReportingDaskTaskRunner`).
* ``prefect_api``: with no ``PREFECT_API_URL`` configured, Prefect would start a temporary server in the
  flow process *and another in every Dask worker process* (about 25 s each, and the workers' task runs
  would land in a database nobody sees; a worker killed with SIGKILL leaves its server running). This starts
  one temporary server, which dies with the process that started it however that process ends, and points
  this process and the workers at it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import dask
from distributed.diagnostics.plugin import Environ, WorkerPlugin
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from lib.processes import die_with_parent
from lib.settings import settings


def dask_runner(address: str | None = None, n_workers: int | None = None) -> DaskTaskRunner:
    """A task runner for ``address`` (e.g. ``tcp://10.0.0.5:8786``; also ``VOXCLUST_DASK_ADDRESS``), else a
    LocalCluster of ``n_workers`` single-threaded worker processes (default: one per core). Both also come
    from the settings (environment, config file)."""
    address = address or settings().dask_address or None
    if address:
        return ReportingDaskTaskRunner(address=address)
    return ReportingDaskTaskRunner(cluster_kwargs=local_cluster_kwargs(n_workers))


def run_flow(flow_: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run a flow in this process; its result (a dict) with the flow run's id under ``flow_run_id``, so that a
    caller can link to the run in the Prefect UI."""
    state = flow_(*args, return_state=True, **kwargs)
    result: dict[str, Any] = dict(state.result())
    result["flow_run_id"] = str(state.state_details.flow_run_id)
    return result


def ui_run_link(result: dict[str, Any]) -> str | None:
    """The Prefect UI page of ``result``'s flow run, when this process reports to a configured Prefect API (a
    server that outlives the command); None under a temporary API, whose links die with the command."""
    from prefect.settings import PREFECT_UI_URL

    run_id = result.get("flow_run_id")
    if not run_id or not PREFECT_API_URL.value():
        return None
    ui = PREFECT_UI_URL.value()
    return f"{str(ui).rstrip('/')}/runs/flow-run/{run_id}" if ui else None


def flow_api_url() -> str:
    """The Prefect API this process reports to (a temporary server's when none is configured)."""
    configured = PREFECT_API_URL.value()
    if configured:
        return str(configured)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # in ephemeral mode: the process's temporary server
        return str(client.api_url)


def worker_environ() -> dict[str, str]:
    """What every Dask worker of a flow needs in its environment: the flow's API URL, and no temporary
    server of its own (a worker that somehow lacks the URL fails with Prefect's error instead of starting one
    that nobody sees and that a killed worker would leave behind), and what they print in a terminal."""
    environ = {"PREFECT_API_URL": flow_api_url(), "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false"}
    # Under the CLI (voxclust.common) workers print only errors themselves: a worker writes to the terminal
    # past the progress bars; its records still go to the Prefect API.
    level = os.environ.get("VOXCLUST_WORKER_LOG_LEVEL")
    if level:
        environ |= {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": level, "DASK_LOGGING__DISTRIBUTED": level.lower()}
    return environ


class WorkerEnviron(Environ):
    """Sets the variables for the worker processes a nanny starts from now on (restarted ones included),
    without restarting running workers (a shared cluster's other work goes on)."""

    restart = False


class RunningWorkerEnviron(WorkerPlugin):
    """Sets the variables in running worker processes, for Prefect code they import from now on."""

    def __init__(self, environ: dict[str, str]) -> None:
        self.environ = environ

    def setup(self, worker: Any) -> None:
        os.environ.update(self.environ)


class ReportingDaskTaskRunner(DaskTaskRunner):
    """A DaskTaskRunner whose workers report to the flow's Prefect API whatever cluster they belong to.

    Dask's nanny starts worker processes with an environment of its own, not the flow process's (measured:
    a LocalCluster started under ``PREFECT_API_URL`` gave its workers none), so a LocalCluster gets the
    variables of :func:`worker_environ` through its nannies, and an existing cluster through plugins that set
    them in its running workers and in every worker its nannies start later."""

    @property
    def client(self) -> Any:
        if self._client is None:
            environ = worker_environ()
            if self.address is None and self._cluster is None:
                self.cluster_kwargs = {**self.cluster_kwargs, "env": {**self.cluster_kwargs.get("env", {}), **environ}}
            client = super().client
            if self.address is not None:
                client.register_plugin(WorkerEnviron(environ), name="voxclust-environ")
                client.register_plugin(RunningWorkerEnviron(environ), name="voxclust-running-environ")
            return client
        return super().client


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


_SWAP = threading.Lock()


def _server_class() -> type[Any]:
    """Prefect's temporary API server, started so that it ends with this process (a SIGKILLed CLI run would
    otherwise leave it running: Prefect's own stops it only from an exit handler)."""
    import subprocess
    import sys

    import prefect.server.api.server as server_module
    from prefect.server.api.server import SubprocessASGIServer

    if not sys.platform.startswith("linux"):
        return SubprocessASGIServer

    class ParentBoundServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            # Prefect's method builds the command and calls its module's ``subprocess.Popen``: that one call
            # gets the pre-exec hook (the module's name is swapped back at once).
            def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
                return subprocess.Popen(*args, preexec_fn=die_with_parent, **kwargs)  # type: ignore[call-overload]

            with _SWAP:
                server_module.subprocess = SimpleNamespace(**{**vars(subprocess), "Popen": popen})  # type: ignore[assignment]
                try:
                    return super()._run_uvicorn_command()
                finally:
                    server_module.subprocess = subprocess

    return ParentBoundServer


@contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the Prefect API URL in use, starting one shared temporary server when none is configured."""
    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    server = _server_class()()
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
