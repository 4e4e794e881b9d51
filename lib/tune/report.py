"""What a search leaves behind in ``<store>/tune/<study>/``: the trials table, the best trial scored once on
the held-out split, a preset file the comparison can use, the plots and a self-contained HTML report."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

from lib.tune.objective import test_scores
from lib.tune.space import describe
from lib.tune.study import TuneSpec, best_trial, counts, redact, trial_rows

OBJECTIVE_NOTES = {
    "val_accuracy": "on the stratified validation split of the train split; the test split is scored only for "
    "the best trial, at the end",
    "silhouette": "of the k-means partition of the train embedding; label-free",
}


def preset_row(spec: TuneSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The best options as a comparison row (``voxclust compare --preset <out>/preset.json``)."""
    return {"name": f"{spec.method}_tuned", "method": spec.method, "options": spec.space.options(params)}


def set_flags(spec: TuneSpec, params: dict[str, Any]) -> str:
    """The same as ``voxclust compare --set`` flags."""
    flags = [
        f"--set {spec.method}.{name}={json.dumps(value)}" for name, value in {**spec.space.fixed, **params}.items()
    ]
    return f"voxclust compare --methods {spec.method} " + " ".join(flags)


def finish(spec: TuneSpec, study: Any) -> dict[str, Any]:
    """Score the best trial on the held-out split (once), write the outputs, return the summary."""
    import optuna

    from lib.features.runs import Session
    from lib.report.html import render_tune_html
    from lib.report.plots import param_importances, search_history
    from lib.storage import open_storage

    rows = trial_rows(study)
    best = best_trial(study)
    summary: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "method": spec.method,
        "data_url": spec.data_url,
        "objective": spec.objective,
        "objective_note": OBJECTIVE_NOTES[spec.objective],
        "study": spec.study_name,
        "storage": redact(spec.storage),
        "searched": describe(spec.space),
        "fixed": spec.space.fixed,
        "counts": counts(study),
        "trials": rows,
        "best": None,
        "test": {},
        "out_url": spec.out_url,
    }
    out = open_storage(spec.out_url)
    if best is not None:
        run_url = best.user_attrs.get("run_url") or spec.trial_run_url(best.number)
        summary["best"] = {
            "trial": best.number,
            "value": float(best.value),
            "params": dict(best.params),
            "options": spec.space.options(dict(best.params)),
            "run_url": run_url,
        }
        summary["test"] = test_scores(Session(run_url), spec.k, spec.seed)
        summary["use"] = f"voxclust compare --preset {spec.out_url.rstrip('/')}/preset.json"
        summary["set_flags"] = set_flags(spec, dict(best.params))
        out.write_json("preset.json", {"rows": [preset_row(spec, dict(best.params))]})
    try:
        importances = optuna.importance.get_param_importances(study) if len(spec.space.params) > 1 else {}
    except (RuntimeError, ValueError):  # too few finished trials, or none that differ
        importances = {}
    summary["importances"] = {k: round(float(v), 4) for k, v in importances.items()}
    images = {
        "history.png": search_history(rows, spec.objective),
        "importance.png": param_importances(summary["importances"], spec.objective),
    }
    for name, data in images.items():
        out.write_bytes(name, data)
    out.write_bytes("trials.csv", _csv(rows).encode())
    out.write_json("summary.json", summary)
    out.write_bytes("report.html", render_tune_html(summary, images).encode())
    summary["html_url"] = out.browser_url("report.html")
    return summary


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
