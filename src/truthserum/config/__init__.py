"""Configuration: one validated model per task (:data:`RunConfig` is their union on ``task``),
each owning the sections it reads, read from YAML with a safe loader.

The names below load on first use, so that an attack's options can build on
:mod:`truthserum.config.schema` without importing every task's config."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "dump_config": "loading", "load_config": "loading", "parse_config": "loading",
    "PATH_KEYS": "tasks", "SCORING_KEYS": "tasks", "TASK_CONFIGS": "tasks", "AdversaryConfig": "tasks",
    "AttributeConfig": "tasks", "DefensesConfig": "tasks",
    "LanguageModelConfig": "tasks", "MembershipConfig": "tasks", "RunConfig": "tasks", "Task": "tasks",
    "UntargetedConfig": "tasks",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return __all__
