"""Method-specific behaviour of DeepCluster, triplet and SoftTriple, checked against independent computations
(numpy PCA-whitening and k-means fixed points, the SoftTriple paper's formula, pytorch-metric-learning's miner),
plus the upright guarantee of the shared augmentation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss  # noqa: F401  (before torch: some builds crash the other way round)
import numpy as np
import pytest
import torch
from pytorch_metric_learning import miners
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

import lib.features.deepcluster as deepcluster_module
from lib.evaluation.kmeans import KMeansResult, kmeans
from lib.evaluation.metrics import nmi
from lib.features.augment import AugmentConfig, augment
from lib.features.base import DataInfo, MethodError, VoxelData
from lib.features.deepcluster import DeepCluster, DeepClusterConfig
from lib.features.runs import RunRef, RunRequest, Session, create_run, fit, read_embedding
from lib.features.softtriple import SoftTriple, SoftTripleConfig
from lib.features.triplet import Triplet, TripletConfig
from lib.voxels.importer import import_npz
from tests.support import shapes, write_npz

AUG: dict[str, Any] = {"rotation": "discrete", "z_steps": 4, "shift": 1}
DC_OPTIONS: dict[str, Any] = {"epochs": 3, "batch_size": 8, "k": 6, "width": 4, "feature_dim": 16, "augment": AUG}
METRIC: dict[str, Any] = {
    "epochs": 2,
    "augment": AUG,
    "shapes_per_batch": 6,
    "views_per_shape": 3,
    "width": 4,
    "hidden": 16,
}
N_TRAIN = 47  # training items of tiny_store (48 generated, the all-empty one refused at import)
PCA_EPS = 1e-5  # lib.evaluation.pca.fit_pca's default eps: whitening divides by sqrt(variance + eps)


# -- helpers ---------------------------------------------------------------------------------------------------------
def blobs(n: int = 300, d: int = 32, centres: int = 5, seed: int = 0) -> np.ndarray:
    """Gaussian blobs with anisotropic noise (distinct per-dimension scales keep the PCA spectrum separated)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 4.0, size=(centres, d))
    scales = np.linspace(0.3, 1.5, d)
    x = means[rng.integers(centres, size=n)] + rng.normal(size=(n, d)) * scales
    return x.astype(np.float32)


def whitened_reference(x: np.ndarray, dim: int, eps: float = PCA_EPS) -> np.ndarray:
    """PCA-whitening (eigenvalue power -0.5, plus eps) and row L2-normalisation, in plain float64 numpy."""
    x64 = x.astype(np.float64)
    xc = x64 - x64.mean(axis=0)
    cov = xc.T @ xc / (len(x) - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][: min(dim, x.shape[1], len(x) - 1)]
    z = (xc @ evecs[:, order]) / np.sqrt(evals[order] + eps)
    return np.asarray(z / np.linalg.norm(z, axis=1, keepdims=True))


def align_signs(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Flip the columns of ``ours`` to the signs of ``theirs`` (eigenvectors are defined up to sign)."""
    signs = np.sign((ours * theirs).sum(axis=0))
    signs[signs == 0] = 1.0
    return ours * signs


def method_info(n: int, n_classes: int = 3) -> DataInfo:
    return DataInfo(resolution=16, n_items=n, n_classes=n_classes)


def deepcluster(n: int, **options: Any) -> DeepCluster:
    config = DeepClusterConfig(**{"width": 4, "feature_dim": 16, "batch_size": 8, "augment": AUG, **options})
    return DeepCluster(config, method_info(n), "cpu")


def voxel_data(n_per_class: int, seed: int = 0) -> VoxelData:
    grids, labels = shapes(n_per_class, seed)
    return VoxelData(grids, labels.astype(np.int64), np.arange(len(grids), dtype=np.int64))


def spy_kmeans(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every call DeepCluster makes to lib.evaluation.kmeans.kmeans (its input and seed) and pass it through."""
    calls: list[dict[str, Any]] = []

    def spy(x: np.ndarray, k: int, **kwargs: Any) -> KMeansResult:
        result = kmeans(x, k, **kwargs)
        calls.append({"x": np.array(x, copy=True), "k": k, "result": result, **kwargs})
        return result

    monkeypatch.setattr(deepcluster_module, "kmeans", spy)
    return calls


def nearest_member_mean(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Each row's nearest centroid, centroids = means of the members of each non-empty cluster."""
    present = [c for c in range(k) if (labels == c).any()]
    centroids = np.stack([x[labels == c].mean(axis=0) for c in present])
    d2 = ((x[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=-1)
    return np.asarray(present)[d2.argmin(axis=1)]


@pytest.fixture(scope="module")
def deepcluster_run(tiny_store: str, tmp_path_factory: pytest.TempPathFactory) -> RunRef:
    """A 3-epoch DeepCluster run on tiny_store (shared by the history and the labels tests)."""
    where = tmp_path_factory.mktemp("dc") / "run"
    ref, _ = fit(
        RunRequest(method="deepcluster", data_url=tiny_store, options=DC_OPTIONS, run_url=str(where), device="cpu")
    )
    return ref


# -- DeepCluster: PCA-whitening and re-clustering ----------------------------------------------------------------
@pytest.mark.parametrize("pca_dim", [8, 256])  # fewer components than features, and all of them
@pytest.mark.parametrize("scale", [1.0, 0.003])  # at 0.003 the variances are near eps, so eps must match too
def test_deepcluster_whitening_matches_numpy(monkeypatch: pytest.MonkeyPatch, pca_dim: int, scale: float) -> None:
    x = blobs() * np.float32(scale)
    method = deepcluster(len(x), k=10, pca_dim=pca_dim, kmeans_iters=50)
    calls = spy_kmeans(monkeypatch)
    labels, _ = method.cluster(x, epoch=0)
    (call,) = calls
    ours = whitened_reference(x, pca_dim)
    assert call["x"].shape == ours.shape == (len(x), min(pca_dim, x.shape[1]))
    np.testing.assert_allclose(align_signs(ours, call["x"]), call["x"], atol=1e-5)
    np.testing.assert_array_equal(labels, call["result"].labels)


@pytest.mark.parametrize("pca_dim", [8, 256])
def test_deepcluster_labels_are_a_kmeans_fixed_point(pca_dim: int) -> None:
    """Every pseudo-label is the nearest member-mean on independently whitened features (k-means converged)."""
    x = blobs(seed=1)
    k = 10
    labels, logged = deepcluster(len(x), k=k, pca_dim=pca_dim, kmeans_iters=50).cluster(x, epoch=0)
    z = whitened_reference(x, pca_dim)
    assert labels.shape == (len(x),) and labels.min() >= 0 and labels.max() < k
    np.testing.assert_array_equal(nearest_member_mean(z, labels, k), labels)
    sizes = np.bincount(labels, minlength=k)
    assert logged["cluster_sizes"] == sorted(sizes.tolist(), reverse=True)
    assert logged["empty_clusters"] == int((sizes == 0).sum())
    assert logged["largest_cluster_share"] == pytest.approx(sizes.max() / len(x))
    inertia = sum(float(((z[labels == c] - z[labels == c].mean(axis=0)) ** 2).sum()) for c in np.flatnonzero(sizes))
    assert logged["kmeans_inertia"] == pytest.approx(inertia, rel=1e-4)


def test_deepcluster_clustering_is_seeded_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    x = blobs(seed=2)
    method = deepcluster(len(x), k=12, pca_dim=8, seed=3)
    calls = spy_kmeans(monkeypatch)
    first, _ = method.cluster(x, epoch=2)
    again, _ = method.cluster(x, epoch=2)
    other, _ = method.cluster(x, epoch=5)
    np.testing.assert_array_equal(first, again)  # same features, same epoch: same pseudo-labels
    assert [c["seed"] for c in calls] == [3002, 3002, 3005]  # seed * 1000 + epoch: another epoch may differ
    assert all(c["restarts"] == 1 and c["niter"] == method.config.kmeans_iters for c in calls)
    direct = kmeans(calls[2]["x"], 12, seed=3005, restarts=1, niter=method.config.kmeans_iters)
    np.testing.assert_array_equal(other, direct.labels)


# -- DeepCluster: head and optimizers --------------------------------------------------------------------------------
def test_deepcluster_reset_head_reinitialises_it() -> None:
    data = voxel_data(3)  # 9 items: one batch of 8
    k, dim = 100, 128
    method = deepcluster(len(data), k=k, feature_dim=dim)
    method.assignment = torch.from_numpy(np.random.default_rng(0).integers(0, 12, len(data)))
    method.train_epoch(data, 0, np.random.default_rng(1))
    head = method.nets["head"]
    assert isinstance(head, torch.nn.Linear)
    trained_w, trained_b = head.weight.detach().clone(), head.bias.detach().clone()
    assert trained_b.abs().max() > 0  # training moved the bias away from its reset value
    opt = method.reset_head()
    assert torch.equal(head.bias.detach(), torch.zeros(k))
    w = head.weight.detach()
    assert w.shape == (k, dim)
    assert 0.0095 < float(w.std()) < 0.0105 and abs(float(w.mean())) < 5e-4
    assert not torch.allclose(w, trained_w) and not torch.equal(head.bias.detach(), trained_b)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(head.weight), id(head.bias)}
    assert opt.param_groups[0]["momentum"] == 0 and opt.param_groups[0]["lr"] == method.config.lr
    assert not opt.state  # a fresh optimizer


def test_deepcluster_backbone_momentum_persists_head_optimizer_is_fresh() -> None:
    data = voxel_data(6)  # 18 items: two batches of 8 per epoch
    method = deepcluster(len(data), k=6)
    method.assignment = torch.from_numpy(np.random.default_rng(0).integers(0, 6, len(data)))
    backbone_opt = method.optimizers["backbone"]
    assert set(method.optimizers) == {"backbone"}  # the head's optimizer is never kept (nor checkpointed)
    head_ids = {id(p) for p in method.nets["head"].parameters()}
    assert not head_ids & {id(p) for g in backbone_opt.param_groups for p in g["params"]}
    assert backbone_opt.param_groups[0]["momentum"] == method.config.momentum > 0

    first_step: dict[int, dict[str, Any]] = {}  # per epoch: the optimizers' state just before their first step
    epoch = 0

    def record(name: str) -> Callable[[torch.optim.Optimizer, Any, Any], None]:
        def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            entry = first_step.setdefault(epoch, {})
            if name not in entry:
                entry[name] = {id(p): s["momentum_buffer"].clone() for p, s in opt.state.items() if s}
                entry[name + "_opt"] = opt

        return hook

    backbone_opt.register_step_pre_hook(record("backbone"))
    reset_head = method.reset_head

    def hooked_reset_head() -> torch.optim.Optimizer:
        opt = reset_head()
        opt.register_step_pre_hook(record("head"))
        return opt

    method.reset_head = hooked_reset_head  # type: ignore[method-assign]
    ends: list[dict[int, torch.Tensor]] = []
    for epoch in range(2):  # the hooks read ``epoch``
        method.train_epoch(data, epoch, np.random.default_rng(epoch))
        ends.append({id(p): s["momentum_buffer"].clone() for p, s in backbone_opt.state.items() if s})

    assert first_step[0]["backbone"] == {}  # nothing before the very first step
    assert ends[0] and set(first_step[1]["backbone"]) == set(ends[0])  # epoch 1 starts from epoch 0's momentum
    for pid, buf in ends[0].items():
        assert torch.equal(first_step[1]["backbone"][pid], buf)
    assert first_step[0]["head"] == {} and first_step[1]["head"] == {}  # a fresh head optimizer each epoch
    assert first_step[0]["head_opt"] is not first_step[1]["head_opt"]
    assert first_step[0]["backbone_opt"] is first_step[1]["backbone_opt"] is method.optimizers["backbone"]


# -- DeepCluster: sampling -------------------------------------------------------------------------------------------
def test_deepcluster_samples_uniformly_over_non_empty_clusters() -> None:
    sizes = {0: 200, 1: 5, 2: 5, 3: 5, 5: 5}  # cluster 4 is empty
    assignment = np.concatenate([np.full(s, c) for c, s in sizes.items()])
    n, non_empty = len(assignment), len(sizes)
    method = deepcluster(n, k=6)
    method.assignment = torch.from_numpy(np.random.default_rng(0).permutation(assignment))
    labels = method.assignment.numpy()
    per = int(n / non_empty) + 1  # 45 drawn per cluster, 225 in all, shuffled and cut to n = 220
    cut = per * non_empty - n
    totals = np.zeros(6)
    for seed in range(40):
        idx = method.sample(np.random.default_rng(seed))
        assert idx.shape == (n,) and idx.min() >= 0 and idx.max() < n
        counts = np.bincount(labels[idx], minlength=6)
        assert counts[4] == 0  # never the empty cluster
        for c in sizes:
            assert per - cut <= counts[c] <= per
        big = idx[labels[idx] == 0]
        assert len(np.unique(big)) == len(big)  # the big cluster is drawn without replacement
        for c in (1, 2, 3, 5):  # small ones with replacement (45 draws from 5 members)
            assert set(idx[labels[idx] == c]) == set(np.flatnonzero(labels == c))
        totals += counts
    np.testing.assert_allclose(totals[[0, 1, 2, 3, 5]] / 40, n / non_empty, atol=0.6)


# -- DeepCluster: runs -----------------------------------------------------------------------------------------------
def test_deepcluster_history(deepcluster_run: RunRef) -> None:
    s = Session(deepcluster_run.run_url)
    hist = s.history
    assert len(s.data) == N_TRAIN and len(hist) == 3
    for epoch, h in enumerate(hist):
        assert h["epoch"] == epoch
        assert len(h["cluster_sizes"]) == DC_OPTIONS["k"] and sum(h["cluster_sizes"]) == N_TRAIN
        assert h["empty_clusters"] == h["cluster_sizes"].count(0)
        assert 0.0 <= h["nmi_labels"] <= 1.0  # the store is labelled: logged (never trained on)
        assert ("nmi_previous" in h) == (epoch > 0)
        assert h["device"] == "cpu" and h["threads"] >= 1  # what it trained with, beside its seed
    assert all(0.0 <= h["nmi_previous"] <= 1.0 for h in hist[1:])
    last = hist[-1]
    assert isinstance(s.method, DeepCluster)
    current, previous = s.method.assignment.numpy(), s.method.previous.numpy()
    assert last["nmi_labels"] == pytest.approx(nmi(s.data.labels, current))
    assert last["nmi_previous"] == pytest.approx(nmi(previous, current))
    assert sorted(np.bincount(current, minlength=DC_OPTIONS["k"]).tolist(), reverse=True) == last["cluster_sizes"]


def test_deepcluster_unlabelled_store_logs_no_label_nmi(unlabelled_store: str, tmp_path: Path) -> None:
    options = {**DC_OPTIONS, "epochs": 2}
    ref, _ = fit(
        RunRequest(
            method="deepcluster", data_url=unlabelled_store, options=options, run_url=str(tmp_path / "r"), device="cpu"
        )
    )
    hist = Session(ref.run_url).history
    assert len(hist) == 2 and all("nmi_labels" not in h and "cluster_sizes" in h for h in hist)
    assert "nmi_previous" in hist[1]


def test_deepcluster_never_trains_on_labels(deepcluster_run: RunRef, tmp_path: Path) -> None:
    """The same grids with other labels (same seed) give the identical embedding."""
    with np.load(write_npz(tmp_path / "orig.npz")) as f:
        parts = {key: f[key] for key in f.files}
    rng = np.random.default_rng(5)
    relabelled = {**parts, "y_train": rng.permutation(parts["y_train"]), "y_test": rng.permutation(parts["y_test"])}
    assert (relabelled["y_train"] != parts["y_train"]).any()
    np.savez(tmp_path / "relabelled.npz", **relabelled)
    store = str(tmp_path / "store")
    import_npz(tmp_path / "relabelled.npz", store, classes=["box", "ball", "rod"])
    ref, _ = fit(
        RunRequest(
            method="deepcluster", data_url=store, options=DC_OPTIONS, run_url=str(tmp_path / "run"), device="cpu"
        )
    )

    a, rows_a, attrs_a = read_embedding(deepcluster_run.run_url)
    b, rows_b, attrs_b = read_embedding(ref.run_url)
    np.testing.assert_array_equal(rows_a, rows_b)
    np.testing.assert_array_equal(a, b)
    nmi_a = [h["nmi_labels"] for h in attrs_a["history"]]
    nmi_b = [h["nmi_labels"] for h in attrs_b["history"]]
    assert nmi_a != nmi_b  # the labels did differ (and were seen, for logging only)


def test_deepcluster_k_larger_than_the_set_is_refused(tiny_store: str, tmp_path: Path) -> None:
    with pytest.raises(MethodError, match=rf"k={N_TRAIN + 1} .*has {N_TRAIN}"):
        create_run(
            RunRequest(
                method="deepcluster",
                data_url=tiny_store,
                options={**DC_OPTIONS, "k": N_TRAIN + 1},
                run_url=str(tmp_path / "r"),
            )
        )
    assert not (tmp_path / "r").exists()  # refused before any run file was written


# -- triplet ---------------------------------------------------------------------------------------------------------
def test_triplet_mines_every_batch_and_embeds_on_the_sphere(tiny_store: str, tmp_path: Path) -> None:
    options = {**METRIC, "embedding_dim": 8}
    ref, emb = fit(
        RunRequest(method="triplet", data_url=tiny_store, options=options, run_url=str(tmp_path / "run"), device="cpu")
    )
    hist = Session(ref.run_url).history
    assert len(hist) == METRIC["epochs"]
    for h in hist:
        assert h["batches"] == N_TRAIN // METRIC["shapes_per_batch"]  # full P-batches only
        assert h["triplets_min"] > 0 and h["triplets_mean"] >= h["triplets_min"]
    x, _, _ = read_embedding(ref.run_url, emb.name)
    assert x.shape == (59, 8)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_triplet_one_view_per_shape_is_refused(tiny_store: str, tmp_path: Path) -> None:
    with pytest.raises(MethodError, match="views_per_shape"):
        create_run(
            RunRequest(
                method="triplet",
                data_url=tiny_store,
                options={**METRIC, "views_per_shape": 1},
                run_url=str(tmp_path / "r"),
            )
        )
    assert not (tmp_path / "r").exists()


def test_one_view_per_label_mines_nothing() -> None:
    """Why K >= 2: with every label once there is no positive pair, so no triplet of any kind."""
    method = Triplet(TripletConfig(**METRIC, embedding_dim=8), method_info(30), "cpu")
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(24, 8, generator=gen), dim=1)
    unique = torch.arange(24)
    pairs = torch.arange(12).repeat_interleave(2)
    assert len(lmu.get_all_triplets_indices(unique)[0]) == 0  # not even one candidate triplet
    assert len(lmu.get_all_triplets_indices(pairs)[0]) == 12 * 2 * 22  # K = 2: one positive, 22 negatives each
    margin_violating = miners.TripletMarginMiner(margin=0.2, type_of_triplets="all")
    assert len(margin_violating(emb, unique)[0]) == 0 and len(margin_violating(emb, pairs)[0]) > 0
    assert len(method.miner(emb, unique)[0]) == 0  # the method's semi-hard miner
    assert float(method.loss(emb, unique, method.miner(emb, unique))) == 0.0


# -- SoftTriple ------------------------------------------------------------------------------------------------------
def softtriple_reference(
    emb: torch.Tensor, labels: torch.Tensor, fc: torch.Tensor, cfg: SoftTripleConfig, k: int, reg_eps: float
) -> float:
    """Qian et al. 2019, eq. (8)-(9) and the centre regulariser, in float64."""
    x = torch.nn.functional.normalize(emb.double(), dim=1)
    w = torch.nn.functional.normalize(fc.double(), dim=0)  # (dim, C*K), one centre per column
    n_classes = w.shape[1] // k
    s_ck = (x @ w).view(len(x), n_classes, k)  # S_c^k
    s_c = (torch.softmax(s_ck / cfg.gamma, dim=2) * s_ck).sum(dim=2)  # S_c
    logits = cfg.la * s_c
    logits[torch.arange(len(x)), labels] = cfg.la * (s_c[torch.arange(len(x)), labels] - cfg.margin)
    true = logits[torch.arange(len(x)), labels]
    loss = (-(true - torch.logsumexp(logits, dim=1))).mean()
    reg, pairs = torch.zeros((), dtype=torch.float64), 0
    for c in range(n_classes):
        centres = w[:, c * k : (c + 1) * k]
        for a in range(k):
            for b in range(a + 1, k):
                reg = reg + torch.sqrt(2.0 + reg_eps - 2.0 * centres[:, a] @ centres[:, b])
                pairs += 1
    return float(loss + cfg.tau * reg / (2 * pairs))  # 2 * pairs = C K (K - 1), the paper's divisor


@pytest.mark.parametrize("tau", [0.0, 0.3])
def test_softtriple_loss_matches_the_paper(tau: float) -> None:
    k, dim, n_classes = 3, 8, 4
    cfg = SoftTripleConfig(
        **METRIC, mode="supervised", centers_per_class=k, embedding_dim=dim, la=20.0, gamma=0.1, margin=0.01, tau=tau
    )
    method = SoftTriple(cfg, method_info(30, n_classes), "cpu")
    loss = method.loss
    assert tuple(loss.fc.shape) == (dim, n_classes * k)
    assert (loss.weight_regularizer is None) == (tau == 0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        loss.fc.copy_(torch.randn(dim, n_classes * k, generator=gen))
    emb = torch.randn(10, dim, generator=gen) * 3.0  # not normalised: the loss normalises
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 2])
    got = float(loss(emb, labels).detach())
    # The regulariser puts the paper code's 1e-5 under the square root and clamps 2 w.w' at 2; with distinct
    # centres the clamp never acts.
    want = softtriple_reference(emb, labels, loss.fc.detach(), cfg, k, reg_eps=1e-5)
    assert got == pytest.approx(want, abs=1e-5)


def test_softtriple_merged_centres_keep_finite_gradients() -> None:
    """Two centres of a class that merged (cosine 1) gave sqrt(0) and an infinite gradient with the library's
    regulariser (NaN loss on ModelNet10, epoch 8); with the paper code's 1e-5 the gradient stays finite."""
    k, dim = 3, 8
    cfg = SoftTripleConfig(**METRIC, mode="supervised", centers_per_class=k, embedding_dim=dim, tau=0.2)
    method = SoftTriple(cfg, method_info(30, 2), "cpu")
    with torch.no_grad():
        method.loss.fc.copy_(torch.randn(dim, 2 * k, generator=torch.Generator().manual_seed(1)))
        method.loss.fc[:, :2] = 0.0
        method.loss.fc[0, :2] = 1.0  # centres 0 and 1 of class 0: the same unit vector (cosine exactly 1)
    emb = torch.randn(6, dim, generator=torch.Generator().manual_seed(2))
    out = method.loss(emb, torch.tensor([0, 1, 0, 1, 0, 1]))
    out.backward()
    assert method.loss.fc.grad is not None
    assert torch.isfinite(out) and torch.isfinite(method.loss.fc.grad).all()


def test_softtriple_parameter_groups() -> None:
    cfg = SoftTripleConfig(**METRIC, mode="supervised", centers_per_class=3, embedding_dim=8, lr=2e-3, centers_lr=3e-2)
    method = SoftTriple(cfg, method_info(30, 4), "cpu")
    groups = method.optimizers["model"].param_groups
    assert [g["lr"] for g in groups] == [2e-3, 3e-2]
    assert [id(p) for p in groups[1]["params"]] == [id(method.loss.fc)]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in method.nets["model"].parameters()}


def test_softtriple_instance_centres_need_more_views(tiny_store: str, tmp_path: Path) -> None:
    options = {**METRIC, "mode": "instance", "views_per_shape": 3, "embedding_dim": 8}
    with pytest.raises(MethodError, match=r"views_per_shape=3"):
        create_run(
            RunRequest(
                method="softtriple",
                data_url=tiny_store,
                options={**options, "centers_per_class": 3},
                run_url=str(tmp_path / "r"),
            )
        )
    assert not (tmp_path / "r").exists()
    data = voxel_data(4)
    SoftTriple.check(SoftTripleConfig(**{**options, "centers_per_class": 2}), data)  # K < views: accepted
    method = SoftTriple(SoftTripleConfig(**options), method_info(len(data)), "cpu")  # default: 1 centre
    assert method.loss.centers_per_class == 1 and method.loss.weight_regularizer is None
    assert tuple(method.loss.fc.shape) == (8, len(data))  # one class per shape


def test_softtriple_supervised_needs_labels(unlabelled_store: str, tmp_path: Path) -> None:
    options = {**METRIC, "mode": "supervised", "batch_size": 8, "embedding_dim": 8}
    with pytest.raises(MethodError, match="needs a label"):
        create_run(
            RunRequest(method="softtriple", data_url=unlabelled_store, options=options, run_url=str(tmp_path / "r"))
        )
    assert not (tmp_path / "r").exists()


# -- augmentation keeps shapes upright -------------------------------------------------------------------------------
def shifted(profile: np.ndarray, dz: int) -> np.ndarray:
    out = np.zeros_like(profile)
    if dz >= 0:
        out[dz:] = profile[: len(profile) - dz]
    else:
        out[:dz] = profile[-dz:]
    return out


def test_views_keep_the_z_profile_unless_vertical_flip() -> None:
    """Stronger than test_augment.py: the whole z-profile survives quarter turns, flips and shifts exactly
    (only moved by the z-shift), and only ``vertical_flip`` ever reverses it."""
    g = np.zeros((16, 16, 16), bool)
    # A stepped pyramid in the bottom half (layers of 56, 42, 20, 9, 2 voxels), off-centre but at least 4 voxels
    # from every side, so that no turn or 2-voxel shift pushes anything out of the grid.
    g[4:12, 4:11, 3] = True
    g[4:11, 5:11, 4] = True
    g[5:10, 6:10, 5] = True
    g[5:8, 6:9, 6] = True
    g[6:8, 7:8, 7] = True
    profile = g.sum(axis=(0, 1))
    assert (profile[8:] == 0).all() and len(set(profile[3:8].tolist())) == 5
    upright = [shifted(profile, dz) for dz in range(-2, 3)]
    flipped = [shifted(profile[::-1], dz) for dz in range(-2, 3)]

    def kind(view: np.ndarray) -> str:
        p = view.sum(axis=(0, 1))
        if any(np.array_equal(p, q) for q in upright):
            return "upright"
        if any(np.array_equal(p, q) for q in flipped):
            return "flipped"
        return "other"

    rng = np.random.default_rng(0)
    default_exact = AugmentConfig(z_steps=4, flip_p=0.5)  # default shift 2, exact quarter turns
    assert {kind(augment(g, rng, default_exact)) for _ in range(60)} == {"upright"}
    for _ in range(30):  # default config (30-degree turns resample each layer): still never upside down
        p = augment(g, rng).sum(axis=(0, 1))
        assert p[:10].sum() == p.sum() and p[10:].sum() == 0
    kinds = [kind(augment(g, rng, default_exact.model_copy(update={"vertical_flip": True}))) for _ in range(60)]
    assert set(kinds) == {"upright", "flipped"} and 15 < kinds.count("flipped") < 45


# -- CUDA paths: mixed precision and per-epoch sums (exercised on CPU; the last test needs a GPU) ----------------
def test_epoch_sums_match_python_sums() -> None:
    from lib.features.torchbase import EpochSums

    sums = EpochSums()
    values = [0.25, 1.5, 3.0]
    for v in values:
        sums.add("loss", torch.tensor(v, dtype=torch.float32))
        sums.add("hits", torch.tensor([True, False, True]))
    assert sums.value("loss") == pytest.approx(sum(values))
    assert sums.value("hits") == 6.0 and sums.value("never") == 0.0


def test_mixed_precision_only_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from lib.features.torchbase import mixed_precision

    assert not mixed_precision("cpu")
    assert mixed_precision("cuda") and mixed_precision("cuda:1")
    monkeypatch.setenv("VOXCLUST_MIXED_PRECISION", "off")
    assert not mixed_precision("cuda")
    cfg = DeepClusterConfig(epochs=1, k=3, width=4, feature_dim=8, batch_size=8)
    m = DeepCluster(cfg, DataInfo(16, 12, 3), "cpu")
    assert not m.amp
    with m.autocast():  # a no-op context on CPU
        assert not torch.is_autocast_enabled()


@pytest.mark.parametrize("method", ["voxnet", "autoencoder", "deepcluster", "triplet", "softtriple", "simclr"])
def test_autocast_path_runs_and_changes_nothing_on_cpu(method: str) -> None:
    """The CUDA training path (forward under torch.autocast("cuda"), losses on float32 outputs) runs on CPU,
    where CUDA autocast leaves CPU tensors alone: the same epoch gives the same numbers as without it."""
    import warnings

    from lib.features.registry import get_method
    from lib.features.runs import make_config

    x, y = shapes(8, 0)
    data = VoxelData(x, y, np.arange(len(x)))
    opts = {"epochs": 1, "batch_size": 8, "width": 4}
    if method == "deepcluster":
        opts |= {"k": 4, "feature_dim": 8}
    if method in ("triplet", "softtriple", "simclr"):
        opts = {"epochs": 1, "width": 4, "hidden": 16, "shapes_per_batch": 4}
    if method == "voxnet":
        opts = {"epochs": 1, "batch_size": 8, "fc": 8}
    logged = []
    for amp in (False, True):
        m = get_method(method)(make_config(method, opts), DataInfo(16, len(data), 3), "cpu")
        m.amp = amp
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CUDA is not available. Disabling" from torch.autocast
            if m.has_prepare:
                m.prepare_epoch(data, 0, np.random.default_rng(0))
            logged.append(m.train_epoch(data, 0, np.random.default_rng(1)))
    assert logged[0] == logged[1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda_with_bf16() -> None:
    x, y = shapes(16, 0)
    data = VoxelData(x, y, np.arange(len(x)))
    cfg = DeepClusterConfig(epochs=2, k=4, width=4, feature_dim=8, batch_size=8)
    m = DeepCluster(cfg, DataInfo(16, len(data), 3), "cuda")
    assert m.amp
    for epoch in range(2):
        m.prepare_epoch(data, epoch, np.random.default_rng(epoch))
        out = m.train_epoch(data, epoch, np.random.default_rng(epoch))
        assert np.isfinite(out["loss"])
    emb = m.embed(x)
    assert emb.shape == (len(x), 8) and np.isfinite(emb).all()
