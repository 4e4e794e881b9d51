"""Fault benchmark: the reliability scenarios of tests/voxels/test_reliability.py, tests/voxels/test_faults.py and
tests/scans/test_malformed.py at a larger scale, with repeated faults, against real parts (moto's S3 server in
its own process, a fault-injecting proxy in front of it, Dask LocalClusters, a temporary Prefect server).

Not collected by pytest. Run:  .venv/bin/python tests/benchmarks/faults.py [--per-class 72] [--rate 0.1]

Scenarios (each writes its own store; expected grids come from one clean run of the same batch):
  s3_faults      the whole batch through the proxy (500/503, resets before and after the server acted,
                 delays) at ``--rate`` of requests
  worker_kills   a Dask worker process SIGKILLed every ``--kill-every`` seconds while the batch runs
  process_kills  the flow process (and its workers) SIGKILLed mid-batch twice, then run to completion
  concurrent     two batches voxelized into one S3 store at the same time, through the proxy
  malformed      every kind of tests/malformed.py mixed into one batch with good files
Then the Prefect API's logs, flow-run parameters and artifacts and every report file are scanned for the
S3 secret key.

Prints one final JSON line: {"bad_inputs_tried", "bad_inputs_contained", "faults_injected", "items_expected",
"items_stored_once", "items_lost", "items_duplicated", "secrets_leaked", "orphans_left" (processes the
scenarios left running: started during the benchmark, alive at its end, re-parented to init or carrying
its mark in their environment, not its own descendants),
...per-scenario figures (``worker_kills_flow_runs``: 1 when the killed batch completed in one flow run)}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support import grids_by_item, offline_prefect  # noqa: E402

offline_prefect()

VOXCLUST = str(Path(sys.executable).with_name("voxclust"))


def score(name: str, store_url: str, clean: dict[str, Any], prefix: str = "") -> dict[str, int]:
    """Items of ``clean`` (ids optionally re-prefixed) found once with the same grid, lost, duplicated."""
    import numpy as np

    have, seen = grids_by_item(store_url)
    once = lost = 0
    for item_id, grid in clean.items():
        key = prefix + item_id.split("/", 1)[1] if prefix else item_id
        if seen[key] == 1 and key in have and np.array_equal(have[key], grid):
            once += 1
        else:
            lost += 1
    dup = sum(n - 1 for n in seen.values() if n > 1)
    out = {"expected": len(clean), "stored_once": once, "lost": lost, "duplicated": dup}
    print(f"{name}: {out}", file=sys.stderr)
    return out


MARK = "VOXCLUST_FAULTS_RUN"  # in the environment of everything the benchmark starts (whatever inherits it)


def left_behind(since: float, mark: str) -> list[str]:
    """Orphans: processes started since ``since``, still running, not this process, one of its ancestors or
    descendants, that were re-parented to init (their parent was killed) or carry this run's mark. Other
    processes started on the machine meanwhile are not counted."""
    import psutil

    me = psutil.Process()
    mine = {me.pid} | {p.pid for p in me.parents()} | {p.pid for p in me.children(recursive=True)}
    out = []
    for p in psutil.process_iter(["pid", "ppid", "create_time", "cmdline"]):
        if p.info["create_time"] < since - 1 or p.info["pid"] in mine:
            continue
        try:
            marked = p.environ().get(MARK) == mark
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            marked = False
        if p.info["ppid"] == 1 or marked:
            out.append(f"{p.info['pid']}: {' '.join(p.info['cmdline'] or [])[:160]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=72, help="demo scans per class (7 classes): 72 -> 504")
    ap.add_argument("--rate", type=float, default=0.1, help="share of S3 requests that meet a fault")
    ap.add_argument("--kill-every", type=float, default=8.0, help="seconds between Dask worker kills")
    ap.add_argument("--skip-malformed", action="store_true", help="leave out the malformed-input scenario")
    args = ap.parse_args()

    from flows.runners import prefect_api
    from flows.voxelize import run_voxelize
    from lib.scans.demo import write_demo_batch
    from lib.storage import open_storage
    from tests.faultproxy import FaultProxy
    from tests.support import S3Server

    started = time.time()
    mark = os.environ.setdefault(MARK, f"{os.getpid()}-{started}")
    s3 = S3Server()
    os.environ.update(s3.env())
    secret = s3.env()["AWS_SECRET_ACCESS_KEY"]
    bucket = s3.new_bucket()
    tmp = Path(tempfile.mkdtemp(prefix="voxclust-faults-"))
    figures: dict[str, Any] = {}
    totals: Counter[str] = Counter()
    faults: Counter[str] = Counter()

    def add(name: str, result: dict[str, int]) -> None:
        figures[name] = result
        for k in ("expected", "stored_once", "lost", "duplicated"):
            totals[k] += result[k]

    try:
        with prefect_api() as api:
            batch = f"s3://{bucket}/inbox/big"
            write_demo_batch(batch, n_per_class=args.per_class, seed=9)
            t0 = time.monotonic()
            clean_url = str(tmp / "clean")
            run_voxelize(None, 2, batch_url=batch, store_url=clean_url, chunk_items=8)
            clean, _ = grids_by_item(clean_url)
            figures["clean_seconds"] = round(time.monotonic() - t0, 1)

            # -- S3 faults through the proxy
            with FaultProxy(s3.endpoint, rate=args.rate, delay_s=0.3, seed=1) as proxy:
                os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
                try:
                    url = f"s3://{bucket}/stores/s3-faults"
                    run_voxelize(None, 2, batch_url=batch, store_url=url, chunk_items=8)
                finally:
                    os.environ["AWS_ENDPOINT_URL"] = s3.endpoint
                faults.update({f"s3_{k}": v for k, v in proxy.injected.items()})
                figures["s3_requests"] = proxy.requests
            add("s3_faults", score("s3_faults", url, clean))

            # -- Dask workers killed again and again
            from distributed import Client, LocalCluster

            url = str(tmp / "worker-kills")
            done = threading.Event()
            errors: list[BaseException] = []
            kills = 0

            def run_killed(address: str) -> None:
                try:
                    result = run_voxelize(address, batch_url=batch, store_url=url, chunk_items=8, items_per_task=16)
                    figures["worker_kills_resubmitted"] = result["resubmitted"]
                except BaseException as exc:  # KilledWorker when a task group met too many kills even resubmitted
                    errors.append(exc)
                finally:
                    done.set()

            with (
                LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
                Client(cluster) as client,
            ):
                runner = threading.Thread(target=run_killed, args=(cluster.scheduler_address,))
                runner.start()
                while not done.wait(args.kill_every):
                    answers = client.run(os.getpid, on_error="return").values()  # a worker may die meanwhile
                    pids = sorted(pid for pid in answers if isinstance(pid, int))
                    if pids:
                        os.kill(pids[kills % len(pids)], signal.SIGKILL)
                        kills += 1
                runner.join()
            figures["worker_kills_flow_runs"] = 1 + bool(errors)
            if errors:  # the operator's (or the next watcher's) answer: run the batch again
                figures["worker_kills_rerun_after"] = repr(errors[0])[:200]
                run_voxelize(None, 2, batch_url=batch, store_url=url, chunk_items=8)
            faults["dask_worker_kills"] = kills
            add("worker_kills", score("worker_kills", url, clean))

            # -- the flow process killed mid-batch, twice, then run to the end
            url = str(tmp / "process-kills")
            env = {**os.environ, "PREFECT_API_URL": api}
            cmd = [VOXCLUST, "voxelize", batch, "--store", url, "--workers", "2", "--json"]
            storage = open_storage(url)
            for _ in range(2):
                before = len(grids_by_item(url)[0]) if storage.exists("manifest.json") else 0
                proc = subprocess.Popen(
                    cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
                )
                old = {o.key for o in storage.list("_commits")}  # a killed run's records, merged by the next
                deadline = time.monotonic() + 300
                while (
                    time.monotonic() < deadline
                    and proc.poll() is None  # a small batch may finish before 3 commits: nothing left to kill
                    and len({o.key for o in storage.list("_commits")} - old) < 3
                ):
                    time.sleep(0.05)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                faults["flow_process_kills"] += 1
                print(f"process kill: {before} stored before this run", file=sys.stderr)
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1800)
            add("process_kills", score("process_kills", url, clean))

            # -- two batches into one store at once, through the proxy
            other = f"s3://{bucket}/inbox/other"
            write_demo_batch(other, n_per_class=args.per_class // 2, seed=10)
            clean_other_url = str(tmp / "clean-other")
            run_voxelize(None, 2, batch_url=other, store_url=clean_other_url, chunk_items=8)
            clean_other, _ = grids_by_item(clean_other_url)
            with FaultProxy(s3.endpoint, rate=args.rate, delay_s=0.3, seed=2) as proxy:
                url = f"s3://{bucket}/stores/concurrent"
                env2 = {**env, "AWS_ENDPOINT_URL": proxy.endpoint}
                procs = [
                    subprocess.Popen(
                        [VOXCLUST, "voxelize", b, "--store", url, "--workers", "1", "--json"],
                        env=env2,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    for b in (batch, other)
                ]
                for p in procs:
                    _, err = p.communicate(timeout=1800)
                    if p.returncode:
                        print(err.decode()[-2000:], file=sys.stderr)
                faults.update({f"concurrent_s3_{k}": v for k, v in proxy.injected.items()})
            a = score("concurrent/big", url, clean)
            b = score("concurrent/other", url, clean_other)
            add("concurrent", {k: a[k] + b[k] for k in a} | {"duplicated": a["duplicated"]})

            # -- malformed inputs mixed with good files, on a local folder and on S3 through the proxy, 3 rounds
            from lib.voxels.store import FAILED, STORED, VoxelStore
            from tests import malformed

            bad_tried = bad_contained = 0
            good_expected = good_once = 0
            if not args.skip_malformed:
                with FaultProxy(s3.endpoint, rate=args.rate, delay_s=0.3, seed=4) as proxy:
                    for i in range(3):
                        for where in ("local", "s3"):
                            if where == "local":
                                mixed, url = str(tmp / f"mixed-{i}"), str(tmp / f"mixed-store-{i}")
                            else:
                                mixed, url = f"s3://{bucket}/inbox/mixed-{i}", f"s3://{bucket}/stores/mixed-{i}"
                            expected = malformed.write_mixed_batch(mixed, n_good=20, seed=i)
                            if where == "s3":
                                os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
                            try:
                                run_voxelize(None, 2, batch_url=mixed, store_url=url, **expected.flow_kwargs)
                            finally:
                                os.environ["AWS_ENDPOINT_URL"] = s3.endpoint
                            recs = VoxelStore.open(url).items(None)
                            seen = Counter(r.item_id for r in recs)
                            by_key = {r.item_id.split("/", 1)[1]: r for r in recs}
                            for key, entry in expected.bad.items():
                                rec = by_key.get(key)
                                bad_tried += 1
                                bad_contained += bool(
                                    rec
                                    and rec.status == FAILED
                                    and entry.reason in rec.reason
                                    and malformed.readable(rec.reason)
                                )
                            for key in expected.unlisted:
                                bad_tried += 1
                                bad_contained += key not in by_key
                            for key in expected.good:
                                good_expected += 1
                                rec = by_key.get(key)
                                good_once += bool(rec and rec.status == STORED and seen[rec.item_id] == 1)
                    faults.update({f"malformed_s3_{k}": v for k, v in proxy.injected.items()})
                add(
                    "malformed_good",
                    {
                        "expected": good_expected,
                        "stored_once": good_once,
                        "lost": good_expected - good_once,
                        "duplicated": 0,
                    },
                )

            # -- secrets: nothing the API holds or the stores hold carries the S3 secret key
            from voxclust.stack_parts import api_post

            leaked = 0
            for path, body in (("/logs/filter", {"limit": 200}), ("/flow_runs/filter", {}), ("/artifacts/filter", {})):
                offset = 0
                while True:
                    page = api_post(api, path, {**body, "offset": offset, "limit": 200})
                    leaked += sum(secret in json.dumps(x) for x in page)
                    if len(page) < 200:
                        break
                    offset += 200
            for f in tmp.rglob("*"):
                if f.is_file() and secret.encode() in f.read_bytes():
                    leaked += 1
            client = s3.client()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                    leaked += secret.encode() in body
    finally:
        s3.stop()
    time.sleep(2)  # processes told to stop have a moment to do so
    orphans = left_behind(started, mark)
    for line in orphans:
        print(f"left behind: {line}", file=sys.stderr)

    out = {
        "bad_inputs_tried": bad_tried,
        "bad_inputs_contained": bad_contained,
        "faults_injected": sum(faults.values()),
        "items_expected": totals["expected"],
        "items_stored_once": totals["stored_once"],
        "items_lost": totals["lost"],
        "items_duplicated": totals["duplicated"],
        "secrets_leaked": leaked,
        "orphans_left": len(orphans),
        "faults": dict(faults),
        "scenarios": figures,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
