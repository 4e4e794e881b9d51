"""``softtriple``: SoftTriple loss (Qian, Shang, Sun, Hu, Li & Jin, "SoftTriple Loss: Deep Metric Learning
Without Triplet Sampling", ICCV 2019), from pytorch-metric-learning.

For an embedding x (L2-normalised) and K centres w_c^k per class (normalised), the similarity to class c is
``S_c = sum_k softmax_k(S_c^k / gamma) S_c^k`` with ``S_c^k = x . w_c^k``, and the loss is the softmax
cross-entropy ``-log( exp(la (S_y - delta)) / (exp(la (S_y - delta)) + sum_{c != y} exp(la S_c)) )``.
The regulariser ``tau * sum_c sum_{k<k'} sqrt(2 + eps - 2 w_c^k . w_c^k') / (2 * pairs)`` merges redundant
centres (pytorch-metric-learning's ``SparseCentersRegularizer``; it has no tau argument, so tau is its
weight). Paper defaults: la = 20, gamma = 0.1, tau = 0.2, delta = 0.01, K = 10, embedding 64; Adam with
lr 1e-4 for the network and 1e-2 for the centres (their own parameter group).

Modes:

- ``supervised``: classes = the store's labels, K = 10 centres per class (batches of ``batch_size`` items).
- ``instance``: each shape is its own class, batches of P shapes x K views like ``triplet``; K must be smaller
  than the views of a class in a batch (authors' issue #9), so 1 centre per instance by default (the sparse
  centres regulariser needs 2 or more and is off with 1; with N instances it costs (N*K)^2 memory).

If the loss goes NaN, lower ``la`` to about 10 (authors' issue #14).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from pytorch_metric_learning import losses, regularizers

from lib.features.base import MethodConfig, MethodError, VoxelData
from lib.features.metric import MetricConfig, MetricMethod
from lib.features.torchbase import batches, cosine_lr


class SoftTripleConfig(MetricConfig):
    epochs: int = Field(8, ge=0, description="training epochs")
    mode: Literal["supervised", "instance"] = Field("instance", description="classes = labels, or = shapes")
    lr: float = Field(1e-3, gt=0, description="network learning rate (paper: 1e-4)")
    centers_lr: float = Field(1e-2, gt=0, description="learning rate of the class centres (paper: 1e-2)")
    centers_per_class: int | None = Field(None, ge=1, description="K (default 10 supervised, 1 instance)")
    la: float = Field(20.0, gt=0, description="lambda, the scale of the similarities")
    gamma: float = Field(0.1, gt=0, description="softmax temperature over a class's centres")
    tau: float = Field(0.2, ge=0, description="weight of the sparse-centres regulariser")
    margin: float = Field(0.01, ge=0, description="delta, the margin on the true class")


def centers_per_class(config: SoftTripleConfig) -> int:
    if config.centers_per_class is not None:
        return config.centers_per_class
    return 10 if config.mode == "supervised" else 1


class SparseCenters(regularizers.SparseCentersRegularizer):
    """pytorch-metric-learning's sparse-centres regulariser with the SoftTriple authors' ``1e-5`` inside the
    square root (idstcv/SoftTriple: ``sqrt(2 + 1e-5 - 2 w.w')``). The library adds the smallest normal float
    instead, so once two centres of a class merge (the regulariser's aim) the gradient of ``sqrt(0)`` is
    infinite and the loss turns NaN: that happened on ModelNet10 in epoch 8 of supervised training."""

    EPS = 1e-5

    def compute_loss(self, weights: torch.Tensor) -> dict[str, Any]:
        sims = self.distance(weights)
        same = torch.clamp(2.0 * sims[self.same_class_mask], max=2.0)
        reg = torch.sqrt(2.0 + self.EPS - same)
        self.set_stats(sims)
        return {
            "loss": {
                "losses": reg,
                "indices": torch.arange(reg.numel(), device=reg.device),
                "reduction_type": "element",
                "divisor": 2 * torch.sum(self.same_class_mask),
            }
        }


class SoftTriple(MetricMethod):
    name: ClassVar[str] = "softtriple"
    config_cls = SoftTripleConfig
    config: SoftTripleConfig

    @classmethod
    def needs_labels(cls, config: MethodConfig) -> bool:
        return isinstance(config, SoftTripleConfig) and config.mode == "supervised"

    @classmethod
    def check(cls, config: MethodConfig, data: VoxelData) -> None:
        super().check(config, data)
        assert isinstance(config, SoftTripleConfig)
        k = centers_per_class(config)
        if config.mode == "instance" and k >= config.views_per_shape:
            raise MethodError(
                f"softtriple: {k} centres per instance need more than {k} views per shape in a batch "
                f"(views_per_shape={config.views_per_shape})"
            )
        if config.mode == "supervised" and len(data) < config.batch_size:
            raise MethodError(f"softtriple: batch_size={config.batch_size} is larger than the set ({len(data)} items)")

    def n_classes(self) -> int:
        return self.info.n_classes if self.config.mode == "supervised" else self.info.n_items

    def make_optimizers(self) -> None:
        c = self.config
        k = centers_per_class(c)
        reg = SparseCenters(self.n_classes(), k) if k > 1 and c.tau > 0 else None
        self.loss = losses.SoftTripleLoss(
            self.n_classes(),
            c.embedding_dim,
            centers_per_class=k,
            la=c.la,
            gamma=c.gamma,
            margin=c.margin,
            weight_regularizer=reg,
            weight_reg_weight=c.tau,
        ).to(self.device)
        self.nets["loss"] = self.loss
        self.optimizers["model"] = torch.optim.Adam(
            [
                {"params": self.nets["model"].parameters(), "lr": c.lr, "weight_decay": c.weight_decay},
                {"params": self.loss.parameters(), "lr": c.centers_lr},
            ]
        )

    def batches(self, data: VoxelData, rng: np.random.Generator) -> Any:
        if self.config.mode == "instance":
            yield from self.pk_batches(data, rng)
            return
        labels = torch.from_numpy(data.labels).to(self.device)
        for idx in batches(len(data), self.config.batch_size, rng, drop_last=True):
            yield self.views(data.grids[idx], rng), labels[idx]

    def train_epoch(self, data: VoxelData, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        opt = self.optimizers["model"]
        set_lr_groups(opt, [cosine_lr(c.lr, epoch, c.epochs), cosine_lr(c.centers_lr, epoch, c.epochs)])
        self.train_mode(True)
        return self.loss_epoch(self.batches(data, rng), opt)


def set_lr_groups(opt: torch.optim.Optimizer, lrs: list[float]) -> None:
    for group, lr in zip(opt.param_groups, lrs, strict=True):
        group["lr"] = lr
