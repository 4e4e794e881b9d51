"""``triplet``: triplet loss on augmented views, each shape its own class (as seed notebook 000, fixed).

Batches hold P shapes x K augmented views (default 16 x 4). The loss is pytorch-metric-learning's
``TripletMarginLoss`` on triplets from a semi-hard ``TripletMarginMiner`` (all triplets with
``0 < d(a, n) - d(a, p) <= margin``), composed as ``loss(emb, labels, miner(emb, labels))``. The embedding is
the L2-normalised output the loss trained (the seed notebook returned the pooled vector before its trained
projection: an untrained feature). With one view per shape nothing is mined, so K >= 2 is enforced. Every
epoch logs the triplets mined per batch (mean and minimum).

Defaults: conv encoder (width 16) -> 256 -> projection head -> 64, margin 0.2, Adam lr 1e-3 with cosine
decay, the shared augmentation (rotations about the up axis, flips, shifts; never a vertical flip).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from pytorch_metric_learning import losses, miners

from lib.features.base import VoxelData
from lib.features.metric import MetricConfig, MetricMethod
from lib.features.torchbase import EpochSums, cosine_lr, set_lr


class TripletConfig(MetricConfig):
    epochs: int = Field(8, ge=0, description="training epochs")
    margin: float = Field(0.2, gt=0, description="triplet margin, for the loss and the semi-hard miner")


class Triplet(MetricMethod):
    name: ClassVar[str] = "triplet"
    config_cls = TripletConfig
    config: TripletConfig

    def make_optimizers(self) -> None:
        c = self.config
        self.optimizers["model"] = torch.optim.Adam(
            self.nets["model"].parameters(), lr=c.lr, weight_decay=c.weight_decay
        )
        self.loss = losses.TripletMarginLoss(margin=c.margin)
        self.miner = miners.TripletMarginMiner(margin=c.margin, type_of_triplets="semihard")

    def train_epoch(self, data: VoxelData, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        opt = self.optimizers["model"]
        set_lr(opt, cosine_lr(c.lr, epoch, c.epochs))
        self.train_mode(True)
        mined: list[int] = []
        sums = EpochSums()
        for x, labels in self.pk_batches(data, rng):
            with self.autocast():
                emb = self.nets["model"](x).float()
            triplets = self.miner(emb, labels)
            loss = self.loss(emb, labels, triplets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            mined.append(len(triplets[0]))
            sums.add("loss", loss)
        return {
            "loss": sums.value("loss") / max(len(mined), 1),
            "triplets_mean": float(np.mean(mined)) if mined else 0.0,
            "triplets_min": int(min(mined)) if mined else 0,
            "batches": len(mined),
        }
