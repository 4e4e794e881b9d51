"""One change to how Prefect's flow engine ends a run (applied when ``flows`` is imported).

Every flow run starts a heartbeat thread (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, 180 s by default: the events
that let a server mark a dead run as crashed). The thread sleeps in steps of one second, and the synchronous
engine joins it when the run ends, so every run waited up to a second (0.34 s in a profiled voxelize run, half
a second on average) after its work was done. The asynchronous engine already leaves the thread to stop on its
own (``join_on_exit=False``); this makes the synchronous one do the same. The thread still sends every
heartbeat while the run lives, and sends none after the run ends (it checks the stop flag before each).
"""

from __future__ import annotations

import inspect
from contextlib import _GeneratorContextManager
from typing import Any

import prefect.flow_engine as _engine

_prefect_send_heartbeats = _engine._send_heartbeats


def _send_heartbeats_unjoined(engine: Any, join_on_exit: bool = True) -> _GeneratorContextManager[None]:
    return _prefect_send_heartbeats(engine, join_on_exit=False)


def heartbeats_unjoined() -> bool:
    """Whether flow runs end without waiting for their heartbeat thread (False where this Prefect's engine
    has no such switch: it is then left as it is)."""
    return _engine._send_heartbeats is _send_heartbeats_unjoined


if "join_on_exit" in inspect.signature(_prefect_send_heartbeats).parameters:
    _engine._send_heartbeats = _send_heartbeats_unjoined
