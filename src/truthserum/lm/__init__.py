"""Secrets in language models: the Truth Serum's canary-extraction setting.

The stages, one module each: ``corpus`` (text, bytes) -> ``canaries`` (secrets in half the
models; the adversary's poison lines) -> ``model`` and ``training`` (byte transformers as one
ensemble) or ``hf`` (local Hugging Face models) -> ``exposure`` (exact by a candidate trie,
calibrated, extrapolated) and ``extraction`` (beam search) -> ``measure`` (per-canary records
and their aggregates). ``backends`` puts the two kinds of model behind one interface; the
runner is :mod:`truthserum.tasks.lm` and the config section :mod:`truthserum.lm.config`.
"""
