"""voxclust settings: command-line flags, then ``VOXCLUST_*`` environment variables, then a TOML config file.

The config file is ``$VOXCLUST_CONFIG`` when set, else ``./voxclust.toml``, else
``~/.config/voxclust/config.toml`` (the first that exists). Keys are the field names below::

    store_url = "s3://scans/stores/main"
    inbox_url = "s3://scans/inbox"
    dask_address = "tcp://dask-scheduler:8786"
    preset = "default"

S3 credentials are never settings: they come from the standard AWS environment (see ``lib.storage``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def config_file() -> Path | None:
    """The config file in force, or None."""
    explicit = os.environ.get("VOXCLUST_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"VOXCLUST_CONFIG={explicit}: no such file")
        return path
    for path in (Path("voxclust.toml"), Path("~/.config/voxclust/config.toml").expanduser()):
        if path.is_file():
            return path
    return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXCLUST_", extra="ignore")

    store_url: str | None = None  # the voxel store pipelines write to
    inbox_url: str | None = None  # where new scan batches land, one sub-prefix per batch
    dask_address: str | None = None  # an existing Dask scheduler (else a LocalCluster)
    dask_workers: int | None = None  # LocalCluster worker processes (default: one per core)
    preset: str = "default"  # compare preset for pipelines: default, quality, demo
    methods: Annotated[list[str] | None, NoDecode] = None  # compare only these rows (comma-separated in env)
    device: str = "auto"  # torch device for training: auto, cpu, cuda, cuda:N
    settle_seconds: float = 60.0  # an inbox batch is ready when unchanged this long (or has a .ready file)
    max_attempts: int = 3  # pipeline runs per batch (a failed run is retried by the next watch)
    train_handoff: Literal["auto", "deployment", "inprocess"] = "auto"  # see flows.compare
    train_deployment: str = "train-features/train"
    retrain_growth: float = 0.5  # compare trains a new run once the store grew by more than this share since
    seeds: int = 1  # training runs per compare row (seeds 0..N-1): the report gives their mean and spread
    train_workers: int = 1  # trainings side by side in compare (each a Dask task); 1 trains one after another
    mixed_precision: Literal["bf16", "off"] = "bf16"  # autocast for training on CUDA (never used on CPU)
    train_threads: int | None = None  # CPU threads per training (default: the cores shared among train_workers)
    pipeline_deployment: str = "pipeline/pipeline"
    verbose: bool = False  # the terminal also shows library log records at INFO (as --verbose)
    tune_storage: str | None = None  # study database of `voxclust tune` (SQLAlchemy URL; default: see lib.tune)

    @field_validator("methods", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()] or None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def settings(**flags: Any) -> Settings:
    """Settings with ``flags`` (None means "not given") over the environment over the config file."""
    return Settings(**{k: v for k, v in flags.items() if v is not None})
