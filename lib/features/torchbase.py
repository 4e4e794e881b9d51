"""What the PyTorch methods share: devices, seeding, input scaling, batching, state, and the classifier loop."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from lib.features.augment import AugmentConfig, augment_batch, rotate_z
from lib.features.base import DataInfo, FeatureMethod, MethodConfig, MethodError, VoxelData
from lib.features.nets import Classifier

EMBED_BATCH = 128


def resolve_device(name: str = "auto") -> str:
    """``auto``: CUDA when present, else CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MethodError(f"device {name!r} asked for, but torch sees no CUDA device")
    return name


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed % 2**63)


def to_input(grids: np.ndarray, device: str, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    """(B, R, R, R) bool -> (B, 1, R, R, R) float with empty = ``lo`` and occupied = ``hi``."""
    t = torch.from_numpy(np.ascontiguousarray(grids, dtype=np.float32)).to(device)
    return (t * (hi - lo) + lo).unsqueeze(1)


def batches(n: int, size: int, rng: np.random.Generator | None = None, drop_last: bool = False) -> Iterator[np.ndarray]:
    """Index batches over ``n`` items, shuffled when ``rng`` is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    stop = n - n % size if drop_last and n >= size else n
    for i in range(0, stop, size):
        yield order[i : i + size]


def cosine_lr(base: float, epoch: int, epochs: int, floor: float = 0.01) -> float:
    """Cosine decay from ``base`` to ``floor * base`` over the run; stateless, so resuming keeps the schedule."""
    t = epoch / max(epochs, 1)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


class EpochSums:
    """Running sums over an epoch's steps, kept as device tensors (float64): reading a number off a CUDA
    tensor every step (``loss.item()``) would wait for the GPU each time. ``value`` reads once, at the end."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        v = value.detach().double().sum()
        self._sums[name] = self._sums[name] + v if name in self._sums else v

    def value(self, name: str) -> float:
        return float(self._sums[name]) if name in self._sums else 0.0


def mixed_precision(device: str) -> bool:
    """bf16 autocast for training on CUDA unless the ``mixed_precision`` setting is ``off``; never on CPU."""
    if not device.startswith("cuda"):
        return False
    from lib.settings import settings

    return settings().mixed_precision == "bf16"


class TorchConfig(MethodConfig):
    epochs: int = Field(10, ge=0, description="training epochs")
    batch_size: int = Field(32, ge=2, description="items per training batch")
    lr: float = Field(1e-3, gt=0, description="learning rate (cosine-decayed over the run)")
    weight_decay: float = Field(0.0, ge=0, description="L2 weight decay")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="train-time augmentation")


# The options that matter most for every torch method, over ranges around the defaults (Kabuku's VoxNet / VRN
# searches: lr, batch size, dropout; ours has no dropout option).
TORCH_SEARCH_SPACE: dict[str, Any] = {
    "lr": {"low": 1e-4, "high": 3e-3, "log": True},
    "batch_size": {"choices": [16, 32, 64]},
    "weight_decay": {"low": 1e-6, "high": 1e-3, "log": True},
}


class TorchMethod(FeatureMethod):
    """A method whose state is torch modules and optimizers (saved and restored by name)."""

    config: TorchConfig
    search_space: ClassVar[dict[str, Any]] = TORCH_SEARCH_SPACE

    def __init__(self, config: MethodConfig, info: DataInfo, device: str = "cpu") -> None:
        super().__init__(config, info, device)
        seed_everything(self.config.seed)
        self.amp = mixed_precision(device)
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.build()
        for net in self.nets.values():
            net.to(device)
        self.make_optimizers()

    @abstractmethod
    def build(self) -> None:
        """Create ``self.nets``."""

    @abstractmethod
    def make_optimizers(self) -> None:
        """Create ``self.optimizers`` over ``self.nets``."""

    @abstractmethod
    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding of an input batch (eval mode, no grad)."""

    def input(self, grids: np.ndarray) -> torch.Tensor:
        return to_input(grids, self.device)

    def autocast(self) -> AbstractContextManager[Any]:
        """Where training runs the networks' forward pass: bf16 autocast on CUDA (see
        :func:`mixed_precision`), else nothing. Losses are computed on ``.float()`` outputs outside it."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def views(self, grids: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        return self.input(augment_batch(grids, rng, self.config.augment))

    def train_mode(self, on: bool) -> None:
        for net in self.nets.values():
            net.train(on)

    def embed(self, grids: np.ndarray) -> np.ndarray:
        return self.embed_with(self.embed_batch, grids)

    @torch.no_grad()
    def embed_with(self, layer: Callable[[torch.Tensor], torch.Tensor], grids: np.ndarray) -> np.ndarray:
        """``layer`` (an input batch -> its features) over the grids in batches, eval mode: (N, D) float32."""
        self.train_mode(False)
        if len(grids) == 0:
            r = self.info.resolution
            dim = int(layer(self.input(np.zeros((1, r, r, r), dtype=bool))).shape[1])
            return np.zeros((0, dim), dtype=np.float32)
        out = [layer(self.input(grids[idx])).float().cpu().numpy() for idx in batches(len(grids), EMBED_BATCH)]
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    @torch.no_grad()
    def recalibrate_batchnorm(self, net: nn.Module, grids: np.ndarray) -> None:
        """Re-estimate ``net``'s batch-norm running statistics on the grids themselves, unaugmented ("precise
        BN"): after training on strong views they describe the views, and an eval-mode pass over plain grids
        then drifts (SCAN's heads put most shapes in one cluster in eval mode, a balanced spread in train
        mode). Leaves ``net`` in eval mode."""
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms or len(grids) < 2:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the pass
        net.train()
        for idx in batches(len(grids), EMBED_BATCH):
            if len(idx) >= 2:  # batch norm needs two rows per batch in train mode
                net(self.input(grids[idx]))
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        net.eval()

    def check_batch(self, n_items: int, per_batch: int) -> None:
        if n_items < per_batch:
            raise MethodError(
                f"{self.name}: the batch needs {per_batch} items but the training set has {n_items}; "
                "use a smaller batch or more data"
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state["nets"].items():
            self.nets[k].load_state_dict(v)
        for k, v in state["optimizers"].items():
            self.optimizers[k].load_state_dict(v)


class ClassifierConfig(TorchConfig):
    optimizer: Literal["sgd", "adam"] = Field("adam", description="sgd (momentum 0.9, as the papers) or adam")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    val_fraction: float = Field(0.1, ge=0, lt=0.5, description="stratified validation share of the training set")
    vote_rotations: int = Field(1, ge=1, le=36, description="test-time vote over this many turns about the up axis")


class ClassifierMethod(TorchMethod):
    """Supervised 3D-CNN classifier: cross-entropy on augmented views, stratified validation split, test
    accuracy in ``evaluate``; the embedding is the penultimate layer."""

    supervised = True
    tune_objective = "val_accuracy"
    config: ClassifierConfig

    def make_optimizers(self) -> None:
        c = self.config
        params = self.nets["model"].parameters()
        if c.optimizer == "sgd":
            self.optimizers["model"] = torch.optim.SGD(
                params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
            )
        else:
            self.optimizers["model"] = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)

    @classmethod
    def check(cls, config: MethodConfig, data: VoxelData) -> None:
        super().check(config, data)
        n_classes = len(np.unique(data.labels))
        if n_classes < 2:
            raise MethodError(f"{cls.name}: a classifier needs at least 2 classes, the training set has {n_classes}")

    def split(self, data: VoxelData) -> tuple[np.ndarray, np.ndarray]:
        """Stratified train / validation indices, the same for the same data and seed."""
        rng = np.random.default_rng([self.config.seed, 7])
        train, val = [], []
        for label in np.unique(data.labels):
            idx = rng.permutation(np.flatnonzero(data.labels == label))
            n_val = round(self.config.val_fraction * len(idx)) if len(idx) > 2 else 0
            val.append(idx[:n_val])
            train.append(idx[n_val:])
        return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))

    def train_epoch(self, data: VoxelData, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        c = self.config
        model, opt = self.nets["model"], self.optimizers["model"]
        train, val = self.split(data)
        self.check_batch(len(train), 2)
        set_lr(opt, cosine_lr(c.lr, epoch, c.epochs))
        model.train()
        total, sums = 0, EpochSums()
        labels = torch.from_numpy(data.labels).to(self.device)
        for idx in batches(len(train), c.batch_size, rng, drop_last=True):
            rows = train[idx]
            x = self.views(data.grids[rows], rng)
            y = labels[rows]
            with self.autocast():
                logits = model(x).float()
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums.add("loss", loss * len(rows))
            sums.add("correct", logits.argmax(1) == y)
            total += len(rows)
        out: dict[str, Any] = {
            "loss": sums.value("loss") / max(total, 1),
            "train_accuracy": sums.value("correct") / max(total, 1),
        }
        if len(val):
            out["val_accuracy"] = self.accuracy(data.subset(val), votes=1)
        return out

    @torch.no_grad()
    def logits(self, grids: np.ndarray, votes: int) -> np.ndarray:
        model = self.nets["model"]
        model.eval()
        total = np.zeros((len(grids), self.info.n_classes), dtype=np.float64)
        for v in range(votes):
            turned = grids if v == 0 else np.stack([rotate_z(g, 360.0 * v / votes) for g in grids])
            for idx in batches(len(grids), EMBED_BATCH):
                total[idx] += F.softmax(model(self.input(turned[idx])), dim=1).cpu().numpy()
        return total

    def accuracy(self, data: VoxelData, votes: int) -> float:
        known = data.labels >= 0
        if not known.any():
            return float("nan")
        pred = self.logits(data.grids[known], votes).argmax(1)
        return float((pred == data.labels[known]).mean())

    def evaluate(self, data: VoxelData) -> dict[str, float]:
        if not (data.labels >= 0).any():
            return {}
        out = {"test_accuracy": self.accuracy(data, self.config.vote_rotations)}
        if self.config.vote_rotations > 1:
            out["test_accuracy_single_view"] = self.accuracy(data, 1)
        return out

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        model = self.nets["model"]
        assert isinstance(model, Classifier)
        return model.features(x)
