"""Prefect flows: orchestration only (voxelize-batch, train-features, compare-methods, pipeline, watch-inbox)."""

from flows import engine as _engine  # noqa: F401  (flow runs end without waiting for their heartbeat thread)
