"""Search spaces: which options of a method a search varies, over which ranges, checked against its config.

A space is a mapping from an option name (``a.b`` for a nested option, e.g. ``augment.z_steps``) to either

* a range ``{low: 1.0e-4, high: 3.0e-3, log: true}`` (float, or int when the option is an integer; ``step``
  optional),
* choices ``{choices: [16, 32, 64]}``,
* or a plain value: the option is fixed for every trial (e.g. ``epochs: 12``).

Written as YAML or JSON (``voxclust tune --space FILE``)::

    lr: {low: 1.0e-4, high: 3.0e-3, log: true}
    batch_size: {choices: [16, 32, 64]}
    weight_decay: {low: 1.0e-6, high: 1.0e-3, log: true}
    epochs: 12

:func:`load_space` checks a space against the method's pydantic config before any trial starts: an unknown
option, a range outside the option's bounds (both ends and every choice are validated by the config itself),
``low >= high`` or a range on a non-numeric option raise :class:`TuneError` naming the option.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lib.errors import VoxclustError


class TuneError(VoxclustError, ValueError):
    """Bad input to a search: its space, objective, method, data or database."""


class Param(BaseModel):
    """One searched option: a numeric range or a list of choices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: tuple[Any, ...] | None = None
    kind: Literal["float", "int", "categorical"] = "float"

    @model_validator(mode="after")
    def _shape(self) -> Param:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self


class SearchSpace(BaseModel):
    """The searched options (``params``) and the options fixed for every trial (``fixed``), for ``method``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    params: dict[str, Param]
    fixed: dict[str, Any] = Field(default_factory=dict)

    def options(self, values: dict[str, Any]) -> dict[str, Any]:
        """The method options of one trial: the fixed ones and ``values`` (flat ``a.b`` names), nested."""
        out: dict[str, Any] = {}
        for name, value in {**self.fixed, **values}.items():
            node = out
            *parents, leaf = name.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out


def _field(config_cls: type[BaseModel], name: str) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of the option ``a.b`` of a config class; TuneError naming the choices."""
    cls: Any = config_cls
    parts = name.split(".")
    for i, part in enumerate(parts):
        fields = cls.model_fields
        if part not in fields:
            where = ".".join(parts[:i]) or cls.__name__
            raise TuneError(f"search space: {name!r} is not an option (options of {where}: {', '.join(fields)})")
        info = fields[part]
        if i == len(parts) - 1:
            return info.annotation, info
        cls = info.annotation
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            raise TuneError(f"search space: {'.'.join(parts[: i + 1])} has no sub-options ({name!r})")
    raise AssertionError("unreachable")


def _kind(annotation: Any) -> str | None:
    """float / int for a numeric option (also ``X | None``), None for anything else."""
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    kinds = {a for a in args if a is not type(None)}
    if kinds == {int}:
        return "int"
    if kinds <= {int, float} and kinds:
        return "float"
    return None


def _parse(method: str, raw: dict[str, Any]) -> SearchSpace:
    from lib.features.registry import get_method

    config_cls = get_method(method).config_cls
    params: dict[str, Param] = {}
    fixed: dict[str, Any] = {}
    for name, spec in raw.items():
        annotation, _ = _field(config_cls, str(name))
        if name == "seed":
            raise TuneError("search space: 'seed' is set by the search (--seed), not searched")
        if not isinstance(spec, dict):
            fixed[name] = spec
            continue
        try:
            param = Param.model_validate(spec)
        except ValueError as exc:
            raise TuneError(f"search space: {name}: {_first_error(exc)}") from None
        if param.choices is None:
            kind = _kind(annotation)
            if kind is None:
                raise TuneError(f"search space: {name} is not numeric: give choices instead of low/high")
            if kind == "int" and not all(
                v is None or float(v).is_integer() for v in (param.low, param.high, param.step)
            ):
                raise TuneError(f"search space: {name} is an integer option: low, high and step must be integers")
            param = param.model_copy(update={"kind": kind})
        else:
            param = param.model_copy(update={"kind": "categorical"})
        params[str(name)] = param
    if not params:
        raise TuneError("search space: nothing to search (every entry is a fixed value)")
    space = SearchSpace(method=method, params=params, fixed=fixed)
    _check_values(space)
    return space


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", exc)).removeprefix("Value error, ")
    return str(exc)


def _check_values(space: SearchSpace) -> None:
    """Every end of every range and every choice, with the fixed options, must be a valid config."""
    from lib.features.base import MethodError
    from lib.features.runs import make_config

    def check(name: str | None, value: Any) -> None:
        try:
            make_config(space.method, space.options({} if name is None else {name: value}))
        except MethodError as exc:
            what = "the fixed options are" if name is None else f"{name}={value!r} is"
            raise TuneError(f"search space: {what} outside what {space.method} accepts: {exc}") from None

    check(None, None)
    for name, p in space.params.items():
        values: list[Any] = list(p.choices) if p.choices is not None else [p.low, p.high]
        if p.kind == "int":
            values = [int(v) for v in values]
        for value in values:
            check(name, value)


def load_space(
    method: str, source: str | Path | dict[str, Any] | None = None, fixed: dict[str, Any] | None = None
) -> SearchSpace:
    """The search space for ``method``: a YAML / JSON file, a mapping, or (None) the method's default; with
    ``fixed`` options set for every trial over the space's own fixed ones (an option the space searches may
    not be fixed too)."""
    from lib.features.registry import get_method

    cls = get_method(method)
    if not cls.trainable:
        raise TuneError(f"{method} does not train: it has nothing to tune")
    if source is None:  # the method's own (FeatureMethod.search_space)
        if not cls.search_space:
            raise TuneError(f"{method} has no default search space: give one with --space FILE")
        raw: Any = cls.search_space
    elif isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if not path.is_file():
            raise TuneError(f"search space file {path}: no such file")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise TuneError(f"search space file {path}: not YAML or JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise TuneError(f"search space file {path}: expected a mapping of option -> range or choices")
    clash = sorted(name for name in fixed or {} if isinstance(raw.get(name), dict))
    if clash:
        raise TuneError(f"--set {', '.join(clash)}: searched by the space; remove it from one of them")
    return _parse(method, {**raw, **(fixed or {})})


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Draw one trial's values (flat names) from an Optuna trial."""
    values: dict[str, Any] = {}
    for name, p in space.params.items():
        if p.kind == "categorical":
            assert p.choices is not None
            values[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.kind == "int":
            assert p.low is not None and p.high is not None
            step = int(p.step) if p.step else 1
            values[name] = trial.suggest_int(name, int(p.low), int(p.high), step=step, log=p.log)
        else:
            assert p.low is not None and p.high is not None
            values[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
    return values


def describe(space: SearchSpace) -> dict[str, str]:
    """A line per searched option, for the CLI and the report."""
    out = {}
    for name, p in space.params.items():
        if p.choices is not None:
            out[name] = "one of " + ", ".join(map(str, p.choices))
        else:
            out[name] = (
                f"{p.low:g} .. {p.high:g}" + (" (log)" if p.log else "") + (f" step {p.step:g}" if p.step else "")
            )
    return out


__all__ = ["Param", "SearchSpace", "TuneError", "describe", "load_space", "suggest"]
