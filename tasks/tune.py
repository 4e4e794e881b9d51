"""Prefect task wrapper for one trial of a search (logic in lib.tune.trial).

Tagged ``gpu`` like training, so a deployment can route trials to the GPU work pool and a tag concurrency
limit keeps one per GPU. A retry trains on from the trial run's last checkpoint.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lib.tune import trial
from lib.tune.trial import TrialRequest


@task(name="tune-trial", tags=["gpu"], retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def run_trial(request: TrialRequest, threads: int | None) -> dict[str, Any]:
    return trial.run_trial(request, threads)
