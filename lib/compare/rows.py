"""What a comparison compares: its rows (a name, a registered method, its options), the presets, the
clustering options, and where each row's run lives.

Each entry's run lives at ``<store>/runs/<name>-<hash of method and options>``, so running a comparison
again, or the quality benchmark on the same store, reuses every finished run instead of training it again;
a changed option means another run.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lib.errors import VoxclustError
from lib.evaluation.score import ScoreConfig
from lib.features.base import MethodError
from lib.settings import settings
from lib.storage import open_storage


class CompareError(VoxclustError, ValueError):
    """Bad input to a comparison (unknown preset or row, bad options)."""


class MethodEntry(BaseModel):
    """One row of a comparison: a name, a registered method and its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)
    method: str
    options: dict[str, Any] = Field(default_factory=dict)


class CompareConfig(ScoreConfig):
    """How embeddings are clustered, scored (the :class:`ScoreConfig` fields) and drawn, the same for every
    method."""

    pca_dim: int = Field(64, ge=2, description="PCA width before k-means when the embedding is wider")
    elbow_k_max: int = Field(20, ge=3, description="elbow sweep over k = 2 .. this")
    silhouette_sample: int = Field(2000, ge=10)
    tsne: bool = Field(True, description="draw t-SNE maps")
    tsne_max_points: int = Field(3000, ge=10, description="t-SNE on a seeded sample of at most this many items")
    strip_members: int = Field(8, ge=1, le=32, description="thumbnails per cluster")
    seeds: int = Field(
        default_factory=lambda: settings().seeds,
        ge=1,
        le=20,
        description="training runs per row: seeds s .. s+N-1 on top of the row's seed s (setting VOXCLUST_SEEDS)",
    )
    restart_trials: int = Field(
        5, ge=1, le=50, description="k-means seeds tried on each row's first embedding: the spread they alone cause"
    )


# The CPU budget of each method on 2 cores for ModelNet10 (the quality benchmark's table): the method's
# defaults plus what is written here.
PRESETS: dict[str, list[MethodEntry]] = {
    "quality": [
        MethodEntry(name="raw", method="raw"),
        MethodEntry(name="random_cnn", method="deepcluster", options={"epochs": 0}),
        MethodEntry(name="deepcluster", method="deepcluster"),
        MethodEntry(name="autoencoder", method="autoencoder"),
        MethodEntry(name="triplet", method="triplet"),
        MethodEntry(name="softtriple", method="softtriple"),
        MethodEntry(name="voxnet", method="voxnet"),
        MethodEntry(
            name="softtriple_supervised",
            method="softtriple",
            options={"mode": "supervised", "batch_size": 64, "epochs": 10},
        ),
        MethodEntry(name="vrn", method="vrn"),  # width 8, strided stem: the full-size network needs a GPU
        # On ModelNet10 (2 cores): simclr 40 epochs about 18 minutes; scan's SCAN step about 25 s per epoch
        # and self-labelling about 25 s per epoch, plus its own 30-epoch pretext (about 13 minutes; the quality
        # benchmark starts both scan rows from the simclr row instead).
        MethodEntry(name="simclr", method="simclr", options={"epochs": 40}),
        MethodEntry(name="scan", method="scan", options={"pretext_epochs": 30, "epochs": 15, "selflabel_epochs": 0}),
        MethodEntry(
            name="scan_selflabel", method="scan", options={"pretext_epochs": 30, "epochs": 15, "selflabel_epochs": 5}
        ),
    ],
    # Minutes on 2 cores for the demo batch (140 shapes): every method, briefly.
    "demo": [
        MethodEntry(name="raw", method="raw"),
        MethodEntry(name="deepcluster", method="deepcluster", options={"k": 20, "epochs": 4, "batch_size": 32}),
        MethodEntry(name="autoencoder", method="autoencoder", options={"epochs": 4}),
        MethodEntry(name="triplet", method="triplet", options={"epochs": 2}),
        MethodEntry(name="softtriple", method="softtriple", options={"epochs": 2}),
        MethodEntry(name="voxnet", method="voxnet", options={"epochs": 6}),
        # 1 epoch left VRN's test accuracy at 0.21 on the demo; 6 (as voxnet) reach 0.86 in 4 s of training.
        MethodEntry(name="vrn", method="vrn", options={"epochs": 6, "stem_stride": 2}),
        # The contrastive pretext needs its epochs (NMI on all demo items: 30 epochs 0.89, 60 epochs 0.89-0.94
        # over seeds 0-2); about a minute on 2 cores.
        MethodEntry(name="simclr", method="simclr", options={"epochs": 60}),
    ],
}


# What a preset's rows train instead when the training device is a CUDA GPU (``resolve_entries(cuda=True)``):
# the contrastive pretext and SCAN at lengths nearer the paper's (SimCLR 500 epochs, SCAN 50 + self-labelling
# 200 on CIFAR-10). Not measured here: this project's CI has no GPU.
GPU_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "quality": {
        "simclr": {"epochs": 200},
        "scan": {"pretext_epochs": 200, "epochs": 50, "selflabel_epochs": 0},
        "scan_selflabel": {"pretext_epochs": 200, "epochs": 50, "selflabel_epochs": 20},
    },
}


def default_entries() -> list[MethodEntry]:
    """Every registered method with its defaults."""
    from lib.features.registry import METHODS

    return [MethodEntry(name=name, method=name) for name in METHODS]


def resolve_entries(
    names: list[str] | None = None,
    preset: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    cuda: bool = False,
) -> list[MethodEntry]:
    """The rows to compare: a preset (default: every registered method with its defaults), optionally cut to
    ``names`` (a preset row name or a registered method), with per-row option overrides; ``cuda`` (training
    on a CUDA GPU): the preset's GPU budget (:data:`GPU_OPTIONS`) under the overrides."""
    from lib.features.registry import METHODS

    if preset is None or preset == "default":
        base = default_entries()
    elif preset in PRESETS:
        base = list(PRESETS[preset])
    elif preset.endswith(".json"):
        base = load_preset_file(preset)
    else:
        raise CompareError(f"unknown preset {preset!r}; presets: default, {', '.join(PRESETS)}, or a .json file")
    by_name = {e.name: e for e in base}
    if names:
        entries = []
        for n in names:
            if n in by_name:
                entries.append(by_name[n])
            elif n in METHODS:
                entries.append(MethodEntry(name=n, method=n))
            else:
                raise CompareError(f"unknown method or row {n!r}; choose from: {', '.join({**by_name, **METHODS})}")
    else:
        entries = base
    if len({e.name for e in entries}) != len(entries):
        raise CompareError("each row may appear only once")
    for row in overrides or {}:
        if row not in {e.name for e in entries}:
            raise CompareError(f"--set names row {row!r}, which is not compared ({', '.join(e.name for e in entries)})")
    gpu = GPU_OPTIONS.get(preset or "", {}) if cuda else {}
    out = []
    for e in entries:
        opts = {**e.options, **gpu.get(e.name, {}), **(overrides or {}).get(e.name, {})}
        out.append(e.model_copy(update={"options": opts}))
    return out


def load_preset_file(url: str) -> list[MethodEntry]:
    """Rows from a preset file (a path or storage URL ending ``.json``): ``{"rows": [{"name", "method",
    "options"}, ...]}``, as ``voxclust tune`` writes for its best trial."""
    from pydantic import ValidationError

    from lib.features.runs import make_config
    from lib.storage import StorageError

    parent, _, name = url.rstrip("/").rpartition("/")
    try:
        raw = open_storage(parent or ".").read_json(name)
        entries = [MethodEntry.model_validate(r) for r in raw["rows"]]
    except (StorageError, FileNotFoundError, KeyError, TypeError, ValueError, ValidationError) as exc:
        raise CompareError(f"preset file {url}: cannot read its rows ({type(exc).__name__}: {exc})") from None
    for e in entries:
        try:
            make_config(e.method, e.options)
        except MethodError as exc:
            raise CompareError(f"preset file {url}: row {e.name}: {exc}") from None
    return entries


def trains_on_cuda(device: str) -> bool:
    """Whether training on ``device`` (auto, cpu, cuda, cuda:N) in this process uses a CUDA GPU."""
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def run_url_for(data_url: str, entry: MethodEntry) -> str:
    """Where this entry's run lives: ``<store>/runs/<name>-<8 hex of the validated method config>``."""
    from lib.features.runs import default_run_url, make_config

    cfg = make_config(entry.method, entry.options).model_dump(mode="json")
    digest = hashlib.sha256(json.dumps([entry.method, cfg], sort_keys=True).encode()).hexdigest()[:8]
    return default_run_url(data_url, entry.method, f"{entry.name}-{digest}")


def seeded_entry(entry: MethodEntry, index: int) -> MethodEntry:
    """The entry of a row's ``index``-th training run: its seed (default 0) raised by ``index``. Index 0, and
    every index of a method that does not train (raw voxels), is the entry itself: one run, reused."""
    from lib.features.registry import get_method

    seed = entry_seed(entry)
    if index == 0 or seed is None or not get_method(entry.method).trainable:
        return entry
    return entry.model_copy(update={"options": {**entry.options, "seed": seed + index}})


def entry_seed(entry: MethodEntry) -> int | None:
    """The training seed of the entry's run (its option, else the method's default); None for a method without
    one."""
    from lib.features.registry import get_method

    fields = get_method(entry.method).config_cls.model_fields
    if "seed" not in fields:
        return None
    return int(entry.options.get("seed", fields["seed"].default))


def current_run(data_url: str, entry: MethodEntry, growth: float | None = None) -> tuple[str, str | None]:
    """The entry's run to use now, and why it is a new one (None when it is not).

    Runs live at ``run_url_for`` and, once retrained, at ``<that>.g2``, ``.g3``, ...: the newest generation
    is used, unless the store's training region has grown by more than ``growth`` (default: setting
    ``retrain_growth``, 0.5 = 50%) since that run was created, when the next generation is returned: a
    new run, trained on the grown store. A method that does not train (raw voxels) keeps its run."""
    from lib.features.registry import get_method
    from lib.features.runs import RUN_JSON, RunSpec, region_size

    base = run_url_for(data_url, entry)
    urls = [base]
    while open_storage(urls[-1]).exists(RUN_JSON):
        urls.append(f"{base}.g{len(urls) + 1}")
    if len(urls) == 1:  # no run yet
        return base, None
    newest = urls[-2]
    spec = RunSpec.model_validate(open_storage(newest).read_json(RUN_JSON))
    limit = settings().retrain_growth if growth is None else growth
    if not spec.trained_items or not get_method(entry.method).trainable:  # raw voxels: nothing to retrain
        return newest, None
    now = region_size(data_url, spec.region)
    if now <= spec.trained_items * (1 + limit):
        return newest, None
    grew = f"the store grew from {spec.trained_items} to {now} training items since its run (over {limit:.0%})"
    return urls[-1], f"{entry.name}: {grew}: trained a new run"


def discover_entries(data_url: str) -> list[MethodEntry]:
    """The entries of the runs already under ``<store>/runs`` that a comparison made (``<name>-<hash>`` folders
    whose hash matches their method and config), in name order."""
    from lib.features.runs import RUN_JSON, RunSpec

    runs = open_storage(f"{data_url.rstrip('/')}/runs")
    found: dict[str, list[tuple[float, MethodEntry]]] = {}
    for obj in runs.list():
        folder, _, leaf = obj.key.rpartition("/")
        if leaf != RUN_JSON or "/" in folder or "-" not in folder:
            continue
        name = folder.rsplit("-", 1)[0]
        try:
            spec = RunSpec.model_validate(runs.read_json(obj.key))
            entry = MethodEntry(name=name, method=spec.method, options=spec.config)
            if not run_url_for(data_url, entry).rstrip("/").endswith(f"/runs/{folder}"):
                continue
        except (FileNotFoundError, ValueError, MethodError):  # removed since the listing, or not a run of ours
            continue
        found.setdefault(name, []).append((spec.created, entry))
    if not found:
        raise CompareError(f"{data_url}: no comparison runs under runs/ (run voxclust compare first)")
    return [_first_seed(found[name]) for name in sorted(found)]


def _first_seed(runs: list[tuple[float, MethodEntry]]) -> MethodEntry:
    """Of a row's runs, the newest one's options (a row run with other options: the newest), with the lowest
    seed among the runs that differ from it in the seed only (seeded runs of ``--seeds``)."""
    newest = max(runs, key=lambda r: r[0])[1]

    def rest(e: MethodEntry) -> dict[str, Any]:
        return {k: v for k, v in e.options.items() if k != "seed"}

    same = [e for _, e in runs if e.method == newest.method and rest(e) == rest(newest)]
    return min(same, key=lambda e: int(e.options.get("seed", 0)))


def is_supervised(entry: MethodEntry) -> bool:
    """Whether the entry's method trains on the store's labels (unknown methods or options: False)."""
    from lib.features.registry import get_method
    from lib.features.runs import make_config

    try:
        return bool(get_method(entry.method).needs_labels(make_config(entry.method, entry.options)))
    except MethodError:
        return False
