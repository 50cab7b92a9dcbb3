"""Stage 8, report: each task's printed table (:func:`format_results`) and the figures
(:mod:`truthserum.report.plots`), all read from what ``results.json`` holds."""

from __future__ import annotations

from importlib import import_module

# Each task's table, in a module of its own that is imported when it is needed.
_TABLES = {
    "membership": ("truthserum.report.membership", "format_comparison"),
    "attribute": ("truthserum.report.attribute", "format_attribute"),
    "untargeted": ("truthserum.report.untargeted", "format_untargeted"),
    "lm": ("truthserum.report.lm", "format_lm"),
    "defenses": ("truthserum.report.defenses", "format_defenses"),
}


def format_results(results: dict) -> str:
    """The table of any task's ``results.json`` (one written before tasks existed is membership)."""
    module, function = _TABLES[results.get("task", "membership")]
    return getattr(import_module(module), function)(results)
