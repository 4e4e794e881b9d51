"""Operations commands: the local stack, deploying, and handing new scan batches to the deployments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from voxclust.common import AsJson, err, out, prefect_defaults, user_errors

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STACK = Path(os.environ.get("VOXCLUST_HOME", "voxclust-data")) / "stack"

stack_app = typer.Typer(
    help="Start, stop and inspect the local stack on 127.0.0.1: Prefect server + UI, S3 (SeaweedFS), Dask, workers.",
    no_args_is_help=True,
)
StackDir = Annotated[
    Path, typer.Option("--dir", envvar="VOXCLUST_STACK_DIR", help="stack folder: pids, logs, env file")
]


def _print_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(status))
        return
    if not status["components"]:
        out.print(f"no stack running from {escape(str(status['dir']))}", soft_wrap=True, highlight=False)
        return
    out.print(f"voxclust stack in {escape(str(status['dir']))}", soft_wrap=True, highlight=False)
    table = Table()
    for col in ("part", "pid", "state", "address / log"):
        table.add_column(col, overflow="fold")
    for name, c in status["components"].items():
        state = "running" if c["alive"] else "[red]stopped[/red]"
        if "healthy" in c and not c["healthy"]:
            state = "[yellow]unhealthy[/yellow]"
        if "online" in c:
            state += f" ({len(c['online'])} online)"
        table.add_row(name, str(c["pid"]), state, escape(str(c.get("url") or c["log"])))
    out.print(table)
    out.print(f"UI: [bold]{escape(status['ui_url'])}[/bold]", soft_wrap=True, highlight=False)
    env_file = escape(str(status["env_file"]))
    out.print(f"client settings: [bold]source {env_file}[/bold]", soft_wrap=True, highlight=False)


@stack_app.command("up")
def stack_up(
    directory: StackDir = DEFAULT_STACK,
    prefect_port: Annotated[int, typer.Option(help="Prefect server and UI port")] = 4200,
    s3_port: Annotated[int, typer.Option(help="local S3 server port (SeaweedFS uses the 9 above it too)")] = 9000,
    dask_port: Annotated[int, typer.Option(help="Dask scheduler port")] = 8786,
    dask_workers: Annotated[int, typer.Option(min=1, help="Dask worker processes (one thread each)")] = 2,
    bucket: Annotated[str, typer.Option(help="bucket for the inbox and the stores")] = "voxclust",
    auth: Annotated[
        str | None,
        typer.Option(envvar="VOXCLUST_STACK_AUTH", help="USER:PASSWORD basic auth for the Prefect server and UI"),
    ] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(help="use this S3 endpoint (MinIO, AWS) with the AWS_* credentials of this shell"),
    ] = None,
    scheduler_loop: Annotated[
        float | None, typer.Option(help="seconds between Prefect scheduler passes (server default 60)")
    ] = None,
    worker_env: Annotated[
        list[str] | None, typer.Option("--env", help="KEY=VALUE for the workers (e.g. VOXCLUST_PRESET=demo)")
    ] = None,
    postgres: Annotated[
        bool, typer.Option(help="also start PostgreSQL for `voxclust tune` studies (Debian's postgresql package)")
    ] = False,
    postgres_port: Annotated[int, typer.Option(help="PostgreSQL port")] = 5432,
    as_json: AsJson = False,
) -> None:
    """Start the whole local stack and wait until every part answers."""
    from voxclust.stack import Stack, StackConfig, StackError

    with user_errors():
        extra: dict[str, str] = {}
        for pair in worker_env or []:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--env")
            extra[key] = value
        if auth is not None and ":" not in auth:
            raise StackError("--auth must be USER:PASSWORD")
        cfg = StackConfig(
            dir=directory,
            prefect_port=prefect_port,
            s3_port=s3_port,
            dask_port=dask_port,
            dask_workers=dask_workers,
            bucket=bucket,
            auth=auth,
            s3_endpoint=s3_endpoint,
            scheduler_loop_s=scheduler_loop,
            env=extra,
            postgres=postgres,
            postgres_port=postgres_port,
        )
        with err.status("starting the stack (S3, Prefect server, Dask, workers)..."):
            status = Stack(directory).up(cfg)
        _print_status(status, as_json)


@stack_app.command("down")
def stack_down(directory: StackDir = DEFAULT_STACK) -> None:
    """Stop every part of the stack (logs stay in the folder)."""
    from voxclust.stack import Stack

    stopped = Stack(directory).down()
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
def stack_status(directory: StackDir = DEFAULT_STACK, as_json: AsJson = False) -> None:
    """Each part's pid, state and address; exit code 1 when a part is down."""
    from voxclust.stack import Stack

    status = Stack(directory).status()
    _print_status(status, as_json)
    if not status["running"]:
        raise typer.Exit(1)


def _prefect_server(stack: Path | None, command: str) -> None:
    """Point this process at the Prefect server (the local stack's, when given) or fail: ``command`` needs one."""
    from voxclust.stack import Stack, StackError

    if stack is not None:
        os.environ.update(Stack(stack).env())
    prefect_defaults()
    if not os.environ.get("PREFECT_API_URL"):
        raise StackError(f"{command} needs a Prefect server: set PREFECT_API_URL (or pass --stack)")


StackOpt = Annotated[
    Path | None, typer.Option("--stack", help="take the Prefect and S3 settings from this local stack folder")
]


def deployments_file(given: Path | None) -> Path:
    """The deployments file: ``given``, else ``deployments/prefect.yaml`` in the working folder, else the one of
    a source checkout this package runs from (an installed package has none: then say so)."""
    if given is not None:
        if not given.is_file():
            raise FileNotFoundError(f"{given}: no such deployments file")
        return given
    for candidate in (Path("deployments/prefect.yaml"), ROOT / "deployments" / "prefect.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "no deployments file: run from a voxclust checkout (deployments/prefect.yaml) or pass --file"
    )


def deploy(
    prefect_file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="the deployments file (default: deployments/prefect.yaml here, else in the checkout)"
        ),
    ] = None,
    stack: StackOpt = None,
) -> None:
    """Create or update every deployment of deployments/prefect.yaml on the Prefect server (PREFECT_API_URL)."""
    with user_errors():
        _prefect_server(stack, "deploy")
        prefect_file = deployments_file(prefect_file)
        prefect = Path(sys.executable).with_name("prefect")
        cmd = [str(prefect), "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file.absolute())]
        done = subprocess.run(cmd, cwd=prefect_file.absolute().parents[1], check=False)
        if done.returncode:
            err.print(f"[red]error:[/red] prefect deploy exited with code {done.returncode}")
            raise typer.Exit(done.returncode)


def notify(
    batch_url: Annotated[str, typer.Argument(help="the batch that arrived: a folder or s3:// prefix")],
    name: Annotated[str | None, typer.Option(help="batch name (default: last URL part)")] = None,
    stack: StackOpt = None,
    as_json: AsJson = False,
) -> None:
    """Emit the voxclust.scan-batch.arrived event: the watch-inbox deployment's trigger starts its pipeline."""
    with user_errors():
        _prefect_server(stack, "notify")
        from lib.voxels.inbox import InboxError, describe_batch

        batch = describe_batch(batch_url, name)
        if not batch.n_items:
            raise InboxError(f"{batch_url}: the batch holds no scan files")
        from prefect.events import emit_event
        from prefect.events.worker import EventsWorker

        from flows.watch import BATCH_ARRIVED

        event = emit_event(
            event=BATCH_ARRIVED,
            resource={"prefect.resource.id": f"voxclust.scan-batch.{batch.name}", "prefect.resource.name": batch.name},
            payload={"batch_url": batch.url, "fingerprint": batch.fingerprint, "items": batch.n_items},
        )
        EventsWorker.drain_all(timeout=30)
        result = {"event": BATCH_ARRIVED, "id": str(event.id) if event else None, "batch": batch.name}
        if as_json:
            out.print_json(json.dumps(result))
        else:
            out.print(f"sent {BATCH_ARRIVED} for batch {escape(batch.name)} ({batch.n_items} files)", highlight=False)


def watch(
    inbox_url: Annotated[str | None, typer.Option("--inbox", help="inbox URL (setting inbox_url)")] = None,
    store_url: Annotated[str | None, typer.Option("--store", help="voxel store (setting store_url)")] = None,
    batch_url: Annotated[str | None, typer.Option("--batch", help="only this batch")] = None,
    settle_seconds: Annotated[float | None, typer.Option(help="a batch is ready when unchanged this long")] = None,
    stack: StackOpt = None,
    as_json: AsJson = False,
) -> None:
    """Run the inbox watcher once, here: start the pipeline deployment for every new, ready batch."""
    with user_errors():
        _prefect_server(stack, "watch")
        from prefect.exceptions import ObjectNotFound

        from flows.watch import watch_inbox
        from lib.voxels.inbox import InboxError

        try:
            result = watch_inbox(inbox_url, store_url, batch_url, settle_seconds=settle_seconds)
        except ObjectNotFound:
            raise InboxError("the pipeline deployment is missing: run `voxclust deploy` first") from None
        if as_json:
            out.print_json(json.dumps(result))
            return
        for run in result["started"]:
            out.print(f"started {escape(run['flow_run_name'])} for batch {escape(run['batch'])}", highlight=False)
        for batch, why in result["skipped"].items():
            out.print(f"skipped {escape(batch)}: {escape(why)}", highlight=False, soft_wrap=True)
        if not result["started"] and not result["skipped"]:
            out.print("the inbox is empty")
