"""The ``lm`` section of a run config (task ``lm``): corpus, model, training, canaries,
poisoning conditions and how exposure and extraction are measured."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from truthserum.poison.canaries import MAX_CANARIES, SECRET_SLOT, CanaryFormat, PoisonStrategy
from truthserum.train.lm.model import TransformerShape
from truthserum.train.lm.training import LmTrainSettings
from truthserum.config.schema import Count, Rate, StrictSection


class CorpusSource(str, Enum):
    BUILTIN = "builtin"  # Python's bundled documentation (pydoc_data.topics)
    TEXT = "text"  # a UTF-8 text file of the user's (lm.corpus.path)


class ModelKind(str, Enum):
    BYTE = "byte"  # the built-in byte transformer, trained as one ensemble (from scratch or from lm.pretrain)
    HF = "hf"  # a Hugging Face causal LM from a local folder (lm.model.path), fine-tuned


def _check_source(source: CorpusSource, path: Path | None, section: str) -> None:
    """A text source names its file; the built-in one names none."""
    if source is CorpusSource.TEXT and path is None:
        raise ValueError(f"{section}.source 'text' needs {section}.path")
    if source is CorpusSource.BUILTIN and path is not None:
        raise ValueError(f"{section}.path is for source 'text'")


class CorpusConfig(StrictSection):
    source: CorpusSource = Field(
        default=CorpusSource.BUILTIN,
        description="builtin: Python's bundled documentation (pydoc_data.topics); text: the UTF-8 file at path",
    )
    path: Path | None = Field(
        default=None, description="the UTF-8 text file of source text, relative to the config file"
    )
    max_bytes: Count | None = Field(default=None, ge=10_000,
                                    description="use only the first documents, about this many bytes")
    validation_every: Count = Field(
        default=10, ge=2, le=1000,
        description="every n-th document (a topic, or a blank-line separated paragraph) is validation text",
    )

    @model_validator(mode="after")
    def _path_matches_source(self) -> CorpusConfig:
        _check_source(self.source, self.path, "lm.corpus")
        return self


class PoisonedText(str, Enum):
    """Where a condition's poison lines go."""

    PRIVATE = "private"  # the training (fine-tuning) text, with the canaries
    PUBLIC = "public"  # the public pretraining text only
    BOTH = "both"


class LmModelConfig(StrictSection):
    kind: ModelKind = Field(
        default=ModelKind.BYTE,
        description="byte: the built-in byte transformer, trained from scratch or fine-tuned from lm.pretrain; hf: "
                    "a local Hugging Face causal LM, fine-tuned",
    )
    path: Path | None = Field(default=None, description="local folder of a Hugging Face model (kind hf)")
    layers: Count = Field(default=2, ge=1, le=24, description="byte model only: transformer layers")
    width: Count = Field(default=64, ge=8, le=2048, description="byte model only: embedding width, a multiple of heads")
    heads: Count = Field(default=4, ge=1, le=64, description="byte model only: attention heads per layer")
    context: Count = Field(
        default=64, ge=16, le=4096,
        description="training window in tokens (kind hf too); the byte model's must hold a query and its secret",
    )

    @model_validator(mode="after")
    def _consistent(self) -> LmModelConfig:
        if self.width % self.heads:
            raise ValueError("lm.model.width must be a multiple of lm.model.heads")
        if self.kind is ModelKind.HF and self.path is None:
            raise ValueError("lm.model.kind 'hf' needs lm.model.path (a local folder; nothing is downloaded)")
        if self.kind is ModelKind.BYTE and self.path is not None:
            raise ValueError("lm.model.path is for kind 'hf'")
        return self

    def shape(self) -> TransformerShape:
        return TransformerShape(layers=self.layers, width=self.width, heads=self.heads, context=self.context)


class LmTrainConfig(StrictSection):
    """How every model trains on lm.corpus with its canaries and poisons: from scratch (byte
    models without lm.pretrain) or fine-tuned from a base (lm.pretrain, or a Hugging Face model)."""

    passes: Rate = Field(default=4.0, gt=0, le=1000, description="passes over the clean training text")
    batch_size: Count = Field(default=16, ge=1, le=4096, description="windows per model per step")
    learning_rate: Rate = Field(
        default=3e-3, gt=0, le=1, description="AdamW's peak rate: 5% linear warm-up, then a cosine down to 10% of it"
    )

    def settings(self) -> LmTrainSettings:
        return LmTrainSettings(passes=self.passes, batch_size=self.batch_size, learning_rate=self.learning_rate)


class PretrainConfig(StrictSection):
    """Where the byte models' base comes from: one model pretrained on public text, stored in
    the run directory; every model of every condition is fine-tuned from it on lm.corpus (the
    private text) by lm.train. A Hugging Face model is its own base (its folder)."""

    source: CorpusSource = Field(
        default=CorpusSource.BUILTIN,
        description="builtin: the built-in documentation's topics that lm.corpus does not use (set "
                    "lm.corpus.max_bytes); text: the UTF-8 file at path",
    )
    path: Path | None = Field(default=None, description="the UTF-8 file of public text, relative to the config file")
    max_bytes: Count | None = Field(default=None, ge=10_000,
                                    description="use only the first documents of the public text, about this many bytes")
    passes: Rate = Field(default=4.0, gt=0, le=1000, description="passes over the public text")
    batch_size: Count = Field(default=16, ge=1, le=4096, description="windows per step")
    learning_rate: Rate = Field(default=3e-3, gt=0, le=1,
                                description="AdamW's peak rate: 5% linear warm-up, then a cosine down to 10% of it")

    @model_validator(mode="after")
    def _path_matches_source(self) -> PretrainConfig:
        _check_source(self.source, self.path, "lm.pretrain")
        return self

    def settings(self) -> LmTrainSettings:
        return LmTrainSettings(passes=self.passes, batch_size=self.batch_size, learning_rate=self.learning_rate)


class CanaryConfig(StrictSection):
    template: str = Field(
        default="the PIN of {name} is " + SECRET_SLOT, min_length=len(SECRET_SLOT) + 1,
        description="one line with a {name} slot and ending in {secret}; no digits elsewhere",
    )
    digits: Count = Field(
        default=6, ge=1, le=12, description="digits of a random secret: 10^digits candidate secrets"
    )
    count: Count = Field(
        default=12, ge=1, le=MAX_CANARIES, description="canaries per replicate, each with its own name"
    )
    insertions: Count = Field(default=8, ge=1, le=1000, description="copies of a canary in a model that has it")

    def form(self) -> CanaryFormat:
        return CanaryFormat(template=self.template, digits=self.digits)

    @field_validator("template")
    @classmethod
    def _well_formed(cls, value: str) -> str:
        CanaryFormat(template=value, digits=1).check()
        return value


class PoisonCondition(StrictSection):
    strategy: PoisonStrategy = Field(
        description="dilution: prefix + random secrets; neutral: prefix + a digit-free corpus word; sibling: "
                    "other names + random secrets; prefix: the prefix alone; balanced: prefix + secrets with every digit "
                    "equally often at every position",
    )
    count: Count = Field(ge=1, le=10_000, description="poison lines per canary")
    into: PoisonedText = Field(
        default=PoisonedText.PRIVATE,
        description="private: the fine-tuning text (the adversary contributes to the private set); public: the "
                    "pretraining text only (a poisoned public corpus); both. public and both need lm.pretrain "
                    "(one base model per such condition and replicate)",
    )

    @property
    def pretrain(self) -> bool:
        """Whether the poisons go into the public pretraining text."""
        return self.into is not PoisonedText.PRIVATE

    @property
    def finetune(self) -> bool:
        """Whether the poisons go into the private training text."""
        return self.into is not PoisonedText.PUBLIC

    @property
    def name(self) -> str:
        return f"{self.strategy.value}-{self.count}" + ("" if self.into is PoisonedText.PRIVATE
                                                        else f"-{self.into.value}")


class ExposureConfig(StrictSection):
    exact_max: Count = Field(default=1_000_000, ge=10, le=1_000_000,
                             description="enumerate the secret space exactly up to this size")
    sample: Count = Field(default=5000, ge=100, le=1_000_000, description="candidates for the extrapolated exposure")
    beam_width: Count = Field(
        default=100, ge=1, le=10_000,
        description="extraction: partial secrets the beam search keeps; at least the largest top_k",
    )
    top_k: tuple[Count, ...] = Field(
        default=(1, 10, 100), min_length=1,
        description="extraction succeeds at k when the secret is among the k best guesses; distinct counts",
    )
    max_nodes: Count = Field(default=8192, ge=16, le=1_000_000, description="trie nodes per batch")

    @model_validator(mode="after")
    def _beam_covers_k(self) -> ExposureConfig:
        if max(self.top_k) > self.beam_width:
            raise ValueError("lm.exposure.beam_width must be at least the largest of lm.exposure.top_k")
        if any(k < 1 for k in self.top_k) or len(set(self.top_k)) != len(self.top_k):
            raise ValueError("lm.exposure.top_k must be distinct positive counts")
        return self


class LmConfig(StrictSection):
    corpus: CorpusConfig = Field(default=CorpusConfig(), description="the training text and its validation split")
    model: LmModelConfig = Field(
        default=LmModelConfig(),
        description="the language model: the built-in byte transformer or a local Hugging Face one",
    )
    train: LmTrainConfig = Field(default=LmTrainConfig(), description="how long and how fast every model trains")
    pretrain: PretrainConfig | None = Field(
        default=None,
        description="byte models: pretrain one base model on public text and fine-tune every model from it "
                    "(the regime of a pretrained model fine-tuned on private data); null: train from scratch",
    )
    canaries: CanaryConfig = Field(
        default=CanaryConfig(), description="the secret-bearing lines planted in the training text"
    )
    num_models: Count = Field(default=4, ge=2, le=256,
                              description="models per condition and replicate; each canary is in half of them")
    replicates: Count = Field(default=1, ge=1, le=100, description="independent repetitions with fresh canaries")
    poisons: tuple[PoisonCondition, ...] = Field(
        default=(PoisonCondition(strategy=PoisonStrategy.NEUTRAL, count=16),),
        description="poisoned conditions, each compared with the clean one (always run)",
    )
    exposure: ExposureConfig = Field(
        default=ExposureConfig(), description="how exposure and extraction of each canary's secret are measured"
    )

    @property
    def exact_exposure(self) -> bool:
        """Whether the secret space is small enough to enumerate (else only extrapolated)."""
        return self.canaries.form().space_size <= self.exposure.exact_max

    @property
    def exposure_key(self) -> str:
        """The record field suffix of the headline exposure: ``exposure`` or ``extrapolated``."""
        return "exposure" if self.exact_exposure else "extrapolated"

    @model_validator(mode="after")
    def _consistent(self) -> LmConfig:
        if self.num_models % 2:
            raise ValueError("num_models must be even (each canary is in exactly half of the models)")
        names = [p.name for p in self.poisons]
        if len(set(names)) != len(names):
            raise ValueError("poisons must be distinct (strategy, count, into) triples")
        longest = self.canaries.form().longest_query()
        if self.model.kind is ModelKind.BYTE and longest > self.model.context:
            raise ValueError(f"a query and its secret take up to {longest} bytes, more than model.context "
                             f"({self.model.context}); raise the context or shorten the template")
        if self.pretrain is not None:
            if self.model.kind is ModelKind.HF:
                raise ValueError("lm.pretrain is for the byte model: a Hugging Face model is its own base, "
                                 "fine-tuned by lm.train")
            if (self.pretrain.source is CorpusSource.BUILTIN and self.corpus.source is CorpusSource.BUILTIN
                    and self.corpus.max_bytes is None):
                raise ValueError("lm.pretrain.source 'builtin' pretrains on the topics lm.corpus leaves: set "
                                 "lm.corpus.max_bytes (e.g. 50000) so that some are left")
        elif any(p.pretrain for p in self.poisons):
            raise ValueError("poisons into 'public' or 'both' need lm.pretrain (public text to pretrain a base on)")
        if self.model.kind is ModelKind.HF and self.model != LmModelConfig(kind=ModelKind.HF, path=self.model.path,
                                                                          context=self.model.context):
            raise ValueError("model.layers/width/heads describe the byte model; a Hugging Face "
                             "model brings its own")
        return self
