"""3D convolutional networks shared by the feature methods (PyTorch).

- :class:`VoxNet`: Maturana & Scherer, "VoxNet: A 3D Convolutional Neural Network for Real-Time Object
  Recognition", IROS 2015. Layer table (32^3 input)::

      conv 32 @ 5^3 stride 2 (valid) -> leaky ReLU 0.1 -> dropout 0.2
      conv 32 @ 3^3 (valid)          -> leaky ReLU 0.1 -> max-pool 2 -> dropout 0.3
      fc 128 -> ReLU -> dropout 0.4  -> fc classes

- :class:`VRN`: Voxception-ResNet, Brock et al., "Generative and Discriminative Voxel Modeling with
  Convolutional Neural Networks", arXiv 1608.04236 (2016). conv0, then four stages of ``blocks`` Voxception
  residual blocks and one Voxception downsampling block (widths w, 2w, 4w, 8w; grid halves each stage),
  global pooling, fc ``16 w`` (the paper's fc 512 at w = 32), fc classes. ``stem_stride = 2`` makes conv0
  strided (blocks start at half the grid): a CPU-budget option, not the paper's. Pre-activation BN + ELU,
  orthogonal initialisation, stochastic depth on the non-residual paths (keep probability falling from 0.95
  to 0.25 with depth, as the paper's schedule). Full size (w = 32, 3 blocks) needs a GPU; tests and CPU
  budgets use a smaller ``width``.

- :class:`ConvEncoder` / :class:`ConvDecoder`: a plain strided conv stack with batch norm (32^3 -> 4^3 or
  64^3 -> 4^3) and its mirror, for the autoencoder, DeepCluster, triplet and SoftTriple.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def conv_out(size: int, kernel: int, stride: int = 1) -> int:
    return (size - kernel) // stride + 1


class Classifier(nn.Module):
    """A ``trunk`` (input -> feature layer) and a ``head`` (feature layer -> class logits)."""

    trunk: nn.Module
    head: nn.Module
    feature_dim: int

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.trunk(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


class VoxNet(Classifier):
    """VoxNet; ``features`` returns the fc-128 layer (after its ReLU), ``forward`` the class logits."""

    def __init__(self, n_classes: int, resolution: int = 32, fc: int = 128) -> None:
        super().__init__()
        side = conv_out(conv_out(resolution, 5, 2), 3) // 2
        if side < 1:
            raise ValueError(f"VoxNet needs a grid of at least 14^3, got {resolution}^3")
        self.trunk = nn.Sequential(
            nn.Conv3d(1, 32, 5, stride=2),
            nn.LeakyReLU(0.1),
            nn.Dropout(0.2),
            nn.Conv3d(32, 32, 3),
            nn.LeakyReLU(0.1),
            nn.MaxPool3d(2),
            nn.Dropout(0.3),
            nn.Flatten(),
            nn.Linear(32 * side**3, fc),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.4), nn.Linear(fc, n_classes))
        self.feature_dim = fc


def _bn_elu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm3d(c), nn.ELU())


class VoxceptionBlock(nn.Module):
    """Pre-activation residual block with two parallel branches (1-3-1 and 3-3), concatenated, added to the
    input; the branch output is dropped with probability ``1 - keep`` during training (stochastic depth)."""

    def __init__(self, c: int, keep: float) -> None:
        super().__init__()
        half = c // 2
        self.pre = _bn_elu(c)
        self.a = nn.Sequential(
            nn.Conv3d(c, half // 2 or 1, 1),
            _bn_elu(half // 2 or 1),
            nn.Conv3d(half // 2 or 1, half // 2 or 1, 3, padding=1),
            _bn_elu(half // 2 or 1),
            nn.Conv3d(half // 2 or 1, half, 1),
        )
        self.b = nn.Sequential(nn.Conv3d(c, half, 3, padding=1), _bn_elu(half), nn.Conv3d(half, c - half, 3, padding=1))
        self.keep = keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        branch = torch.cat([self.a(h), self.b(h)], dim=1)
        if self.training:
            if torch.rand(()) >= self.keep:
                return x
            return x + branch / self.keep
        return x + branch


class VoxceptionDown(nn.Module):
    """Downsampling block: strided 3^3 conv, strided 1^3 conv, conv + max-pool, conv + average-pool,
    concatenated to ``c_out`` channels at half the grid."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        q = c_out // 4
        self.pre = _bn_elu(c_in)
        self.conv3 = nn.Conv3d(c_in, q, 3, stride=2, padding=1)
        self.conv1 = nn.Conv3d(c_in, q, 1, stride=2)
        self.maxp = nn.Sequential(nn.Conv3d(c_in, q, 3, padding=1), nn.MaxPool3d(2))
        self.avgp = nn.Sequential(nn.Conv3d(c_in, c_out - 3 * q, 3, padding=1), nn.AvgPool3d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        return torch.cat([self.conv3(h), self.conv1(h), self.maxp(h), self.avgp(h)], dim=1)


class VRN(Classifier):
    """Voxception-ResNet; ``features`` returns the penultimate fc layer (16 * width)."""

    def __init__(
        self, n_classes: int, width: int = 32, blocks: int = 3, resolution: int = 32, stem_stride: int = 1
    ) -> None:
        super().__init__()
        if width < 4 or width % 4:
            raise ValueError("VRN width must be a multiple of 4")
        if resolution // stem_stride < 16:
            raise ValueError(f"VRN needs a grid of at least 16^3 after the stem, got {resolution}^3 / {stem_stride}")
        layers: list[nn.Module] = [nn.Conv3d(1, width, 3, stride=stem_stride, padding=1)]
        total = 4 * blocks
        depth = 0
        c = width
        for stage in range(4):
            for _ in range(blocks):
                keep = 0.95 - (0.95 - 0.25) * depth / max(total - 1, 1)
                layers.append(VoxceptionBlock(c, keep))
                depth += 1
            c_out = width * 2 ** (stage + 1) if stage < 3 else c
            layers.append(VoxceptionDown(c, c_out))
            c = c_out
        layers += [_bn_elu(c), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(c, 16 * width), nn.ELU()]
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(16 * width, n_classes))
        self.feature_dim = 16 * width
        for m in self.modules():
            if isinstance(m, nn.Conv3d | nn.Linear):
                nn.init.orthogonal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def _down_steps(resolution: int) -> int:
    steps = round(math.log2(resolution / 4))
    if resolution < 8 or 4 * 2**steps != resolution:
        raise ValueError(f"the conv encoder needs a power-of-two grid of at least 8^3, got {resolution}^3")
    return steps


class ConvEncoder(nn.Module):
    """Strided 3D convs with batch norm, from R^3 down to 4^3, then an fc layer to ``out_dim``.

    ``features`` = the fc output (what the method trains; the autoencoder's latent)."""

    def __init__(self, resolution: int = 32, width: int = 16, out_dim: int = 128) -> None:
        super().__init__()
        steps = _down_steps(resolution)
        layers: list[nn.Module] = []
        c_in, c = 1, width
        for _ in range(steps):
            layers += [nn.Conv3d(c_in, c, 4, stride=2, padding=1), nn.BatchNorm3d(c), nn.LeakyReLU(0.1)]
            c_in, c = c, c * 2
        layers += [nn.Conv3d(c_in, c_in, 3, padding=1), nn.BatchNorm3d(c_in), nn.LeakyReLU(0.1), nn.Flatten()]
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in * 64, out_dim)
        self.channels = c_in
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.conv(x))
        return out


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: latent -> 4^3 x channels -> transposed convs -> R^3 logits."""

    def __init__(self, resolution: int = 32, width: int = 16, latent: int = 128) -> None:
        super().__init__()
        steps = _down_steps(resolution)
        c = width * 2 ** (steps - 1)
        self.c = c
        self.fc = nn.Sequential(nn.Linear(latent, c * 64), nn.LeakyReLU(0.1))
        layers: list[nn.Module] = []
        for i in range(steps):
            c_out = 1 if i == steps - 1 else c // 2
            layers.append(nn.ConvTranspose3d(c, c_out, 4, stride=2, padding=1))
            if i < steps - 1:
                layers += [nn.BatchNorm3d(c_out), nn.LeakyReLU(0.1)]
            c = c_out
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(len(z), self.c, 4, 4, 4)
        out: torch.Tensor = self.deconv(h)
        return out.squeeze(1)


class ProjectionHead(nn.Module):
    """fc -> BN -> ReLU -> fc: the embedding head metric-learning losses train (SimCLR-style)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def l2n(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1)
