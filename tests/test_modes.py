"""Files and folders voxclust writes on local storage get the modes ``open()`` and ``mkdir()`` give under the
user's umask: a demo store, its batch and a comparison report made by the real CLI in a child process with
umask 022 are readable by all, and with umask 077 by the user alone (the store lock and the tune database
too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Run with the umask under test (set in the child only: the umask is process-wide).
_CHILD = r"""
import json, os, stat, sys
from pathlib import Path

from lib.storage import open_storage
from lib.tune.study import default_storage
from lib.voxels.store import LOCK
from voxclust.cli import app

store, batch = sys.argv[1:]
for args in (
    ["demo", "--store", store, "--batch", batch, "--n-per-class", "1", "--workers", "1", "--no-compare"],
    ["compare", "--data", store, "--methods", "raw", "--no-tsne", "--device", "cpu"],
):
    assert not app(args, standalone_mode=False), args
default_storage(store)
with open_storage(store).lock(LOCK):
    held = {p.relative_to(store).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in Path(store, "_locks").iterdir()}
modes = {}
for top in (store, batch):
    for p in [Path(top), *Path(top).rglob("*")]:
        modes[p.as_posix()] = [p.is_dir(), stat.S_IMODE(p.lstat().st_mode)]
print(json.dumps({"held": held, "modes": modes}))
"""


def _made_under(umask: int, tmp_path: Path, prefect_api: str) -> tuple[dict[str, int], dict[str, list[int]]]:
    out = tmp_path / f"u{umask:03o}"
    out.mkdir()
    store, batch = out / "store", out / "batch"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": prefect_api, "NO_COLOR": "1"}
    env.pop("VOXCLUST_CONFIG", None)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(store), str(batch)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(umask),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return got["held"], got["modes"]


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_store_batch_and_report_follow_the_umask(
    prefect_api: str, tmp_path: Path, umask: int, file_mode: int, dir_mode: int
) -> None:
    held, modes = _made_under(umask, tmp_path, prefect_api)
    assert held == {"_locks/store.lock": file_mode}
    names = {p.split("/store/", 1)[-1] for p in modes}
    for name in ("manifest.json", "reports/latest.json", "tune/studies.db", "zarr.json"):
        assert name in names, (name, sorted(names))
    for part in ("manifest/", "runs/", "/checkpoint.pt", "/report.html", "/assignments.csv", "/batch/"):
        assert any(part in n for n in names), (part, sorted(names))
    wrong = {p: f"{m:o}" for p, (is_dir, m) in modes.items() if m != (dir_mode if is_dir else file_mode)}
    assert not wrong, wrong
