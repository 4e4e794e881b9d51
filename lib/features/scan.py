"""``scan``: SCAN (Van Gansbeke, Vandenhende, Georgoulis, Proesmans & Van Gool, "SCAN: Learning to Classify
Images without Labels", ECCV 2020; wvangansbeke/Unsupervised-Classification), on voxel grids.

One run trains three phases, one run-engine step per epoch (each a Prefect task, resumable from the
checkpoint), ``pretext_epochs + epochs + selflabel_epochs`` in all:

1. **Pretext** (``pretext_epochs``): the ``simclr`` contrastive pretext (NT-Xent on strong views, see
   :mod:`lib.features.simclr`) with this config's simclr fields. The default pretext is fixed and documented
   here (simclr with its defaults, 60 epochs), never chosen by a label score. With ``pretext_run`` (a finished
   simclr, triplet or instance-softtriple run of the same store, with the same network sizes) the run starts
   from that network instead and trains no pretext itself.
2. **Neighbours** (the prepare step of the first SCAN epoch): every training grid embedded by the pretext
   (the L2-normalised projection; or by the finished run ``neighbours_run``, any method's, when given), its
   ``neighbours`` nearest others by cosine similarity (faiss, exact inner-product search), mined once.
   Logged: the share of neighbours with the anchor's label when the store has labels (a diagnostic only,
   never used for training; SCAN's tutorial reads about 0.7 as good enough).
3. **SCAN step** (``epochs``): ``heads`` linear cluster heads on the pretext backbone (fine-tuned unless
   ``head_only``), each trained with the SCAN loss on a strongly augmented anchor and one of its neighbours
   drawn at random: ``-mean log <p_a, p_n> - entropy_weight * H(mean p_a)`` (consistency of neighbours, plus
   the entropy of the batch's mean prediction, which keeps clusters from collapsing). Adam, lr ``scan_lr``
   (1e-4), weight decay 1e-4, as the paper's CIFAR config. The head with the lowest loss in the last SCAN
   epoch is kept. After every epoch (and before mining) the batch-norm statistics are re-estimated on the
   plain grids: trained on strong views, they otherwise describe views, and eval-mode predictions on plain
   grids drift into one cluster (measured on ModelNet10: 221 of 901 test shapes in one of 10 clusters after
   the SCAN step, then all of them after self-labelling).
4. **Self-labelling** (``selflabel_epochs``, off by default: see the figures below): each epoch, the kept
   head's predictions on the plain training grids; for each cluster, at most ``selflabel_share * N / k`` of
   the rows it wins with a top probability >= ``confidence``, the most confident first, become
   pseudo-labels, trained with class-balanced cross-entropy on strong views. The per-cluster cap is
   SPICE's (Niu, Shan & Wang, "SPICE: Semantic Pseudo-Labeling for Image Clustering", IEEE TIP 2022), not
   SCAN's, which keeps every confident row and balances the loss per batch: on ModelNet10 that collapsed
   every shape into one cluster within 3 epochs (NMI 0.54 -> 0.12), as confident rows of one cluster taught
   the rest to join it; balanced, the same head went 0.534 -> 0.590 in 3 epochs (then drifted to 0.575 by
   epoch 10), but a better head (0.589, the quality benchmark's scan row) went down to 0.573 in 5 epochs:
   no steady gain yet, so it is off. The paper's threshold is 0.99 for 50k images; ours is lower (0.9),
   see ``confidence``.

The embedding is the kept head's softmax (``k`` columns): the comparison's shared k-means runs on it like on
every method's embedding, and its arg-max is the method's own assignment (:attr:`ScanMethod.assigns`).
``k`` defaults to the number of classes of the store (what the comparison's k defaults to, so both
partitions have as many groups); set it when the store is unlabelled.
"""

from __future__ import annotations

from typing import Any, ClassVar

import faiss  # noqa: F401  (before torch: some builds crash the other way round)
import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from lib.evaluation.inputs import ClusterError
from lib.evaluation.neighbours import label_agreement, nearest_neighbours
from lib.features.base import MethodConfig, MethodError, VoxelData
from lib.features.simclr import SimCLR, SimCLRConfig
from lib.features.torchbase import EpochSums, batches, cosine_lr, set_lr

EPS = 1e-8


class ScanConfig(SimCLRConfig):
    """The pretext's options are the inherited simclr fields (``lr``, ``temperature``, ``views``, ...);
    ``epochs`` is the SCAN step's length."""

    epochs: int = Field(30, ge=0, description="epochs of the SCAN step")
    pretext_epochs: int = Field(60, ge=0, description="epochs of the simclr pretext, trained first")
    pretext_run: str | None = Field(
        None, description="a finished simclr / triplet / instance-softtriple run of the same store to start from"
    )
    neighbours_run: str | None = Field(
        None, description="a finished run of the same store (any method) to mine neighbours in (default: the pretext)"
    )
    selflabel_epochs: int = Field(
        0, ge=0, description="epochs of self-labelling after the SCAN step (off: no steady gain on ModelNet10)"
    )
    k: int | None = Field(None, ge=2, description="clusters (default: the store's classes, else 10)")
    neighbours: int = Field(20, ge=1, description="nearest neighbours mined per item (paper: 20)")
    heads: int = Field(5, ge=1, le=20, description="cluster heads trained side by side; the lowest loss kept")
    entropy_weight: float = Field(5.0, ge=0, description="weight of the entropy term (paper: 5)")
    scan_lr: float = Field(1e-4, gt=0, description="Adam lr of the SCAN and self-labelling steps (paper: 1e-4)")
    scan_weight_decay: float = Field(1e-4, ge=0, description="Adam weight decay of those steps (paper: 1e-4)")
    head_only: bool = Field(False, description="train the heads on a frozen backbone")
    confidence: float = Field(0.9, gt=0, lt=1, description="self-labelling threshold (paper: 0.99)")
    selflabel_share: float = Field(
        0.5, gt=0, le=1, description="pseudo-labels per cluster: at most this share of items / k (SPICE: 0.5)"
    )
    scan_batch_size: int = Field(64, ge=2, description="anchors per SCAN / self-labelling batch")


def scan_loss(anchors: torch.Tensor, neighbours: torch.Tensor, entropy_weight: float) -> dict[str, torch.Tensor]:
    """SCAN's loss on logits of anchors and of one neighbour each: ``consistency - w * entropy`` with
    consistency ``-mean_i log <softmax(a_i), softmax(n_i)>`` and entropy ``-sum_k p_k log p_k`` of the mean
    anchor probability ``p``."""
    pa, pn = F.softmax(anchors, dim=1), F.softmax(neighbours, dim=1)
    consistency = -torch.log((pa * pn).sum(dim=1).clamp_min(EPS)).mean()
    mean = pa.mean(dim=0)
    entropy = -(mean * torch.log(mean.clamp_min(EPS))).sum()
    return {"loss": consistency - entropy_weight * entropy, "consistency": consistency, "entropy": entropy}


def mine_neighbours(features: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each row's ``k`` most cosine-similar other rows (exact faiss search)."""
    try:
        return nearest_neighbours(features, k)
    except ClusterError as exc:
        raise MethodError(f"scan: {exc}") from None


def balanced_pseudo_labels(
    probs: torch.Tensor, threshold: float, per_cluster: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-labelling targets balanced over clusters: for each cluster, at most ``per_cluster`` of the rows it
    wins with a top probability >= ``threshold``, the most confident first. Returns (rows, their cluster)."""
    top, target = probs.max(dim=1)
    rows = []
    for cluster in range(probs.shape[1]):
        members = torch.nonzero((target == cluster) & (top >= threshold)).flatten()
        order = torch.argsort(top[members], descending=True, stable=True)
        rows.append(members[order[:per_cluster]])
    picked = torch.sort(torch.cat(rows)).values
    return picked, target[picked]


def class_weights(targets: torch.Tensor, k: int) -> torch.Tensor:
    """Class-balanced cross-entropy weights: ``n / (n_classes_present * count_c)`` for the classes present
    among ``targets``, 0 elsewhere."""
    counts = torch.bincount(targets, minlength=k).float()
    present = counts > 0
    weights = torch.zeros(k)
    if present.any():
        weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


PRETEXT_METHODS = ("simclr", "triplet", "softtriple")


def own_pretext_epochs(config: ScanConfig) -> int:
    """Pretext epochs this run trains itself: none when it starts from a pretext run."""
    return 0 if config.pretext_run is not None else config.pretext_epochs


def pretext_network(config: ScanConfig, data_url: str | None = None) -> dict[str, Any]:
    """The embedding network's weights of ``config.pretext_run``, after checking that it is a finished run
    of a pretext method (of the store ``data_url`` when given) with this config's network sizes."""
    from lib.features.runs import finished_run

    assert config.pretext_run is not None
    try:
        spec, ckpt = finished_run(config.pretext_run, data_url)
    except FileNotFoundError:
        raise MethodError(f"scan: pretext run {config.pretext_run}: not found") from None
    if spec.method not in PRETEXT_METHODS or spec.config.get("mode", "instance") != "instance":
        raise MethodError(
            f"scan: pretext run {config.pretext_run} is a {spec.method} run; use one of {', '.join(PRETEXT_METHODS)}"
        )
    for size in ("width", "hidden", "embedding_dim"):
        if spec.config.get(size) != getattr(config, size):
            raise MethodError(
                f"scan: the pretext run has {size}={spec.config.get(size)}, this config {getattr(config, size)}; "
                "set the same network sizes"
            )
    state: dict[str, Any] = ckpt["state"]["nets"]["model"]
    return state


def check_neighbours_run(run_url: str, data_url: str | None = None) -> None:
    """That ``run_url`` is a finished run (of the store ``data_url`` when given)."""
    from lib.features.runs import finished_run

    try:
        finished_run(run_url, data_url)
    except FileNotFoundError:
        raise MethodError(f"scan: neighbours run {run_url}: not found") from None


def neighbour_run_embedding(run_url: str, grids: np.ndarray) -> np.ndarray:
    """The embedding of ``grids`` by the finished run ``run_url``."""
    from lib.features.runs import Session

    check_neighbours_run(run_url)
    return Session(run_url).method.embed(grids)


def cluster_count(config: ScanConfig, n_classes: int) -> int:
    """``k``, else the store's classes when it has at least 2, else 10."""
    return config.k or (n_classes if n_classes >= 2 else 10)


class ScanMethod(SimCLR):
    name: ClassVar[str] = "scan"
    config_cls = ScanConfig
    search_space: ClassVar[dict[str, Any]] = {}  # three phases: no default space yet (give --space)
    config: ScanConfig
    has_prepare = True
    assigns = True

    @classmethod
    def total_epochs(cls, config: MethodConfig) -> int:
        assert isinstance(config, ScanConfig)
        return own_pretext_epochs(config) + config.epochs + config.selflabel_epochs

    @classmethod
    def check_sources(cls, config: MethodConfig, data_url: str) -> None:
        assert isinstance(config, ScanConfig)
        if config.pretext_run is not None:
            pretext_network(config, data_url)
        if config.neighbours_run is not None:
            check_neighbours_run(config.neighbours_run, data_url)

    @classmethod
    def check(cls, config: MethodConfig, data: VoxelData) -> None:
        super().check(config, data)
        assert isinstance(config, ScanConfig)
        if config.neighbours >= len(data):
            raise MethodError(
                f"scan: neighbours={config.neighbours} needs more than {config.neighbours} training items, "
                f"the set has {len(data)}"
            )
        k = cluster_count(config, data.n_classes)
        if k > config.scan_batch_size or k >= len(data):
            raise MethodError(
                f"scan: k={k} clusters cannot be spread over batches of {config.scan_batch_size} anchors "
                f"and {len(data)} items; lower k or raise scan_batch_size"
            )
        if config.scan_batch_size > len(data):
            raise MethodError(f"scan: scan_batch_size={config.scan_batch_size} is larger than the set ({len(data)})")

    def n_clusters(self) -> int:
        return cluster_count(self.config, self.info.n_classes)

    def build(self) -> None:
        super().build()
        k = self.n_clusters()
        hidden = self.config.hidden
        self.nets["heads"] = nn.ModuleList([nn.Linear(hidden, k) for _ in range(self.config.heads)])
        self.neighbours = torch.zeros((0, self.config.neighbours), dtype=torch.int64)
        self.best_head = torch.zeros((), dtype=torch.int64)

    def make_optimizers(self) -> None:
        super().make_optimizers()
        c = self.config
        params = list(self.nets["heads"].parameters())
        if not c.head_only:
            params += list(self.encoder().parameters())
        self.optimizers["scan"] = torch.optim.Adam(params, lr=c.scan_lr, weight_decay=c.scan_weight_decay)

    def heads(self) -> nn.ModuleList:
        heads = self.nets["heads"]
        assert isinstance(heads, nn.ModuleList)
        return heads

    # -- phases ------------------------------------------------------------------------------------------------
    def phase(self, epoch: int) -> tuple[str, int, int]:
        """(phase, epoch within it, its length) of a run epoch."""
        c = self.config
        pretext = own_pretext_epochs(c)
        if epoch < pretext:
            return "pretext", epoch, pretext
        epoch -= pretext
        if epoch < c.epochs:
            return "scan", epoch, c.epochs
        return "selflabel", epoch - c.epochs, c.selflabel_epochs

    def pretext_embedding(self, grids: np.ndarray) -> np.ndarray:
        """The pretext's L2-normalised projection of each grid (what neighbours are mined in)."""
        return self.embed_with(self.projection_batch, grids)

    def prepare_epoch(self, data: VoxelData, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        name, within, _ = self.phase(epoch)
        if name != "scan" or within != 0:
            return {}
        if self.config.pretext_run is not None:  # the engine prepares this epoch once; then it is in our checkpoint
            self.nets["model"].load_state_dict(pretext_network(self.config))
        self.recalibrate_batchnorm(self.nets["model"], data.grids)  # statistics of the grids, not of views
        if self.config.neighbours_run is not None:
            features = neighbour_run_embedding(self.config.neighbours_run, data.grids)
        else:
            features = self.pretext_embedding(data.grids)
        self.neighbours = torch.from_numpy(mine_neighbours(features, self.config.neighbours))
        logged: dict[str, Any] = {"neighbours": self.config.neighbours}
        known = data.labels >= 0
        if known.all() and len(data):  # a diagnostic only: never used for training
            logged["knn_agree"] = label_agreement(self.neighbours.numpy(), data.labels)
        return logged

    def train_epoch(self, data: VoxelData, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        name, within, length = self.phase(epoch)
        if name == "pretext":
            return {"phase": 0, **self.contrastive_epoch(data, within, length, rng)}
        if len(self.neighbours) != len(data):
            raise MethodError("scan: the SCAN step needs its neighbours mined first (prepare_epoch)")
        if name == "scan":
            return {"phase": 1, **self.scan_epoch(data, within, length, rng)}
        return {"phase": 2, **self.selflabel_epoch(data, within, length, rng)}

    def scan_epoch(self, data: VoxelData, epoch: int, epochs: int, rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        opt = self.optimizers["scan"]
        set_lr(opt, cosine_lr(c.scan_lr, epoch, epochs))
        self.train_mode(True)
        encoder, heads = self.encoder(), self.heads()
        sums, steps = EpochSums(), 0
        nb = self.neighbours.numpy()
        for idx in batches(len(data), c.scan_batch_size, rng, drop_last=True):
            pick = nb[idx, rng.integers(0, nb.shape[1], len(idx))]
            x = torch.cat([self.views(data.grids[idx], rng), self.views(data.grids[pick], rng)])
            with self.autocast():
                feats = encoder(x)
            fa, fn = feats[: len(idx)], feats[len(idx) :]
            total = torch.zeros((), device=x.device)
            for h, head in enumerate(heads):
                parts = scan_loss(head(fa).float(), head(fn).float(), c.entropy_weight)
                total = total + parts["loss"]
                sums.add(f"loss_{h}", parts["loss"])
                sums.add(f"consistency_{h}", parts["consistency"])
                sums.add(f"entropy_{h}", parts["entropy"])
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            steps += 1
        self.recalibrate_batchnorm(self.nets["model"], data.grids)
        losses = [sums.value(f"loss_{h}") / max(steps, 1) for h in range(len(heads))]
        best = int(np.argmin(losses))
        self.best_head = torch.tensor(best)
        return {
            "loss": losses[best],
            "head": best,
            "consistency": sums.value(f"consistency_{best}") / max(steps, 1),
            "entropy": sums.value(f"entropy_{best}") / max(steps, 1),
            "batches": steps,
        }

    def selflabel_epoch(self, data: VoxelData, epoch: int, epochs: int, rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        opt = self.optimizers["scan"]
        set_lr(opt, cosine_lr(c.scan_lr, epoch, epochs))
        encoder, head = self.encoder(), self.heads()[int(self.best_head)]
        probs = torch.from_numpy(self.embed_with(self.head_probs, data.grids))  # eval mode, the grids themselves
        per_cluster = max(1, int(c.selflabel_share * len(data) / probs.shape[1]))
        rows, targets = balanced_pseudo_labels(probs, c.confidence, per_cluster)
        weights = class_weights(targets, probs.shape[1]).to(self.device)
        sums, steps = EpochSums(), 0
        self.train_mode(True)
        for pos in batches(len(rows), c.scan_batch_size, rng, drop_last=len(rows) >= c.scan_batch_size):
            x = self.views(data.grids[rows[pos].numpy()], rng)
            with self.autocast():
                logits = head(encoder(x)).float()
            loss = F.cross_entropy(logits, targets[pos].to(self.device), weight=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums.add("loss", loss)
            steps += 1
        self.recalibrate_batchnorm(self.nets["model"], data.grids)
        return {
            "loss": sums.value("loss") / max(steps, 1),
            "pseudo_labelled": len(rows),
            "pseudo_clusters": int(targets.unique().numel()),
        }

    # -- output ------------------------------------------------------------------------------------------------
    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.epochs == 0:  # no SCAN step: the pretext's embedding
            return super().embed_batch(x)
        return self.head_probs(x)

    def head_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The kept cluster head's softmax."""
        head = self.heads()[int(self.best_head)]
        return F.softmax(head(self.encoder()(x)).float(), dim=1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "neighbours": self.neighbours, "best_head": self.best_head}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.neighbours = state["neighbours"]
        self.best_head = state["best_head"]
