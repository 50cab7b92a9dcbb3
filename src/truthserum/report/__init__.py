"""Stage 8, report: each task's printed table (:func:`format_results`), the figures
(:mod:`truthserum.report.plots`) and the HTML page of a run directory
(:mod:`truthserum.report.html`), all read from what the run wrote."""

from __future__ import annotations

from importlib import import_module

# Each task's tables, in a module of its own that is imported when it is needed.
_TABLES = {
    "membership": ("truthserum.report.membership", "comparison_blocks"),
    "attribute": ("truthserum.report.attribute", "attribute_blocks"),
    "untargeted": ("truthserum.report.untargeted", "untargeted_blocks"),
    "lm": ("truthserum.report.lm", "lm_blocks"),
    "defenses": ("truthserum.report.defenses", "defenses_blocks"),
}


def results_blocks(results: dict) -> list:
    """The tables and notes of any task's ``results.json`` (one written before tasks existed is
    membership), as :mod:`truthserum.report.blocks`: the terminal prints them, the HTML report
    shows them as tables."""
    module, function = _TABLES[results.get("task", "membership")]
    return getattr(import_module(module), function)(results)


def format_results(results: dict) -> str:
    """The printed table of any task's ``results.json``."""
    from truthserum.report.blocks import render_text

    return render_text(results_blocks(results))
