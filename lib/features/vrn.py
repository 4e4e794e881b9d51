"""``vrn``: Voxception-ResNet (Brock, Lim, Ritchie & Weston, "Generative and Discriminative Voxel Modeling
with Convolutional Neural Networks", arXiv 1608.04236, 2016); features = the penultimate fc layer.

Network: see :class:`lib.features.nets.VRN`. Paper: width 32, 3 blocks per stage (about 18M parameters),
SGD with Nesterov momentum, input scaled to {-1, 5} ({-1, 3} in the released code), 12 then 24 rotations,
a flipped/shifted copy plus the original; 93.6% on ModelNet10 with a 24-rotation vote, days on a Titan X.

Our defaults fit a CPU: width 8, 1 block per stage, a strided conv0 (the blocks start at 16^3), 8 epochs
(about 70 s an epoch of ModelNet10's 3,568 training grids with one torch thread on one core), Adam lr 1e-3
with cosine decay, input {-1, 3}, the shared augmentation, 10% stratified validation split, test-time vote over 12
rotations. ``width=32, blocks=3, stem_stride=1`` is the paper's network (use a GPU).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from lib.features.nets import VRN as VRNNet
from lib.features.torchbase import ClassifierConfig, ClassifierMethod, to_input


class VRNConfig(ClassifierConfig):
    epochs: int = Field(8, ge=0, description="training epochs")
    weight_decay: float = 1e-4
    vote_rotations: int = 12
    width: int = Field(8, ge=4, multiple_of=4, description="channels of the first stage (paper: 32)")
    blocks: int = Field(1, ge=1, le=6, description="Voxception blocks per stage (paper: 3)")
    stem_stride: int = Field(2, ge=1, le=2, description="stride of conv0 (paper: 1; 2 halves the grid)")


class VRN(ClassifierMethod):
    name: ClassVar[str] = "vrn"
    config_cls = VRNConfig
    config: VRNConfig

    def build(self) -> None:
        c = self.config
        self.nets["model"] = VRNNet(self.info.n_classes, c.width, c.blocks, self.info.resolution, c.stem_stride)

    def input(self, grids: np.ndarray) -> torch.Tensor:
        return to_input(grids, self.device, -1.0, 3.0)
