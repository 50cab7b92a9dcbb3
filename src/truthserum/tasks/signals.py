"""Attack signals computed elsewhere (``truthserum attack --signals``): every chosen attack on one
signals file in one process, measured as a run measures its conditions, written as a
membership ``results.json`` with ``roc.png`` and the scores.

The output directory (default ``<signals stem>-attack/`` beside the signals file) holds::

    results.json   one condition, named after the signals file: accuracy and each attack's metrics;
                   ``attacked`` says what was attacked and how, ``warnings`` what to know
    roc.png        every attack's ROC on log axes
    scores.npz     each attack's (M, T) scores, ``members`` (M, T) and ``targets`` (T,)
    report.html    the report of these results (truthserum.report.html)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from truthserum.attacks import AttackInputs, AttackOptions, get_attack, load_signals
from truthserum.attacks.inputs import LogitsKind
from truthserum.config.sections import MetricsConfig
from truthserum.errors import SignalsError
from truthserum.store.rundir import REPORT_FILE, read_npz, write_npz
from truthserum.tasks.attacking import (
    OUTPUT_MARK, as_logits, check_out_dir, make_out_dir, measure, model_accuracy, resolve_attacks,
    scoring_config, settings_json, supported_inputs, without_population, write_outputs,
)
from truthserum.tasks.results import RunResults
from truthserum.tasks.stages import Log, log_to_stderr, record_warning

SCORES_FILE = "scores.npz"
OUTPUT_FILES = ("results.json", "roc.png", SCORES_FILE, REPORT_FILE)


def default_out_dir(signals: Path) -> Path:
    """Where ``truthserum attack --signals`` writes by default: ``<stem>-attack/`` beside the file."""
    signals = Path(signals)
    return signals.with_name(f"{signals.stem}-attack")


def attack_signals(
    *, signals: Path | AttackInputs, attacks: str | Sequence[str] | None = None,
    options: AttackOptions | None = None, out_dir: Path | None = None, skip_unsupported: bool = False,
    logits_kind: LogitsKind | str = LogitsKind.AUTO, metrics: MetricsConfig | None = None,
    condition: str | None = None, log: Log = log_to_stderr,
) -> RunResults:
    """Score signals computed elsewhere with every chosen attack and measure each one.

    Args:
        signals: a signals ``.npz`` (``logits``, ``labels``, ``keep``, optional ``targets``; see
            :func:`~truthserum.attacks.load_signals`), or inputs already in memory.
        attacks: attack names, or ``"all"`` (the default): every registered attack.
        options: shadow budget, seed (of the shadow draws and the bootstrap) and RMIA's options.
        out_dir: receives ``results.json``, ``roc.png`` and ``scores.npz``; default
            ``<stem>-attack/`` beside a signals file, nothing written for inputs in memory. It
            may be missing, empty or an earlier output of this function, never a run directory.
        skip_unsupported: drop the target points (and RMIA population points) without the
            shadow models an attack needs, instead of refusing them.
        logits_kind: ``auto`` takes rows that are probabilities as such (with a warning) and
            attacks their logarithm; ``logits`` and ``probabilities`` say which they are.
        metrics: bootstrap resamples, confidence and delta (default: a run's defaults).
        condition: the condition's name in the results (default: the file's stem).
        log: where warnings are said as they happen.

    Returns:
        The results (task membership, one condition), also written to ``out_dir``.

    Raises:
        SignalsError: malformed signals, an unknown attack or option, or points without shadows.
        RunDirError: an ``out_dir`` that holds something else.
    """
    in_memory = isinstance(signals, AttackInputs)
    if out_dir is None and not in_memory:
        out_dir = default_out_dir(Path(signals))
    return _attack(signals=signals, attacks=attacks, options=options, out_dir=out_dir,
                   skip_unsupported=skip_unsupported, logits_kind=logits_kind, metrics=metrics,
                   condition=condition, log=log)[0]


def _attack(
    *, signals: Path | AttackInputs, attacks: str | Sequence[str] | None, options: AttackOptions | None,
    out_dir: Path | None, skip_unsupported: bool, logits_kind: LogitsKind | str,
    metrics: MetricsConfig | None, condition: str | None, log: Log,
) -> tuple[RunResults, dict[str, np.ndarray], np.ndarray]:
    """:func:`attack_signals`; with ``out_dir`` None nothing is written and the scores are
    returned too (attack name -> (M, T)), with the members (M, T)."""
    started = time.perf_counter()
    names = resolve_attacks(attacks)
    options = options or AttackOptions()
    options.validate()
    in_memory = isinstance(signals, AttackInputs)
    path = None if in_memory else Path(signals)
    if out_dir is not None:
        inputs_on_disk = [] if path is None else [path, path.with_name(f"{path.stem}-logits.npy")]
        check_out_dir(Path(out_dir), writes=OUTPUT_FILES, inputs=inputs_on_disk)
    inputs = signals if path is None else load_signals(path)
    source = "signals" if path is None else str(path)
    name = condition or ("signals" if path is None else path.stem)
    warnings: list[str] = []
    names = without_population(names, attacks, inputs, source=source, warnings=warnings, log=log)
    inputs, probabilities = as_logits(inputs, logits_kind, source=source, warnings=warnings, log=log)
    support = supported_inputs(inputs, names, options, skip=skip_unsupported, source=source)
    record_warning(warnings, log, support.warning(source))
    config = scoring_config(names, options, metrics=metrics)
    if out_dir is not None:
        make_out_dir(Path(out_dir))
    metrics_by_attack, curves, scores = measure(
        config, support, options, scores_file=None if out_dir is None else Path(out_dir) / SCORES_FILE, label=name,
    )
    results = RunResults.from_json({
        "task": "membership",
        "config": {},
        OUTPUT_MARK: settings_json(
            names, options, config, signals=source, logits_kind="probabilities" if probabilities else "logits",
            dropped_targets=int(support.dropped_targets.size),
            dropped_population=int(support.dropped_population.size),
        ),
        # what the poisons were is not known here; the table leaves them out
        "poison": {"targets": int(support.targets.size), "replicas": None, "total": None, "fraction": None,
                   "fit": None},
        "conditions": {name: {
            "accuracy": model_accuracy(inputs.logits, inputs.labels, inputs.keep), "attacks": metrics_by_attack,
        }},
        "timing": {"total_seconds": time.perf_counter() - started},
        "device": "elsewhere",
        "warnings": warnings,
    })
    if out_dir is not None:
        write_outputs(Path(out_dir), results, {(name, attack): curve for attack, curve in curves.items()}, log)
    return results, scores, support.inputs.members


def write_attack_scores(
    *, signals: Path, attack: str, scores_file: Path, options: AttackOptions | None = None,
    skip_unsupported: bool = False, logits_kind: LogitsKind | str = LogitsKind.AUTO, log: Log = log_to_stderr,
) -> RunResults:
    """The earlier form of :func:`attack_signals`: one attack, whose scores go to the ``.npz``
    ``scores_file`` as ``scores`` (M, T) with ``members`` (M, T); nothing else is written.

    Raises:
        SignalsError: as :func:`attack_signals`, or a ``scores_file`` that is the signals file or
            exists and is not an earlier scores file.
    """
    signals, scores_file = Path(signals), Path(scores_file)
    if scores_file.resolve() == signals.resolve():
        raise SignalsError(f"{scores_file} would overwrite the signals file; choose another path")
    if scores_file.is_dir():
        raise SignalsError(f"{scores_file}: is a directory, not a scores file; choose another path")
    if scores_file.exists() and not scores_file.is_file():  # a pipe would block the check below
        raise SignalsError(f"{scores_file}: exists and is not a regular file (a pipe, device or socket); "
                           "choose another path")
    if scores_file.exists():
        earlier = read_npz(scores_file)
        if earlier is None or set(earlier) != {"scores", "members"}:
            raise SignalsError(f"{scores_file} exists and is not an earlier scores file; choose another path")
    results, scores, members = _attack(
        signals=signals, attacks=[attack], options=options, out_dir=None, skip_unsupported=skip_unsupported,
        logits_kind=logits_kind, metrics=None, condition=None, log=log,
    )
    try:
        write_npz(scores_file, {"scores": scores[get_attack(attack).name], "members": members})
    except OSError as exc:
        raise SignalsError(f"{scores_file}: cannot write ({exc.strerror or exc})") from None
    return results
