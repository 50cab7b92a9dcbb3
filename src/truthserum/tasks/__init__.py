"""The tasks, one per secret: membership, attribute inference, untargeted poisoning and
language-model secrets. Each supplies its own stages as a runner
(:class:`~truthserum.tasks.skeleton.TaskRunner`) and every one of them goes through the same
skeleton, :func:`~truthserum.tasks.skeleton.execute`; :func:`run_task` picks the runner a config
names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from truthserum.config import RunConfig, Task
from truthserum.tasks.attribute import AttributeRunner
from truthserum.tasks.defenses import DefenseMatrixRunner
from truthserum.tasks.lm import LmRunner
from truthserum.tasks.membership import MembershipRunner
from truthserum.tasks.results import RunResults
from truthserum.tasks.skeleton import TaskRunner, execute
from truthserum.tasks.stages import Log, log_to_stderr
from truthserum.tasks.untargeted import UntargetedRunner
from truthserum.train.executors import ShardBackend

RUNNERS: dict[Task, Callable[[], TaskRunner]] = {
    Task.MEMBERSHIP: MembershipRunner,
    Task.ATTRIBUTE: AttributeRunner,
    Task.UNTARGETED: UntargetedRunner,
    Task.LM: LmRunner,
    Task.DEFENSES: DefenseMatrixRunner,
}


def run_task(
    config: RunConfig, out_dir: Path, *, device: str = "cpu", progress: bool = True, log: Log = log_to_stderr,
    backend: ShardBackend | None = None, report_to: Path | None = None,
) -> RunResults:
    """Run (or resume) ``config`` with its task's runner in ``out_dir``; returns its results
    (also written to ``results.json``).

    ``backend`` trains the shards: in this process by default, or a
    :class:`~truthserum.train.executors.RayBackend`. ``report_to`` re-reports a finished run
    without writing into ``out_dir`` (which may then be read-only): results, plots, signals
    and scores go to that directory instead."""
    return execute(RUNNERS[config.task](), config, out_dir, device=device, progress=progress, log=log,
                   backend=backend, report_to=report_to)


__all__ = ["RUNNERS", "RunResults", "run_task"]
