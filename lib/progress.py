"""Progress of long work, reported by flows and shown by whoever listens (the CLI draws progress bars).

Flows call :func:`emit`; it costs nothing when nobody listens (deployments, workers). Listeners run in the
process that runs the flow; work spread to Dask workers reports from the flow's own loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, float, float], None]
_listeners: list[Listener] = []


def emit(stage: str, done: float, total: float) -> None:
    """``done`` of ``total`` units of ``stage`` (e.g. "voxelize", items) are finished."""
    for fn in list(_listeners):
        fn(stage, done, total)


@contextmanager
def listen(fn: Listener) -> Iterator[None]:
    _listeners.append(fn)
    try:
        yield
    finally:
        _listeners.remove(fn)
