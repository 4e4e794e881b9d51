"""``voxnet``: the VoxNet classifier (Maturana & Scherer, "VoxNet: A 3D Convolutional Neural Network for
Real-Time Object Recognition", IROS 2015); features = its fc-128 layer.

Network: see :class:`lib.features.nets.VoxNet` (conv 32@5^3/2, conv 32@3^3, max-pool 2, fc 128, fc classes,
dropout 0.2/0.3/0.4, leaky ReLU 0.1). Input scaled to {-1, 1}.

Paper training: SGD momentum 0.9, batch 32, L2 0.001, lr 0.001 stepped down; augmentation by 12 rotations
about the vertical axis (plus flips and +-2 voxel shifts in the released code), test-time vote over the same
rotations. ModelNet10 test accuracy 92.0%.

Our defaults, for a CPU budget: Adam lr 1e-3 with cosine decay over ``epochs``, batch 32, weight decay 1e-4,
the paper's augmentation, 10% stratified validation split, test-time vote over 12 rotations.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from lib.features.nets import VoxNet as VoxNetNet
from lib.features.torchbase import ClassifierConfig, ClassifierMethod


class VoxNetConfig(ClassifierConfig):
    epochs: int = 30
    weight_decay: float = 1e-4
    vote_rotations: int = 12
    fc: int = Field(128, ge=8, description="width of the feature layer (paper: 128)")


class VoxNet(ClassifierMethod):
    name: ClassVar[str] = "voxnet"
    config_cls = VoxNetConfig
    config: VoxNetConfig

    def build(self) -> None:
        self.nets["model"] = VoxNetNet(self.info.n_classes, self.info.resolution, self.config.fc)
