"""The one interface every feature method implements, and the data it trains on.

A method is a small class with a pydantic config. The run engine (:mod:`lib.features.runs`) owns the epoch
loop, checkpoints and storage; a method only says how to

- ``check`` a dataset before anything starts (clear errors: labels missing, too few items for k or the batch),
- ``prepare_epoch`` (optional hook: DeepCluster re-clusters here; everything else does nothing),
- ``train_epoch`` (one pass; returns the numbers to log),
- ``embed`` any grids to an (N, D) float32 array,
- ``evaluate`` held-out data (classifier accuracy, reconstruction IoU; optional),
- and save / load its state (``state_dict``), so a run resumes at its last finished step.

All randomness comes from the ``numpy.random.Generator`` and the torch seed the engine sets per step, so a
run is reproducible on CPU and a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lib.errors import VoxclustError


class MethodError(VoxclustError, ValueError):
    """Bad method input: unknown name or option, labels missing, dataset too small for the configuration."""


class MethodConfig(BaseModel):
    """Options every method has; each method adds its own (documented in its module)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, description="seeds weights, sampling, augmentation and k-means")
    epochs: int = Field(0, ge=0, description="training epochs (0 for methods that do not train)")


@dataclass
class VoxelData:
    """Grids of one store region, in memory. ``labels`` is -1 where unknown; never read by unsupervised methods
    except to log agreement (DeepCluster's NMI against labels is logged, never used)."""

    grids: np.ndarray  # (N, R, R, R) bool
    labels: np.ndarray  # (N,) int64, -1 unknown
    rows: np.ndarray  # (N,) int64, rows in the voxel store
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.grids)
        if len(self.labels) != n or len(self.rows) != n:
            raise ValueError("grids, labels and rows must have the same length")

    def __len__(self) -> int:
        return len(self.grids)

    @property
    def resolution(self) -> int:
        return int(self.grids.shape[1]) if self.grids.ndim == 4 else 0

    @property
    def labelled(self) -> bool:
        """Every item carries a label (what a supervised method needs)."""
        return len(self) > 0 and bool((self.labels >= 0).all())

    @property
    def n_classes(self) -> int:
        """The store's classes, else (labels without names) the highest label + 1."""
        return len(self.classes) or int(self.labels.max(initial=-1)) + 1

    def subset(self, index: np.ndarray) -> VoxelData:
        return VoxelData(self.grids[index], self.labels[index], self.rows[index], self.classes)


@dataclass(frozen=True)
class DataInfo:
    """What a method needs to build its networks before it sees the data."""

    resolution: int
    n_items: int
    n_classes: int


class FeatureMethod(ABC):
    """Base class of every feature method; see the module docstring."""

    name: ClassVar[str]
    config_cls: ClassVar[type[MethodConfig]]
    #: needs store labels to train (supervised classifiers, SoftTriple in supervised mode)
    supervised: ClassVar[bool] = False
    #: trains at all (``raw`` does not)
    trainable: ClassVar[bool] = True
    #: its embedding holds one cluster probability per column, and their arg-max is its own assignment (SCAN)
    assigns: ClassVar[bool] = False
    #: has a ``prepare_epoch`` step that must run before each ``train_epoch`` (DeepCluster's re-clustering)
    has_prepare: ClassVar[bool] = False
    #: what ``voxclust tune`` searches when given no space: option -> ``{low, high[, log]}`` or ``{choices}``
    #: (:mod:`lib.tune.space`); empty: no default space (``--space`` is needed)
    search_space: ClassVar[dict[str, Any]] = {}
    #: the objective ``voxclust tune`` maximises by default: ``silhouette`` (label-free), or ``val_accuracy``
    #: for a classifier (it reports the accuracy on its validation split every epoch)
    tune_objective: ClassVar[str] = "silhouette"

    def __init__(self, config: MethodConfig, info: DataInfo, device: str = "cpu") -> None:
        self.config = config
        self.info = info
        self.device = device

    # -- checks ----------------------------------------------------------------------------------------------
    @classmethod
    def needs_labels(cls, config: MethodConfig) -> bool:
        return cls.supervised

    @classmethod
    def total_epochs(cls, config: MethodConfig) -> int:
        """The epochs (run-engine steps) a run of this configuration trains: ``epochs``, unless a method
        trains in phases (``scan``: pretext, SCAN step, self-labelling)."""
        return int(getattr(config, "epochs", 0)) if cls.trainable else 0

    @classmethod
    def check(cls, config: MethodConfig, data: VoxelData) -> None:
        """Raise :class:`MethodError` when this configuration cannot train on ``data``."""
        if len(data) == 0:
            raise MethodError(f"{cls.name}: no items to train on")
        if cls.needs_labels(config) and not data.labelled:
            missing = int((data.labels < 0).sum())
            raise MethodError(
                f"{cls.name}: this configuration is supervised and needs a label on every item; "
                f"{missing} of {len(data)} items have none"
            )

    @classmethod
    def check_sources(cls, config: MethodConfig, data_url: str) -> None:
        """Raise :class:`MethodError` when something this configuration reads besides the store (``scan``'s
        pretext run) is missing, unfinished or made from another store. Called before a run is created."""
        return None

    # -- training --------------------------------------------------------------------------------------------
    def prepare_epoch(self, data: VoxelData, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        """Work before epoch ``epoch`` (DeepCluster: embed, PCA-whiten, k-means). Returns values to log."""
        return {}

    def train_epoch(self, data: VoxelData, epoch: int, rng: np.random.Generator) -> dict[str, Any]:
        """One epoch over ``data``; returns values to log (loss, ...)."""
        return {}

    def evaluate(self, data: VoxelData) -> dict[str, float]:
        """Metrics on held-out data (classifier accuracy, reconstruction IoU). Labels may be used here."""
        return {}

    @abstractmethod
    def embed(self, grids: np.ndarray) -> np.ndarray:
        """(N, R, R, R) bool grids to an (N, D) float32 embedding, deterministic, no augmentation."""

    # -- state -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
