"""What a person sees in a real terminal: the CLI under a pseudo-terminal, its output rendered by a terminal
emulator (pyte), so that a log record written past rich's live display would show on a progress bar's line."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pyte
import pytest

from tests.support import offline_prefect

VOXCLUST = str(Path(sys.executable).with_name("voxclust"))
COLS, ROWS = 100, 400  # tall enough that nothing scrolls off the emulated screen


def _in_a_terminal(args: list[str], cwd: Path, timeout_s: float = 240.0) -> tuple[int, list[str]]:
    """Run ``voxclust args`` with a pseudo-terminal as stdin, stdout and stderr; the screen it leaves."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOXCLUST_", "PREFECT_API_URL", "COLUMNS"))}
    env |= {"TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [VOXCLUST, *args], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, start_new_session=True
    )
    os.close(slave)
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                stream.feed(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"voxclust {' '.join(args)} ran past {timeout_s} s")
        rc = proc.wait(timeout=30)
    finally:
        os.close(master)
    return rc, [line.rstrip() for line in screen.display if line.strip()]


BAR = "━"
RECORD = (" | INFO ", " | WARNING ", "Task run '", "Flow run '", "distributed.")


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    offline_prefect()
    from lib.scans.demo import write_demo_batch

    root = tmp_path_factory.mktemp("terminal")
    write_demo_batch(str(root / "batch"), n_per_class=2, seed=0)
    return root


def test_by_default_the_terminal_shows_bars_and_a_summary_only(batch: Path) -> None:
    rc, lines = _in_a_terminal(["voxelize", "batch", "--store", "quiet", "--workers", "1"], batch)
    text = "\n".join(lines)
    assert rc == 0, text
    assert any(BAR in ln and "voxelize batch" in ln and "14/14" in ln for ln in lines), text
    assert not any(marker in text for marker in RECORD), text
    assert "View at http" not in text and "127.0.0.1" not in text, text  # no link to the temporary API
    assert "batch batch: 14 items" in text and "voxel store" in text
    assert len(lines) <= 20, text


def test_verbose_records_are_printed_above_the_bars_never_on_them(batch: Path) -> None:
    rc, lines = _in_a_terminal(["-v", "voxelize", "batch", "--store", "verbose", "--workers", "1"], batch)
    text = "\n".join(lines)
    assert rc == 0, text
    records = [ln for ln in lines if any(marker in ln for marker in RECORD)]
    assert len(records) >= 5, text  # --verbose shows INFO records (the flow's, Dask's)
    bars = [ln for ln in lines if BAR in ln]
    assert bars, text
    for ln in bars:
        assert not any(marker in ln for marker in RECORD), ln  # a record written into a bar's line
        assert ln.split(BAR)[0].strip() == "voxelize batch", ln
    assert "View at http" not in text  # the temporary API's links die with the command: not printed
