"""lib.features.scan: the SCAN loss, neighbour mining, self-labelling targets, a head that recovers blobs, and
the checks that refuse what cannot train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.evaluation.metrics import nmi
from lib.evaluation.neighbours import nearest_neighbours
from lib.features.base import MethodError
from lib.features.runs import RunRequest, Session, create_run, train_run
from lib.features.scan import balanced_pseudo_labels, class_weights, mine_neighbours, scan_loss


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_scan_loss_matches_a_hand_computation() -> None:
    rng = np.random.default_rng(0)
    a, n = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    pa, pn = _softmax(a), _softmax(n)
    consistency = -np.mean(np.log((pa * pn).sum(axis=1)))
    mean = pa.mean(axis=0)
    entropy = -(mean * np.log(mean)).sum()
    got = scan_loss(torch.tensor(a), torch.tensor(n), entropy_weight=5.0)
    assert float(got["consistency"]) == pytest.approx(consistency, rel=1e-9)
    assert float(got["entropy"]) == pytest.approx(entropy, rel=1e-9)
    assert float(got["loss"]) == pytest.approx(consistency - 5.0 * entropy, rel=1e-9)
    # identical, confident predictions for anchor and neighbour: consistency near 0
    sure = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
    assert float(scan_loss(sure, sure, 0.0)["consistency"]) < 1e-6


def test_mined_neighbours_are_the_cosine_nearest_others() -> None:
    x = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    np.testing.assert_array_equal(mine_neighbours(x, 4), nearest_neighbours(x, 4))  # tested against brute force
    with pytest.raises(MethodError, match="scan: 5 neighbours asked for, but only 5 items"):
        mine_neighbours(x[:5], 5)


def test_self_labelling_keeps_only_confident_rows_balanced_over_clusters() -> None:
    probs = torch.tensor(
        [
            [0.95, 0.03, 0.02],
            [0.50, 0.40, 0.10],
            [0.02, 0.97, 0.01],
            [0.91, 0.05, 0.04],
            [0.34, 0.33, 0.33],
            [0.99, 0.005, 0.005],
        ]
    )
    rows, target = balanced_pseudo_labels(probs, 0.9, per_cluster=5)
    assert rows.tolist() == [0, 2, 3, 5] and target.tolist() == [0, 1, 0, 0]  # confident rows only
    rows, target = balanced_pseudo_labels(probs, 0.9, per_cluster=2)
    assert rows.tolist() == [0, 2, 5] and target.tolist() == [0, 1, 0]  # cluster 0's two most confident
    none, _ = balanced_pseudo_labels(probs, 0.999, per_cluster=5)
    assert len(none) == 0
    # class-balanced weights: class 0 has 2 of 3 rows, class 1 has 1, class 2 none
    assert class_weights(torch.tensor([0, 1, 0]), 3).tolist() == pytest.approx([3 / (2 * 2), 3 / (2 * 1), 0.0])
    assert float(class_weights(torch.zeros(0, dtype=torch.int64), 3).sum()) == 0.0


def test_a_scan_head_recovers_separable_blobs() -> None:
    """The SCAN objective alone, on features of 4 separated blobs: neighbours mined in feature space, a linear
    head trained with the loss, the arg-max recovers the blobs."""
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(4, 8)) * 6
    y = np.repeat(np.arange(4), 60)
    x = (centres[y] + rng.normal(size=(240, 8))).astype(np.float32)
    nb = mine_neighbours(x, 10)
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 4)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    xt = torch.from_numpy(x)
    for _ in range(60):
        for idx in np.array_split(rng.permutation(240), 4):
            pick = nb[idx, rng.integers(0, 10, len(idx))]
            loss = scan_loss(head(xt[idx]), head(xt[pick]), 5.0)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    pred = head(xt).argmax(1).numpy()
    assert len(np.unique(pred)) == 4 and nmi(y, pred) > 0.95


TINY = {
    "width": 4,
    "hidden": 16,
    "embedding_dim": 8,
    "shapes_per_batch": 6,
    "pretext_epochs": 1,
    "epochs": 2,
    "selflabel_epochs": 1,
    "neighbours": 3,
    "heads": 3,
    "scan_batch_size": 8,
    "confidence": 0.3,
}


def test_phases_neighbours_and_own_assignment(tiny_store: str, tmp_path: Path) -> None:
    ref = create_run(RunRequest(method="scan", data_url=tiny_store, options=TINY, run_url=str(tmp_path / "r")))
    assert ref.epochs == 4  # 1 pretext + 2 SCAN + 1 self-labelling
    s = train_run(ref)
    hist = s.history
    assert [h["phase"] for h in hist] == [0, 1, 1, 2]
    assert "knn_agree" in hist[1] and 0.0 <= hist[1]["knn_agree"] <= 1.0  # diagnostic, labelled store
    assert "knn_agree" not in hist[2]  # mined once
    assert 0 <= hist[2]["head"] < 3 and 0 <= hist[3]["pseudo_labelled"] <= len(s.data)
    emb = s.embed()
    x = np.asarray(Session(ref.run_url).method.embed(s.data.grids))
    assert x.shape == (len(s.data), 3)  # k = the store's 3 classes
    np.testing.assert_allclose(x.sum(axis=1), 1.0, rtol=1e-5)  # the kept head's probabilities
    assert emb.dim == 3


def test_scan_refuses_what_cannot_train(tiny_store: str, unlabelled_store: str, tmp_path: Path) -> None:
    def make(store: str, **options: object) -> None:
        create_run(RunRequest(method="scan", data_url=store, options={**TINY, **options}, run_url=str(tmp_path / "x")))

    with pytest.raises(MethodError, match="neighbours=60"):
        make(tiny_store, neighbours=60)
    with pytest.raises(MethodError, match="k=12 clusters"):
        make(tiny_store, k=12)
    with pytest.raises(MethodError, match="k=10 clusters"):  # unlabelled: k defaults to 10 > 8 per batch
        make(unlabelled_store)
    assert not (tmp_path / "x" / "run.json").exists()


PRETEXT = {k: TINY[k] for k in ("width", "hidden", "embedding_dim", "shapes_per_batch")}


def test_scan_from_a_finished_pretext_run(tiny_store: str, tmp_path: Path) -> None:
    pretext = str(tmp_path / "simclr")
    simclr = train_run(
        create_run(RunRequest(method="simclr", data_url=tiny_store, options={**PRETEXT, "epochs": 2}, run_url=pretext))
    )
    options = {**TINY, "pretext_run": pretext}
    ref = create_run(RunRequest(method="scan", data_url=tiny_store, options=options, run_url=str(tmp_path / "s")))
    assert ref.epochs == 3  # 2 SCAN + 1 self-labelling: no pretext of its own
    first = Session(ref.run_url)
    first.prepare(0)  # the SCAN step's first epoch loads the pretext network and mines neighbours with it
    loaded, trained = first.method.nets["model"].state_dict(), simclr.method.nets["model"].state_dict()
    weights = [k for k in trained if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(loaded[k], trained[k]) for k in weights)  # batch-norm statistics: re-estimated
    s = train_run(ref)
    assert [h["phase"] for h in s.history] == [1, 1, 2]


def test_a_pretext_run_must_be_finished_of_this_store_and_fit(
    tiny_store: str, unlabelled_store: str, tmp_path: Path
) -> None:
    def scan_from(run: str, store: str = tiny_store, **extra: object) -> None:
        options = {**TINY, "pretext_run": run, **extra}
        create_run(RunRequest(method="scan", data_url=store, options=options, run_url=str(tmp_path / "x")))

    with pytest.raises(MethodError, match="not a voxclust run"):
        scan_from(str(tmp_path / "nothing"))
    unfinished = str(tmp_path / "unfinished")
    create_run(RunRequest(method="simclr", data_url=tiny_store, options={**PRETEXT, "epochs": 2}, run_url=unfinished))
    with pytest.raises(MethodError, match="unfinished"):
        scan_from(unfinished)
    raw = str(tmp_path / "raw")
    create_run(RunRequest(method="raw", data_url=tiny_store, run_url=raw))
    with pytest.raises(MethodError, match="is a raw run"):
        scan_from(raw)
    other = str(tmp_path / "other")
    train_run(
        create_run(
            RunRequest(method="simclr", data_url=unlabelled_store, options={**PRETEXT, "epochs": 1}, run_url=other)
        )
    )
    with pytest.raises(MethodError, match="another store"):
        scan_from(other)
    with pytest.raises(MethodError, match="width=4, this config 8"):
        scan_from(other, store=unlabelled_store, width=8, k=3)
    assert not (tmp_path / "x" / "run.json").exists()


def test_batchnorm_is_recalibrated_on_the_plain_grids(tiny_store: str, tmp_path: Path) -> None:
    ref = create_run(RunRequest(method="scan", data_url=tiny_store, options=TINY, run_url=str(tmp_path / "r")))
    m = Session(ref.run_url).method
    grids = Session(ref.run_url).data.grids[:40]
    net = m.nets["model"]
    first_bn = next(x for x in net.modules() if isinstance(x, torch.nn.BatchNorm3d))
    first_bn.running_mean.fill_(5.0)  # statistics of something else (strong views, say)
    m.recalibrate_batchnorm(net, grids)
    assert not net.training and first_bn.momentum == 0.1  # eval mode, momentum restored
    conv = next(iter(net.encoder[0].conv))  # the first conv: its output feeds the first batch norm
    with torch.no_grad():
        want = conv(m.input(grids)).mean(dim=(0, 2, 3, 4))
    torch.testing.assert_close(first_bn.running_mean, want, rtol=1e-4, atol=1e-5)


def test_neighbours_mined_in_another_finished_run(tiny_store: str, unlabelled_store: str, tmp_path: Path) -> None:
    raw = str(tmp_path / "raw")
    train_run(create_run(RunRequest(method="raw", data_url=tiny_store, run_url=raw)))
    options = {**TINY, "pretext_epochs": 0, "neighbours_run": raw}
    ref = create_run(RunRequest(method="scan", data_url=tiny_store, options=options, run_url=str(tmp_path / "s")))
    s = Session(ref.run_url)
    s.prepare(0)  # the first SCAN epoch mines the neighbours
    want = mine_neighbours(Session(raw).method.embed(s.data.grids), TINY["neighbours"])
    np.testing.assert_array_equal(s.method.neighbours.numpy(), want)

    def scan_with(run: str, store: str = tiny_store) -> None:
        options = {**TINY, "neighbours_run": run, "k": 3}
        create_run(RunRequest(method="scan", data_url=store, options=options, run_url=str(tmp_path / "x")))

    with pytest.raises(MethodError, match="not a voxclust run"):
        scan_with(str(tmp_path / "nothing"))
    unfinished = str(tmp_path / "unfinished")
    create_run(RunRequest(method="simclr", data_url=tiny_store, options={**PRETEXT, "epochs": 2}, run_url=unfinished))
    with pytest.raises(MethodError, match="unfinished"):
        scan_with(unfinished)
    with pytest.raises(MethodError, match="another store"):
        scan_with(raw, store=unlabelled_store)
    assert not (tmp_path / "x" / "run.json").exists()
