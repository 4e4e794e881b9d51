"""compare-methods end to end: runs trained or reused, every method clustered and scored, the report (JSON,
HTML with embedded images, CSV) written next to a store on real S3 (moto's server), the Prefect artifacts
read back through the API, and failures reported per method while the rest of the report is produced."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from lib.compare.evaluate import evaluate_method
from lib.compare.publish import export_csv, latest_report_url
from lib.compare.records import read_report
from lib.compare.rows import CompareConfig, CompareError, MethodEntry, discover_entries, resolve_entries, run_url_for
from lib.features.runs import Region, RunRequest, create_run, read_embedding, train_run
from lib.report.previews import decode_grid, read_previews
from lib.storage import open_storage
from lib.voxels.importer import import_npz
from lib.voxels.store import VoxelStore
from tests.support import assert_user_error, task_runs, write_npz
from voxclust.cli import app

PNG = b"\x89PNG\r\n\x1a\n"
TINY_DC = {"epochs": 2, "k": 6, "width": 4, "feature_dim": 16, "batch_size": 8}
FAST = CompareConfig(tsne_max_points=40, elbow_k_max=6, strip_members=3)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")


def _embedded_pngs(html: str) -> list[bytes]:
    parser = _Images()
    parser.feed(html)
    parser.close()
    assert parser.srcs, "the report has no images"
    out = []
    for src in parser.srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


def _artifacts(flow_run_id: Any) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> dict[str, Any]:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            )
            return {a.key: a for a in arts if a.key}

    return asyncio.run(read())


def test_compare_flow_on_s3_publishes_artifacts_and_a_self_contained_report(prefect_api: str, s3_store: str) -> None:
    from flows.compare import compare_methods

    entries = [
        MethodEntry(name="raw", method="raw"),
        MethodEntry(name="dc", method="deepcluster", options=TINY_DC),
        MethodEntry(name="too_many_k", method="deepcluster", options={**TINY_DC, "k": 500}),
    ]
    state = compare_methods(s3_store, entries, FAST, device="cpu", return_state=True)  # type: ignore[call-arg]
    result = state.result()

    rows = {r["name"]: r for r in result["rows"]}
    assert rows["raw"]["status"] == "ok" and rows["dc"]["status"] == "ok"
    assert rows["too_many_k"]["status"] == "failed" and "k=500" in rows["too_many_k"]["error"]
    assert 0.0 <= rows["raw"]["nmi"] <= 1.0 and rows["raw"]["n_clusters"] == 3  # k = classes
    assert result["best_method"] in ("raw", "dc")

    out = open_storage(result["report_url"])
    rep = out.read_json("report.json")
    assert rep["labelled"] and rep["classes"] == ["box", "ball", "rod"]
    assert rep["scored_split"] == "all"  # 12 test items: too few to judge by, all 59 are scored
    dc = next(m for m in rep["methods"] if m["name"] == "dc")
    assert set(dc["metrics"]) == {"train", "test", "all"}
    assert dc["metrics"]["test"]["n_items"] == 12 and dc["metrics"]["train"]["n_items"] == 47
    assert sum(dc["metrics"]["all"]["sizes"]) == 59 and (dc["knee"] is None or isinstance(dc["knee"], int))
    assert [h["epoch"] for h in dc["history"]] == [0, 1] and "nmi_previous" in dc["history"][1]
    assert {"contingency", "pca", "tsne", "tsne_clusters", "strips"} <= set(dc["images"])
    assert read_report(out).model_dump(mode="json") == rep  # report.json reads back as a valid Report

    html = out.read_bytes("report.html").decode()
    pngs = _embedded_pngs(html)
    assert all(p.startswith(PNG) for p in pngs)
    assert "k=500" in html and "http" not in html.replace("http-equiv", "")  # nothing to fetch

    with io.StringIO(out.read_bytes("assignments.csv").decode()) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(VoxelStore.open(s3_store).items())
    assert set(table[0]) == {"item_id", "row", "split", "label", "raw", "dc"}
    assert latest_report_url(s3_store) == result["report_url"]
    assert export_csv(s3_store) == out.read_bytes("assignments.csv").decode()

    arts = _artifacts(state.state_details.flow_run_id)
    assert arts["voxclust-compare-table"].type == "table"
    assert arts["voxclust-compare-summary"].type == "markdown" and "dc" in arts["voxclust-compare-summary"].data
    link = arts["voxclust-compare-report"]  # Prefect stores a link artifact as markdown: [text](url)
    assert link.type == "markdown" and "report.html" in link.data and "comparison report (HTML)" in link.data
    images = [a for a in arts.values() if a.type == "image"]
    assert any(a.key == "voxclust-compare-elbow" for a in images)
    assert any(a.key == "voxclust-compare-dc-tsne" for a in images)
    for art in images[:3]:  # presigned URLs of the S3 objects, which a browser (here: urllib) can open
        import urllib.request

        with urllib.request.urlopen(art.data, timeout=10) as resp:
            assert resp.read().startswith(PNG)


def test_runs_are_reused_and_report_rerenders_without_training(prefect_api: str, tmp_path: Path) -> None:
    from flows.compare import compare_methods

    store = str(tmp_path / "store")
    import_npz(write_npz(tmp_path / "t.npz"), store, classes=["box", "ball", "rod"])
    entry = MethodEntry(name="dc", method="deepcluster", options=TINY_DC)
    first = compare_methods(store, [entry], FAST, device="cpu")
    x1, _, _ = read_embedding(run_url_for(store, entry), "all")
    again = compare_methods(store, [entry], FAST, device="cpu", return_state=True)  # type: ignore[call-arg]
    names = [n for n, _ in _task_runs_recursive(again.state_details.flow_run_id)]
    assert not any(n.startswith(("train-epoch", "prepare-epoch")) for n in names)
    x2, _, _ = read_embedding(run_url_for(store, entry), "all")
    np.testing.assert_array_equal(x1, x2)
    assert again.result()["rows"] == first["rows"]

    assert [e.name for e in discover_entries(store)] == ["dc"]
    runner = CliRunner()
    res = runner.invoke(app, ["report", "--store", store, "--no-tsne"], env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "dc" in res.stdout and "report.html" in res.stdout
    res = runner.invoke(app, ["export", "--store", store, "--out", str(tmp_path / "a.csv")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a.csv").read_text().splitlines()[0] == "item_id,row,split,label,dc"


def _task_runs_recursive(flow_run_id: Any) -> list[tuple[str, list[str]]]:
    """Task runs of a flow run and of its subflow runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def children() -> list[Any]:
        async with get_client() as client:
            subs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
            )
            return [s.id for s in subs]

    out = list(task_runs(flow_run_id))
    for child in asyncio.run(children()):
        out.extend(task_runs(child))
    return out


def test_evaluate_reports_nan_embeddings_and_too_large_k(tiny_store: str, tmp_path: Path) -> None:
    import zarr

    entry = MethodEntry(name="raw", method="raw")
    run_url = str(tmp_path / "run")
    create_run(RunRequest(method="raw", data_url=tiny_store, options={}, run_url=run_url, device="cpu"))
    out = str(tmp_path / "out")
    rec = evaluate_method(tiny_store, entry, run_url, out, CompareConfig(k=500, tsne=False))
    assert rec.status == "failed" and "k=500" in str(rec.error)

    group = zarr.open_group(open_storage(run_url).zarr_store(), mode="a")
    arr = group["all"]
    assert isinstance(arr, zarr.Array)
    bad = np.asarray(arr[:])
    bad[3, 0] = np.nan
    arr[:] = bad
    rec = evaluate_method(tiny_store, entry, run_url, out, CompareConfig(tsne=False))
    assert rec.status == "failed" and "NaN" in str(rec.error)

    missing = evaluate_method(tiny_store, entry, str(tmp_path / "nothing"), out, CompareConfig(tsne=False))
    assert missing.status == "failed" and "not trained" in str(missing.error)


def test_unlabelled_store_uses_the_knee(unlabelled_store: str, tmp_path: Path) -> None:
    entry = MethodEntry(name="raw", method="raw")
    run_url = str(tmp_path / "run")
    create_run(RunRequest(method="raw", data_url=unlabelled_store, options={}, run_url=run_url, device="cpu"))
    rec = evaluate_method(unlabelled_store, entry, run_url, str(tmp_path / "out"), FAST)
    assert rec.status == "ok", rec.error
    assert set(rec.metrics) == {"all"} and rec.metrics["all"].nmi is None
    assert rec.k == (rec.knee or 10) and "contingency" not in rec.images
    # the thumbnails' members, by item id, and their grids for the report's 3D views
    assert rec.previews and sum(c.size for c in rec.central_members) == rec.n_items
    assert all(0 < len(c.items) <= FAST.strip_members for c in rec.central_members)
    grids = read_previews(open_storage(str(tmp_path / "out")).read_bytes(rec.previews))
    store = VoxelStore.open(unlabelled_store)
    row = {r.item_id: r.row for r in store.items()}
    assert set(grids) == {i for c in rec.central_members for i in c.items}
    assert all((decode_grid(g) == store.read([row[i]])[0]).all() for i, g in grids.items())
    assert rec.metrics["all"].silhouette is not None
    unit = evaluate_method(
        unlabelled_store, entry, run_url, str(tmp_path / "out2"), FAST.model_copy(update={"whiten": True, "l2": True})
    )
    assert unit.status == "ok" and unit.metrics["all"].inertia <= (unit.n_items or 0)  # unit rows


def test_resolve_entries_and_run_locations(tiny_store: str) -> None:
    assert [e.name for e in resolve_entries()] == [
        "raw", "voxnet", "vrn", "autoencoder", "deepcluster", "triplet", "softtriple", "simclr", "scan",
    ]  # fmt: skip
    quality = resolve_entries(["raw", "softtriple_supervised", "triplet"], "quality", {"triplet": {"epochs": 1}})
    assert quality[1].options["mode"] == "supervised" and quality[2].options == {"epochs": 1}
    # on a CUDA GPU the quality preset's contrastive rows train longer; overrides still win
    gpu = resolve_entries(["raw", "simclr", "scan"], "quality", {"scan": {"epochs": 3}}, cuda=True)
    assert gpu[0].options == {} and gpu[1].options == {"epochs": 200}
    assert gpu[2].options["pretext_epochs"] == 200 and gpu[2].options["epochs"] == 3
    assert resolve_entries(["simclr"], "quality")[0].options == {"epochs": 40}
    with pytest.raises(CompareError, match="unknown preset"):
        resolve_entries(preset="fast")
    with pytest.raises(CompareError, match="unknown method or row 'kmeans'"):
        resolve_entries(["kmeans"])
    with pytest.raises(CompareError, match="not compared"):
        resolve_entries(["raw"], overrides={"voxnet": {"epochs": 1}})
    a = run_url_for(tiny_store, MethodEntry(name="x", method="voxnet", options={"epochs": 3}))
    b = run_url_for(tiny_store, MethodEntry(name="x", method="voxnet", options={"epochs": 3, "seed": 0}))
    c = run_url_for(tiny_store, MethodEntry(name="x", method="voxnet", options={"epochs": 4}))
    assert a == b != c and a.startswith(f"{tiny_store}/runs/x-")


def test_cli_compare_user_errors(runner_env: dict[str, str], tiny_store: str, tmp_path: Path) -> None:
    runner = CliRunner()
    assert_user_error(
        runner.invoke(app, ["compare", "--store", tiny_store, "--methods", "kmeans"], env=runner_env),
        "unknown method or row",
    )
    assert_user_error(
        runner.invoke(app, ["compare", "--store", str(tmp_path / "none")], env=runner_env), "not a voxclust"
    )
    assert_user_error(runner.invoke(app, ["report", "--store", tiny_store], env=runner_env), "no comparison runs")
    assert_user_error(runner.invoke(app, ["export", "--store", tiny_store], env=runner_env), "no comparison report")


@pytest.fixture
def runner_env() -> dict[str, str]:
    return {"NO_COLOR": "1"}


def test_compare_on_a_store_with_nothing_stored_reports_every_method_failed(prefect_api: str, tmp_path: Path) -> None:
    from flows.compare import compare_methods

    store = str(tmp_path / "store")
    np.savez(tmp_path / "empty.npz", X=np.zeros((4, 16, 16, 16), dtype=np.uint8))  # every grid empty: all fail
    import_npz(tmp_path / "empty.npz", store)
    entries = [MethodEntry(name="raw", method="raw"), MethodEntry(name="dc", method="deepcluster", options=TINY_DC)]
    result = compare_methods(store, entries, FAST, device="cpu")
    assert [r["status"] for r in result["rows"]] == ["failed", "failed"]
    assert result["best_method"] is None
    html = open_storage(result["report_url"]).read_bytes("report.html").decode()
    assert "training failed" in html


def test_side_by_side_training_on_dask_workers(prefect_api: str, tmp_path: Path) -> None:
    """--train-workers 2: each method trains as one task on a 2-worker LocalCluster, the two trainings run at
    the same time, each is evaluated when it ends, and a method that fails leaves the others' rows intact."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.compare import compare_methods
    from flows.runners import dask_runner
    from lib.features.runs import Session

    store = str(tmp_path / "store")
    import_npz(write_npz(tmp_path / "t.npz", n_per_class=24), store, classes=["box", "ball", "rod"])
    # Long enough (about 10 s each here) that a busy machine starting one worker a few seconds late still
    # shows the overlap: at 6 epochs (3 s) a loaded machine sometimes did not.
    slow = {**TINY_DC, "epochs": 18}
    entries = [
        MethodEntry(name="dc", method="deepcluster", options=slow),
        MethodEntry(name="dc_b", method="deepcluster", options={**slow, "seed": 1}),
        MethodEntry(name="too_many_k", method="deepcluster", options={**TINY_DC, "k": 500}),
        MethodEntry(name="raw", method="raw"),
    ]
    flow = compare_methods.with_options(task_runner=dask_runner(None, 2))  # type: ignore[arg-type]
    state = flow(store, entries, FAST, True, "cpu", train_workers=2, return_state=True)  # type: ignore[call-overload]
    result = state.result()
    assert [r["name"] for r in result["rows"]] == ["dc", "dc_b", "too_many_k", "raw"]
    assert [r["status"] for r in result["rows"]] == ["ok", "ok", "failed", "ok"]
    assert "training failed" in result["rows"][2]["error"] and "k=500" in result["rows"][2]["error"]
    for r in result["rows"]:
        if r["status"] == "ok":
            assert 0.0 <= r["nmi"] <= 1.0
    assert Session(run_url_for(store, entries[0])).ckpt["epochs_done"] == 18

    async def read() -> list[Any]:
        async with get_client() as client:
            flt = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            return await client.read_task_runs(flow_run_filter=flt)

    runs = {r.name: r for r in asyncio.run(read())}
    assert {"train-dc", "train-dc_b", "train-raw"} <= set(runs)
    assert sum(n.startswith("evaluate-method") for n in runs) == 3
    a, b = runs["train-dc"], runs["train-dc_b"]
    assert a.start_time and b.start_time and a.end_time and b.end_time
    assert a.start_time < b.end_time and b.start_time < a.end_time, "the two trainings did not overlap"


def test_cli_compare_train_workers(runner_env: dict[str, str], tiny_store: str, tmp_path: Path) -> None:
    env = {**runner_env, "COLUMNS": "200"}
    res = CliRunner().invoke(
        app,
        ["compare", "--store", tiny_store, "--methods", "raw,deepcluster", "--train-workers", "2", "--no-tsne"]
        + [f"--set=deepcluster.{k}={v}" for k, v in TINY_DC.items()]
        + ["--json"],
        env=env,
    )
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)["rows"]}
    assert rows["raw"]["status"] == rows["deepcluster"]["status"] == "ok"


def test_a_method_that_assigns_clusters_is_scored_twice(tiny_store: str, tmp_path: Path) -> None:
    """SCAN's own partition (arg-max of its head) beside the shared k-means of its embedding."""
    from tests.features.test_scan import TINY

    entry = MethodEntry(name="scan", method="scan", options=TINY)
    run_url = str(tmp_path / "run")
    train_run(create_run(RunRequest(method="scan", data_url=tiny_store, options=TINY, run_url=run_url, device="cpu")))
    rec = evaluate_method(tiny_store, entry, run_url, str(tmp_path / "out"), FAST.model_copy(update={"tsne": False}))
    assert rec.status == "ok", rec.error
    assert rec.own is not None and rec.own.n_items == 59 and rec.own.nmi is not None  # all items: 12 in test
    assert rec.metrics["all"].nmi is not None and rec.dim == 3
    raw = evaluate_method(tiny_store, MethodEntry(name="raw", method="raw"), run_url, str(tmp_path / "o2"), FAST)
    assert raw.own is None  # the same embedding under a method that does not assign: no own partition


def test_two_seeds_give_two_runs_and_a_spread(prefect_api: str, tmp_path: Path) -> None:
    """--seeds 2: a trained row has one run per seed (seed 0's is the row's usual run), a row that does not
    train has one; the report gives each row's spread over its seeds and over k-means seeds alone, names the
    methods within noise of the best and how many seeds back that; report --seeds re-scores the same runs."""
    from flows.compare import compare_methods

    store = str(tmp_path / "store")
    import_npz(write_npz(tmp_path / "t.npz"), store, classes=["box", "ball", "rod"])
    dc = MethodEntry(name="dc", method="deepcluster", options=TINY_DC)
    raw = MethodEntry(name="raw", method="raw")
    cfg = FAST.model_copy(update={"seeds": 2})
    result = compare_methods(store, [dc, raw], cfg, device="cpu")
    runs = sorted(p.name for p in (tmp_path / "store" / "runs").iterdir())
    assert runs == sorted(
        [
            run_url_for(store, dc).rsplit("/", 1)[1],
            run_url_for(store, dc.model_copy(update={"options": {**TINY_DC, "seed": 1}})).rsplit("/", 1)[1],
            run_url_for(store, raw).rsplit("/", 1)[1],
        ]
    )
    rows = {r["name"]: r for r in result["rows"]}
    for r in rows.values():
        assert r["seeds"] == 2
        assert r["nmi_min"] <= r["nmi_mean"] <= r["nmi_max"] and r["restart_nmi_min"] <= r["restart_nmi_max"]
        assert r["acc_min"] <= r["acc_mean"] <= r["acc_max"]
    rep = read_report(open_storage(result["report_url"]))
    spread = {m.name: m.spread for m in rep.methods}
    assert spread["dc"] is not None and spread["dc"].seeds == [0, 1] and len(spread["dc"].nmi) == 2
    assert spread["raw"] is not None and spread["raw"].seeds == [0, 0]  # one embedding, two k-means seeds
    assert spread["dc"].restart_seeds == list(range(FAST.restart_trials))
    assert rows["dc"]["nmi"] == spread["dc"].nmi[0]  # the row's own scores are the first seed's
    assert rep.seeds == 2 and rep.best_method == result["best_method"] == result["best_methods"][0]
    assert "over 2 seeds" in result["verdict"]
    assert [e.options.get("seed", 0) for e in discover_entries(store) if e.name == "dc"] == [0]  # the first seed

    runner = CliRunner()
    env = {"NO_COLOR": "1", "COLUMNS": "250"}
    res = runner.invoke(app, ["report", "--store", store, "--no-tsne", "--seeds", "2", "--json"], env=env)
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert {r["name"]: r["nmi_mean"] for r in again["rows"]} == {n: r["nmi_mean"] for n, r in rows.items()}
    res = runner.invoke(app, ["report", "--store", store, "--no-tsne"], env=env)  # one seed: it says so
    assert res.exit_code == 0, res.output
    assert "from a single training run per method" in " ".join(res.stdout.split())


def test_the_retraining_rule_fires_past_the_growth_and_not_before(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run records how many items it trained on; once the store's training region has grown by more than
    ``retrain_growth`` since, the next comparison trains a new run (``<run>.g2``) and the report says so."""
    from flows.compare import compare_methods
    from lib.compare.rows import current_run
    from lib.features.runs import region_size

    store = str(tmp_path / "store")
    import_npz(write_npz(tmp_path / "a.npz", n_per_class=16), store, classes=["box", "ball", "rod"])
    entry = MethodEntry(name="dc", method="deepcluster", options=TINY_DC)
    base = run_url_for(store, entry)
    assert current_run(store, entry) == (base, None)  # no run yet: the usual place
    compare_methods(store, [entry], FAST, device="cpu")
    trained = region_size(store, Region(split="train"))
    import_npz(write_npz(tmp_path / "b.npz", n_per_class=6, seed=3), store, batch_name="more")
    grown = region_size(store, Region(split="train")) / trained - 1
    assert grown > 0
    assert current_run(store, entry, growth=grown) == (base, None)  # at the threshold: not yet
    url, note = current_run(store, entry, growth=grown - 0.01)
    assert url == f"{base}.g2" and note is not None and "trained a new run" in note

    monkeypatch.setenv("VOXCLUST_RETRAIN_GROWTH", str(grown - 0.01))
    result = compare_methods(store, [entry], FAST, device="cpu")
    (row,) = result["rows"]
    assert row["status"] == "ok"
    rep = read_report(open_storage(result["report_url"]))
    assert rep.methods[0].run_url == f"{base}.g2" and "grew from" in (rep.methods[0].note or "")
    assert "grew from" in open_storage(result["report_url"]).read_bytes("report.html").decode()
    assert current_run(store, entry) == (f"{base}.g2", None)  # the new run is the one to use from now on
    assert [e.name for e in discover_entries(store)] == ["dc"]
