"""Options declared once, as dataclass fields: the command line, checks, recipes and recorded commands follow.

A field made with `option(...)` carries its default, help, flag, choices and bounds. `click_options`
turns a (nested) dataclass into click options, `build` makes the dataclass from the values a user
gave (command line over a recipe file over the defaults), `check_options` enforces the declared
choices and bounds in one place, and `command_words` writes a value back as the flags that give it.
Nested dataclass fields (a run's climb filter, split and model) are declared in their own classes
and flattened onto one command line: every flag names one field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from .errors import ClimbgradeError

T = TypeVar("T")


class OptionError(ClimbgradeError):
    """An option value outside what its declaration allows."""


@dataclass(frozen=True)
class Option:
    """What a field's declaration says about it beyond its default."""

    help: str
    group: str
    flag: str | None = None  # the command-line flag, when not --field-name
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is excluded
    below: bool = False  # the maximum itself is excluded
    comma: bool = False  # a tuple of words written as one comma-separated value (else: the flag repeated)
    metavar: str | None = None
    resumable: bool = False  # may be given again to --resume (the epoch budget, data that moved)
    recorded: bool = True  # written into the recorded command (a machine's device is not)
    parse: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None  # comma words -> the stored value
    render: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None  # the stored value -> comma words


def option(default: Any, help: str, group: str, **declared: Any) -> Any:
    """A dataclass field declared as an option (see Option for what `declared` may hold)."""
    return field(default=default, metadata={"option": Option(help, group, **declared)})


@dataclass(frozen=True)
class Declared:
    """One option of a (possibly nested) options dataclass."""

    name: str  # the field's name, unique over the nesting
    path: tuple[str, ...]  # attribute names from the top dataclass down to the field
    kind: type  # int, float, str, bool; for tuples the item type
    many: bool  # a tuple
    default: Any
    option: Option

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.name.replace("_", "-")

    @property
    def key(self) -> str:
        """The name a recipe file uses: the flag without its dashes."""
        return self.flag.removeprefix("--")

    def check(self, value: Any) -> None:
        """OptionError unless `value` is one of the declared choices and within the declared bounds."""
        o = self.option
        for item in value if self.many else (value,):
            if item is None:
                continue
            if o.choices and item not in o.choices:
                raise OptionError(f"{self.flag} must be one of {', '.join(o.choices)}, not {item!r}")
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not self._within(item):
                raise OptionError(f"{self.flag} must be {self.bounds}, not {item}")

    def _within(self, value: float) -> bool:
        o = self.option
        if math.isnan(value):
            return False
        low = o.minimum is None or (value > o.minimum if o.above else value >= o.minimum)
        high = o.maximum is None or (value < o.maximum if o.below else value <= o.maximum)
        return low and high

    @property
    def bounds(self) -> str:
        o = self.option
        words = []
        if o.minimum is not None:
            words.append(f"{'above' if o.above else 'at least'} {o.minimum:g}")
        if o.maximum is not None:
            words.append(f"{'below' if o.below else 'at most'} {o.maximum:g}")
        return " and ".join(words)

    def from_words(self, words: tuple[str, ...]) -> Any:
        """A comma option's stored value from its words."""
        return self.option.parse(words) if self.option.parse else words

    def to_words(self, value: Any) -> tuple[str, ...]:
        return tuple(self.option.render(value) if self.option.render else value)


def declared(cls: type, path: tuple[str, ...] = ()) -> Iterator[Declared]:
    """Every option of `cls`, nested dataclasses' options in place of the field that holds them."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from declared(typing.cast(type, kind), (*path, f.name))
            continue
        if "option" not in f.metadata:
            continue
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and len(args) == 1
        many = typing.get_origin(kind) is tuple
        item = args[0] if optional or many else kind
        yield Declared(f.name, (*path, f.name), item, many, f.default, f.metadata["option"])


def check_options(instance: Any) -> None:
    """The declared choices and bounds of `instance`'s own (not nested) options."""
    for d in declared(type(instance)):
        if len(d.path) == 1:
            d.check(getattr(instance, d.name))


def build(cls: type[T], values: dict[str, Any]) -> T:
    """`cls` from flat option values by field name (missing ones: their defaults), nesting rebuilt."""
    known = {d.name: d for d in declared(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise OptionError(f"unknown options: {', '.join(unknown)}")
    return typing.cast(T, _build(cls, {known[n].path: v for n, v in values.items()}, ()))


def _build(cls: type, values: dict[tuple[str, ...], Any], path: tuple[str, ...]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        here = (*path, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(typing.cast(type, hints[f.name]), values, here)
        elif here in values:
            kwargs[f.name] = values[here]
    return cls(**kwargs)


def flat_values(instance: Any) -> dict[str, Any]:
    """Every option's value by field name (the inverse of build)."""
    out = {}
    for d in declared(type(instance)):
        value = instance
        for name in d.path:
            value = getattr(value, name)
        out[d.name] = value
    return out


def from_record(cls: type[T], record: dict[str, Any]) -> T:
    """`cls` from its saved asdict form (run.json), nested or, as older runs saved it, flat."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        flat |= value if isinstance(value, dict) else {key: value}
    many = {d.name for d in declared(cls) if d.many}
    return build(cls, {k: tuple(v) if k in many else v for k, v in flat.items()})


def recipe_values(cls: type, recipe: dict[str, Any], source: str) -> dict[str, Any]:
    """Option values by field name from a recipe file's keys (flag names without dashes)."""
    by_key = {d.key: d for d in declared(cls)}
    out = {}
    for key, value in recipe.items():
        d = by_key.get(key)
        if d is None:
            raise OptionError(f"{source}: no option {key!r} (the keys are cg-train's flags without --, e.g. d-model)")
        out[d.name] = _recipe_value(d, value, source)
    return out


def _recipe_value(d: Declared, value: Any, source: str) -> Any:
    items = value if isinstance(value, list) else [value]
    if d.option.comma and isinstance(value, str):
        items = [w.strip() for w in value.split(",") if w.strip()]
    if not d.many and isinstance(value, list):
        raise OptionError(f"{source}: {d.key} takes one value, not a list")
    converted: list[Any] = []
    for item in items:
        ok = (
            isinstance(item, bool)
            if d.kind is bool
            else isinstance(item, (int, float)) and not isinstance(item, bool)
            if d.kind is float
            else isinstance(item, d.kind) and not isinstance(item, bool)
        )
        if not ok:
            raise OptionError(f"{source}: {d.key} takes {_kind_name(d)}, not {item!r}")
        converted.append(float(item) if d.kind is float else item)
    if d.many:
        return d.from_words(tuple(converted)) if d.option.comma else tuple(converted)
    return converted[0]


def _kind_name(d: Declared) -> str:
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false"}[d.kind] + (
        "s" if d.many and d.kind is not str else ""
    )


def click_options(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a click command with one option per declared field of `cls`, in declaration order.

    Their click defaults are None (or empty), so a command tells what the user gave from what it did
    not; help shows the declared default. Choices and bounds are checked by check_options, not click.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for d in reversed(list(declared(cls))):
            command = click.option(d.flag, d.name, **_click_settings(d))(command)
        return command

    return decorate


GROUP_TITLES = {
    "data": "Data",
    "run": "Run",
    "model": "Model",
    "distillation": "Distillation",
    "optimiser": "Optimiser and loss",
}


class GroupedCommand(click.Command):
    """A click command whose --help lists declared options under their groups' titles (options_class's)."""

    options_class: type | None = None

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups = {d.name: d.option.group for d in declared(self.options_class)} if self.options_class else {}
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                title = GROUP_TITLES.get(groups.get(param.name or "", ""), "Options")
                sections.setdefault(title, []).append(record)
        for title, records in sections.items():
            with formatter.section(title):
                formatter.write_dl(records)


def grouped_command(cls: type) -> type[GroupedCommand]:
    """The click command class for a command taking `cls`'s options (click.command(cls=...))."""
    return type(f"{cls.__name__}Command", (GroupedCommand,), {"options_class": cls})


def click_option(cls: type, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One declared field of `cls` as a click option (a command sharing one option of another's)."""
    d = next(d for d in declared(cls) if d.name == name)
    return click.option(d.flag, d.name, **_click_settings(d))


def _click_settings(d: Declared) -> dict[str, Any]:
    o = d.option
    settings: dict[str, Any] = {"help": o.help + _default_note(d)}
    if o.metavar:
        settings["metavar"] = o.metavar
    if d.kind is bool:
        return settings | {"is_flag": True, "default": None}
    if d.many and o.comma:
        return settings | {"type": str, "default": None}
    if d.many:
        return settings | {"type": d.kind, "multiple": True}
    if o.choices:
        settings["metavar"] = o.metavar or "|".join(o.choices)
    return settings | {"type": d.kind, "default": None}


def _default_note(d: Declared) -> str:
    if d.kind is bool or d.default in (None, (), ""):
        return ""
    shown = ",".join(d.to_words(d.default)) if d.many else d.default
    return f"  [default: {shown}]"


def given_values(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """The options a click command was given (click_options' parameters that are not None or empty)."""
    out = {}
    for d in declared(cls):
        value = params.get(d.name)
        if value is None or value == ():
            continue
        if d.many and d.option.comma:
            value = d.from_words(tuple(w.strip() for w in value.split(",") if w.strip()))
        out[d.name] = value
    return out


def command_words(instance: Any, skip: tuple[str, ...] = ()) -> list[str]:
    """The flags that give `instance` its options, those at their defaults (and unrecorded ones) left out."""
    words: list[str] = []
    values = flat_values(instance)
    for d in declared(type(instance)):
        value = values[d.name]
        if d.name in skip or not d.option.recorded or value == d.default:
            continue
        if d.kind is bool:
            words.append(d.flag)
        elif d.many and d.option.comma:
            words += [d.flag, ",".join(d.to_words(value))]
        elif d.many:
            words += [w for item in value for w in (d.flag, str(item))]
        else:
            words += [d.flag, str(value)]
    return words
