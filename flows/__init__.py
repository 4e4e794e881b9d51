"""Prefect flows: orchestration only (voxelize-batch, train-features, compare-methods, pipeline, watch-inbox)."""
