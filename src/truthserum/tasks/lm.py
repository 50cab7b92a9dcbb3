"""The language-model task's own stages: canaries in the training text, models trained clean and
under each poisoning condition, then exposure (raw, calibrated, extrapolated) and beam-search
extraction per canary. Definitions are in :mod:`truthserum.attacks.exposure`,
:mod:`truthserum.attacks.extraction` and docs/attacks.md.

Files it adds to the run directory (``r<k>`` is replicate k, each with fresh canaries)::

    corpus.json                         fingerprints of the corpus and the model folder (hf),
                                        so a run is not resumed on changed inputs
    lm/base.npz, lm/base.json           the pretrained base (lm.pretrain; see truthserum.tasks.lm_base)
    lm/r<k>/base-<condition>.npz, .json the base pretrained with a condition's poisons (into: public, both)
    lm/r<k>/canaries.json               names, secrets and the (M, C) keep matrix
    lm/r<k>/poisons-<condition>.json    the adversary's lines
    lm/r<k>/models-<condition>.npz      the trained models (delete measured-*.json to measure again)
    lm/r<k>/trained-<condition>.json    training time and loss (written after the models)
    lm/r<k>/measured-<condition>.json   per (canary, model) records, validation loss, timing
    results.json, exposure.png
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from truthserum import seeding
from truthserum.config import RunConfig
from truthserum.errors import DataError, RunDirError
from truthserum.train.lm.backends import Backend, ByteBackend, SecretQuery
from truthserum.poison.canaries import (
    Canaries, PoisonStrategy, canary_lines, digit_free_words, insert_lines, make_canaries, make_poisons,
)
from truthserum.config.lm import CorpusSource, LmConfig, ModelKind, PoisonCondition
from truthserum.data.text import Corpus, builtin_corpus, text_file_corpus
from truthserum.attacks.secrets import (
    SCORES, CanaryTask, flatten_hits, mean_with_interval, paired_change, score_canary,
)
from truthserum.report.lm import plot_exposure
from truthserum.store.fingerprints import check_inputs_unchanged
from truthserum.store.rundir import RunDirectory, refuse_writes_under, write_json
from truthserum.tasks.results import RunResults
from truthserum.tasks.lm_base import base_key, base_summary, check_bases, public_text, stage_base
from truthserum.tasks.skeleton import RunContext, TaskOutput, execute
from truthserum.train.executors import ShardBackend, progress_bar
from truthserum.tasks.stages import POISON_FRACTION_WARNING, Log, log_to_stderr

CLEAN = "clean"
# What a canary's query starts with: canaries are lines of their own in the training text.
LINE_START = "\n"


def load_corpus(config: LmConfig) -> Corpus:
    if config.corpus.source is CorpusSource.TEXT:
        assert config.corpus.path is not None
        return text_file_corpus(config.corpus.path, validation_every=config.corpus.validation_every,
                                max_bytes=config.corpus.max_bytes)
    return builtin_corpus(validation_every=config.corpus.validation_every, max_bytes=config.corpus.max_bytes)


def make_model_backend(config: LmConfig, corpus: Corpus, device) -> Backend:
    """The language models of ``config``: byte transformers, or a Hugging Face model (the
    ``hf`` extra). Not to be confused with where image and table shards train
    (:mod:`truthserum.train.executors`)."""
    if config.model.kind is ModelKind.HF:
        from truthserum.train.lm.hf import HFBackend  # transformers is imported only for this path

        assert config.model.path is not None
        return HFBackend(path=config.model.path, settings=config.train.settings(), context=config.model.context,
                         clean_train_text=corpus.train, device=device)
    return ByteBackend(shape=config.model.shape(), settings=config.train.settings(),
                       clean_train_text=corpus.train, device=device)


def preflight(config: LmConfig, corpus: Corpus, backend: Backend) -> None:
    """What would otherwise fail after training, checked before anything is written."""
    window = config.model.context + 1
    for part, text in (("training", corpus.train), ("validation", corpus.validation)):
        if backend.token_count(text) < window + 1:
            raise DataError(f"{corpus.name}: the {part} text has {backend.token_count(text)} tokens, fewer than "
                            f"one window of lm.model.context + 1 = {window}; use more text or a smaller context")
    if any(p.strategy is PoisonStrategy.NEUTRAL for p in config.poisons):
        digit_free_words(corpus.train)  # raises if the corpus has none
    backend.check_context(config.model.context, config.canaries.form())


def _check_corpus(run_dir: RunDirectory, corpus: Corpus, backend: Backend) -> None:
    """Refuse to resume on other text or another model folder (the shared fingerprint check)."""
    record = {"name": corpus.name, "sha256": corpus.fingerprint(), "model": backend.fingerprint(),
              "train_bytes": len(corpus.train.encode()), "validation_bytes": len(corpus.validation.encode())}
    check_inputs_unchanged(
        run_dir, "corpus.json", record,
        compared={
            "sha256": f"{run_dir.root} was trained on other text than {corpus.name} holds now "
                      "(corpus.json differs); use another out_dir",
            "model": f"{run_dir.root} was trained from another model folder than the one at that path "
                     "now (corpus.json differs); use another out_dir",
        },
        trained=lambda: any((run_dir.root / "lm").glob("r*/models-*")),
    )


def _read_json(path: Path) -> dict | None:
    """A stage's JSON, or None if it is missing or unreadable (the stage then runs again)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None  # never a pipe
    except (OSError, ValueError):
        return None


def _stage_canaries(run_dir: RunDirectory, config: RunConfig, replicate: int) -> Canaries:
    lm = config.lm
    canaries = make_canaries(form=lm.canaries.form(), count=lm.canaries.count, num_models=lm.num_models,
                             rng=seeding.rng(config.seed, "lm-canaries", replicate))
    path = run_dir.file(f"lm/r{replicate}/canaries.json")
    record = {"names": list(canaries.names), "secrets": canaries.secrets.tolist(),
              "keep": canaries.keep.astype(int).tolist(),
              "lines": [canaries.line(c) for c in range(len(canaries.names))]}
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{path}: unreadable ({exc}); use another out_dir") from None
        if stored != record:
            raise RunDirError(f"{path} holds other canaries than this version of truthserum draws for the "
                              "config; its models cannot be reused; use another out_dir")
    else:
        write_json(path, record)
    return canaries


def _training_texts(config: RunConfig, corpus: Corpus, canaries: Canaries, poisons: list[str],
                    replicate: int, condition: str) -> list[str]:
    texts = []
    for model in range(config.lm.num_models):
        # A model's canaries sit at the same places in every condition; only the poisons differ.
        text = insert_lines(corpus.train, canary_lines(canaries, model, config.lm.canaries.insertions),
                            seeding.rng(config.seed, "lm-canary-positions", replicate, model))
        texts.append(insert_lines(text, poisons, seeding.rng(config.seed, "lm-poison-positions", replicate,
                                                             condition, model)))
    return texts


def _query(backend: Backend, config: LmConfig, canaries: Canaries, canary: int,
           sample_rng: np.random.Generator) -> tuple[SecretQuery, int, np.ndarray]:
    """The candidates to score, the secret's row and the extrapolation sample's rows."""
    form = canaries.form
    prefix = LINE_START + canaries.prefix(canary)
    secret = int(canaries.secrets[canary])
    sample_size = min(config.exposure.sample, form.space_size - 1)
    if config.exact_exposure:
        if isinstance(backend, ByteBackend):
            query = backend.digit_space(prefix, form.digits)
        else:
            query = backend.query(prefix, [form.secret_text(i) for i in range(form.space_size)])
        others = np.delete(np.arange(form.space_size), secret)
        return query, secret, np.sort(sample_rng.choice(others, size=sample_size, replace=False))
    drawn: set[int] = set()
    while len(drawn) < sample_size:  # the space is too large to enumerate: draw distinct others
        value = int(sample_rng.integers(0, form.space_size))
        if value != secret:
            drawn.add(value)
    secrets = [form.secret_text(secret)] + [form.secret_text(v) for v in sorted(drawn)]
    return backend.query(prefix, secrets), 0, np.arange(1, len(secrets))


def _measure_condition(
    run_dir: RunDirectory, config: RunConfig, inputs: LmInputs, canaries: Canaries,
    replicate: int, condition: PoisonCondition | None, progress: bool, log: Log,
) -> dict:
    name = CLEAN if condition is None else condition.name
    folder = f"lm/r{replicate}"
    measured_path = run_dir.file(f"{folder}/measured-{name}.json")
    measured = _read_json(measured_path)
    if measured is not None:
        return measured
    lm = config.lm
    corpus, backend = inputs.corpus, inputs.backend
    poisons: list[str] = []  # the adversary's lines; in the private text unless condition.into is 'public'
    if condition is not None:
        poisons = make_poisons(strategy=condition.strategy, canaries=canaries, count=condition.count,
                               corpus_text=corpus.train, rng=seeding.rng(config.seed, "lm-poisons", replicate, name))
        write_json(run_dir.file(f"{folder}/poisons-{name}.json"), poisons)
    models_path = run_dir.file(f"{folder}/models-{name}.npz")
    trained_path = run_dir.file(f"{folder}/trained-{name}.json")
    trained = _read_json(trained_path)
    scorer = backend.load(models_path, lm.num_models) if trained is not None else None
    if scorer is None:
        refuse_writes_under(models_path)  # a run re-reported elsewhere trains nothing in its directory
        private = poisons if condition is None or condition.finetune else []
        texts = _training_texts(config, corpus, canaries, private, replicate, name)
        seeds = [seeding.int_seed(config.seed, "lm-model", replicate, m) for m in range(lm.num_models)]
        base = _base_for(run_dir, config, inputs, poisons, replicate, condition, progress, log)
        started = time.perf_counter()  # fine-tuning only: a base's pretraining is timed in its own record

        def report(step: int, loss: float) -> None:
            if progress:
                log(f"  r{replicate} {name}: step {step} of {backend.steps}, training loss {loss:.3f} nats/token")

        scorer, train_loss = backend.train(texts, seeds, report, base=base)
        trained = {"train_seconds": time.perf_counter() - started, "train_loss": train_loss}
        backend.save(scorer, models_path)
        write_json(trained_path, trained)  # last: its presence says the models are complete
    else:
        log(f"r{replicate} {name}: reusing trained models")
    validation = backend.validation_loss(scorer, corpus.validation)
    form = canaries.form
    started = time.perf_counter()
    records = []
    with progress_bar(len(canaries.names), f"r{replicate} {name}: exposure", "canary", progress) as bar:
        for canary in range(len(canaries.names)):
            members = np.flatnonzero(canaries.keep[:, canary])
            references = np.flatnonzero(~canaries.keep[:, canary])
            query, secret_row, sample = _query(backend, lm, canaries, canary,
                                               seeding.rng(config.seed, "lm-sample", replicate, canary))
            task = CanaryTask(canary=canary, secret=secret_row, members=members, references=references,
                              space_size=form.space_size)
            for record in score_canary(
                scorer, context=query.context, trie=query.trie(), task=task,
                secret_text=form.secret_text(canaries.secrets[canary]), digit_tokens=backend.digit_tokens(),
                first_tokens=query.first_tokens,
                digits=form.digits, sample=sample, exact=lm.exact_exposure, beam_width=lm.exposure.beam_width,
                top_k=lm.exposure.top_k, max_nodes=lm.exposure.max_nodes,
            ):
                records.append(record | {"replicate": replicate})
            bar.update()
    measured = {
        "condition": name,
        "replicate": replicate,
        "poison_lines": len(poisons),
        "poison_share": _share(backend, poisons, corpus.train) if condition is None or condition.finetune else 0.0,
        **({"poison_share_public": _share(backend, poisons, inputs.public)}
           if condition is not None and condition.pretrain else {}),
        "validation_loss": validation.tolist(),
        "train_seconds": trained["train_seconds"],
        "train_loss": trained["train_loss"],
        "score_seconds": time.perf_counter() - started,
        "records": records,
    }
    write_json(measured_path, measured)
    log(f"r{replicate} {name}: validation {np.mean(validation) / math.log(2):.3f} bits/token; "
        f"exposure measured in {measured['score_seconds']:.0f} s")
    return measured


def _share(backend: Backend, lines: list[str], text: str | None) -> float:
    """The size of ``lines`` against ``text``, in tokens."""
    return backend.token_count("\n".join(lines)) / backend.token_count(text) if lines and text else 0.0


def _base_for(run_dir: RunDirectory, config: RunConfig, inputs: LmInputs, poisons: list[str], replicate: int,
              condition: PoisonCondition | None, progress: bool, log: Log):
    """The model a condition's models are fine-tuned from: none (trained from scratch), the
    clean base, or for conditions ``into: public`` or ``both`` a base pretrained with the poisons."""
    if config.lm.pretrain is None:
        return None
    assert isinstance(inputs.backend, ByteBackend) and inputs.public is not None
    validation = inputs.corpus.validation
    if condition is None or not condition.pretrain:
        return stage_base(run_dir, config, inputs.backend, inputs.public, validation, log=log, progress=progress,
                          copy_from=inputs.base_from).scorer
    return stage_base(run_dir, config, inputs.backend, inputs.public, validation, log=log, progress=progress,
                      poisons=poisons, replicate=replicate, condition=condition.name,
                      copy_from=inputs.base_from).scorer


def _summarize(config: RunConfig, measured: dict[str, list[dict]]) -> dict:
    lm = config.lm
    metrics = config.metrics
    keys = [f"{kind}_extrapolated" for kind in SCORES]
    if lm.exact_exposure:
        keys = [f"{kind}_exposure" for kind in SCORES] + keys
    keys += [f"{kind}_top_{k}" for kind in SCORES for k in lm.exposure.top_k]
    conditions = {}
    clean_records = flatten_hits([r for m in measured[CLEAN] for r in m["records"]])
    for name, parts in measured.items():
        records = flatten_hits([r for m in parts for r in m["records"]])
        validation = float(np.mean([v for m in parts for v in m["validation_loss"]]))
        summary = {
            "poison_lines": parts[0]["poison_lines"],
            "poison_share": parts[0]["poison_share"],
            **({"poison_share_public": parts[0]["poison_share_public"]} if "poison_share_public" in parts[0] else {}),
            "validation_loss": validation,
            "validation_bits_per_token": validation / math.log(2),
            "validation_perplexity": math.exp(validation),
            "train_seconds": sum(m["train_seconds"] for m in parts),
            "metrics": {},
            "change_vs_clean": {},
        }
        for key in keys:
            rng = seeding.rng(config.seed, "lm-bootstrap", name, key)
            summary["metrics"][key] = mean_with_interval(records, key, rng=rng, resamples=metrics.bootstrap,
                                                         confidence=metrics.confidence)
            if name != CLEAN:
                summary["change_vs_clean"][key] = paired_change(
                    clean_records, records, key, rng=seeding.rng(config.seed, "lm-paired", name, key),
                    resamples=metrics.bootstrap, confidence=metrics.confidence,
                )
        conditions[name] = summary
    return conditions


def per_canary(config: RunConfig, measured: dict[str, list[dict]], names: dict[int, tuple[str, ...]]) -> list[dict]:
    """Each canary's mean exposure over its target models, per condition."""
    suffix = config.lm.exposure_key
    rows: dict[tuple[int, int], dict] = {}
    for condition, parts in measured.items():
        for part in parts:
            for record in part["records"]:
                unit = (record["replicate"], record["canary"])
                row = rows.setdefault(unit, {"replicate": unit[0], "canary": unit[1],
                                             "name": names[unit[0]][unit[1]], "conditions": {}})
                values = row["conditions"].setdefault(condition, {"raw": [], "calibrated": []})
                for kind in SCORES:
                    values[kind].append(record[f"{kind}_{suffix}"])
    for row in rows.values():
        for values in row["conditions"].values():
            for kind in SCORES:
                values[kind] = float(np.mean(values[kind]))
    return [rows[unit] for unit in sorted(rows)]


def _exposures(config: RunConfig, measured: dict[str, list[dict]]) -> dict[str, dict[str, list[float]]]:
    suffix = config.lm.exposure_key
    return {name: {kind: [r[f"{kind}_{suffix}"] for part in parts for r in part["records"]] for kind in SCORES}
            for name, parts in measured.items()}


def most_leaking(conditions: dict, key: str) -> str:
    """The condition with the highest mean of ``key``."""
    return max(conditions, key=lambda name: conditions[name]["metrics"][key]["mean"])


@dataclass(frozen=True)
class LmInputs:
    corpus: Corpus
    backend: Backend
    public: str | None = None  # the pretraining text (lm.pretrain), read before anything is written
    base_from: Path | None = None  # where a base with the same inputs may already be
    base_key: dict | None = None  # what the clean base is pretrained from (checked on resume)


@dataclass(frozen=True)
class LmRunner:
    """Secrets in language models: canaries in the training text, one set of models per
    poisoning condition, exposure and extraction of every canary."""

    trains_shards = False  # one ensemble (or one Hugging Face model) after another, in this process
    base_from: Path | None = None  # a run directory to copy matching pretrained bases from

    def prepare(self, config: RunConfig, *, device, backend: ShardBackend) -> LmInputs:
        corpus = load_corpus(config.lm)  # read (and checked) before anything is written
        model_backend = make_model_backend(config.lm, corpus, device)
        preflight(config.lm, corpus, model_backend)
        public = public_text(config.lm) if config.lm.pretrain is not None else None
        window = config.lm.model.context + 1
        public_tokens = model_backend.token_count(public) if public is not None else None
        if public_tokens is not None and public_tokens < window + 1:
            raise DataError(f"lm.pretrain: the public text has {public_tokens} tokens, fewer than "
                            f"one window of lm.model.context + 1 = {window}; use more text or a smaller context")
        return LmInputs(corpus=corpus, backend=model_backend, public=public, base_from=self.base_from,
                        base_key=None if public is None else base_key(config, public))

    def resume(self, run_dir: RunDirectory, inputs: LmInputs) -> LmInputs:
        _check_corpus(run_dir, inputs.corpus, inputs.backend)
        if inputs.base_key is not None:
            check_bases(run_dir, inputs.base_key)
        return inputs

    def run(self, run: RunContext, inputs: LmInputs) -> TaskOutput:
        config, run_dir, log = run.config, run.run_dir, run.log
        corpus, backend = inputs.corpus, inputs.backend
        lm = config.lm
        log(f"{corpus.name}: {len(corpus.train.encode()):,} training and {len(corpus.validation.encode()):,} "
            f"validation bytes; {lm.replicates} x {lm.canaries.count} canaries, each {lm.canaries.insertions} "
            f"times in {lm.num_models // 2} of {lm.num_models} models per condition")
        measured: dict[str, list[dict]] = {CLEAN: []}
        for condition in lm.poisons:
            measured[condition.name] = []
        names: dict[int, tuple[str, ...]] = {}
        for replicate in range(lm.replicates):
            canaries = _stage_canaries(run_dir, config, replicate)
            names[replicate] = canaries.names
            for condition in (None, *lm.poisons):
                part = _measure_condition(run_dir, config, inputs, canaries, replicate, condition,
                                          run.progress, log)
                measured[CLEAN if condition is None else condition.name].append(part)
        conditions = _summarize(config, measured)
        for name, summary in conditions.items():
            if summary["poison_share"] > POISON_FRACTION_WARNING:
                run.warn(f"{name}: the poison lines are {summary['poison_share']:.0%} of the size of the training "
                         f"text (over {POISON_FRACTION_WARNING:.0%}): the poisoned models learn another corpus, "
                         "not the same one with a few lines added")
        headline = f"calibrated_{lm.exposure_key}"
        details = {
            "corpus": {"name": corpus.name, "train_bytes": len(corpus.train.encode()),
                       "validation_bytes": len(corpus.validation.encode())},
            "space_size": lm.canaries.form().space_size,
            "max_exposure": math.log2(lm.canaries.form().space_size),
            "exact": lm.exact_exposure,
            "per_canary": per_canary(config, measured, names),
            "pretrain": None if lm.pretrain is None else base_summary(
                stage_base(run_dir, config, backend, inputs.public, corpus.validation, log=log,
                           progress=run.progress, copy_from=inputs.base_from), backend,
                corpus.validation),
            "most_leaking": {key: most_leaking(conditions, key)
                             for key in (headline, headline.replace("calibrated", "raw"))},
        }
        return TaskOutput(conditions=conditions, details=details, train_seconds=None,
                          plot_data=_exposures(config, measured))

    def plot(self, run: RunContext, results: RunResults, output: TaskOutput) -> None:
        plot_exposure(results.to_json() | {"exposures": output.plot_data}, run.run_dir.file("exposure.png"))


def run_lm(config: RunConfig, out_dir: Path, *, device: str = "cpu", progress: bool = True,
           log: Log = log_to_stderr, backend: ShardBackend | None = None, base_from: Path | None = None
           ) -> RunResults:
    """Run (or resume) the language-model experiment ``config`` in ``out_dir``.

    Its models train in this process: one ensemble per condition (or one Hugging Face model
    after another), not in shards, so ``backend`` may only be the local one. ``base_from``: a
    run directory whose pretrained base models are copied in where their inputs match
    (:mod:`truthserum.tasks.lm_sweep` shares one base across its runs).
    """
    return execute(LmRunner(base_from=base_from), config, out_dir, device=device, progress=progress, log=log,
                   backend=backend)
