"""The ``voxclust`` command line: the app, its global options, and the command groups of each room.

Every command takes storage URLs: a local path, ``file://...`` or ``s3://bucket/prefix`` (endpoint and
credentials from the standard AWS environment: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...); the voxel
store is ``--store`` in every command. Flows run over a Dask LocalCluster unless ``--dask-address`` (or
``VOXCLUST_DASK_ADDRESS``) names a scheduler, and report to the Prefect API in ``PREFECT_API_URL`` (a
temporary local one when unset). The terminal gets progress bars and a summary; library log records only at
WARNING and above unless ``--verbose``.

The commands live by room: :mod:`voxclust.store_commands` (the voxel store), :mod:`voxclust.train_commands`
(runs and tuning), :mod:`voxclust.compare_commands` (comparisons and what reads them), :mod:`voxclust.ops`
(the stack, deployments, the inbox).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from voxclust import compare_commands, ops, store_commands, train_commands
from voxclust.common import err, out, set_verbose, user_errors

app = typer.Typer(
    name="voxclust",
    help="Group 3D scans by shape, without labels: voxelize scan batches into a voxel store, train and compare "
    "feature methods on it, and publish the comparison.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(store_commands.app)
app.add_typer(train_commands.app)
app.add_typer(compare_commands.app)
app.add_typer(ops.stack_app, name="stack", short_help="Start, stop and inspect the local stack (Prefect, S3, Dask).")
app.command(short_help="Create or update the deployments on the Prefect server.")(ops.deploy)
app.command(short_help="Announce a new scan batch to the watch-inbox deployment.")(ops.notify)
app.command(short_help="Run the inbox watcher once: start a pipeline per new batch.")(ops.watch)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"voxclust {version('voxclust')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            dir_okay=False,
            exists=True,
            help="settings file (TOML); default ./voxclust.toml, else ~/.config/voxclust/config.toml",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also print library log records at INFO (setting verbose)")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Settings come from flags, then VOXCLUST_* environment variables, then the settings file."""
    if config is not None:
        os.environ["VOXCLUST_CONFIG"] = str(config)
    with user_errors():
        from lib.settings import settings

        set_verbose(verbose or settings().verbose)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
