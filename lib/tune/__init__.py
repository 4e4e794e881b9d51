"""Hyper-parameter search (``voxclust tune``): search spaces checked against a method's config, label-safe
objectives, Optuna studies in SQLite or PostgreSQL, trials as ordinary runs of the run engine.

:func:`make_spec` checks everything a search needs before its first trial starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lib.tune.space import TuneError, load_space
from lib.tune.study import TuneSpec, default_out_url, default_storage, open_storage_db, open_study

__all__ = ["TuneError", "TuneSpec", "make_spec"]


def make_spec(
    method: str,
    data_url: str,
    trials: int = 12,
    space: str | Path | dict[str, Any] | None = None,
    fixed: dict[str, Any] | None = None,
    objective: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    **options: Any,
) -> TuneSpec:
    """The search, checked: the store exists, the space fits the method's config (``fixed``: options set for
    every trial, over the space's own fixed ones), the objective can score it without test labels, and the
    study database answers. ``options``: the other :class:`TuneSpec` fields (sampler, pruner, seed, k, ...).
    Raises :class:`TuneError` (or the store's error) before anything is trained."""
    from lib.features.base import MethodError
    from lib.features.registry import get_method
    from lib.features.runs import make_config
    from lib.settings import settings
    from lib.tune.objective import check_objective, default_objective
    from lib.voxels.records import Region
    from lib.voxels.store import VoxelStore

    try:
        cls = get_method(method)
    except MethodError as exc:
        raise TuneError(str(exc)) from None
    store = VoxelStore.open(data_url)
    parsed = load_space(method, space, fixed)
    base = parsed.options({})
    stored = store.items()
    items = Region(split="auto").resolve(stored).select(stored)
    labelled = bool(items) and all(r.label is not None for r in items)
    if not items:
        raise TuneError(f"{store.url}: no stored items to tune on")
    if cls.needs_labels(make_config(method, base)) and not labelled:
        raise TuneError(f"{method} is supervised here and needs a label on every training item; this store lacks some")
    objective = objective or default_objective(method)
    check_objective(objective, method, base, labelled)
    name = study_name or method
    storage = storage or settings().tune_storage or prefect_database() or default_storage(store.url)
    db = open_storage_db(storage)
    spec = TuneSpec(
        method=method,
        data_url=store.url,
        space=parsed,
        trials=trials,
        objective=objective,
        storage=storage,
        study_name=name,
        out_url=options.pop("out_url", None) or default_out_url(store.url, name),
        **options,
    )
    open_study(spec, db)  # a study of this name that searches something else: refused here
    return spec


def prefect_database() -> str | None:
    """The Prefect server's database when it is PostgreSQL (``PREFECT_SERVER_DATABASE_CONNECTION_URL``, or
    its older name ``PREFECT_API_DATABASE_CONNECTION_URL``), spoken to with psycopg: a site that runs Prefect
    on PostgreSQL keeps its studies there too. None otherwise (Prefect's own SQLite file is not shared)."""
    import os

    for name in ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        url = os.environ.get(name, "")
        if url.startswith(("postgresql", "postgres://")):
            rest = url.partition("://")[2]
            return f"postgresql+psycopg://{rest}"
    return None
