"""voxclust assign: a new batch joins the latest report's clusters without re-clustering; the clustered items
land in their own clusters, assigning twice changes nothing, far-off items are flagged novel."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lib.compare.assign import AssignError, ClusterModel, assign
from lib.compare.ids import id_index, read_previous
from lib.compare.publish import latest_report_url
from lib.compare.records import read_report
from lib.storage import open_storage
from lib.voxels.store import VoxelStore
from tests.support import compare_raw_and_brief_autoencoder, voxelize_demo
from voxclust.cli import app

ENV = {"NO_COLOR": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def two_batches(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store compared after its first batch (raw voxels and a brief autoencoder), then given a second."""
    root = tmp_path_factory.mktemp("assign")
    store_url = str(root / "store")
    voxelize_demo(root / "b1", store_url, "b1", seed=0, n_per_class=5)
    compare_raw_and_brief_autoencoder(store_url)
    voxelize_demo(root / "b2", store_url, "b2", seed=3, n_per_class=2)
    return store_url


def test_a_new_batch_joins_the_existing_clusters_idempotently(two_batches: str) -> None:
    store = VoxelStore.open(two_batches)
    b2 = sorted(int(r.row) for r in store.items() if r.batch == "b2")
    report_url, first = assign(two_batches)  # default: what the report did not cluster, i.e. batch b2
    assert [a.method for a in first] == ["raw", "ae"] and all(a.rows.tolist() == b2 for a in first)
    report = open_storage(report_url)
    for a in first:
        known = set(read_previous(report, a.method).ids_by_row.values())  # type: ignore[union-attr]
        assert set(a.ids.tolist()) <= known  # joined existing clusters, none made up
    kept = report.read_json("assigned/raw.json")
    _, again = assign(two_batches, batches=["b2"])
    assert report.read_json("assigned/raw.json") == kept  # the same items twice: the same entries
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_allclose(a.novelty, b.novelty)


def test_clustered_items_are_assigned_to_their_own_cluster(two_batches: str) -> None:
    _, found = assign(two_batches, batches=["b1"], methods=["raw"])
    report = open_storage(latest_report_url(two_batches))
    ids = read_previous(report, "raw")
    assert ids is not None
    a = found[0]
    assert [ids.ids_by_row[int(r)] for r in a.rows] == a.ids.tolist()
    assert a.novel.mean() <= 0.05  # the threshold is the 99th percentile of these very items
    raw = read_report(report).methods[0]  # the report names, per cluster, the items of the newest batch
    assert raw.latest_batch == "b1" and sum(len(v) for v in raw.latest_members.values()) == len(a.rows)
    assert set(raw.latest_members) == set(ids.ids_by_row.values())
    assert "Items of the latest batch (b1) per cluster" in report.read_bytes("report.html").decode()


def test_far_items_are_novel() -> None:
    centroids = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    model = ClusterModel(index=id_index(centroids, [4, 9]), spread={4: 1.0, 9: 2.0}, threshold=3.0, l2=False)
    ids, dist, novelty = model.assign(np.array([[0.5, 0.0], [10.0, 4.0], [0.0, 50.0]], np.float32))
    assert ids.tolist() == [4, 9, 4] and dist[:2] == pytest.approx([0.5, 4.0])
    assert novelty.tolist() == pytest.approx([0.5, 2.0, 50.0])


def test_cli_assign_and_bad_input(two_batches: str, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["assign", "--store", two_batches, "--batches", "b2", "--json"], env=ENV)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc["methods"]) == {"raw", "ae"} and len(doc["methods"]["raw"]["clusters"]) == 14
    res = runner.invoke(app, ["assign", "--store", two_batches], env=ENV)
    assert res.exit_code == 0 and "clusters joined" in res.stdout, res.output
    res = runner.invoke(app, ["export", "--store", two_batches], env=ENV)  # assigned items in the CSV, flagged
    assert res.exit_code == 0, res.output
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {"raw", "raw_novel", "ae", "ae_novel"} <= set(table[0])
    b2 = [r for r in table if r["item_id"].startswith("b2/")]
    assert len(b2) == 14 and all(r["raw"] != "" and r["raw_novel"] in ("yes", "no") for r in b2)
    clustered = read_previous(open_storage(latest_report_url(two_batches)), "raw")
    assert clustered is not None  # the items the report clustered keep their cluster there
    assert all(int(r["raw"]) == clustered.ids_by_row[int(r["row"])] for r in table if r["item_id"].startswith("b1/"))
    res = runner.invoke(app, ["assign", "--store", two_batches, "--batches", "b9"], env=ENV)
    assert res.exit_code == 2 and "no batch b9" in res.stderr
    res = runner.invoke(app, ["assign", "--store", two_batches, "--methods", "vrn"], env=ENV)
    assert res.exit_code == 2 and "no finished method vrn" in res.stderr
    with pytest.raises(AssignError, match="no batch"):
        assign(two_batches, batches=["nope"])
    empty = str(tmp_path / "empty")
    VoxelStore.open_or_create(empty)
    res = runner.invoke(app, ["assign", "--store", empty], env=ENV)
    assert res.exit_code == 2 and "no comparison report yet" in res.stderr
