"""Fingerprints of a run's inputs: recorded when a run starts, checked when it resumes, so that
models trained on one data set (or corpus, or model folder) are never mixed with another's.
The config names a file, not its contents, hence a record of the contents beside it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from truthserum.errors import RunDirError
from truthserum.store.rundir import RunDirectory, write_json


def check_inputs_unchanged(
    run_dir: RunDirectory, name: str, record: Mapping[str, Any], *, compared: Mapping[str, str],
    trained: Callable[[], bool],
) -> None:
    """Record ``record`` as ``name`` in the run directory, or check it against the one there.

    Args:
        name: the record's file (``pool.json``, ``corpus.json``).
        record: what the inputs are now (JSON values).
        compared: the keys that must not change, each with the error to raise when it has.
        trained: whether the run directory already holds trained models; a missing or damaged
            record is then an error (what the models saw cannot be checked), and otherwise it
            is simply written again.

    Raises:
        RunDirError: an input changed, or the record of a trained run is missing or damaged.
    """
    path = run_dir.file(name)
    try:
        stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None  # never a pipe
    except (OSError, ValueError):
        stored = None
    if not isinstance(stored, dict) or any(key not in stored for key in compared):
        if trained():
            raise RunDirError(
                f"{path}: missing or damaged, so the data the trained models saw cannot be checked; "
                "use another out_dir"
            )
        write_json(path, dict(record))
        return
    for key, message in compared.items():
        if stored[key] != record[key]:
            raise RunDirError(message)
