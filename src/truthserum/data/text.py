"""Stage 1 for language models: the text, split into training and validation, as bytes.

The built-in corpus is the documentation bundled with Python itself (``pydoc_data.topics``:
the language reference's topics, about 465 KB of English with code), so it is on every
machine that runs truthserum and needs no download. Users may pass their own UTF-8 text files.
The byte model reads bytes (a vocabulary of 256, nothing to fit); a Hugging Face model uses
its own tokenizer (:mod:`truthserum.train.lm.hf`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from truthserum.errors import DataError
from truthserum.store.user_files import refuse_special_file

BUILTIN = "pydoc-topics"


@dataclass(frozen=True)
class Corpus:
    """Training and validation text. Documents are never split across the two."""

    name: str
    train: str
    validation: str

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for part in (self.train, "\x00", self.validation):
            digest.update(part.encode("utf-8"))
        return digest.hexdigest()


def split_documents(name: str, documents: list[str], *, validation_every: int) -> Corpus:
    """Every ``validation_every``-th document goes to validation, the rest to training."""
    documents = [doc.strip("\n") for doc in documents if doc.strip()]
    if len(documents) < 2:
        raise DataError(f"{name}: needs at least two non-empty documents (blank-line separated paragraphs)")
    held_out = {i for i in range(len(documents)) if i % validation_every == validation_every - 1}
    if not held_out:
        held_out = {len(documents) - 1}  # fewer documents than validation_every: the last one
    validation = [doc for i, doc in enumerate(documents) if i in held_out]
    train = [doc for i, doc in enumerate(documents) if i not in held_out]
    if not train:
        raise DataError(f"{name}: no training text left after the validation split")
    return Corpus(name=name, train="\n\n".join(train) + "\n", validation="\n\n".join(validation) + "\n")


def builtin_corpus(*, validation_every: int = 10, max_bytes: int | None = None) -> Corpus:
    """The topics of ``pydoc_data`` in sorted order; every ``validation_every``-th is held out.

    ``max_bytes`` keeps only the first documents up to about that many bytes (a smaller run).
    """
    return split_documents(BUILTIN, _truncate(_builtin_documents(), max_bytes), validation_every=validation_every)


def _builtin_documents() -> list[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip it
        raise DataError("the built-in corpus needs the standard library's pydoc_data, which this "
                        "Python lacks; pass a text file (lm.corpus.path)") from None
    return [topics[key] for key in sorted(topics)]


def builtin_public_text(*, skip_bytes: int | None, max_bytes: int | None = None) -> str:
    """Pretraining text from the built-in corpus: the topics after the first ``skip_bytes``
    (those :func:`builtin_corpus` with ``max_bytes=skip_bytes`` takes as the private text), so
    the public and the private text share no document. ``max_bytes`` bounds what is kept."""
    documents = _builtin_documents()
    taken = len(_truncate(documents, skip_bytes)) if skip_bytes is not None else 0
    rest = [doc.strip("\n") for doc in _truncate(documents[taken:], max_bytes) if doc.strip()]
    if not rest:
        raise DataError("the built-in corpus has no topics left for pretraining after the private text; "
                        "lower lm.corpus.max_bytes")
    return "\n\n".join(rest) + "\n"


def text_file_public_text(path: Path, *, max_bytes: int | None = None) -> str:
    """Pretraining text from a UTF-8 file (every document of it; no validation split)."""
    documents = _read_documents(path)
    return "\n\n".join(doc.strip("\n") for doc in _truncate(documents, max_bytes)) + "\n"


def text_file_corpus(path: Path, *, validation_every: int = 10, max_bytes: int | None = None) -> Corpus:
    """A UTF-8 text file; documents are separated by blank lines."""
    return split_documents(str(path), _truncate(_read_documents(path), max_bytes), validation_every=validation_every)


def _read_documents(path: Path) -> list[str]:
    path = Path(path)
    refuse_special_file(path, str(path), DataError)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: no such text file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    documents = [part for part in text.replace("\r\n", "\n").split("\n\n") if part.strip()]
    if not documents:
        raise DataError(f"{path}: holds no text")
    return documents


def _truncate(documents: list[str], max_bytes: int | None) -> list[str]:
    if max_bytes is None:
        return documents
    kept, total = [], 0
    for doc in documents:
        if total >= max_bytes:
            break
        kept.append(doc)
        total += len(doc.encode("utf-8")) + 2
    return kept


def encode_bytes(text: str) -> np.ndarray:
    """UTF-8 bytes as token ids (int64)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def decode_bytes(tokens: np.ndarray) -> str:
    return bytes(np.asarray(tokens, dtype=np.uint8).tolist()).decode("utf-8", errors="replace")
