"""The base models of the fine-tuning regime (``lm.pretrain``): a byte transformer pretrained
once on public text, from which every model of every condition is fine-tuned on the private
text (with its canaries and the condition's poisons). This is the regime of the Truth Serum's
language-model experiment and of users who fine-tune a pretrained model on private data: the
format around a secret is familiar before the secret is seen, and the secret is seen a few
times only.

Files (in the run directory)::

    lm/base.npz, lm/base.json                  the clean base, shared by every condition and replicate
    lm/r<k>/base-<condition>.npz, .json        a base pretrained on public text with the condition's
                                               poisons in it (conditions ``into: public`` or ``both``)

The JSON is written last and holds what the base was trained from (the pretraining settings,
the model's shape, the seed, digests of the public text and of the poison lines): a base is
reused only for the same inputs, so a sweep may copy base files between its runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from truthserum import seeding
from truthserum.config import RunConfig
from truthserum.config.lm import CorpusSource, LmConfig
from truthserum.data.text import builtin_public_text, text_file_public_text
from truthserum.errors import DataError, RunDirError
from truthserum.poison.canaries import insert_lines
from truthserum.query.scorers import ByteScorer
from truthserum.store.rundir import RunDirectory, refuse_writes_under, write_json
from truthserum.tasks.stages import Log
from truthserum.train.lm.backends import ByteBackend

BASE_FILES = ("lm/base.npz", "lm/base.json")


def public_text(config: LmConfig) -> str:
    """The pretraining text of ``config.pretrain`` (which must be set)."""
    pretrain = config.pretrain
    assert pretrain is not None
    try:
        if pretrain.source is CorpusSource.TEXT:
            assert pretrain.path is not None
            return text_file_public_text(pretrain.path, max_bytes=pretrain.max_bytes)
        # Disjoint from the private text when that is the built-in corpus too: the topics after it.
        skip = config.corpus.max_bytes if config.corpus.source is CorpusSource.BUILTIN else None
        return builtin_public_text(skip_bytes=skip, max_bytes=pretrain.max_bytes)
    except DataError as exc:
        raise DataError(f"lm.pretrain: {exc}") from None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class BaseModel:
    """A pretrained base and the record of how it was trained."""

    scorer: ByteScorer
    record: dict


def stage_base(
    run_dir: RunDirectory, config: RunConfig, backend: ByteBackend, public: str, validation_text: str, *, log: Log,
    progress: bool, poisons: list[str] | None = None, replicate: int | None = None, condition: str | None = None,
    copy_from: Path | None = None,
) -> BaseModel:
    """Pretrain (or reload) the clean base, or with ``poisons`` the base of one poisoned
    condition of one replicate (its poisons inserted into the public text). A base in the run
    directory ``copy_from`` that was trained from the same inputs is copied instead. The
    record keeps the base's loss on ``validation_text`` (the private validation text)."""
    pretrain = config.lm.pretrain
    assert pretrain is not None
    poisoned = poisons is not None
    stem = f"lm/r{replicate}/base-{condition}" if poisoned else "lm/base"
    text = public
    if poisoned:
        text = insert_lines(public, poisons, seeding.rng(config.seed, "lm-pretrain-poison-positions", replicate,
                                                         condition))
    key = base_key(config, public, poisons)
    json_path, npz_path = run_dir.file(stem + ".json"), run_dir.file(stem + ".npz")
    stored = _stored_record(json_path, key)
    if stored is not None:
        scorer = backend.load(npz_path, 1)
        if scorer is not None:
            return BaseModel(scorer=scorer, record=stored)
    elif copy_from is not None and (Path(copy_from) / (stem + ".json")).is_file():
        source = Path(copy_from) / stem
        record = _stored_record(source.with_suffix(".json"), key, strict=False)
        scorer = backend.load(source.with_suffix(".npz"), 1) if record is not None else None
        if scorer is not None:
            log(f"{stem}: copied the pretrained base from {copy_from}")
            backend.save(scorer, npz_path)
            write_json(json_path, record)
            return BaseModel(scorer=scorer, record=record)
    refuse_writes_under(npz_path)  # a run re-reported elsewhere pretrains nothing
    label = f"the poisoned base of r{replicate} {condition}" if poisoned else "the base model"
    log(f"pretraining {label} on {len(text.encode()):,} bytes of public text "
        f"({pretrain.passes:g} passes)")

    def report(step: int, loss: float) -> None:
        if progress:
            log(f"  pretraining: step {step}, training loss {loss:.3f} nats/token")

    started = time.perf_counter()
    scorer, loss, steps = backend.pretrain(text, seeding.int_seed(config.seed, "lm-base"), pretrain.settings(),
                                           report)
    record = {"key": key, "steps": steps, "train_loss": loss, "train_seconds": time.perf_counter() - started,
              "public_bytes": len(text.encode()), "poison_lines": len(poisons) if poisoned else 0,
              "validation_loss": float(backend.validation_loss(scorer, validation_text)[0])}
    backend.save(scorer, npz_path)
    write_json(json_path, record)  # last: its presence says the base is complete
    return BaseModel(scorer=scorer, record=record)


def base_key(config: RunConfig, public: str, poisons: list[str] | None = None) -> dict:
    """What a base is trained from: the pretraining settings (not the file's path: its text
    counts), the model's shape, the seed, and digests of the public text and of any poisons."""
    assert config.lm.pretrain is not None
    return {
        "pretrain": config.lm.pretrain.model_dump(mode="json", exclude={"path"}),
        "shape": asdict(config.lm.model.shape()),
        "seed": config.seed,
        "public_sha256": _digest(public),
        "poisons_sha256": _digest("\n".join(poisons)) if poisons is not None else None,
    }


def check_bases(run_dir: RunDirectory, key: dict) -> None:
    """Refuse, before anything is trained, a run directory whose bases were pretrained from
    other inputs than ``key`` (the clean base's key) describes: a public text file changed
    since, say. Poisoned bases are compared on everything but their poisons."""
    def unpoisoned(stored: dict) -> dict:
        return {name: value for name, value in stored.items() if name != "poisons_sha256"}

    for path in [*run_dir.root.glob("lm/base.json"), *sorted(run_dir.root.glob("lm/r*/base-*.json"))]:
        stored = _read_record(path)
        if not isinstance(stored, dict) or not isinstance(stored.get("key"), dict) or (
                unpoisoned(stored["key"]) != unpoisoned(key)):
            raise RunDirError(f"{path}: a base model pretrained on other public text or settings than "
                              "lm.pretrain gives now; its fine-tuned models cannot be reused; use another out_dir")


def _read_record(path: Path) -> object:
    """A base's JSON record; an unreadable one is refused."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc}); delete it (and its .npz) to pretrain that base again, "
                          "or use another out_dir") from None


def _stored_record(path: Path, key: dict, *, strict: bool = True) -> dict | None:
    """The record at ``path`` if it describes a base trained from ``key``'s inputs; None if
    there is none (or, not ``strict``, if it describes another). A run directory's own base
    for other inputs is refused: the models fine-tuned from it would not match the config."""
    if not path.is_file():
        return None
    try:
        stored = _read_record(path)
    except RunDirError:
        if strict:
            raise
        return None
    if isinstance(stored, dict) and stored.get("key") == key:
        return stored
    if not strict:
        return None
    raise RunDirError(f"{path}: a base model pretrained on other text or settings than this config's lm.pretrain; "
                      "its fine-tuned models cannot be reused; use another out_dir")


def base_summary(base: BaseModel, backend: ByteBackend, validation_text: str) -> dict:
    """The clean base's figures for results.json: size of its text, time, and its validation
    loss on the private validation text (before any fine-tuning)."""
    loss = base.record.get("validation_loss")
    if loss is None:  # a base recorded before its record kept the loss
        loss = float(backend.validation_loss(base.scorer, validation_text)[0])
    return {"public_bytes": base.record["public_bytes"], "steps": base.record["steps"],
            "train_seconds": base.record["train_seconds"], "train_loss": base.record["train_loss"],
            "validation_loss": loss, "validation_bits_per_token": loss / math.log(2)}
