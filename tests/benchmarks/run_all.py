"""Every stage benchmark in one run, and one final JSON line with every figure and target.

Not collected by pytest. Run (2 cores: about 2 hours with the defaults, most of it the end-to-end stage):

    .venv/bin/python tests/benchmarks/run_all.py [--stages voxelize,loader,kmeans,train,e2e,scaling] [--out DIR]

Each stage is its own script in this folder, runnable alone, and runs here as a child process, one after
another (never side by side: each measures both sides of its ratio in one run on an otherwise idle
machine). Each script's last stdout line is its JSON; its whole output goes to ``DIR/<stage>.log`` and
the JSON to ``DIR/<stage>.json``. ``--quick`` passes small sizes to every stage (a smoke test of the
wiring, not a measurement).

The final line holds ``targets`` (each figure against the issue's target, with ``met``) and every stage's
figures under its name.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

STAGES: dict[str, tuple[str, list[str], list[str]]] = {
    # name: (script, arguments, --quick arguments)
    "voxelize": (
        "voxelize.py",
        ["--repeats", "3", "--skip-cold"],
        ["--repeats", "1", "--skip-cold", "--meshes", "28", "--pcd-limit", "200"],
    ),
    "loader": ("loader.py", [], ["--trials", "1", "--method", "deepcluster"]),
    "kmeans": ("kmeans.py", [], ["--seeds", "2"]),
    "train": ("train_step.py", [], ["--items", "128", "--repeats", "1"]),
    "e2e": ("e2e.py", [], ["--quick"]),
    "scaling": ("scaling.py", [], ["--runs", "70:1,140:1,140:2"]),
}


def targets(fig: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the measured figure."""
    out: dict[str, Any] = {}

    def put(name: str, value: Any, target: str, met: bool) -> None:
        out[name] = {"value": value, "target": target, "met": bool(met)}

    v = fig.get("voxelize", {})
    for kind in ("mesh", "pcd"):
        key = "overhead_ratio" if kind == "mesh" else "pcd_overhead_ratio"
        if key in v:
            put(f"voxelize_{kind}_flow_vs_bare", v[key], ">= 0.85", v[key] >= 0.85)
    if "loader_epoch_ratio" in fig.get("loader", {}):
        r = fig["loader"]["loader_epoch_ratio"]
        put("loader_store_vs_memory", r, ">= 0.90", r >= 0.90)
    k = fig.get("kmeans", {})
    if "kmeans_min_speedup" in k:
        put("kmeans_speedup_vs_sklearn", k["kmeans_min_speedup"], ">= 5", k["kmeans_min_speedup"] >= 5)
        put("kmeans_nmi_not_worse", k["kmeans_nmi_not_worse"], "true", k["kmeans_nmi_not_worse"])
    t = fig.get("train", {})
    for key, value in t.items():
        if key.startswith("train_") and key.endswith("_ratio") and key != "train_min_ratio":
            put(key, value, ">= 0.9", value >= 0.9)
    e = fig.get("e2e", {})
    if "e2e_wall_s" in e:
        minutes = round(e["e2e_wall_s"] / 60, 1)
        put("e2e_minutes", minutes, "<= 60", minutes <= 60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from: {', '.join(STAGES)}")
    ap.add_argument("--out", type=Path, default=None, help="folder for each stage's log and JSON")
    ap.add_argument("--quick", action="store_true", help="small sizes: checks the wiring, measures nothing")
    ap.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="STAGE=ARGS",
        help="replace a stage's arguments, e.g. scaling='--runs 1000:1,1000:2'",
    )
    ap.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="STAGE=FILE",
        help="take a stage's figures from the JSON it printed in an earlier run instead of running it (the "
        "final line marks it with reused_from)",
    )
    args = ap.parse_args()
    override = {k: shlex.split(v) for k, _, v in (a.partition("=") for a in args.args)}
    reuse = {k: Path(v) for k, _, v in (a.partition("=") for a in args.reuse)}
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="voxclust-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "quick": args.quick}
    started = time.perf_counter()
    for name in stages:
        if name in reuse:
            result = json.loads(reuse[name].read_text().strip().splitlines()[-1])
            result["reused_from"] = str(reuse[name])
            print(f"== {name}: reused {reuse[name]}", file=sys.stderr, flush=True)
            figures[name] = result
            continue
        script, normal, quick = STAGES[name]
        cmd = [sys.executable, str(HERE / script), *override.get(name, quick if args.quick else normal)]
        print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        with open(out_dir / f"{name}.log", "w") as log:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        try:
            result = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
        except json.JSONDecodeError:
            result = None
        if result is None:
            result = {"error": f"exit {proc.returncode}; see {out_dir / (name + '.log')}"}
        result["stage_seconds"] = round(time.perf_counter() - t, 1)
        (out_dir / f"{name}.json").write_text(json.dumps(result))
        print(f"== {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
        figures[name] = result
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({"targets": targets(figures), **figures}))


if __name__ == "__main__":
    main()
