"""The one runner every task goes through: load and check the inputs (nothing written yet),
open or resume the run directory, reapply what it recorded and check its fingerprints, run the
task's own stages, then measure, write ``results.json``, draw the task's plots and write
``report.html``.

A task supplies only what is its own, as a :class:`TaskRunner`; the stages they share
(training shards, attacking signals, warnings) are in :mod:`truthserum.tasks.stages`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch

from truthserum.errors import ConfigError, RunDirError
from truthserum.store.rundir import RunDirectory, write_json
from truthserum.tasks.results import RunResults
from truthserum.tasks.stages import Log, log_to_stderr, record_warning, stage_report, stage_train
from truthserum.train.executors import LocalBackend, ShardBackend
from truthserum.train.shard import TrainingJob

Inputs = TypeVar("Inputs")


@dataclass
class RunContext:
    """What a task's stages share during one run: where it writes, how it trains, what it says."""

    config: Any
    run_dir: RunDirectory
    device: torch.device
    backend: ShardBackend
    progress: bool
    log: Log
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str | None) -> None:
        """Keep a warning for ``results.json`` and say it now (None: nothing to warn about)."""
        record_warning(self.warnings, self.log, message)

    def train(self, job: TrainingJob, *, logits_file: Path | None = None, config: Any = None):
        """Train (or reuse) every shard of ``job``; see :func:`~truthserum.tasks.stages.stage_train`.
        ``config`` replaces the run's for models of another design (adaptive poisoning's
        calibration models: their own number of models and seed)."""
        return stage_train(self.run_dir, config or self.config, job, self.device, self.progress, self.log,
                           self.backend, logits_file=logits_file)


@dataclass
class TaskOutput:
    """What a task's stages measured: its conditions and its own top-level entries of
    ``results.json``, the training seconds (None where the task does not count them apart)
    and, for :meth:`TaskRunner.plot`, whatever it drew from (ROC curves, exposures)."""

    conditions: dict[str, dict]
    details: dict[str, Any]
    train_seconds: float | None
    plot_data: Any = None


class TaskRunner(Protocol, Generic[Inputs]):
    """A task's own stages; :func:`execute` runs them in order.

    ``trains_shards`` says whether its models train as shards on a backend (local or Ray);
    a task that trains in this process only is refused any other backend before it starts.
    """

    trains_shards: bool

    def prepare(self, config: Any, *, device: torch.device, backend: ShardBackend) -> Inputs:
        """Load and check the task's inputs; nothing may be written yet."""

    def resume(self, run_dir: RunDirectory, inputs: Inputs) -> Inputs:
        """Reapply what the run directory recorded (a table's encoding) and check that the
        inputs are those it was started on (:mod:`truthserum.store.fingerprints`)."""

    def run(self, run: RunContext, inputs: Inputs) -> TaskOutput:
        """The task's stages: design, poisons, training, queries, attacks and measurements."""

    def plot(self, run: RunContext, results: RunResults, output: TaskOutput) -> None:
        """Draw the task's figures into the run directory."""


def ensemble_path(config: Any, device: torch.device) -> dict:
    """``{"ensemble": {"conv_path": ...}}`` for a config's convolutional models: which path their
    ensembles ran (:class:`~truthserum.train.ensemble.ConvPath`, chosen by device), so a run's
    speed can be read against the benchmark; nothing for other models."""
    from truthserum.train.architectures import Architecture
    from truthserum.train.ensemble import default_conv_path

    architecture = getattr(getattr(config, "model", None), "architecture", None)
    if architecture not in (Architecture.CNN, Architecture.WRN):
        return {}
    return {"ensemble": {"conv_path": default_conv_path(device).value}}


def execute(
    runner: TaskRunner, config: Any, out_dir: Path, *, device: str = "cpu", progress: bool = True,
    log: Log = log_to_stderr, backend: ShardBackend | None = None, results_file: str = "results.json",
    report_to: Path | None = None,
) -> RunResults:
    """Run (or resume) ``config`` with ``runner`` in ``out_dir`` and return its results.

    The run directory is locked from the moment it is opened until the results are written:
    a second run on it is refused. With ``report_to``, ``out_dir`` must hold a finished run,
    which is only read (it may be read-only); the results, plots and scores go to ``report_to``.

    Raises:
        TruthserumError: a bad config, data or run directory (found before anything is
            written), another run using the directory, or a training that diverged.
    """
    started = time.perf_counter()
    backend = backend or LocalBackend()
    if not runner.trains_shards and not isinstance(backend, LocalBackend):
        raise ConfigError(f"task '{config.task.value}' trains in this process; the Ray backend is for the "
                          "membership, attribute and untargeted tasks")
    if report_to is not None and not (Path(out_dir) / results_file).is_file():
        raise RunDirError(f"{out_dir}: not a finished run (no {results_file}); report_to re-reports a finished run, "
                          "so resume this one where it can be written first")
    torch_device = backend.resolve_device(device)
    inputs = runner.prepare(config, device=torch_device, backend=backend)
    with RunDirectory.open(out_dir, config, report_to=report_to) as run_dir:
        inputs = runner.resume(run_dir, inputs)
        run_dir.record_config()
        run = RunContext(config=config, run_dir=run_dir, device=torch_device, backend=backend, progress=progress,
                         log=log)
        output = runner.run(run, inputs)
        timing = {} if output.train_seconds is None else {"train_seconds": output.train_seconds}
        results = RunResults.from_json({
            "task": config.task.value,
            "config": config.to_json_dict(),
            **output.details,
            **ensemble_path(config, torch_device),
            "conditions": output.conditions,
            "timing": timing | {"total_seconds": time.perf_counter() - started},
            "device": str(torch_device),
            "warnings": run.warnings,
        })
        write_json(run_dir.file(results_file), results.to_json())
        runner.plot(run, results, output)
        stage_report(run_dir, log)
    return results
