"""Stable cluster ids: permuted clusters keep their ids, new clusters get new ones (never reused), and a second
comparison of the same store names the same groups by the same ids; the clustering model saved beside them
assigns a stored item to its own cluster."""

from __future__ import annotations

import io
from pathlib import Path

import faiss
import numpy as np

from lib.compare.evaluate import evaluate_method
from lib.compare.ids import PreviousClusters, match_ids, read_previous
from lib.compare.rows import CompareConfig, MethodEntry, run_url_for
from lib.features.runs import RunRequest, create_run, read_embedding, train_run
from lib.storage import open_storage


def test_permuted_clusters_keep_their_ids() -> None:
    rows = np.arange(12)
    old = [5, 5, 5, 7, 7, 7, 9, 9, 9, 2, 2, 2]
    previous = PreviousClusters({int(r): c for r, c in zip(rows, old, strict=True)}, 10)
    labels = np.array([3, 3, 3, 0, 0, 0, 1, 1, 1, 2, 2, 2])  # the same groups, numbered otherwise by k-means
    ids, next_id = match_ids(labels, rows, 4, previous)
    assert ids == [7, 9, 2, 5] and next_id == 10
    noisy = labels.copy()
    noisy[0] = 0  # one member moved: the groups still match
    assert match_ids(noisy, rows, 4, previous)[0] == [7, 9, 2, 5]


def test_new_clusters_get_new_ids_never_reused() -> None:
    rows = np.arange(10)
    previous = PreviousClusters({0: 0, 1: 0, 2: 1, 3: 1}, next_id=6)  # ids up to 5 were issued before
    labels = np.array([1, 1, 0, 0, 2, 2, 2, 3, 3, 3])  # rows 4..9 are new items in two new groups
    ids, next_id = match_ids(labels, rows, 4, previous)
    assert ids[:2] == [1, 0] and sorted(ids[2:]) == [6, 7] and next_id == 8
    gone = PreviousClusters({0: 0, 1: 0, 2: 1, 3: 1}, next_id=2)
    split = np.array([0, 1, 2, 2])  # old cluster 0 split in two, old cluster 1 kept
    ids, _ = match_ids(split, np.arange(4), 3, gone)
    assert ids[2] == 1 and sorted(ids[:2]) == [0, 2]  # one half keeps id 0, the other gets the fresh id 2
    assert match_ids(labels, rows, 4, None) == ([0, 1, 2, 3], 4)  # the first report: the labels


def test_a_second_comparison_names_the_same_groups_by_the_same_ids(tiny_store: str, tmp_path: Path) -> None:
    entry = MethodEntry(name="raw", method="raw")
    run_url = run_url_for(tiny_store, entry)
    train_run(create_run(RunRequest(method="raw", data_url=tiny_store, run_url=run_url)))
    first_url, second_url = str(tmp_path / "r1"), str(tmp_path / "r2")
    cfg = CompareConfig(k=3, tsne=False, elbow_k_max=4, strip_members=2, pic=False, spectral=False)
    first = evaluate_method(tiny_store, entry, run_url, first_url, cfg)
    assert first.ok
    open_storage(f"{tiny_store}/reports").write_json("latest.json", {"url": open_storage(first_url).url})
    other_seed = cfg.model_copy(update={"seed": 7})  # k-means numbers its clusters otherwise
    second = evaluate_method(tiny_store, entry, run_url, second_url, other_seed)
    assert second.ok
    a = read_previous(open_storage(first_url), "raw")
    b = read_previous(open_storage(second_url), "raw")
    assert a is not None and b is not None
    same = np.mean([a.ids_by_row[r] == b.ids_by_row[r] for r in a.ids_by_row])
    assert same >= 0.9  # the same groups (k-means may move a few items) carry the same ids

    # the saved model assigns each stored item to the cluster it was given
    out = open_storage(second_url)
    model = np.load(io.BytesIO(out.read_bytes("clusters/raw.npz")))
    index = faiss.deserialize_index(np.frombuffer(out.read_bytes("clusters/raw.faiss"), dtype=np.uint8))
    x, rows, _ = read_embedding(run_url, "all")
    feats = x.astype(np.float32)
    if "pca_mean" in model:
        feats = ((x - model["pca_mean"]) @ model["pca_components"].T * model["pca_scale"]).astype(np.float32)
    _, got = index.search(np.ascontiguousarray(feats), 1)
    assert np.mean(got[:, 0] == np.array([b.ids_by_row[int(r)] for r in rows])) == 1.0
    assert sorted(set(model["ids"].tolist())) == sorted(set(b.ids_by_row.values()))
