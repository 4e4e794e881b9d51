"""Prefect task wrappers for feature training (logic in lib.features.runs).

Every training step is its own task, tagged ``gpu`` so a deployment can route it to a GPU work pool and a
tag concurrency limit (``prefect concurrency-limit create gpu 1``) keeps one per GPU. Each task reads the
run's checkpoint and writes it back, so steps of one run may land on different workers; retries redo only
the step that failed. They take and return small references (URLs, epoch numbers, logged values).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lib.features import runs
from lib.features.runs import EmbeddingRef, RunRef, RunRequest
from lib.voxels.records import Region

GPU = ["gpu"]


@task(name="create-run", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def create_run(request: RunRequest) -> RunRef:
    return runs.create_run(request)


@task(name="prepare-epoch", tags=GPU, retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def prepare_epoch(run_url: str, epoch: int) -> dict[str, Any]:
    """The method's pre-epoch step (DeepCluster: embed, PCA-whiten, faiss k-means; SCAN: mine neighbours)."""
    return runs.Session(run_url).prepare(epoch)


@task(name="train-epoch", tags=GPU, retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def train_epoch(run_url: str, epoch: int) -> dict[str, Any]:
    return runs.Session(run_url).train(epoch)


@task(name="evaluate-run", tags=GPU, retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def evaluate_run(run_url: str) -> dict[str, Any]:
    return runs.Session(run_url).finish()


@task(name="embed", tags=GPU, retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def embed(run_url: str, region: Region | None, name: str | None) -> EmbeddingRef:
    return runs.Session(run_url).embed(region, name, reuse=True)


@task(name="train-method", tags=GPU, retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def train_method(request: RunRequest, threads: int | None) -> dict[str, Any]:
    """A whole run in one task (create or resume, every epoch checkpointed, evaluate, embed every item), with
    ``threads`` CPU threads: how ``compare-methods`` trains several methods side by side on Dask workers."""
    return runs.train_and_embed(request, threads)
