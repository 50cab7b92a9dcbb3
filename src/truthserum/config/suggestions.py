"""Writing the guidance's suggested changes into a config (:mod:`truthserum.metrics.guidance`
finds them; this applies them), validated as a config file would be."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from truthserum.config.loading import parse_config
from truthserum.errors import ConfigError
from truthserum.metrics.guidance import Finding, Guidance, Suggestion, plain


def apply_suggestions(config: Any, suggestions: Iterable[Finding | Suggestion] | Guidance) -> Any:
    """``config`` with every config change of ``suggestions`` (a :class:`Guidance`, its
    findings, or suggestions) written in, validated as a config file would be: a config of the
    same task. ``config`` is a config, or a run's recorded one (``results.config``). Changes to
    the user's own model or trainer (no key) are skipped.

    Raises:
        ConfigError: not a config, a key the config has no section for, or a value it refuses.
    """
    items = suggestions.suggestions if isinstance(suggestions, Guidance) else suggestions
    changes = [item for entry in items
               for item in (entry.suggestions if isinstance(entry, Finding) else (entry,)) if item.key is not None]
    if isinstance(config, Mapping):
        raw = json.loads(json.dumps(config, default=_plain_mapping))  # a recorded config: read-only views
    elif callable(getattr(config, "model_dump", None)):
        raw = config.model_dump(mode="json")
    else:
        raise ConfigError(f"apply_suggestions: pass a config (RunConfig) or results.config, got {type(config).__name__}")
    for change in changes:
        *sections, name = change.key.split(".")
        section = raw
        for part in sections:
            if not isinstance(section.get(part), dict):
                raise ConfigError(f"suggestion {change.key}: a {raw.get('task')} config has no section {part}")
            section = section[part]
        section[name] = plain(change.suggested)
    return parse_config(raw, source="suggestions")


def _plain_mapping(value: Any) -> Any:
    """JSON for the read-only views a run's recorded config is made of."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
