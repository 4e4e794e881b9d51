"""``deepcluster``: DeepCluster (Caron, Bojanowski, Joulin & Douze, "Deep Clustering for Unsupervised
Learning of Visual Features", ECCV 2018; facebookresearch/deepcluster), on 3D grids.

Every epoch, as the paper's code does:

1. ``prepare_epoch``: embed every training grid without augmentation; PCA to ``min(pca_dim, D)`` with
   whitening (eigenvalue power -0.5); L2-normalise rows; faiss k-means (``kmeans_iters`` iterations, fixed
   seed per epoch, ``kmeans_restarts`` restarts, never subsampled); the assignment becomes the pseudo-labels.
   faiss re-seeds an empty cluster from a perturbed big one; the final assignment's empty clusters are
   counted and skipped by the sampler. Logged: NMI between consecutive assignments, NMI against the store's
   labels when it has them (logged only, never used for training), cluster sizes, k-means objective.
2. ``train_epoch``: a new top layer (Linear feature -> k, weights N(0, 0.01), bias 0) with its own SGD
   without momentum; sample uniformly over the non-empty clusters (``int(N / non_empty) + 1`` per cluster,
   with replacement only for clusters smaller than that), one epoch of cross-entropy on augmented views.
   The backbone's lr follows a cosine decay over the run; the new head always starts at the base lr.

The backbone is a conv encoder with batch norm (:class:`lib.features.nets.ConvEncoder`) followed by batch
norm and ReLU; the embedding is that ``feature_dim`` layer (what gets clustered). Paper: SGD lr 0.05,
momentum 0.9, weight decay 1e-5, batch 256, k = 10,000 on ImageNet. On small data with k = the number of
classes it fails (NMI against labels below 0.1, deepcluster issue #22), so we over-cluster by default
(k = 100 for a dataset of about 10 shapes kinds) and use the shared augmentation.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from lib.evaluation.kmeans import kmeans
from lib.evaluation.metrics import nmi
from lib.evaluation.pca import fit_pca, l2_normalize
from lib.features.base import MethodConfig, MethodError, VoxelData
from lib.features.nets import ConvEncoder
from lib.features.torchbase import TORCH_SEARCH_SPACE, EpochSums, TorchConfig, TorchMethod, batches, cosine_lr, set_lr


class DeepClusterConfig(TorchConfig):
    epochs: int = Field(30, ge=0, description="training epochs")
    batch_size: int = 64
    lr: float = Field(0.05, gt=0, description="SGD learning rate (paper: 0.05)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of the backbone (paper: 0.9)")
    weight_decay: float = 1e-5
    k: int = Field(100, ge=2, description="clusters per re-clustering (over-clustering: k >> expected kinds)")
    pca_dim: int = Field(256, ge=2, description="PCA-whitening dimension (min with the feature size)")
    kmeans_iters: int = Field(20, ge=1, description="k-means iterations (paper: 20)")
    kmeans_restarts: int = Field(1, ge=1, description="k-means restarts, best objective kept")
    width: int = Field(16, ge=4, description="channels of the first conv")
    feature_dim: int = Field(128, ge=8, description="size of the clustered feature layer (the embedding)")


class DeepCluster(TorchMethod):
    name: ClassVar[str] = "deepcluster"
    config_cls = DeepClusterConfig
    search_space: ClassVar[dict[str, Any]] = {**TORCH_SEARCH_SPACE, "k": {"choices": [20, 50, 100]}}
    has_prepare = True
    config: DeepClusterConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.assignment = torch.zeros(0, dtype=torch.int64)
        self.previous = torch.zeros(0, dtype=torch.int64)

    @classmethod
    def check(cls, config: MethodConfig, data: VoxelData) -> None:
        super().check(config, data)
        assert isinstance(config, DeepClusterConfig)
        if len(data) < config.k:
            raise MethodError(
                f"deepcluster: k={config.k} clusters need at least as many items; the set has {len(data)}"
            )
        if len(data) < config.batch_size:
            raise MethodError(f"deepcluster: batch_size={config.batch_size} is larger than the set ({len(data)} items)")

    def build(self) -> None:
        c = self.config
        self.nets["backbone"] = nn.Sequential(
            ConvEncoder(self.info.resolution, c.width, c.feature_dim), nn.BatchNorm1d(c.feature_dim), nn.ReLU()
        )
        self.nets["head"] = nn.Linear(c.feature_dim, c.k)

    def make_optimizers(self) -> None:
        c = self.config
        self.optimizers["backbone"] = torch.optim.SGD(
            self.nets["backbone"].parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
        )

    def reset_head(self) -> torch.optim.Optimizer:
        head = self.nets["head"]
        assert isinstance(head, nn.Linear)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
        return torch.optim.SGD(head.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def cluster(self, features: np.ndarray, epoch: int) -> tuple[np.ndarray, dict[str, Any]]:
        """PCA-whiten, L2-normalise and k-means ``features``: the pseudo-labels and what to log."""
        c = self.config
        x = fit_pca(features, c.pca_dim, whiten=True).transform(features)
        x = l2_normalize(x)
        res = kmeans(x, c.k, seed=c.seed * 1000 + epoch, restarts=c.kmeans_restarts, niter=c.kmeans_iters)
        sizes = np.sort(res.sizes)[::-1]
        return res.labels, {
            "kmeans_inertia": float(res.inertia),
            "empty_clusters": int(res.n_empty),
            "cluster_sizes": [int(s) for s in sizes],
            "largest_cluster_share": float(sizes[0] / max(len(features), 1)),
        }

    def prepare_epoch(self, data: VoxelData, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        labels, logged = self.cluster(self.embed(data.grids), epoch)
        if len(self.assignment) == len(labels):
            logged["nmi_previous"] = nmi(self.assignment.numpy(), labels)
        known = data.labels >= 0
        if known.any():  # logged only: never used for training
            logged["nmi_labels"] = nmi(data.labels[known], labels[known])
        self.previous = self.assignment
        self.assignment = torch.from_numpy(labels.astype(np.int64))
        return logged

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Indices drawn uniformly over the non-empty clusters, shuffled, as many as items."""
        labels = self.assignment.numpy()
        n = len(labels)
        members = [np.flatnonzero(labels == c) for c in range(self.config.k)]
        members = [m for m in members if len(m)]
        per = int(n / len(members)) + 1
        picks = [rng.choice(m, per, replace=len(m) < per) for m in members]
        return rng.permutation(np.concatenate(picks))[:n]

    def train_epoch(self, data: VoxelData, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        if len(self.assignment) != len(data):
            raise MethodError("deepcluster: train_epoch before prepare_epoch")
        head_opt = self.reset_head()
        opt = self.optimizers["backbone"]
        set_lr(opt, cosine_lr(c.lr, epoch, c.epochs))
        order = self.sample(rng)
        target = self.assignment.to(self.device)
        self.train_mode(True)
        n, sums = 0, EpochSums()
        for idx in batches(len(order), c.batch_size, drop_last=True):
            rows = order[idx]
            x = self.views(data.grids[rows], rng)
            with self.autocast():
                logits = self.nets["head"](self.nets["backbone"](x)).float()
            y = target[rows]
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            head_opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            head_opt.step()
            sums.add("loss", loss * len(rows))
            sums.add("correct", logits.argmax(1) == y)
            n += len(rows)
        return {"loss": sums.value("loss") / max(n, 1), "pseudo_accuracy": sums.value("correct") / max(n, 1)}

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.nets["backbone"](x)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "assignment": self.assignment, "previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.assignment = state["assignment"]
        self.previous = state["previous"]
