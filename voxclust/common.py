"""What every command shares: the consoles, the --json flag, one-line user errors, Prefect defaults."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

AsJson = Annotated[bool, typer.Option("--json", help="print the result as JSON")]


def prefect_defaults() -> None:
    """Offline-safe Prefect defaults, unless the user set them."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@contextmanager
def user_errors() -> Iterator[None]:
    """User mistakes end as one line on stderr and exit code 2, not a traceback."""
    from pydantic import ValidationError
    from rich.markup import escape

    from lib.errors import VoxclustError

    try:
        yield
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        err.print(f"[red]error:[/red] {escape(where)}: {escape(first['msg'])}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (VoxclustError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[None]:
    """Draw a bar on stderr for each stage the flows in this process report (``lib.progress``)."""
    if not enabled:
        yield
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lib.progress import listen

    bars: dict[str, Any] = {}
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    )

    def update(stage: str, done: float, total: float) -> None:
        if not bars:
            progress.start()  # only once there is something to show: no stray output otherwise
        if stage not in bars:
            bars[stage] = progress.add_task(stage, total=total)
        progress.update(bars[stage], completed=done, total=total)

    try:
        with listen(update):
            yield
    finally:
        if bars:
            progress.stop()
