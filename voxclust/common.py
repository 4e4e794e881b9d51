"""What every command shares: the consoles, the --json flag, one-line user errors, Prefect defaults, and a
quiet terminal (library log records through the consoles, WARNING and above unless ``--verbose``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import click
import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

AsJson = Annotated[bool, typer.Option("--json", help="print the result as JSON")]

# Log records shown in the terminal: WARNING and above unless --verbose (or the setting ``verbose``) asks for
# INFO. The Prefect API (the UI) still gets every record: only the console handlers are set.
_verbose = False
_lasting_api = False  # PREFECT_API_URL names a server that outlives the command (links to it stay alive)


def set_verbose(verbose: bool) -> None:
    """For the command being run (in-process callers get the quiet default back when it ends)."""
    global _verbose
    _verbose = verbose
    _on_close(lambda: set_verbose(False))


def console_log_level() -> str:
    return "INFO" if _verbose else "WARNING"


_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class ConsoleLogHandler(logging.Handler):
    """Prints log records through the rich console the progress bars use, so a record is written above the
    live display instead of on a bar's line. Messages are printed as text (no markup, no highlighting).

    Prefect builds its console handler from this class too (``PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS``, set
    by :func:`prefect_defaults`), so a handler Prefect configures later prints the same way; ``stream`` and
    ``styles`` are Prefect's handler settings, not used here. Under a temporary Prefect API, Prefect's
    "View at http://..." records are dropped: the link dies with the command."""

    def __init__(
        self,
        console: Console | None = None,
        level: int | str = logging.NOTSET,
        stream: Any = None,
        styles: Any = None,
    ) -> None:
        super().__init__(level)
        self.console = console or err

    def filter(self, record: logging.LogRecord) -> bool:
        if not _lasting_api and str(record.msg).startswith("View at "):
            return False
        if not _verbose and record.levelno >= logging.ERROR and record.name.startswith(_RUN_LOGGERS):
            # A failed flow or task run: its exception reaches the command, which reports it (one line for a
            # user's mistake, the traceback for a bug); Prefect's records of it would say it again.
            return False
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:
            self.handleError(record)


def _on_close(undo: Callable[[], None]) -> None:
    """Run ``undo`` when the current command ends (in-process callers such as tests get their state back)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(undo)


def _set_env(values: dict[str, str]) -> None:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)

    def undo() -> None:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    _on_close(undo)


def _route_library_logs() -> None:
    """Replace Prefect's console handlers (which write to the stream they were given, past rich's live
    display) with one that prints through :data:`err` at the console level."""
    from prefect.logging.handlers import PrefectConsoleHandler

    global _lasting_api
    from prefect.settings import PREFECT_API_URL

    level = console_log_level()
    _lasting_api = bool(PREFECT_API_URL.value())  # read before a temporary API is started
    loggers = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    swapped: list[tuple[logging.Logger, logging.Handler, logging.Handler]] = []
    mine: dict[int, ConsoleLogHandler] = {}
    for logger in loggers:
        for handler in list(logger.handlers):
            if not isinstance(handler, PrefectConsoleHandler | ConsoleLogHandler):
                continue
            if isinstance(handler, ConsoleLogHandler):
                handler.setLevel(level)
                continue
            new = mine.get(id(handler))
            if new is None:
                new = mine[id(handler)] = ConsoleLogHandler(err, level)
                new.setFormatter(handler.formatter)
                for f in handler.filters:
                    new.addFilter(f)
            logger.removeHandler(handler)
            logger.addHandler(new)
            swapped.append((logger, handler, new))

    def undo() -> None:
        for logger, old, new in swapped:
            logger.removeHandler(new)
            logger.addHandler(old)

    _on_close(undo)


def prefect_defaults() -> None:
    """Offline-safe Prefect defaults, unless the user set them, and log records in the terminal only at the
    console level, printed through the rich console (Dask workers this process starts print only errors)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    level = console_log_level()
    _set_env(
        {
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": level,
            "PREFECT_LOGGING_HANDLERS_CONSOLE_CLASS": f"{__name__}.{ConsoleLogHandler.__name__}",
            "DASK_LOGGING__DISTRIBUTED": level.lower(),
            # Dask workers write to the terminal directly, past the bars: errors only (flows.runners).
            "VOXCLUST_WORKER_LOG_LEVEL": "ERROR",
        }
    )
    _route_library_logs()


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
def flow_session(progress: bool = True) -> Iterator[None]:
    """What a command that runs flows sets up once: Prefect's defaults and the terminal's logging, one
    temporary Prefect API for every flow it runs (none when ``PREFECT_API_URL`` names a server), and the
    progress bars (``progress``: off for --json)."""
    prefect_defaults()
    from flows.runners import prefect_api

    with prefect_api(), progress_bars(progress):
        yield


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
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
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
