"""Reading a config: YAML through a safe loader, validated into the model of its task, with
every problem named in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from truthserum.attacks.options import RmiaOptions
from truthserum.attacks.registry import AttackName
from truthserum.config.lm import LmConfig
from truthserum.config.sections import (
    DataConfig, DesignConfig, MetricsConfig, ModelConfig, PoisonConfig, QueryConfig, TrainConfig,
)
from truthserum.config.tasks import TASK_CONFIGS, AdversaryConfig, RunConfig, Task
from truthserum.errors import ConfigError


# Every section any task has, with the model that reads it.
_SECTIONS = {
    "data": DataConfig, "design": DesignConfig, "poison": PoisonConfig, "model": ModelConfig,
    "train": TrainConfig, "query": QueryConfig, "rmia": RmiaOptions, "metrics": MetricsConfig,
    "untargeted": AdversaryConfig, "lm": LmConfig,
}


MAX_NESTING = 20  # a real config nests 4 levels; deeper is a mistake or an attack on the parser
MAX_CONFIG_BYTES = 10_000_000  # a config is a few kilobytes; the YAML parser holds the whole text
MAX_CONFIG_VALUES = 100_000  # after aliases: ten levels of ten aliases each would be 10**10
_ECHO = 60  # characters of a user's key echoed back in a message
_MAX_PROBLEMS = 5  # problems named in one line; the rest are counted


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int):
        super().__init__()
        self.key, self.line = key, line


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML would keep
    the last one silently, so a config could mean something other than it seems to say)."""

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base constructor names the problem
                continue
            if duplicate:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _echo(value: Any) -> str:
    """``repr(value)``, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _ECHO else text[:_ECHO] + "...'"


def _nesting(raw: Any) -> int:
    """How deep mappings and lists nest in ``raw``, counted without recursion; a value reached
    again at the same depth (a YAML alias) is not walked again."""
    deepest, stack, seen = 0, [(raw, 1)], set()
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, (dict, list)) and (id(child), depth + 1) not in seen:
                if depth + 1 > MAX_NESTING:
                    return depth + 1
                seen.add((id(child), depth + 1))
                stack.append((child, depth + 1))
        deepest = max(deepest, depth)
    return deepest


def _expanded_size(raw: Any, memo: dict[int, int] | None = None) -> int:
    """How many values ``raw`` holds once its YAML aliases are expanded, each shared value
    counted once per reference but walked once (``raw`` nests at most MAX_NESTING deep)."""
    memo = {} if memo is None else memo
    if not isinstance(raw, (dict, list)):
        return 1
    if id(raw) not in memo:
        children = raw.values() if isinstance(raw, dict) else raw
        memo[id(raw)] = 1 + sum(_expanded_size(child, memo) for child in children)
    return memo[id(raw)]


# The keys of the defense sections: each belongs to one task (defense: membership; defenses and
# strategies: the defense matrix), and a config of another task is told where they go.
_DEFENSE_KEYS = ("defense", "defenses", "strategies")


def _restates_default(key: str, value: Any) -> bool:
    """Whether ``value`` of section ``key`` reads as that section's defaults."""
    if key in _DEFENSE_KEYS:
        return key == "defense" and value in ("none", {"kind": "none"})
    if key == "attacks":
        return isinstance(value, list | tuple) and list(value) == [name.value for name in AttackName]
    try:
        return _SECTIONS[key].model_validate(value) == _SECTIONS[key]()
    except ValidationError:
        return False


def _not_for_task(task: Task, keys: list[str]) -> str:
    """Why a config of ``task`` may not set the sections ``keys``."""
    if task is Task.LM:
        return f"task 'lm' is configured in its lm section; it does not use {', '.join(keys)}"
    key = keys[0]
    if key == "defense" and task is Task.DEFENSES:
        return "task 'defenses' lists its rows in defenses (a list); defense (one) is for task 'membership'"
    if key in _DEFENSE_KEYS:
        return (f"task '{task.value}' does not use {key}: defense is for task 'membership', defenses and "
                "strategies for task 'defenses' (docs/defenses.md)")
    if key in ("lm", "untargeted"):
        return f"the {key} section is for task '{key}', not '{task.value}'"
    if task is Task.ATTRIBUTE and key in ("attacks", "rmia"):
        return ("task 'attribute' runs its own attacks (confidence, lira-offline, lira-offline-fixed); "
                "attacks and rmia are for the membership tasks")
    if task is Task.UNTARGETED and key == "poison":
        return "task 'untargeted' does not use poison: the adversary's share replaces it"
    return f"task '{task.value}' does not use {key}"


def _task_sections(raw: dict[str, Any], task: Task, source: str) -> dict[str, Any]:
    """``raw`` without the sections of other tasks that only restate their defaults (a config
    written before each task had its own model spelled every section out, and the old single
    model accepted any section left at its defaults), refusing the others."""
    fields = TASK_CONFIGS[task].model_fields
    foreign = [key for key in raw if key not in fields and (key in _SECTIONS or key in ("attacks", *_DEFENSE_KEYS))]
    refused = [key for key in foreign if not _restates_default(key, raw[key])]
    if refused:
        raise ConfigError(f"{source}: {_not_for_task(task, refused)}")
    return {key: value for key, value in raw.items() if key not in foreign}


def _format_validation_error(error: ValidationError, source: str) -> str:
    problems = []
    errors = error.errors()
    for item in errors:
        if any(other["loc"][: len(item["loc"])] == item["loc"] and len(other["loc"]) > len(item["loc"])
               for other in errors):
            continue  # a consequence of an error inside this value (an empty list after a bad item)
        where = ".".join(_cut(str(part), _ECHO) for part in item["loc"]) or "(top level)"
        message = _cut(item["msg"].removeprefix("Value error, "), 4 * _ECHO)  # it may quote the value
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{where}: {message}")
    shown = problems[:_MAX_PROBLEMS]
    more = f"; and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return f"{source}: " + "; ".join(shown) + more


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def parse_config(raw: Any, *, source: str = "config", base_dir: Path | None = None) -> RunConfig:
    """Validate a mapping (from YAML or JSON) into the config model of its ``task``
    (membership when it names none).

    Relative paths (``data.path``, ``lm.corpus.path``, ``lm.pretrain.path``, ``lm.model.path``)
    are resolved against ``base_dir`` (the config file's folder), so a config means the same
    thing whatever the working directory.

    Raises:
        ConfigError: one line naming every problem found.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    name = raw.get("task", Task.MEMBERSHIP.value)
    try:
        task = Task(name)
    except ValueError:
        choices = ", ".join(f"'{task.value}'" for task in Task)
        raise ConfigError(f"{source}: task: must be one of {choices}, got {name!r}") from None
    try:
        config = TASK_CONFIGS[task].model_validate(_task_sections(raw, task, source))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    if base_dir is not None:
        config = _resolve_paths(config, base_dir)
    return config


def _resolve_paths(config: RunConfig, base_dir: Path) -> RunConfig:
    """Relative ``data.path``, ``lm.corpus.path``, ``lm.pretrain.path`` and ``lm.model.path``
    against ``base_dir``."""
    def resolved(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else (base_dir / path).resolve()

    update: dict[str, Any] = {}
    if "lm" in type(config).model_fields:
        lm = config.lm
        update["lm"] = lm.model_copy(update={
            "corpus": lm.corpus.model_copy(update={"path": resolved(lm.corpus.path)}),
            "model": lm.model.model_copy(update={"path": resolved(lm.model.path)}),
            "pretrain": None if lm.pretrain is None else lm.pretrain.model_copy(
                update={"path": resolved(lm.pretrain.path)}),
        })
    if "data" in type(config).model_fields:
        update["data"] = config.data.model_copy(update={"path": resolved(config.data.path)})
    return config.model_copy(update=update)


def load_config(path: Path) -> RunConfig:
    """Read a YAML config with ``yaml.safe_load``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if path.exists() and not path.is_file():  # a pipe would block the read
        raise ConfigError(f"{path}: not a regular file (a pipe, device or socket), so not a config file")
    if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes, more than a config's {MAX_CONFIG_BYTES:,}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    try:
        raw = yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: plain data, no Python objects
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: key {_echo(exc.key)} is given twice in one section (line {exc.line}); "
                          "keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read (a config nests a few levels)") from None
    if raw is None or raw == {}:
        raise ConfigError(f"{path}: the config is empty; `truthserum demo` runs the built-in experiment, "
                          "and docs/usage.md shows a config to start from")
    if _nesting(raw) > MAX_NESTING:
        raise ConfigError(f"{path}: nested more than {MAX_NESTING} levels deep (a config nests a few levels)")
    if _expanded_size(raw) > MAX_CONFIG_VALUES:
        raise ConfigError(f"{path}: holds more than {MAX_CONFIG_VALUES:,} values once its YAML aliases are "
                          "expanded (a config holds a few dozen)")
    return parse_config(raw, source=str(path), base_dir=path.parent)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (every default filled in)."""
    return yaml.safe_dump(config.to_json_dict(), sort_keys=False)
