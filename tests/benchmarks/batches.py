"""New batches benchmark: a second scan batch joins the groups of the first, on ModelNet10's point clouds.

Not collected by pytest. Run:

    .venv/bin/python tests/benchmarks/batches.py --pcd ../shared/data/modelnet10/pcd

Batch 1 is the train split of 8 classes (PCD files, as scans arrive), through the ``pipeline`` flow: it is
voxelized and compared (the ``quality`` preset's rows given by ``--methods``). Batch 2 is the test split of
those 8 classes plus the test split of the 2 held-out classes (``--held-out``), through the pipeline again:
it joins batch 1's clusters (``assign``). Then the grown store is re-clustered (``recluster=True``: the runs
are reused, the new report's ids matched to batch 1's). Labels are used for scoring only.

One final JSON line, ``{"methods": {name: {...}}}``, with exactly these keys per method:
``ids_unchanged`` (the share of batch-1 items whose cluster id the re-clustered report kept),
``nmi_assigned`` / ``nmi_reclustered`` (NMI of batch 2's items as assigned to batch 1's clusters and as
re-clustered), ``assign_s`` / ``recluster_s`` (wall seconds of the pipeline's assign path for batch 2,
voxelizing excluded, and of re-clustering the grown store), ``novelty_auroc`` (how well the novelty score
separates the held-out classes' items from the other batch-2 items) and ``similar_p_at_10`` (precision@10
of the nearest stored train items of each batch-2 test item of the 8 classes, by the method's embedding).
Details go to stderr. ``--per-class N`` keeps N files per class and split (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.support import offline_prefect  # noqa: E402

offline_prefect()

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from lib.compare.ids import read_previous  # noqa: E402
from lib.compare.publish import latest_report_url  # noqa: E402
from lib.compare.records import read_report  # noqa: E402
from lib.evaluation.metrics import nmi  # noqa: E402
from lib.features.runs import read_embedding  # noqa: E402
from lib.storage import open_storage  # noqa: E402
from lib.voxels.store import VoxelStore  # noqa: E402

CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


def stage(pcd: Path, out: Path, classes: list[str], split: str, per_class: int | None) -> int:
    """Copy ``classes``' ``split`` files into a batch folder (``<class>/<split>/<file>``, as scans arrive)."""
    n = 0
    for cls in classes:
        files = sorted((pcd / cls / split).glob("*.pcd"))[:per_class]
        (out / cls / split).mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, out / cls / split / f.name)
        n += len(files)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pcd", default=str(ROOT.parent / "shared" / "data" / "modelnet10" / "pcd"))
    ap.add_argument("--held-out", default="night_stand,toilet", help="classes only batch 2 brings")
    ap.add_argument("--methods", default="raw,autoencoder,deepcluster", help="rows of the quality preset")
    ap.add_argument("--per-class", type=int, default=None, help="files per class and split (smoke test)")
    ap.add_argument("--set", action="append", default=[], help="row.option=value (JSON), e.g. autoencoder.epochs=1")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()

    from flows.pipeline import pipeline
    from flows.runners import prefect_api
    from lib.compare.rows import CompareConfig

    held = [c.strip() for c in args.held_out.split(",") if c.strip()]
    known = [c for c in CLASSES if c not in held]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    work = Path(args.work or tempfile.mkdtemp(prefix="voxclust-batches-"))
    pcd = Path(args.pcd)
    b1, b2, store_url = work / "b1", work / "b2", str(work / "store")
    n1 = stage(pcd, b1, known, "train", args.per_class)
    n2 = stage(pcd, b2, known, "test", args.per_class) + stage(pcd, b2, held, "test", args.per_class)
    print(f"batch 1: {n1} files, batch 2: {n2} files, work {work}", file=sys.stderr, flush=True)
    overrides: dict[str, dict[str, Any]] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        row, _, option = key.partition(".")
        overrides.setdefault(row, {})[option] = json.loads(value)

    import lib.compare.rows as rows_module

    # the quality preset's rows, with any --set overrides (the pipeline resolves rows by name)
    preset = [e for e in rows_module.PRESETS["quality"] if e.name in methods]
    rows_module.PRESETS["batches"] = [
        e.model_copy(update={"options": {**e.options, **overrides.get(e.name, {})}}) for e in preset
    ]
    config = CompareConfig(k=len(known), tsne=False)  # batch 1 holds 8 classes: 8 groups
    with prefect_api():
        t = time.perf_counter()
        pipeline(str(b1), store_url, preset="batches", methods=methods, config=config)
        print(f"batch 1 compared in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        first_report = latest_report_url(store_url)
        t = time.perf_counter()
        second = pipeline(str(b2), store_url, preset="batches", methods=methods, config=config)
        batch2_s = time.perf_counter() - t
        assert "assign" in second, "batch 2 was re-clustered instead of assigned"
        assign_s = _last_task_seconds("assign-batch")
        print(f"batch 2 through the pipeline in {batch2_s:.0f} s", file=sys.stderr, flush=True)
        t = time.perf_counter()
        pipeline(str(b2), store_url, preset="batches", methods=methods, config=config, recluster=True)
        recluster_s = time.perf_counter() - t  # batch 2 is stored already: voxelizing skips every file
        again_report = latest_report_url(store_url)

    store = VoxelStore.open(store_url)
    recs = store.items()
    classes = store.index().classes
    label = {int(r.row): classes[r.label] for r in recs}
    batch_of = {int(r.row): r.batch for r in recs}
    rows2 = sorted(r for r, b in batch_of.items() if b == "b2")
    rows1 = sorted(r for r, b in batch_of.items() if b == "b1")
    first, again = open_storage(first_report), open_storage(again_report)
    tests8 = [r for r in rows2 if label[r] in known]
    out: dict[str, dict[str, Any]] = {}
    for m in read_report(first).methods:
        if not m.ok or m.run_url is None:
            print(f"{m.name}: {m.error}", file=sys.stderr)
            continue
        before, after = read_previous(first, m.name), read_previous(again, m.name)
        assert before is not None and after is not None
        assigned = first.read_json(f"assigned/{m.name}.json")["items"]
        ids2 = [assigned[str(r)]["cluster"] for r in rows2]
        novelty = [assigned[str(r)]["novelty"] for r in rows2]
        y2 = [label[r] for r in rows2]
        out[m.name] = {
            "ids_unchanged": round(float(np.mean([before.ids_by_row[r] == after.ids_by_row[r] for r in rows1])), 4),
            "nmi_assigned": round(nmi(y2, ids2), 4),
            "nmi_reclustered": round(nmi(y2, [after.ids_by_row[r] for r in rows2]), 4),
            "assign_s": round(assign_s, 1),
            "recluster_s": round(recluster_s, 1),
            "novelty_auroc": round(float(roc_auc_score([y in held for y in y2], novelty)), 4),
            "similar_p_at_10": round(_precision_at_10(m.run_url, label, rows1, tests8), 4),
        }
        print(m.name, json.dumps(out[m.name]), file=sys.stderr, flush=True)
    print(json.dumps({"methods": out}))


def _last_task_seconds(name: str) -> float:
    """Wall seconds of the latest finished task run called ``name`` (Prefect's own record of it)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    async def read() -> float:
        async with get_client() as client:
            runs = await client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)))
            done = [r for r in runs if r.end_time is not None]
            last = max(done, key=lambda r: r.end_time.timestamp() if r.end_time else 0.0)
            return float(last.total_run_time.total_seconds())

    return asyncio.run(read())


def _precision_at_10(run_url: str, label: dict[int, str], train_rows: list[int], test_rows: list[int]) -> float:
    """Share of each test item's 10 nearest train items (Euclidean, in the run's embedding) of its class."""
    x, rows, _ = read_embedding(run_url, "all")
    pos = {int(r): i for i, r in enumerate(rows)}
    train = np.array([pos[r] for r in train_rows if r in pos])
    test = [r for r in test_rows if r in pos]
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(x[train], dtype=np.float32))
    _, near = index.search(np.ascontiguousarray(x[[pos[r] for r in test]], dtype=np.float32), 10)
    train_labels = np.array([label[int(rows[i])] for i in train])
    return float(np.mean(train_labels[near] == np.array([label[r] for r in test])[:, None]))


if __name__ == "__main__":
    main()
