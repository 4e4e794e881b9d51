"""What every command shares: the consoles, the --json flag, one-line user errors, Prefect defaults."""

from __future__ import annotations

import os
import sys
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

    from lib.batch import BatchError
    from lib.importer import NpzImportError
    from lib.storage import StorageError
    from lib.store import StoreError

    user_errors: list[type[BaseException]] = [StorageError, StoreError, BatchError, NpzImportError, FileNotFoundError]
    try:
        yield
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        err.print(f"[red]error:[/red] {escape(where)}: {escape(first['msg'])}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except Exception as exc:
        # Errors of modules that are slow to import (torch, faiss) count only once those modules are loaded,
        # which they are whenever one of their errors was raised.
        for module, name in (
            ("lib.features.base", "MethodError"),
            ("lib.cluster", "ClusterError"),
            ("lib.compare", "CompareError"),
            ("lib.stack", "StackError"),
            ("lib.inbox", "InboxError"),
        ):
            if module in sys.modules:
                user_errors.append(getattr(sys.modules[module], name))
        if not isinstance(exc, tuple(user_errors)):
            raise
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
