"""The stages the tasks share, wired to a run directory: the pool and its recorded encoding,
the keep matrix and targets, one training stage that trains (or reuses) shards of models and
queries them, and measuring attacks. Each task's runner (:mod:`truthserum.tasks.membership`,
``attribute``, ``untargeted``) puts them together and :mod:`truthserum.tasks.skeleton` runs it;
a finished training shard is never trained again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from truthserum import seeding
from truthserum.attacks import AttackInputs, AttackOptions, score_attacks_with_details
from truthserum.train.executors import LocalBackend, ShardBackend, progress_bar
from truthserum.config import RunConfig, Task
from truthserum.data.datasets import Dataset, encode_table, load_dataset, load_table
from truthserum.design import Design, make_design
from truthserum.errors import BackendError, ConfigError, DataError, RunDirError, SignalsError
from truthserum.metrics.roc import RocCurve, roc_curve
from truthserum.metrics.bootstrap import bootstrap_intervals
from truthserum.metrics.attack import evaluate, with_intervals
from truthserum.query.views import check_views_fit_data
from truthserum.store.logits import LogitStore
from truthserum.store.fingerprints import check_inputs_unchanged
from truthserum.store.rundir import (
    NpzWriter, RunDirectory, commit_temporary, naming_errors, read_npz, refuse_writes_under, temporary_path,
    write_json, write_npz,
)
from truthserum.data.tables import Preprocessing, fit_preprocessing
from truthserum.train.shard import TrainingJob, shard_shapes
from truthserum.train.augment import check_augment_fits_data

POISON_FRACTION_WARNING = 0.10
POISON_FIT_WARNING = 0.5

Log = Callable[[str], None]


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _draw_pool(config: RunConfig, available: int, name: str) -> np.ndarray:
    """Sorted indices of the pool: a seeded subset of ``data.pool_size`` points, or all."""
    pool_size = config.data.pool_size
    if pool_size is None:
        return np.arange(available)
    if pool_size > available:
        raise DataError(f"data.pool_size is {pool_size} but {name} has only {available} points")
    return np.sort(seeding.rng(config.seed, "pool").choice(available, pool_size, replace=False))


def prepare_pool(config: RunConfig) -> Dataset:
    """Load the data, draw the pool, and check it suits the design."""
    columns = config.data.table_columns()
    if columns is not None:
        # a table's encoding is fitted on the pool, after the pool is drawn
        table = load_table(config.data.source, config.data.path, columns)
        table = table.subset(_draw_pool(config, table.num_rows, table.name))
        dataset = encode_table(table, fit_preprocessing(table))
    else:
        dataset = load_dataset(config.data.source, config.data.path)
        dataset = dataset.subset(_draw_pool(config, dataset.num_points, dataset.name))
    # the untargeted task attacks every victim point and has no num_targets of its own
    if config.task is not Task.UNTARGETED and config.design.num_targets > dataset.num_points:
        raise DataError(
            f"the pool has {dataset.num_points} points, too few for design.num_targets = "
            f"{config.design.num_targets}"
        )
    check_views_fit_data(config.query.resolved_views(), is_image=dataset.is_image, source=config.data.source)
    # fail before anything is written if the architecture or the augmentation cannot take this data
    config.model.build(feature_shape=dataset.feature_shape, num_classes=dataset.num_classes)
    check_augment_fits_data(config.train.augment, dataset.feature_shape)
    return dataset


def _has_shapes(arrays: dict[str, np.ndarray] | None, shapes: dict[str, tuple[int, ...]]) -> bool:
    """True when a stored stage file holds every expected array with its expected shape."""
    return arrays is not None and all(
        key in arrays and arrays[key].shape == shape for key, shape in shapes.items()
    )


def load_stage(path: Path, shapes: dict[str, tuple[int, ...]], log: Log) -> dict[str, np.ndarray] | None:
    """A stage file written by an earlier run of this config, or None if it must be redone.

    Stage files are deterministic given the config and the data, so a damaged one is simply
    computed again."""
    stored = read_npz(path)
    if _has_shapes(stored, shapes):
        return stored
    if path.exists():
        log(f"warning: {path} is unreadable or damaged; computing it again")
    return None


def pool_fingerprint(pool: Dataset) -> str:
    """SHA-256 of the pool's features, labels and class count."""
    digest = hashlib.sha256()
    digest.update(repr((pool.x.shape, pool.num_classes)).encode())
    digest.update(np.ascontiguousarray(pool.x).tobytes())
    digest.update(np.ascontiguousarray(pool.y).tobytes())
    return digest.hexdigest()


def stage_preprocessing(run_dir: RunDirectory, pool: Dataset) -> Dataset:
    """Record a table's encoding in ``preprocessing.json``, or reapply the recorded one.

    The encoding is fitted on the pool when a run starts; a resumed run encodes with what
    was recorded, so its inputs are those its models were trained on.
    """
    if pool.table is None or pool.preprocessing is None:
        return pool
    path = run_dir.file("preprocessing.json")
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        write_json(path, pool.preprocessing.to_json_dict())
        return pool
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc}); use another out_dir") from None
    preprocessing = Preprocessing.from_json_dict(recorded, source=str(path))
    return pool if preprocessing == pool.preprocessing else encode_table(pool.table, preprocessing)


def stage_design(
    run_dir: RunDirectory, config: RunConfig, pool: Dataset, log: Log, *, eligible: np.ndarray | None = None,
) -> Design:
    path = run_dir.file("design.npz")
    shapes = {"keep": (config.design.num_models, pool.num_points), "targets": (config.design.num_targets,)}
    stored = load_stage(path, shapes, log)
    if stored is not None:
        return Design(keep=stored["keep"], targets=stored["targets"])
    design = draw_design(config, pool, eligible=eligible)
    write_npz(path, {"keep": design.keep, "targets": design.targets})
    return design


def draw_design(config: RunConfig, pool: Dataset, *, eligible: np.ndarray | None = None) -> Design:
    """The keep matrix and targets of ``config`` on ``pool``: what :func:`stage_design` records."""
    return make_design(
        num_models=config.design.num_models, num_points=pool.num_points,
        num_targets=config.design.num_targets, rng=seeding.rng(config.seed, "design"), eligible=eligible,
    )


# The most logits (M x N x A x C) :func:`check_attacks_can_run` scores before training: about
# 2 s on 2 cores. Past that the pool is large enough that every model has members and
# non-members to spare, where the structural failures it looks for come from.
FEASIBILITY_LIMIT = 8_000_000


def check_attacks_can_run(
    config: RunConfig, *, keep: np.ndarray, targets: np.ndarray, labels: np.ndarray, num_classes: int,
    attacks: tuple[str, ...] | None = None,
) -> None:
    """Score the attacks (default: the configured ones) on random logits over the design
    ``keep`` and ``targets`` before anything trains, so that a design they cannot score (a pool
    too small for shadow models with IN and OUT points, RMIA's tuning or population) fails now,
    not after the training.

    Raises:
        ConfigError: naming the attack and why, with the design's size.
    """
    num_views = len(config.query.resolved_views())
    shape = (keep.shape[0], keep.shape[1], num_views, num_classes)
    if int(np.prod(shape)) > FEASIBILITY_LIMIT:
        return
    logits = seeding.rng(config.seed, "feasibility").standard_normal(shape, dtype=np.float32)
    inputs = AttackInputs.from_arrays(logits=logits, labels=labels, keep=keep, targets=targets)
    try:
        score_attacks_with_details(inputs, attacks or config.attacks, config.attack_options())
    except SignalsError as exc:
        raise ConfigError(f"this design cannot be attacked, found before training ({keep.shape[0]} models, "
                          f"{keep.shape[1]} points, {len(targets)} targets): {exc}") from None


def resume_pool(run_dir: RunDirectory, pool: Dataset) -> Dataset:
    """The pool as the run directory's models saw it: a table encoded with the recorded
    encoding, and data refused if they are not those the run was started on."""
    pool = stage_preprocessing(run_dir, pool)
    encoding = " or its recorded preprocessing.json" if pool.preprocessing is not None else ""
    check_inputs_unchanged(
        run_dir, "pool.json",
        {"sha256": pool_fingerprint(pool), "points": pool.num_points, "classes": pool.num_classes},
        compared={"sha256": f"{run_dir.root}: the data differ from those this run was started on "
                            f"({pool.name}{encoding} changed since); use another out_dir"},
        trained=lambda: (run_dir.root / "shards").is_dir() and any((run_dir.root / "shards").rglob("*.npz")),
    )
    return pool


class PoolInputs:
    """The inputs of the tasks that train on a pool (membership, attribute, untargeted): the
    pool, loaded and checked before anything is written, then encoded as the run directory
    recorded and checked against its fingerprint. A task's runner inherits these two stages."""

    trains_shards = True  # on any backend

    def prepare(self, config: RunConfig, *, device: torch.device, backend: ShardBackend) -> Dataset:
        return prepare_pool(config)

    def resume(self, run_dir: RunDirectory, pool: Dataset) -> Dataset:
        return resume_pool(run_dir, pool)


def record_warning(warnings: list[str], log: Log, message: str | None) -> None:
    """Keep a warning for results.json and say it now; None means nothing to warn about."""
    if message:
        warnings.append(message)
        log("warning: " + message)


def poison_share_warning(condition: str, share: float) -> str | None:
    """The warning for poisons past :data:`POISON_FRACTION_WARNING` of a training set, or None."""
    if share <= POISON_FRACTION_WARNING:
        return None
    return (f"{condition}: poisons are {share:.1%} of a model's training set (over "
            f"{POISON_FRACTION_WARNING:.0%}): label noise this heavy costs accuracy and attack power")


def poison_fit_warning(condition: str, fit: float | None) -> str | None:
    """The warning for models that fit under :data:`POISON_FIT_WARNING` of their poisons, or None."""
    if fit is None or fit >= POISON_FIT_WARNING:
        return None
    return (f"{condition}: the models fit only {fit:.0%} of the poisons: the amplification needs "
            "models that fit them (train longer, regularise less, or use a larger model)")


def _check_shard(config: RunConfig, job: TrainingJob, shard: dict[str, np.ndarray]) -> None:
    """A shard from a backend has the arrays this version would write (a cluster machine with
    another truthserum version might return others)."""
    models = range(int(shard["models"][0]), int(shard["models"][-1]) + 1)
    if not _has_shapes(shard, shard_shapes(config, job, models)):
        raise BackendError(
            f"{job.condition}: models {models.start}-{models.stop - 1} came back in another shape; "
            "is truthserum the same version on every machine of the cluster?"
        )


def stage_train(
    run_dir: RunDirectory, config: RunConfig, job: TrainingJob, device: torch.device, progress: bool, log: Log,
    backend: ShardBackend | None = None, *, logits_file: Path | None = None,
) -> tuple[np.ndarray | LogitStore, float]:
    """Train (or reuse) every shard of ``job`` on ``backend`` (by default in this process);
    returns logits (M, Q, A, C) on its queries and the training seconds spent on them, earlier
    runs included. Each shard is written as soon as it is done, whichever backend trained it.

    With ``logits_file``, the logits are gathered there as a :class:`LogitStore` (in
    ``query.signals_dtype``), one shard at a time, and the store is returned: memory then holds
    one shard's logits, never all of them."""
    num_models, shard_size = config.design.num_models, config.train.shard_size
    shards = [range(s, min(s + shard_size, num_models)) for s in range(0, num_models, shard_size)]
    shape = (num_models, *shard_shapes(config, job, shards[0])["logits"][1:])
    parts: dict[int, np.ndarray] = {}
    store = None
    if logits_file is not None:
        with naming_errors(Path(logits_file)):
            store = LogitStore.create(temporary_path(logits_file), shape, config.query.signals_dtype)

    def gather(first: int, logits: np.ndarray) -> None:
        if store is None:
            parts[first] = logits
        else:
            with naming_errors(Path(logits_file)):  # a full disk names the file, not its temporary
                store.write_models(first, logits)

    try:
        seconds = 0.0
        finished: set[int] = set()
        for models in shards:
            path = run_dir.shard_file(job.condition, models.start, models.stop - 1)
            shard = load_stage(path, shard_shapes(config, job, models), log)
            if shard is not None and list(shard["models"]) == list(models):
                gather(models.start, shard["logits"])
                seconds += float(shard["train_seconds"])
                finished.add(models.start)
        if finished:
            log(f"{job.condition}: reused {len(finished)} of {len(shards)} finished shards")
        to_train = [models for models in shards if models.start not in finished]
        for models in to_train[:1]:  # a run re-reported elsewhere trains nothing in its directory
            refuse_writes_under(run_dir.shard_file(job.condition, models.start, models.stop - 1))
        trained = (backend or LocalBackend()).train(config, job, to_train, device, progress=progress)
        with contextlib.closing(trained):  # an error here cancels what a backend still runs, at once
            for shard in trained:
                first, last = int(shard["models"][0]), int(shard["models"][-1])
                _check_shard(config, job, shard)
                write_npz(run_dir.shard_file(job.condition, first, last), shard)
                loss = shard.get("loss", np.empty(0))
                final = f" (final loss {loss[-1]:.3f})" if loss.size else ""
                log(f"{job.condition}: trained models {first}-{last} of {num_models} "
                    f"in {float(shard['train_seconds']):.1f} s{final}")
                gather(first, shard["logits"])
                seconds += float(shard["train_seconds"])
        if store is None:
            return np.concatenate([parts[models.start] for models in shards], axis=0), seconds
        commit_temporary(store.path, Path(logits_file))
        return replace(store, path=Path(logits_file)), seconds
    except BaseException:
        if store is not None:  # a failed run leaves no file the size of every model's logits behind
            store.path.unlink(missing_ok=True)
        raise


def bootstrap_rng(seed: int, attack: str) -> np.random.Generator:
    """The bootstrap's generator for one attack (shared by runs, sweeps and ``attack``)."""
    return seeding.rng(seed, "bootstrap", attack)


def _measure(config: RunConfig, name: str, scores: np.ndarray, members: np.ndarray) -> tuple[dict, RocCurve]:
    """One attack's metrics and its ROC thinned for plotting. The full curve (three floats per
    pair) is dropped before the bootstrap needs its own memory."""
    curve = roc_curve(scores, members)
    metrics = evaluate(scores, members, resamples=0, confidence=config.metrics.confidence,
                       delta=config.metrics.delta, roc=curve)
    thinned = curve.thinned()
    del curve
    if config.metrics.bootstrap:
        metrics = with_intervals(metrics, bootstrap_intervals(
            scores, members, resamples=config.metrics.bootstrap, confidence=config.metrics.confidence,
            rng=bootstrap_rng(config.seed, name),
        ))
    return metrics.to_dict(), thinned


def stage_report(run_dir: RunDirectory, log: Log) -> None:
    """Write ``report.html`` from the files the run has written (its output folder, for a
    re-report); one that cannot be made is a warning (:func:`~truthserum.report.html.report_or_warning`)."""
    from truthserum.report.html import report_or_warning  # jinja2 and the figures: only at the end

    report_or_warning(run_dir.root, output=run_dir.output, log=log)


def attack_metrics(
    config: RunConfig, inputs: AttackInputs, options: AttackOptions, *, scores_file: Path | None = None,
    progress: bool = False, label: str = "attacks",
) -> tuple[dict[str, dict], dict[str, RocCurve], dict[str, np.ndarray]]:
    """Score ``inputs`` with every configured attack and measure each one.

    The bootstrap of an attack draws from (seed, attack) alone, so every condition and every
    shadow budget resamples the same target points, and ``truthserum attack --seed`` on a run's
    signals reproduces the run's intervals.

    With ``scores_file``, every attack's scores are written there (with ``members``) as soon
    as they are computed, then measured one attack at a time, and the returned scores are
    empty: memory then holds one attack's ``(M, T)`` scores, not all of them. The ROC curves
    are thinned for plotting either way (:meth:`RocCurve.thinned`). With ``progress``, a bar
    named ``label`` moves as each attack is scored and then measured.

    Returns:
        attack name -> metrics dict (with intervals and the epsilon bound), attack name -> ROC,
        and attack name -> ``(M, T)`` scores.
    """
    members = inputs.members
    metrics, curves, kept = {}, {}, {}
    with progress_bar(2 * len(config.attacks), f"{label}: scoring, measuring", "step", progress) as bar:
        if scores_file is None:
            raw_scores, details = score_attacks_with_details(inputs, config.attacks, options,
                                                             on_scored=lambda _: bar.update())
            for name, scores in raw_scores.items():
                metrics[name], curves[name] = _measure(config, name, scores, members)
                kept[name] = scores
                bar.update()
        else:
            # scoring first, measuring after: the signals the attacks read are freed before any
            # bootstrap runs, so peak memory is the larger of the two phases, not their sum
            with NpzWriter(scores_file) as npz:
                npz.add("members", members)
                _, details = score_attacks_with_details(
                    inputs, config.attacks, options, sink=lambda name, scores: npz.add(name, scores),
                    on_scored=lambda _: bar.update(),
                )
            with np.load(scores_file, allow_pickle=False) as stored:
                for name in config.attacks:
                    metrics[name], curves[name] = _measure(config, name, stored[name], members)
                    bar.update()
    ordered = list(config.attacks)
    metrics = {name: metrics[name] | details.get(name, {}) for name in ordered}
    return metrics, {name: curves[name] for name in ordered}, kept
