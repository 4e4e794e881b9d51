"""The command line's shared vocabulary: one ``--store`` option (old spellings as hidden aliases), typed
choices with completion, and the registered methods as text or JSON."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated, Any, Literal

import click
import typer
from click.shell_completion import CompletionItem

from voxclust.common import err

# -- the store ------------------------------------------------------------------------------------------------

STORE_HELP = "the voxel store: a folder, file:// or s3:// URL (default: setting store_url, env VOXCLUST_STORE_URL)"
StoreOpt = Annotated[str | None, typer.Option("--store", metavar="URL", help=STORE_HELP, show_default=False)]
# Spellings of earlier releases, kept hidden for one release (see resolve_store).
OldData = Annotated[str | None, typer.Option("--data", hidden=True)]
OldOut = Annotated[str | None, typer.Option("--out", hidden=True)]


def resolve_store(store: str | None, old: str | None = None, old_name: str = "--data") -> str:
    """The store URL from ``--store``, an old spelling (with a note that it is going away), or the settings."""
    if old is not None:
        if store is not None and store != old:
            raise typer.BadParameter(f"give the store once (--store), not also as {old_name}", param_hint="--store")
        err.print(f"note: {old_name} is now --store; {old_name} still works in this release only", highlight=False)
        store = old
    from lib.settings import settings

    url = settings(store_url=store).store_url
    if not url:
        raise typer.BadParameter("no voxel store: pass --store or set VOXCLUST_STORE_URL", param_hint="--store")
    return url


def open_store(url: str) -> Any:
    """The voxel store at ``url``; a clear error when there is none (missing, a file, no manifest)."""
    from lib.voxels.store import VoxelStore

    return VoxelStore.open(url)


# -- fixed choices ---------------------------------------------------------------------------------------------

ModeChoice = Literal["solid", "surface"]
UpAxisChoice = Literal["x", "y", "z", "-x", "-y", "-z"]
RepresentationChoice = Literal["field-v1", "binned"]
PoseChoice = Literal["as-scanned", "upright", "full"]
SplitChoice = Literal["auto", "all", "train", "test"]
EmbedSplitChoice = Literal["all", "train", "test"]
SamplerChoice = Literal["tpe", "gp", "random"]
PrunerChoice = Literal["median", "hyperband", "none"]
ObjectiveChoice = Literal["val_accuracy", "silhouette"]


def _device(value: str) -> str:
    if re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        return value
    raise typer.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N")


def _complete(values: list[str], incomplete: str) -> list[CompletionItem]:
    return [CompletionItem(v) for v in values if v.startswith(incomplete)]


def _complete_device(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _complete(["auto", "cpu", "cuda", "cuda:0"], incomplete)


def _complete_method(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    from lib.features.registry import METHODS

    return _complete(list(METHODS), incomplete)


def _complete_preset(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    from lib.compare.rows import PRESETS

    return [*_complete(["default", *PRESETS], incomplete), CompletionItem(incomplete, type="file")]


# A device is auto, cpu, cuda or cuda:N; a method is checked when it is built (completion lists the registry);
# a preset is a name or a .json file.
Device = Annotated[
    str,
    typer.Option(
        parser=_device,
        metavar="<auto|cpu|cuda|cuda:N>",
        shell_complete=_complete_device,
        help="where to train: auto (CUDA when present), cpu, cuda, cuda:N",
    ),
]
Method = Annotated[
    str,
    typer.Option(
        "--method", "-m", metavar="METHOD", shell_complete=_complete_method, help="feature method (voxclust methods)"
    ),
]
Preset = Annotated[
    str | None,
    typer.Option(
        metavar="<NAME|FILE.json>",
        shell_complete=_complete_preset,
        help="method set: default (every method), quality, demo, or a preset .json file",
    ),
]

# -- shared options ---------------------------------------------------------------------------------------------

DaskAddress = Annotated[
    str | None, typer.Option(help="existing Dask scheduler, e.g. tcp://host:8786 (env VOXCLUST_DASK_ADDRESS)")
]

Workers = Annotated[int | None, typer.Option(help="LocalCluster worker processes (default: one per core)")]


def parse_options(pairs: list[str], epochs: int | None) -> dict[str, Any]:
    """``key=value`` pairs (value as JSON when it parses, else a string; ``a.b=v`` for nested options)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected key=value", param_hint="--set")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = options
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    if epochs is not None:
        options["epochs"] = epochs
    return options


def names(text: str | None) -> list[str] | None:
    """A comma-separated list (``raw, vrn``) as names; None when empty or not given."""
    found = [t.strip() for t in (text or "").split(",") if t.strip()]
    return found or None


# -- the registered methods -----------------------------------------------------------------------------------


def _plain(text: str) -> str:
    """Docstring text without RST markup, on one line."""
    return " ".join(re.sub(r"``([^`]*)``|:\w+:`~?([^`]*)`", lambda m: m.group(1) or m.group(2), text).split())


def method_listing() -> dict[str, Any]:
    """Every registered method: its summary (the module docstring's first paragraph) and options."""
    from lib.features.registry import METHODS

    listing: dict[str, Any] = {}
    for name, cls in METHODS.items():
        doc = ((cls.__module__ and sys.modules[cls.__module__].__doc__) or "").strip().split("\n\n")[0]
        summary = _plain(doc).removeprefix(f"{name}:").strip()
        options = {}
        for field, info in cls.config_cls.model_fields.items():
            default = info.get_default(call_default_factory=True)
            if hasattr(default, "model_dump"):
                default = default.model_dump(mode="json")
            options[field] = {"default": default, "description": _plain(info.description or "")}
        listing[name] = {"summary": summary, "options": options}
    return listing


def methods_text(listing: dict[str, Any]) -> str:
    lines = []
    for name, entry in listing.items():
        lines.append(f"{name}: {entry['summary']}")
        for field, opt in entry["options"].items():
            lines.append(f"    {field} = {opt['default']!r}  {opt['description']}".rstrip())
        lines.append("")
    lines.append("Set an option with --set key=value (train, tune) or --set method.key=value (compare).")
    return "\n".join(lines)
