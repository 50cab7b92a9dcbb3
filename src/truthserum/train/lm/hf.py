"""Hugging Face causal language models (the GPT-2 family) for the exposure and extraction code.

Models load from a local folder only (never the hub) and only from safetensors (never
unpickled). :class:`HFScorer` serves M models that share one tokenizer through the
:class:`~truthserum.query.scorers.CachedScorer` protocol, and the helpers below turn a canary's
prefix and its candidate secrets into the token rows that protocol scores: GPT-2's BPE
attaches the space before a number to the number's first token (" 482", "913"), so the
secret slot does not start at a token boundary of the prefix.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from truthserum.errors import ConfigError, DataError, TrainingError

try:  # an optional extra: one clear line, not a traceback, when it is missing
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
except ModuleNotFoundError as exc:
    if exc.name != "transformers":
        raise
    raise ConfigError("lm.model.kind 'hf' needs Hugging Face transformers, which is not installed: "
                      "pip install 'truthserum[hf]'") from None

from truthserum.attacks.exposure import PAD
from truthserum.train.lm.training import LmTrainSettings, learning_rate_at

_SPACE_MARKERS = ("Ġ", " ", "▁")  # byte-level BPE, plain, sentencepiece
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt")


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Keep transformers' own loading bars and its warnings out of truthserum's output while a
    model loads or trains (its verbosity and bars are restored after): a run's log shows
    truthserum's lines and bars, and a failure is reported in one line of ours."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_hf(path: Path):
    """``(model, tokenizer)`` from a local folder, float32 and in eval mode.

    Only safetensors weights are read: a pickled ``pytorch_model.bin`` can run code on load.
    """
    with quiet_transformers():
        return _load_hf(Path(path))


def _load_hf(path: Path):
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such model folder")
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: not a Hugging Face model folder (no config.json)")
    if not any(path.glob("*.safetensors")):
        if any(path.glob("pytorch_model*.bin")):
            raise DataError(f"{path}: only pickled weights (pytorch_model.bin); convert them to safetensors")
        raise DataError(f"{path}: no safetensors weights in the model folder")
    try:
        settings = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path / 'config.json'}: unreadable ({_one_line(exc)})") from None
    if not isinstance(settings, dict):
        raise DataError(f"{path / 'config.json'}: not a JSON object")
    if "auto_map" in settings:  # refused here, before transformers warns about it
        raise DataError(f"{path}: the model needs its own Python code (auto_map in config.json), which truthserum "
                        "never runs; use a model that transformers supports itself")
    # Without tokenizer files transformers 5 builds an empty tokenizer from config.json alone.
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise DataError(f"{path}: no tokenizer in the model folder (none of {', '.join(_TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, TypeError... for a bad folder
        raise DataError(f"{path}: cannot load the tokenizer: {_one_line(exc)}") from exc
    if not _encode(tokenizer, "a 1"):
        raise DataError(f"{path}: the tokenizer turns text into no tokens")
    try:
        model, loading = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, use_safetensors=True, dtype=torch.float32, output_loading_info=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot load the causal language model: {_one_line(exc)}") from exc
    # what transformers would have warned about (its warnings are kept out of the output): weights
    # the folder lacks are initialised at random, and auditing a random model measures nothing
    missing = sorted(loading.get("missing_keys") or ()) + sorted(loading.get("mismatched_keys") or ())
    if missing:
        raise DataError(f"{path}: the weights lack or mismatch {len(missing)} of the model's parameters (first: "
                        f"{str(missing[0])[:80]}), which transformers would initialise at random")
    if len(tokenizer) > model.config.vocab_size:
        raise DataError(f"{path}: the tokenizer has {len(tokenizer)} tokens, the model only "
                        f"{model.config.vocab_size}")
    return model.float().eval(), tokenizer


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, verbose=False)["input_ids"])


class HFScorer:
    """M Hugging Face causal models with one tokenizer, scored together on the same token trees.

    The context runs once per model and its key/value cache is kept. A node's state is just its
    suffix: the tokens after the context, a ``(B, l)`` LongTensor (every node of one ``extend``
    call has the same depth, in a trie level as in a beam). ``extend`` reruns those few suffix
    tokens on top of a fresh copy of the context's cache (a forward pass appends to the cache
    it is given, so the kept one is never handed over), ``batch`` nodes at a time to bound the
    memory of the copies.
    """

    def __init__(self, models: list, *, batch: int = 512):
        if not models:
            raise ValueError("HFScorer needs at least one model")
        sizes = {m.config.vocab_size for m in models}
        if len(sizes) != 1:
            raise DataError(f"the models do not share one vocabulary (sizes {sorted(sizes)})")
        self.models = models
        self.num_models = len(models)
        self.vocab_size = sizes.pop()
        self.batch = batch
        self.device = next(models[0].parameters()).device
        self._past: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def _tokens(self, ids) -> torch.Tensor:
        return torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.device)

    @torch.no_grad()
    def start(self, context: np.ndarray) -> torch.Tensor:
        tokens = self._tokens(context)
        if tokens.ndim != 1 or len(tokens) == 0:
            raise ValueError("the context must be a non-empty 1-D token array")
        self._past, out = [], []
        for model in self.models:
            result = model(input_ids=tokens[None], use_cache=True)
            self._past.append([(layer.keys, layer.values) for layer in result.past_key_values.layers])
            out.append(torch.log_softmax(result.logits[0, -1].float(), dim=-1))
        return torch.stack(out)

    @torch.no_grad()
    def extend(self, parents: torch.Tensor | None, parent_index: np.ndarray, tokens: np.ndarray
               ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._past is not None, "start() first"
        new = self._tokens(tokens)[:, None]
        suffix = new if parents is None else torch.cat([parents[self._tokens(parent_index)], new], dim=1)
        out = torch.empty(self.num_models, len(suffix), self.vocab_size, dtype=torch.float32, device=self.device)
        for m, (model, past) in enumerate(zip(self.models, self._past)):
            for lo in range(0, len(suffix), self.batch):
                part = suffix[lo:lo + self.batch]
                cache = DynamicCache(
                    [(k.expand(len(part), -1, -1, -1), v.expand(len(part), -1, -1, -1)) for k, v in past],
                    config=model.config)
                logits = model(input_ids=part, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
                out[m, lo:lo + len(part)] = torch.log_softmax(logits[:, -1].float(), dim=-1)
        return suffix, out

    @torch.no_grad()
    def full_log_likelihood(self, context: np.ndarray, candidates: np.ndarray, *, batch: int = 256) -> torch.Tensor:
        """Naive scoring: each candidate run as the whole sequence context + candidate (the
        baseline the cached trie must agree with)."""
        context = np.asarray(context, dtype=np.int64)
        candidates = np.asarray(candidates, dtype=np.int64)
        c = len(context)
        out = torch.zeros(self.num_models, len(candidates), dtype=torch.float64)
        for lo in range(0, len(candidates), batch):
            part = candidates[lo:lo + batch]
            targets = self._tokens(np.maximum(part, 0))  # PAD read as token 0, then masked out
            ids = torch.cat([self._tokens(context).expand(len(part), c), targets], dim=1)
            mask = self._tokens(part != PAD).double()
            for m, model in enumerate(self.models):
                # Right padding never reaches a real token (causal); the explicit all-ones mask
                # only silences transformers' padding warning.
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, c - 1:-1].float()
                lp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
                out[m, lo:lo + len(part)] = (lp.double() * mask).sum(dim=1).cpu()
        return out


def secret_token_rows(tokenizer, prefix: str, secrets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The context tokens and, per secret, its token row (padded with -1), such that
    ``context + row`` is exactly the tokenization of ``prefix + secret``.

    The context is the prefix's tokens cut at the last token boundary that every candidate
    shares: with GPT-2 the prefix's trailing space merges into a secret's first token (" 482")
    for some secrets and not others (" ", "0", "0", "7"), so the space's token is moved into the
    rows of the secrets that keep it. Scoring then covers exactly the text after the cut.
    """
    if not secrets:
        raise ValueError("no secrets to tokenize")
    head = _encode(tokenizer, prefix)
    full = [_encode(tokenizer, prefix + secret) for secret in secrets]
    keep = len(head)
    for ids in full:
        while keep and ids[:keep] != head[:keep]:
            keep -= 1
    if keep == 0:
        raise DataError(f"the prefix {prefix!r} shares no token with its secrets' tokenizations")
    tails = [ids[keep:] for ids in full]
    if min(len(t) for t in tails) == 0:
        raise DataError(f"a secret after {prefix!r} tokenizes to nothing")
    rows = np.full((len(secrets), max(len(t) for t in tails)), PAD, dtype=np.int64)
    for i, tail in enumerate(tails):
        rows[i, :len(tail)] = tail
    return np.asarray(head[:keep], dtype=np.int64), rows


def digit_token_map(tokenizer, *, allow_leading_space: bool) -> dict[int, str]:
    """Tokens that spell only ASCII digits, each with its digits, for :func:`beam_search`.

    With ``allow_leading_space`` a leading space marker is allowed too (GPT-2's " 482"); the
    beam search cannot tell the first step from the others, so such a map also lets a guess be
    spelled with a space inside (" 4", " 82"): use it when the context was cut before the space.
    """
    special = set(tokenizer.all_special_ids)
    out: dict[int, str] = {}
    for text, token in tokenizer.get_vocab().items():
        if token in special:
            continue
        if allow_leading_space and text[:1] in _SPACE_MARKERS:
            text = text[1:]
        if text and text.isascii() and text.isdigit():
            out[token] = text
    return out


def _windows(tokens: np.ndarray, starts: np.ndarray, length: int, device) -> torch.Tensor:
    return torch.as_tensor(np.stack([tokens[s:s + length] for s in starts]), device=device)


def fine_tune(models: list, tokenizer, texts: list[str], *, steps: int, batch_size: int, context: int,
              learning_rate: float, seeds: list[int], on_step: Callable[[], None] | None = None) -> list[float]:
    """Train model i on ``texts[i]`` as a causal LM on random windows, with AdamW.

    The learning rate follows the byte models' schedule (:func:`learning_rate_at`: warm-up,
    then a cosine to a tenth), so both kinds of model fine-tune in one regime. Model i draws its
    windows and any dropout from ``seeds[i]`` alone, so a model trains the same whichever
    models come before it. Returns, per model, the mean loss of the
    last tenth of steps. ``on_step()`` is called after every step of every model (a progress bar).
    """
    if not len(texts) == len(models) == len(seeds):
        raise ValueError(f"{len(models)} models, {len(texts)} texts and {len(seeds)} seeds")
    finals = []
    for index, (model, child) in enumerate(zip(models, [np.random.SeedSequence(int(s)) for s in seeds])):
        tokens = np.asarray(_encode(tokenizer, texts[index]), dtype=np.int64)
        if len(tokens) <= context + 1:
            raise TrainingError(f"training text {index} has {len(tokens)} tokens, too few for windows of "
                                f"{context + 1}; use a smaller context or more text")
        rng = np.random.default_rng(child)
        torch.manual_seed(int(child.generate_state(1)[0]))
        device = next(model.parameters()).device
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
        schedule = LmTrainSettings(learning_rate=learning_rate, batch_size=batch_size)
        losses = []
        model.train()
        try:
            for step in range(steps):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate_at(schedule, step, steps)
                starts = rng.integers(0, len(tokens) - context, size=batch_size)
                batch = _windows(tokens, starts, context + 1, device)
                loss = model(input_ids=batch, labels=batch).loss
                if not torch.isfinite(loss):
                    raise TrainingError(f"fine-tuning model {index} diverged at step {step} (loss {loss.item()}); "
                                        f"lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(loss.item())
                if on_step is not None:
                    on_step()
        finally:
            model.eval()
        finals.append(float(np.mean(losses[-max(1, steps // 10):])) if losses else float("nan"))
    return finals


@torch.no_grad()
def validation_loss(models: list, tokenizer, text: str, *, context: int, max_windows: int = 64) -> np.ndarray:
    """Mean negative log-likelihood per token (nats) of ``text`` under each model, over the first
    ``max_windows`` consecutive windows (each token predicted once, from its own window)."""
    tokens = np.asarray(_encode(tokenizer, text), dtype=np.int64)
    if len(tokens) < 2:
        raise DataError("the validation text has fewer than two tokens")
    length = min(context + 1, len(tokens))
    starts = np.arange(0, len(tokens) - length + 1, length - 1)[:max_windows]
    out = np.zeros(len(models))
    for m, model in enumerate(models):
        for lo in range(0, len(starts), 8):  # 8 windows at a time: logits are windows x length x vocab
            batch = _windows(tokens, starts[lo:lo + 8], length, next(model.parameters()).device)
            logits = model(input_ids=batch).logits[:, :-1].float()
            out[m] += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum").item()
    return out / (len(starts) * (length - 1))


class HFBackend:
    """Copies of a local Hugging Face model, fine-tuned one per training text (the runner's
    :class:`~truthserum.train.lm.backends.Backend` for ``lm.model.kind: hf``)."""

    def __init__(self, *, path: Path, settings, context: int, clean_train_text: str, device: torch.device):
        self.path = Path(path)
        model, self.tokenizer = load_hf(self.path)  # checked before the run directory is written
        self.positions = getattr(model.config, "n_positions", None) or getattr(
            model.config, "max_position_embeddings", None)
        self.settings = settings
        self.context = context
        self.device = device
        self._first_cache: dict[str, dict[int, str]] = {}
        tokens = len(_encode(self.tokenizer, clean_train_text))
        self.steps = max(1, int(np.ceil(settings.passes * tokens / (settings.batch_size * context))))

    def _fresh_models(self, count: int) -> list:
        return [load_hf(self.path)[0].to(self.device) for _ in range(count)]

    def train(self, texts, seeds, progress=None, base=None):
        from truthserum.train.executors import progress_bar

        if base is not None:  # the config refuses lm.pretrain for kind hf: the folder is the base
            raise ValueError("a Hugging Face model fine-tunes from its own folder, not from a base")

        models = self._fresh_models(len(texts))
        with progress_bar(len(texts) * self.steps, f"fine-tuning {len(texts)} models", "step",
                          progress is not None) as bar, quiet_transformers():
            losses = fine_tune(models, self.tokenizer, list(texts), steps=self.steps,
                               batch_size=self.settings.batch_size, context=self.context,
                               learning_rate=self.settings.learning_rate, seeds=[int(x) for x in seeds],
                               on_step=bar.update)
        if progress is not None:
            progress(self.steps, float(np.mean(losses)))
        return HFScorer(models), float(np.mean(losses))

    def save(self, scorer: HFScorer, path: Path) -> None:
        from truthserum.store.rundir import write_npz

        arrays = {f"m{i}.{name}": tensor.detach().cpu().numpy()
                  for i, model in enumerate(scorer.models) for name, tensor in model.state_dict().items()}
        write_npz(path, arrays)

    def load(self, path: Path, num_models: int) -> HFScorer | None:
        from truthserum.errors import RunDirError
        from truthserum.store.rundir import read_npz

        arrays = read_npz(path)
        if arrays is None:
            return None
        models = self._fresh_models(num_models)
        for i, model in enumerate(models):
            state = {name[len(f"m{i}."):]: torch.from_numpy(value) for name, value in arrays.items()
                     if name.startswith(f"m{i}.")}
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError:
                raise RunDirError(f"{path}: does not hold the models this config trains; use another out_dir") from None
        return HFScorer(models)

    def validation_loss(self, scorer: HFScorer, text: str) -> np.ndarray:
        return validation_loss(scorer.models, self.tokenizer, text, context=self.context)

    def query(self, prefix: str, secrets):
        from truthserum.train.lm.backends import SecretQuery

        context, rows = secret_token_rows(self.tokenizer, prefix, list(secrets))
        decoded = self.tokenizer.decode(context.tolist())
        cut = prefix[len(decoded):] if prefix.startswith(decoded) else ""
        return SecretQuery(context=context, candidates=rows, first_tokens=self._first_tokens(cut) if cut else None)

    def digit_tokens(self) -> dict[int, str]:
        return digit_token_map(self.tokenizer, allow_leading_space=False)

    def _first_tokens(self, cut: str) -> dict[int, str]:
        """When the context was cut before ``cut`` (the prefix's trailing space, with GPT-2),
        a guess's first token spells ``cut`` and then digits (" 482"), or ``cut`` alone; a bare
        digit token there would spell text the format never has."""
        if cut not in self._first_cache:
            special = set(self.tokenizer.all_special_ids)
            tokens: dict[int, str] = {}
            for token in self.tokenizer.get_vocab().values():
                text = self.tokenizer.decode([token])
                rest = text[len(cut):]
                spells_digits = rest == "" or (rest.isascii() and rest.isdigit())
                if token not in special and text.startswith(cut) and spells_digits:
                    tokens[token] = rest
            self._first_cache[cut] = tokens
        return self._first_cache[cut]

    def token_count(self, text: str) -> int:
        return len(_encode(self.tokenizer, text))

    def check_context(self, context: int, form) -> None:
        """The training windows and the longest query must fit the model's positions."""
        from truthserum.poison.canaries import NAMES

        longest = max(len(_encode(self.tokenizer, "\n" + form.prefix(name) + "9" * form.digits)) for name in NAMES)
        needed = max(context + 1, longest)
        if self.positions is not None and needed > self.positions:
            raise DataError(f"{self.path}: the model has {self.positions} positions, fewer than the {needed} that "
                            "lm.model.context + 1 and the longest canary query need; lower lm.model.context")

    def fingerprint(self) -> str:
        """SHA-256 over the model folder's files (names and contents), so a run directory is
        not resumed after the weights or the tokenizer at that path changed."""
        import hashlib

        digest = hashlib.sha256()
        for file in sorted(p for p in self.path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(self.path)).encode() + b"\0")
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()
