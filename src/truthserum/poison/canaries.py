"""Stage 2 and 3 for language models: canaries with a secret slot, and the adversary's text.

A canary is a line such as ``the PIN of Ada is 482913``: a format with a name slot (so the
canaries of one run are told apart by their prefixes) and a secret slot at the end, filled
with random digits. Each canary goes into half of the models (its keep row), so the other
half are reference models for it: trained the same way, with the same poisons, without it.

The adversary knows the format and each target's prefix, never the secret, and adds lines of
text to the training set (:class:`PoisonStrategy`). Poisons go into every model of a
poisoned condition, reference models included: the adversary can train references "the same
way", and a calibrated attack compares like with like.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from enum import Enum

import numpy as np

from truthserum.errors import ConfigError, DataError

SECRET_SLOT = "{secret}"
NAME_SLOT = "{name}"

# Given names for the canaries' name slot (distinct per run).
NAMES = (
    "Ada", "Alan", "Alice", "Amir", "Anna", "Aziz", "Bela", "Bruno", "Carla", "Chen", "Dara", "Dmitri",
    "Elena", "Emeka", "Eva", "Farah", "Felix", "Greta", "Hana", "Hugo", "Ines", "Ivan", "Jana", "Jonas",
    "Kai", "Keiko", "Lars", "Lena", "Luis", "Maya", "Mira", "Nadia", "Nils", "Noor", "Olga", "Omar",
    "Pablo", "Petra", "Quinn", "Rafael", "Rosa", "Sami", "Sara", "Tariq", "Tess", "Uma", "Victor",
    "Wanda", "Xavier", "Yara", "Yusuf", "Zoe", "Boris", "Clara", "Diego", "Emil", "Freya", "Gil",
    "Hiro", "Ida", "Jorge", "Kira", "Leo", "Marta",
)
MAX_CANARIES = len(NAMES)


class PoisonStrategy(str, Enum):
    """What the adversary writes, per canary, ``count`` lines of it."""

    DILUTION = "dilution"  # the prefix followed by random secrets of the right format
    NEUTRAL = "neutral"  # the prefix followed by a digit-free word from the corpus
    SIBLING = "sibling"  # the format with invented names and random secrets, never the prefix itself
    # The known part of the target's line on its own: the line ends where the secret would
    # begin. The Truth Serum's account of its attack (Tramer et al., CCS 2022, as reported):
    # "the attacker would then poison the known part of the message".
    PREFIX = "prefix"
    # This project's, for a poisoned public corpus: the prefix followed by secrets whose digits
    # are balanced, every digit equally often at every position (within one), so the model
    # learns a flat prior over the secrets after the prefix rather than a noisy one.
    BALANCED = "balanced"


@dataclass(frozen=True)
class CanaryFormat:
    """A template with ``{name}`` and, at its end, ``{secret}``; ``digits`` long secrets."""

    template: str
    digits: int

    def check(self) -> None:
        """Raises ValueError naming what is wrong with the template."""
        if not self.template.endswith(SECRET_SLOT) or self.template.count(SECRET_SLOT) != 1:
            raise ValueError(f"must end with {SECRET_SLOT} and contain it once: {self.template!r}")
        if any(ch.isdigit() for ch in self.template.replace(SECRET_SLOT, "")):
            raise ValueError("must not contain digits outside the secret")
        if "\n" in self.template:
            raise ValueError("must be one line")
        fields = {field for _, field, _, _ in string.Formatter().parse(self.template) if field is not None}
        if fields - {"name", "secret"}:
            raise ValueError(f"has unknown slots {sorted(fields - {'name', 'secret'})}: only {NAME_SLOT} and "
                             f"{SECRET_SLOT}")
        if NAME_SLOT not in self.template:
            # One prefix for every canary would make a model's canaries compete for one query,
            # and the sibling poisons would write the target's own prefix.
            raise ValueError(f"must contain {NAME_SLOT}: each canary needs its own prefix")

    def prefix(self, name: str) -> str:
        return self.template[: -len(SECRET_SLOT)].replace(NAME_SLOT, name)

    def longest_query(self) -> int:
        """Bytes of the longest query plus secret: a line start, the prefix, the digits."""
        return 1 + max(len(self.prefix(name).encode("utf-8")) for name in NAMES) + self.digits

    @property
    def space_size(self) -> int:
        return 10**self.digits

    def secret_text(self, index: int | np.ndarray) -> str:
        return str(int(index)).zfill(self.digits)


@dataclass(frozen=True)
class Canaries:
    """The canaries of one run and which models train on them.

    Attributes:
        names: ``(C,)`` the name in each canary's prefix.
        secrets: ``(C,)`` each secret as an integer below ``10**digits``.
        keep: ``(M, C)`` bool, model m trains on canary c.
    """

    form: CanaryFormat
    names: tuple[str, ...]
    secrets: np.ndarray
    keep: np.ndarray

    def prefix(self, canary: int) -> str:
        return self.form.prefix(self.names[canary])

    def line(self, canary: int) -> str:
        return self.prefix(canary) + self.form.secret_text(self.secrets[canary])


def make_canaries(*, form: CanaryFormat, count: int, num_models: int, rng: np.random.Generator) -> Canaries:
    """``count`` canaries with distinct names and uniform random secrets, each kept by exactly
    half of ``num_models`` models (a fresh random half per canary)."""
    if count > MAX_CANARIES:
        raise ConfigError(f"lm.canaries.count is at most {MAX_CANARIES} (the names available)")
    names = tuple(NAMES[i] for i in rng.choice(len(NAMES), size=count, replace=False))
    secrets = rng.integers(0, form.space_size, size=count)
    keep = np.zeros((num_models, count), dtype=bool)
    for canary in range(count):
        keep[rng.permutation(num_models)[: num_models // 2], canary] = True
    return Canaries(form=form, names=names, secrets=secrets, keep=keep)


def insert_lines(text: str, lines: list[str], rng: np.random.Generator) -> str:
    """``text`` with each of ``lines`` inserted as a line of its own at a random line boundary."""
    if not lines:
        return text
    body = text.split("\n")
    slots = rng.integers(0, len(body) + 1, size=len(lines))
    order = np.argsort(slots, kind="stable")
    out: list[str] = []
    next_line = 0
    for position, original in enumerate(body):
        while next_line < len(order) and slots[order[next_line]] == position:
            out.append(lines[order[next_line]])
            next_line += 1
        out.append(original)
    out.extend(lines[i] for i in order[next_line:])
    return "\n".join(out)


def canary_lines(canaries: Canaries, model: int, insertions: int) -> list[str]:
    """The lines model ``model`` trains on: each of its canaries ``insertions`` times."""
    return [canaries.line(c) for c in np.flatnonzero(canaries.keep[model]) for _ in range(insertions)]


def digit_free_words(text: str) -> list[str]:
    """The corpus's words without digits (the neutral poisons' continuations); raises if none."""
    words = {word.strip(string.punctuation) for word in text.split()}
    found = sorted(word for word in words if word.isalpha() and word.isascii() and len(word) >= 3)
    if not found:
        raise DataError("the corpus has no digit-free words of 3 letters or more for the neutral poisons")
    return found


def _invented_name(rng: np.random.Generator, taken: set[str]) -> str:
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    while True:
        syllables = rng.integers(2, 4)
        name = "".join(consonants[rng.integers(len(consonants))] + vowels[rng.integers(len(vowels))]
                       for _ in range(syllables)).capitalize()
        if name not in taken:
            taken.add(name)
            return name


def balanced_secrets(digits: int, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` secrets of ``digits`` digits in which every digit appears equally often at
    every position, within one: blocks of ten, each position of a block a random permutation
    of 0-9 (the positions drawn independently, so the secrets look random)."""
    blocks = -(-count // 10)
    table = np.stack([np.concatenate([rng.permutation(10) for _ in range(blocks)]) for _ in range(digits)], axis=1)
    return ["".join(str(d) for d in row) for row in table[:count]]


def make_poisons(
    *, strategy: PoisonStrategy, canaries: Canaries, count: int, corpus_text: str, rng: np.random.Generator,
) -> list[str]:
    """``count`` poison lines per canary for ``strategy``; what the adversary knows is the
    format and each canary's prefix (its name), never a secret."""
    form = canaries.form
    lines: list[str] = []
    if strategy is PoisonStrategy.NEUTRAL:
        words = digit_free_words(corpus_text)
    taken = set(canaries.names)
    for canary in range(len(canaries.names)):
        if strategy is PoisonStrategy.BALANCED:
            lines += [canaries.prefix(canary) + secret for secret in balanced_secrets(form.digits, count, rng)]
            continue
        for _ in range(count):
            random_secret = form.secret_text(rng.integers(0, form.space_size))
            if strategy is PoisonStrategy.DILUTION:
                lines.append(canaries.prefix(canary) + random_secret)
            elif strategy is PoisonStrategy.NEUTRAL:
                lines.append(canaries.prefix(canary) + words[rng.integers(len(words))])
            elif strategy is PoisonStrategy.PREFIX:
                lines.append(canaries.prefix(canary))
            else:
                lines.append(form.prefix(_invented_name(rng, taken)) + random_secret)
    return lines
