"""The configuration reference (docs/configuration.md), generated from the config models.

Every key's type, default, bounds and description come from the pydantic models themselves,
so the page cannot drift from the code. Regenerate it with::

    python -m truthserum.config.reference > docs/configuration.md

``RunConfig`` may be one model, or a union of one model per task discriminated on ``task``
(``Annotated[Union[A, B, ...], Field(discriminator="task")]``); each task's model then gets
its own heading. A section class is documented once, where it first appears (declaration
order, depth first), and linked from everywhere else it is used.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Sequence, Set as AbstractSet
from pathlib import PurePath
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

REGENERATE = "python -m truthserum.config.reference > docs/configuration.md"

_INTRO = f"""\
# Configuration reference

<!-- Generated from the config models; do not edit. Regenerate with:
     {REGENERATE} -->

A run is configured by one YAML file (`truthserum run CONFIG --out DIR`). Every key has a
default unless it is marked required, so a file names only what differs; unknown keys are
refused. Nested sections are YAML mappings; a list of sections is a YAML list of mappings.
Bounds are checked when the file is read; what depends on the data (targets against the pool
size, image-only options) is checked once the data are loaded.
"""


def configuration_reference() -> str:
    """The Markdown of docs/configuration.md, built from the config models."""
    from truthserum.config import RunConfig

    return _Reference(_task_models(RunConfig)).render()


# ---------------------------------------------------------------------------------------------
# Types


def _strip_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    """The type inside any ``Annotated`` layers, and their metadata."""
    metadata: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata.extend(extra)
    return annotation, metadata


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _task_models(run_config: Any) -> list[type[BaseModel]]:
    """The top-level models: ``RunConfig`` itself, or the members of its union."""
    value = getattr(run_config, "__value__", run_config)  # a ``type RunConfig = ...`` alias
    value, _ = _strip_annotated(value)
    if _is_model(value):
        return [value]
    if _is_union(value):
        members = [_strip_annotated(member)[0] for member in typing.get_args(value)]
        if members and all(_is_model(member) for member in members):
            return members
    raise TypeError(f"RunConfig must be a pydantic model or a union of them, not {value!r}")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The section models a field holds: itself, or inside Optional, a union or a list."""
    annotation, _ = _strip_annotated(annotation)
    if _is_model(annotation):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        if arg is not Ellipsis:
            found.extend(model for model in _models_in(arg) if model not in found)
    return found


_SCALARS = {int: "integer", float: "number", bool: "boolean", str: "string", type(None): "null"}
_PLURALS = {"integer": "integers", "number": "numbers", "boolean": "booleans", "string": "strings", "path": "paths"}


def _code(value: str) -> str:
    return f"`{value}`"


class _Reference:
    def __init__(self, task_models: list[type[BaseModel]]):
        self.task_models = task_models
        self.single = len(task_models) == 1
        self.anchors: dict[type[BaseModel], str] = {}  # section class -> its heading's anchor
        self.slug_counts: dict[str, int] = {}
        self.lines: list[str] = []

    # --- headings and anchors, as GitHub makes them

    def _heading(self, level: int, text: str) -> str:
        slug = github_slug(text)
        count = self.slug_counts.get(slug, 0)
        self.slug_counts[slug] = count + 1
        anchor = slug if count == 0 else f"{slug}-{count}"
        self.lines += ["#" * level + " " + text, ""]
        return anchor

    def _link(self, model: type[BaseModel]) -> str:
        return f"[{_code(model.__name__)}](#{self.anchors[model]})"

    # --- the page

    def render(self) -> str:
        self.lines = [_INTRO.rstrip("\n"), ""]
        if not self.single:
            names = ", ".join(
                f"{_code(_task_value(model) or '?')} ({_code(model.__name__)})" for model in self.task_models
            )
            self.lines += [
                f"The key `task` chooses the model the rest of the file is read with: {names}. Each "
                "task's model owns only the sections that task reads; a section shared between tasks "
                "is described once and linked from the others.",
                "",
            ]
        # Assign every section its anchor before writing, so a link may point forward.
        self._plan()
        self._write()
        return "\n".join(line.rstrip() for line in self.lines).rstrip("\n") + "\n"

    def _top_heading(self, model: type[BaseModel]) -> str:
        task = _task_value(model)
        if self.single or task is None:
            return f"Top level ({_code(model.__name__)})"
        return f"Task {_code(task)} ({_code(model.__name__)})"

    def _walk(self) -> list[tuple[int, str, type[BaseModel]]]:
        """(heading level, heading, model) in writing order: each task model, then each of its
        sections not yet documented, depth first in declaration order."""
        order: list[tuple[int, str, type[BaseModel]]] = []
        seen: set[type[BaseModel]] = set()

        def sections(model: type[BaseModel], path: str) -> None:
            for name, field in model.model_fields.items():
                for section in _models_in(field.annotation):
                    if section in seen:
                        continue
                    seen.add(section)
                    key = f"{path}.{name}" if path else name
                    suffix = "[]" if _is_list_of_models(field.annotation) else ""
                    order.append((3, f"{_code(key + suffix)} ({_code(section.__name__)})", section))
                    sections(section, key + suffix)

        for model in self.task_models:
            seen.add(model)
            order.append((2, self._top_heading(model), model))
            sections(model, "")
        return order

    def _plan(self) -> None:
        saved, self.lines = self.lines, []
        for level, text, model in self._walk():
            self.anchors[model] = self._heading(level, text)
        self.lines, self.slug_counts = saved, {}

    def _write(self) -> None:
        for level, text, model in self._walk():
            self._heading(level, text)
            doc = _docstring(model)
            if doc:
                self.lines += [doc, ""]
            self._table(model)

    def _table(self, model: type[BaseModel]) -> None:
        self.lines += ["| key | type | default | bounds | description |", "|---|---|---|---|---|"]
        for name, field in model.model_fields.items():
            annotation, metadata = _strip_annotated(field.annotation)
            metadata = [*field.metadata, *metadata]
            cells = [
                _code(field.alias or name),
                self._type(annotation),
                self._default(field, annotation),
                _bounds(metadata, annotation),
                _one_line(field.description or ""),
            ]
            self.lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        self.lines.append("")

    # --- cells

    def _type(self, annotation: Any) -> str:
        annotation, _ = _strip_annotated(annotation)
        if _is_model(annotation):
            return f"section {self._link(annotation)}"
        if annotation in _SCALARS:
            return _SCALARS[annotation]
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return "one of " + ", ".join(_code(str(member.value)) for member in annotation)
        if isinstance(annotation, type) and issubclass(annotation, PurePath):
            return "path"
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is Literal:
            return " or ".join(_code(_plain(arg)) for arg in args)
        if _is_union(annotation):
            members = [self._type(arg) for arg in args]
            if len(members) > 1 and any(", " in member for member in members):
                return "; or ".join(members)
            return " or ".join(members)
        if isinstance(origin, type) and issubclass(origin, (Sequence, AbstractSet)) and origin is not str:
            if len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis):
                item = self._type(args[0])
                return f"list of {_PLURALS[item]}" if item in _PLURALS else f"list, each {item}"
            return f"list of {len(args)}: " + ", ".join(self._type(arg) for arg in args)
        if origin is dict:
            return f"mapping of {self._type(args[0])} to {self._type(args[1])}" if args else "mapping"
        if annotation is Any:
            return "any"
        return _code(getattr(annotation, "__name__", None) or re.sub(r" at 0x[0-9a-f]+", "", str(annotation)))

    def _default(self, field: Any, annotation: Any) -> str:
        if field.default is PydanticUndefined:
            if field.default_factory is None:
                return "required"
            try:
                value = field.default_factory()
            except TypeError:  # a factory that takes the validated data
                return "computed"
        else:
            value = field.default
        if isinstance(value, BaseModel):
            try:
                plain_default = type(value)()
            except Exception:  # a section with required keys
                plain_default = None
            if value == plain_default:
                return "its defaults"
            changed = value.model_dump(mode="json", exclude_defaults=True)
            return "its defaults, except " + _code(_plain(changed))
        return _code(_plain(value))


def _is_list_of_models(annotation: Any) -> bool:
    annotation, _ = _strip_annotated(annotation)
    if _is_union(annotation):
        return any(_is_list_of_models(arg) for arg in typing.get_args(annotation))
    return typing.get_origin(annotation) in (tuple, list) and bool(_models_in(annotation)) and not _is_model(annotation)


def _task_value(model: type[BaseModel]) -> str | None:
    """The value of a model's ``task`` key: its Literal, else its default."""
    field = model.model_fields.get("task")
    if field is None:
        return None
    annotation, _ = _strip_annotated(field.annotation)
    if typing.get_origin(annotation) is Literal:
        return _plain(typing.get_args(annotation)[0])
    if field.default is not PydanticUndefined and field.default is not None:
        return _plain(field.default)
    return None


def _plain(value: Any) -> str:
    """A value as a config file would spell it (YAML flow style)."""
    value = to_jsonable_python(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_plain(item)}" for key, item in value.items()) + "}"
    return str(value)


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("multiple_of", "multiple of"))


def _bounds(metadata: list[Any], annotation: Any) -> str:
    """Numeric bounds and lengths from a field's constraints (annotated_types objects)."""
    parts: list[str] = []
    for item in metadata:
        for attribute, symbol in _BOUNDS:
            bound = getattr(item, attribute, None)
            if bound is not None:
                parts.append(f"{symbol} {_number(bound)}")
        for attribute, word in (("min_length", "at least"), ("max_length", "at most")):
            length = getattr(item, attribute, None)
            if length is not None:
                unit = "character" if _is_string(annotation) else "item"
                parts.append(f"{word} {length} {unit}{'' if length == 1 else 's'}")
    return ", ".join(dict.fromkeys(parts))


def _is_string(annotation: Any) -> bool:
    annotation, _ = _strip_annotated(annotation)
    if _is_union(annotation):
        return any(_is_string(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation is str


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


def _docstring(model: type[BaseModel]) -> str:
    """The class's own docstring (not one inherited from BaseModel), as one Markdown paragraph
    per paragraph, with reStructuredText roles and literals turned into code spans."""
    doc = model.__dict__.get("__doc__")
    if not doc:
        return ""
    text = inspect.cleandoc(doc)
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    return "\n\n".join(_one_line(paragraph) for paragraph in text.split("\n\n"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (before numbering duplicates)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link shows its text
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


if __name__ == "__main__":
    print(configuration_reference(), end="")
