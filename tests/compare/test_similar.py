"""voxclust similar: the stored scans nearest to a stored item or to a file not in the store, by each method
of the latest comparison; a saved index reused; bad queries refused with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from typer.testing import CliRunner

from lib.compare.similar import SimilarError, file_query, flat_index, similar, stored_query
from lib.features.runs import read_embedding
from lib.storage import open_storage
from lib.voxels.store import VoxelStore
from tests.support import compare_raw_and_brief_autoencoder, voxelize_demo
from voxclust.cli import app

ENV = {"NO_COLOR": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store voxelized from demo scan files (5 per class) and a comparison of raw voxels and a brief
    autoencoder on it."""
    store_url = str(tmp_path_factory.mktemp("similar") / "store")
    voxelize_demo(Path(store_url).parent / "batch", store_url, "batch", seed=0, n_per_class=5)
    compare_raw_and_brief_autoencoder(store_url)
    return store_url


def test_a_file_gets_the_neighbours_of_its_stored_copy(compared: str) -> None:
    store_url = compared
    store = VoxelStore.open(store_url)
    rec = next(r for r in store.items() if r.source.endswith(".off") or r.source.endswith(".stl"))
    by_id = similar(store_url, stored_query(store, rec.item_id), k=5)
    by_file = similar(store_url, file_query(store, Path(urlsplit(rec.source).path)), k=6)
    assert [m.method for m in by_id] == ["raw", "ae"]
    for stored, filed in zip(by_id, by_file, strict=True):
        assert len(stored.neighbours) == 5 and rec.item_id not in [n.item_id for n in stored.neighbours]
        # the file is its stored copy: nearest at distance 0, then the same neighbours in the same order
        first = filed.neighbours[0]
        assert first.item_id == rec.item_id and first.distance == pytest.approx(0, abs=1e-4)
        assert [n.item_id for n in filed.neighbours[1:]] == [n.item_id for n in stored.neighbours]
        dists = [n.distance for n in stored.neighbours]
        assert dists == sorted(dists)


def test_the_index_is_saved_once_per_embedding(compared: str) -> None:
    store_url = compared
    store = VoxelStore.open(store_url)
    item = store.items()[0].item_id
    similar(store_url, stored_query(store, item), k=3, methods=["ae"])
    run_url = next(m.run_url for m in similar(store_url, stored_query(store, item), k=1, methods=["ae"]))
    run = open_storage(run_url)
    blob = run.read_bytes("similar/all.faiss")
    x, rows, _ = read_embedding(run_url, "all")
    assert flat_index(run_url, x, rows).ntotal == len(x)
    assert run.read_bytes("similar/all.faiss") == blob  # read back, not rebuilt
    flat_index(run_url, x[:-1], rows[:-1])  # another embedding (the store grew, say): rebuilt
    assert run.read_json("similar/all.json")["n"] == len(x) - 1


def test_cli_similar_table_json_html_and_bad_queries(compared: str, tmp_path: Path) -> None:
    store_url = compared
    store = VoxelStore.open(store_url)
    item = store.items()[3].item_id
    runner = CliRunner()
    res = runner.invoke(app, ["similar", item, "--store", store_url, "--k", "4", "--json"], env=ENV)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["query"] == item and doc["stored"] and set(doc["methods"]) == {"raw", "ae"}
    assert all(len(m["neighbours"]) == 4 for m in doc["methods"].values())
    page = tmp_path / "s.html"
    res = runner.invoke(app, ["similar", item, "--store", store_url, "--methods", "raw", "--html", str(page)], env=ENV)
    assert res.exit_code == 0, res.output
    assert "stored scans nearest to" in res.stdout and "data:image/png;base64," in page.read_text()
    # at 80 columns every id and source is there whole (wrapped inside its cell, never cut), the distance named
    narrow = runner.invoke(app, ["similar", item, "--store", store_url, "--k", "3"], env={**ENV, "COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80 and "…" not in narrow.stdout
    assert "Euclidean" in narrow.stdout
    rows = [[c.strip() for c in ln.split("│")[1:-1]] for ln in lines if ln.startswith("│")]
    columns = ["".join(col) for col in zip(*rows, strict=True)]  # each column's wrapped cells joined again
    for m in similar(store_url, stored_query(store, item), k=3):
        for n in m.neighbours:
            assert n.item_id in columns[1] and n.source in columns[4], (n, columns)

    for args, message in [
        (["no-such-item"], "no stored item with id 'no-such-item'"),
        ([item, "--methods", "vrn"], "no finished method vrn"),
    ]:
        res = runner.invoke(app, ["similar", *args, "--store", store_url], env=ENV)
        assert res.exit_code == 2 and message in res.stderr, res.output
    bad = tmp_path / "broken.off"
    bad.write_text("OFF\n3 1 0\n0 0 0\n")
    res = runner.invoke(app, ["similar", str(bad), "--store", store_url], env=ENV)
    assert res.exit_code == 2 and "broken.off" in res.stderr, res.output
    with pytest.raises(SimilarError, match="k must be at least 1"):
        similar(store_url, stored_query(store, item), k=0)
    np.testing.assert_array_equal(stored_query(store, item).grid, store.read([store.items()[3].row])[0])
