"""Commands of the run engine: train, embed, tune, and the method listing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from voxclust.common import AsJson, err, flow_session, out, user_errors
from voxclust.options import (
    DaskAddress,
    Device,
    EmbedSplitChoice,
    Method,
    ObjectiveChoice,
    OldData,
    PrunerChoice,
    SamplerChoice,
    SplitChoice,
    StoreOpt,
    method_listing,
    methods_text,
    open_store,
    parse_options,
    resolve_store,
)
from voxclust.output import print_path, print_tune, print_ui_link

app = typer.Typer()


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="KEY=VALUE", help="method option key=value (JSON value; a.b=v for nested), repeatable"
    ),
]

Split = Annotated[
    SplitChoice, typer.Option(help="store region: auto (the train split if any, else all), all, train, test")
]

METHODS_EPILOG = "The methods and their options: voxclust methods"


@app.command(short_help="Train one feature method on a voxel store and embed its items.", epilog=METHODS_EPILOG)
def train(
    method: Method,
    data_url: StoreOpt = None,
    old_data: OldData = None,
    epochs: Annotated[int | None, typer.Option(min=0, help="training epochs (default: the method's)")] = None,
    options: SetOption = None,
    split: Split = "auto",
    run_url: Annotated[
        str | None, typer.Option("--run", metavar="URL", help="where the run goes (default: <store>/runs/...)")
    ] = None,
    device: Device = "auto",
    as_json: AsJson = False,
) -> None:
    """Train a feature method on a voxel store (a Prefect flow: one task per epoch step, checkpointed), then
    embed every stored item. Re-running with the same --run resumes at the last finished step."""
    with user_errors():
        data_url = resolve_store(data_url, old_data)
        open_store(data_url)
        opts = parse_options(options or [], epochs)
        from lib.features.runs import RunRequest, make_config
        from lib.voxels.records import Region

        make_config(method, opts)  # bad method or option: fail before starting anything
        region = Region.model_validate({"split": split})
        request = RunRequest(
            method=method, data_url=data_url, options=opts, region=region, run_url=run_url, device=device
        )
        with flow_session(not as_json):
            from flows.features import train_features
            from flows.runners import run_flow

            result = run_flow(train_features, request)
        if as_json:
            out.print_json(json.dumps(result))
            return
        emb = result["embedding"]
        print_path("run", result["run"])
        out.print(f"embedding {escape(emb['name'])!r} of {emb['n']} items x {emb['dim']} dimensions", highlight=False)
        for key, value in result["metrics"].items():
            out.print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}", highlight=False)
        print_ui_link(result)


@app.command(short_help="Embed a region of the store with a trained run's model.")
def embed(
    run_url: Annotated[str, typer.Option("--run", help="a training run (see voxclust train)")],
    split: Annotated[EmbedSplitChoice, typer.Option(help="store region to embed")] = "all",
    name: Annotated[str | None, typer.Option(help="name of the embedding array (default: the split)")] = None,
    as_json: AsJson = False,
) -> None:
    """Embed a region of the run's voxel store with its trained model (stored as a zarr array in the run)."""
    with user_errors():
        from lib.features.runs import Session
        from lib.voxels.records import Region

        ref = Session(run_url).embed(Region.model_validate({"split": split}), name)
        if as_json:
            out.print_json(ref.model_dump_json())
            return
        out.print(f"embedding {escape(ref.name)!r}: {ref.n} items x {ref.dim} dimensions", highlight=False)
        print_path("in the run", ref.run_url)


@app.command(short_help="Search a method's options (Optuna), resumable, and write a preset.", epilog=METHODS_EPILOG)
def tune(
    method: Method,
    data_url: StoreOpt = None,
    old_data: OldData = None,
    trials: Annotated[int, typer.Option(min=1, help="trials the study holds when the search ends")] = 12,
    space: Annotated[
        Path | None, typer.Option("--space", help="search space, YAML or JSON (default: the method's own)")
    ] = None,
    objective: Annotated[
        ObjectiveChoice | None,
        typer.Option(help="val_accuracy (classifiers; validation split) or silhouette (label-free; default otherwise)"),
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="study name (default: the method); resumes if it exists")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="study database, any SQLAlchemy URL (default: SQLite <store>/tune/studies.db)"),
    ] = None,
    sampler: Annotated[SamplerChoice, typer.Option(help="Optuna's sampler")] = "tpe",
    pruner: Annotated[
        PrunerChoice, typer.Option(help="stops poor trials early (reads the per-epoch objective)")
    ] = "median",
    seed: Annotated[int, typer.Option(min=0, help="the sampler's seed and every trial's training seed")] = 0,
    k: Annotated[int, typer.Option("--k", min=2, help="clusters for the silhouette objective and the test NMI")] = 10,
    epochs: Annotated[int | None, typer.Option(min=0, help="training epochs of every trial")] = None,
    options: SetOption = None,
    device: Device = "auto",
    train_workers: Annotated[
        int | None, typer.Option(min=1, help="trials side by side on Dask workers (default: setting, 1)")
    ] = None,
    dask_address: DaskAddress = None,
    as_json: AsJson = False,
) -> None:
    """Search a method's options (Optuna; every trial an ordinary, resumable run, a Prefect task on the Dask
    workers), the study in a database: re-running the same --study resumes it. Prints the best options, scored
    once on the test split, and writes a report and a preset file for `voxclust compare --preset`."""
    with user_errors():
        data_url = resolve_store(data_url, old_data)
        open_store(data_url)
        from lib.settings import settings
        from lib.tune import make_spec
        from lib.tune.study import redact

        workers = settings(train_workers=train_workers).train_workers
        spec = make_spec(
            method,
            data_url,
            trials=trials,
            space=space,
            fixed=parse_options(options or [], epochs),
            objective=objective,
            storage=storage,
            study_name=study,
            sampler=sampler,
            pruner=pruner,
            seed=seed,
            k=k,
            device=device,
        )
        if not as_json:
            err.print(
                f"study {escape(spec.study_name)!r} in {escape(redact(spec.storage))}: {spec.trials} trials, "
                f"{spec.objective}",
                soft_wrap=True,
                highlight=False,
            )
        with flow_session(not as_json):
            from flows.tune import run_tune

            summary = run_tune(spec, workers, dask_address)
    if as_json:
        out.print_json(json.dumps({k: v for k, v in summary.items() if k != "trials"} | {"trials": summary["trials"]}))
        return
    print_tune(summary)
    print_ui_link(summary)


@app.command(short_help="List the feature methods and their options.")
def methods(as_json: AsJson = False) -> None:
    """List the registered feature methods: what each is, and its options with their defaults."""
    listing = method_listing()
    if as_json:
        out.print_json(json.dumps(listing))
        return
    out.print(methods_text(listing), highlight=False, markup=False)
