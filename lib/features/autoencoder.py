"""``autoencoder``: a 3D convolutional autoencoder; features = its compact latent.

Encoder :class:`lib.features.nets.ConvEncoder` (strided 4^3 convs with batch norm down to 4^3, fc to the
latent), decoder :class:`lib.features.nets.ConvDecoder` (its mirror with transposed convs).

Loss: occupancy grids are sparse (ModelNet10 at 32^3 is about 10% filled), so plain BCE learns "all empty".
Following Brock et al. ("Generative and Discriminative Voxel Modeling with Convolutional Neural Networks",
2016) the loss is a weighted BCE, ``-g t log o - (1 - g)(1 - t) log(1 - o)``. Brock used g = 0.97; with it
every voxel with more than a 3% chance of being filled is drawn filled, so reconstructions bloat. Our default
g = 0.9 puts that cut at 10%, still far from "all empty". ``evaluate`` reports the mean reconstruction IoU
(threshold 0.5) on held-out grids; every epoch logs it on the training views.

Defaults: latent 128, width 16, Adam lr 1e-3 with cosine decay, batch 32, flips and +-2 voxel shifts (no
rotations: the data are upright and aligned; turn them on with ``augment``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch.nn import functional as F

from lib.features.augment import AugmentConfig
from lib.features.base import VoxelData
from lib.features.nets import ConvDecoder, ConvEncoder
from lib.features.torchbase import EMBED_BATCH, EpochSums, TorchConfig, TorchMethod, batches, cosine_lr, set_lr


class AutoencoderConfig(TorchConfig):
    epochs: int = Field(15, ge=0, description="training epochs")
    latent: int = Field(128, ge=8, le=4096, description="latent size (the embedding)")
    width: int = Field(16, ge=4, description="channels of the first conv")
    gamma: float = Field(0.9, gt=0.5, lt=1.0, description="weight of occupied voxels in the BCE (Brock: 0.97)")
    augment: AugmentConfig = Field(default_factory=lambda: AugmentConfig(rotation="none"))


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean of ``-g t log o - (1 - g)(1 - t) log(1 - o)`` with ``o = sigmoid(logits)``."""
    pos = gamma / (1.0 - gamma)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(pos, device=logits.device))
    return loss * (1.0 - gamma)


def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-item intersection over union of two boolean batches (1 for two empty grids)."""
    inter = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


class Autoencoder(TorchMethod):
    name: ClassVar[str] = "autoencoder"
    config_cls = AutoencoderConfig
    config: AutoencoderConfig

    def build(self) -> None:
        c, r = self.config, self.info.resolution
        self.nets["encoder"] = ConvEncoder(r, c.width, c.latent)
        self.nets["decoder"] = ConvDecoder(r, c.width, c.latent)

    def make_optimizers(self) -> None:
        params = [*self.nets["encoder"].parameters(), *self.nets["decoder"].parameters()]
        self.optimizers["model"] = torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def train_epoch(self, data: VoxelData, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        self.check_batch(len(data), 2)
        opt = self.optimizers["model"]
        set_lr(opt, cosine_lr(c.lr, epoch, c.epochs))
        self.train_mode(True)
        n, sums = 0, EpochSums()
        for idx in batches(len(data), c.batch_size, rng, drop_last=True):
            x = self.views(data.grids[idx], rng)
            target = (x.squeeze(1) > 0).float()
            with self.autocast():
                logits = self.nets["decoder"](self.nets["encoder"](x)).float()
            loss = weighted_bce(logits, target, c.gamma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums.add("loss", loss * len(idx))
            sums.add("iou", iou(logits.detach() > 0, target > 0))
            n += len(idx)
        return {"loss": sums.value("loss") / max(n, 1), "train_iou": sums.value("iou") / max(n, 1)}

    @torch.no_grad()
    def evaluate(self, data: VoxelData) -> dict[str, float]:
        self.train_mode(False)
        total = 0.0
        for idx in batches(len(data), EMBED_BATCH):
            x = self.input(data.grids[idx])
            logits = self.nets["decoder"](self.nets["encoder"](x))
            total += float(iou(logits > 0, x.squeeze(1) > 0).sum())
        return {"reconstruction_iou": total / max(len(data), 1)}

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.nets["encoder"](x)
        return out
