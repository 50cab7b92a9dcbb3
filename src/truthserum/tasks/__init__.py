"""Runners of the tasks, one per secret: membership (in :mod:`truthserum.runner`),
attribute inference, untargeted poisoning and language-model secrets. :func:`run_task` picks the one a config names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from truthserum.backends import ShardBackend
from truthserum.config import RunConfig, Task
from truthserum.runner import run_experiment
from truthserum.stages import log_to_stderr
from truthserum.tasks.attribute import run_attribute
from truthserum.tasks.lm import run_lm
from truthserum.tasks.untargeted import run_untargeted

RUNNERS: dict[Task, Callable[..., dict]] = {
    Task.MEMBERSHIP: run_experiment,
    Task.ATTRIBUTE: run_attribute,
    Task.UNTARGETED: run_untargeted,
    Task.LM: run_lm,
}


def run_task(
    config: RunConfig, out_dir: Path, *, device: str = "cpu", progress: bool = True, log=log_to_stderr,
    backend: ShardBackend | None = None,
) -> dict:
    """Run (or resume) ``config`` with its task's runner; returns ``results.json``.

    ``backend`` trains the shards: in this process by default, or a
    :class:`~truthserum.backends.RayBackend`."""
    return RUNNERS[config.task](config, out_dir, device=device, progress=progress, log=log, backend=backend)


__all__ = ["RUNNERS", "run_attribute", "run_lm", "run_task", "run_untargeted"]
