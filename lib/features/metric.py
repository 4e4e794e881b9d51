"""What the metric-learning methods (triplet, SoftTriple) share: an encoder with an embedding head, and
batches of P shapes x K augmented views where each shape is its own class."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from lib.features.base import MethodConfig, MethodError, VoxelData
from lib.features.nets import ConvEncoder, ProjectionHead, l2n
from lib.features.torchbase import EpochSums, TorchConfig, TorchMethod, batches


class MetricConfig(TorchConfig):
    shapes_per_batch: int = Field(16, ge=2, description="P: shapes per batch")
    views_per_shape: int = Field(4, ge=2, description="K: augmented views per shape (>= 2, or nothing is mined)")
    width: int = Field(16, ge=4, description="channels of the first conv")
    hidden: int = Field(256, ge=8, description="encoder output / head hidden size")
    embedding_dim: int = Field(64, ge=2, description="size of the trained, L2-normalised embedding")


class EmbeddingNet(nn.Module):
    """Conv encoder -> ReLU -> projection head -> L2 normalisation (the layer the loss trains)."""

    def __init__(self, resolution: int, width: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(ConvEncoder(resolution, width, hidden), nn.ReLU())
        self.head = ProjectionHead(hidden, hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(self.head(self.encoder(x)))


class MetricMethod(TorchMethod):
    config: MetricConfig
    loss: nn.Module  # a pytorch-metric-learning loss, set by ``make_optimizers``

    @classmethod
    def check(cls, config: MethodConfig, data: VoxelData) -> None:
        super().check(config, data)
        assert isinstance(config, MetricConfig)
        if not cls.needs_labels(config) and len(data) < config.shapes_per_batch:
            raise MethodError(
                f"{cls.name}: shapes_per_batch={config.shapes_per_batch} is larger than the set ({len(data)} items)"
            )

    def build(self) -> None:
        c = self.config
        self.nets["model"] = EmbeddingNet(self.info.resolution, c.width, c.hidden, c.embedding_dim)

    def pk_batches(self, data: VoxelData, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of P shapes x K views: (views, instance labels); every shape appears once per epoch."""
        c = self.config
        k = c.views_per_shape
        for idx in batches(len(data), c.shapes_per_batch, rng, drop_last=True):
            grids = np.repeat(data.grids[idx], k, axis=0)
            labels = torch.from_numpy(np.repeat(idx, k)).to(self.device)
            yield self.views(grids, rng), labels

    def loss_epoch(
        self, views: Iterable[tuple[torch.Tensor, torch.Tensor]], opt: torch.optim.Optimizer
    ) -> dict[str, Any]:
        """One pass of ``self.loss(embedding, labels)`` over batches of (views, labels), one step each."""
        sums, steps = EpochSums(), 0
        for x, labels in views:
            with self.autocast():
                emb = self.nets["model"](x).float()
            loss = self.loss(emb, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums.add("loss", loss)
            steps += 1
        return {"loss": sums.value("loss") / max(steps, 1), "batches": steps}

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.nets["model"](x)
        return out
