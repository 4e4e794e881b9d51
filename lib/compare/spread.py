"""A row's seeds brought together: one report record per row, the first seed's, carrying the spread of its
scores over every seed (:class:`lib.compare.records.Spread`).

A seed whose training or scoring failed is left out of the spread and named in the row's ``error``; the row
fails only when its first seed does (the record with the pictures).
"""

from __future__ import annotations

from lib.compare.records import MethodResult, Spread

SPREAD_METRICS = ("nmi", "ari", "acc")


def combine_seeds(records: list[list[MethodResult]]) -> list[MethodResult]:
    """One record per row from each row's records in seed order (the first one fully evaluated)."""
    return [_combine(row) for row in records]


def _combine(row: list[MethodResult]) -> MethodResult:
    first, rest = row[0], row[1:]
    if not first.ok:
        return first
    scored = first.scored_split or "all"
    ok = [first, *(r for r in rest if r.ok)]
    values = {
        key: [getattr(r.metrics[scored], key) if scored in r.metrics else None for r in ok] for key in SPREAD_METRICS
    }
    restart = first.spread
    spread = Spread(
        seeds=[r.seed if r.seed is not None else i for i, r in enumerate(ok)],
        **values,
        restart_seeds=restart.restart_seeds if restart else [],
        restart_nmi=restart.restart_nmi if restart else [],
    )
    failed = [f"seed {r.seed}: {r.error}" for r in rest if not r.ok]
    error = "; ".join(failed) if failed else first.error
    return first.model_copy(update={"spread": spread, "error": error})
