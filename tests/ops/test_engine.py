"""flows.engine: a flow run ends without waiting for its heartbeat thread, which still stops on its own."""

from __future__ import annotations

import threading
import time

from prefect import flow

from flows.engine import heartbeats_unjoined


@flow(name="engine-probe")
def _probe() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.ident is not None}


def test_flow_runs_end_without_joining_their_heartbeat_thread(prefect_api: str) -> None:
    assert heartbeats_unjoined()  # on the pinned Prefect; a version without the switch would show here
    # Thread objects, not idents: an earlier test's heartbeat thread (unjoined, so still alive now) may end
    # during the probe and its ident be given to the new one.
    before = set(threading.enumerate())
    during = _probe()
    heartbeat = [t for t in threading.enumerate() if t.ident in during and t not in before and t.name.endswith("(run)")]
    assert len(heartbeat) == 1, [t.name for t in threading.enumerate()]
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in heartbeat) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(t.is_alive() for t in heartbeat), "the heartbeat thread outlived its run by 5 s"
