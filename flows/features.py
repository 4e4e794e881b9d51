"""train-features: create (or resume) a run, prepare/train epoch by epoch as separate tasks, evaluate, embed."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact

from lib.features.runs import RunRequest
from lib.progress import emit
from lib.voxels.records import Region
from tasks.features import create_run, embed, evaluate_run, prepare_epoch, train_epoch


def _rounded(entry: dict[str, Any]) -> str:
    """An epoch's numbers for a log line: ``loss 0.1724, train_iou 0.1837, ...`` (4 significant digits)."""
    return ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in entry.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch"
    )


@flow(name="train-features")
def train_features(request: RunRequest, embed_region: Region | None = None) -> dict[str, Any]:
    """Train ``request.method`` on the voxel store at ``request.data_url`` and embed its items.

    The request's region defaults to the store's train split when it has one (else every item), its run URL
    to ``<data_url>/runs/<method>-<time>``; ``embed_region`` to every stored item. A run already at the run
    URL with the same method, options and data resumes at its last finished step.
    """
    log = get_run_logger()
    method = request.method
    ref = create_run(request)
    log.info("run %s: %s, epoch %d of %d", ref.run_url, method, ref.epochs_done, ref.epochs)
    progress: Any = None
    if ref.epochs:  # no progress artifact or bar for a method that does not train
        progress = create_progress_artifact(100.0 * ref.epochs_done / ref.epochs, description=f"{method} training")
        emit(f"train {method}", ref.epochs_done, ref.epochs)
    for epoch in range(ref.epochs_done, ref.epochs):
        if ref.has_prepare:
            prepare_epoch(ref.run_url, epoch)
        entry = train_epoch(ref.run_url, epoch)
        log.info("epoch %d: %s", epoch, _rounded(entry))
        update_progress_artifact(progress, 100.0 * (epoch + 1) / ref.epochs)
        emit(f"train {method}", epoch + 1, ref.epochs)
    metrics = evaluate_run(ref.run_url)
    emb = embed(ref.run_url, embed_region, None)
    create_table_artifact(
        [{"method": method, "run": ref.run_url, "embedding": emb.name, "items": emb.n, "dim": emb.dim, **metrics}],
        description=f"train-features {method}",
    )
    return {"run": ref.run_url, "method": method, "embedding": emb.model_dump(mode="json"), "metrics": metrics}
