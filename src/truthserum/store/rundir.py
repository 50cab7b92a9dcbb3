"""Run directories: the files that join the stages, written atomically, reused on resume.

Layout of a run directory::

    config.yaml                   the resolved config (every default filled in); reopening
                                  with other scoring settings (attacks, rmia, metrics) rewrites it
    pool.json                     a fingerprint of the pool, so changed data are not resumed
    design.npz                    keep (M, N) and targets (T,)
    poisons.npz                   poison x, y, source index, and each target's poison label
    shards/<condition>/models-<first>-<last>.npz
                                  logits of a shard of models, its training time and loss
    signals-<condition>.npz       labels, keep, targets: with the logits beside it, the input
                                  of ``truthserum attack``
    signals-<condition>-logits.npy
                                  logits (M, N, A, C), float32 or float16, a plain .npy read a
                                  chunk of points at a time (:mod:`truthserum.store.logits`)
    scores-<condition>.npz        each attack's (M, T) scores and the members mask
    results.json, roc.png

Every file is written to a temporary name in the same folder and then renamed, so a crash
never leaves a half-written file under a real name; leftover temporaries are removed on the
next open.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from truthserum.config import SCORING_KEYS, RunConfig, dump_config, parse_config
from truthserum.errors import ConfigError, RunDirError

CONFIG_FILE = "config.yaml"
_TEMP_PREFIX = ".tmp-"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        commit_temporary(Path(temp_name), path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def commit_temporary(temp: Path, path: Path) -> None:
    """Put the finished temporary ``temp`` in place as ``path``: flushed to disk first, so that
    a crash never exposes an unwritten file under a real name, with the usual mode (mkstemp
    makes 0600), then renamed."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(temp, 0o666 & ~_umask())
    os.replace(temp, path)


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (removed on the next open)."""
    return Path(path).parent / f"{_TEMP_PREFIX}{Path(path).name}"


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(Path(path), lambda handle: np.savez(handle, **arrays))


class NpzWriter:
    """An ``.npz`` written one array at a time, so that no more than one array need be in
    memory; it appears under its real name (atomically) only when closed without error.

    Usage: ``with NpzWriter(path) as npz: npz.add("scores", array)``.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._temp = tempfile.mkstemp(prefix=_TEMP_PREFIX + self.path.name + ".", dir=self.path.parent)
        os.close(fd)
        self._zip = zipfile.ZipFile(self._temp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def add(self, name: str, array: np.ndarray) -> None:
        with self._zip.open(name + ".npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self._zip.close()
        if kind is None:
            commit_temporary(Path(self._temp), self.path)
        else:
            Path(self._temp).unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an ``.npz`` written by truthserum, or None if it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (FileNotFoundError, zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def config_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two config dicts, with both values."""
    left, right = _flatten(stored), _flatten(wanted)
    return [
        f"{key}: {left.get(key, '(absent)')!r} != {right.get(key, '(absent)')!r}"
        for key in sorted(set(left) | set(right))
        if left.get(key) != right.get(key)
    ]


def _training_part(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the keys that only change how signals are scored or stored
    (``query.signals_dtype``: the logits file is rebuilt from the shards on every run)."""
    part = {key: value for key, value in config.items() if key not in SCORING_KEYS}
    if isinstance(part.get("query"), dict):
        part["query"] = {key: value for key, value in part["query"].items() if key != "signals_dtype"}
    return part


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config with every current default filled in, so that a run directory made
    before a key existed (``task``, say) still matches a config that spells the default out."""
    try:
        return parse_config(stored, source=CONFIG_FILE).to_json_dict()
    except ConfigError:
        return stored  # compared as it is; the differences name what no longer fits


class RunDirectory:
    """A run directory bound to one config; see the module docstring for its layout."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @classmethod
    def open(cls, root: Path, config: RunConfig, *, record_scoring: bool = True) -> RunDirectory:
        """Create ``root`` for ``config``, or reopen it if ``config`` made it.

        A config that differs only in scoring settings (``SCORING_KEYS``) reopens it too; with
        ``record_scoring`` its settings replace the stored ones (the caller rewrites
        results.json with them).

        Raises:
            RunDirError: ``root`` is a file, a non-empty folder that is not a run directory,
                or a run directory made by a different config.
        """
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise RunDirError(f"{root}: exists and is not a directory")
        config_path = root / CONFIG_FILE
        wanted = config.to_json_dict()
        rescoring = False
        if config_path.is_file():
            try:
                stored = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise RunDirError(f"{config_path}: unreadable ({reason}); use another out_dir") from None
            stored = _with_defaults(stored if isinstance(stored, dict) else {})
            differences = config_differences(_training_part(stored), _training_part(wanted))
            if differences:
                raise RunDirError(
                    f"{root} was made by a different config ({'; '.join(differences[:3])}"
                    f"{'; ...' if len(differences) > 3 else ''}); use another out_dir or delete it"
                )
            rescoring = record_scoring and stored != wanted  # only scoring settings differ
        elif root.is_dir() and any(not p.name.startswith(_TEMP_PREFIX) for p in root.iterdir()):
            raise RunDirError(
                f"{root}: not empty and holds no {CONFIG_FILE}, so it is not a truthserum run "
                "directory; use another out_dir"
            )
        run_dir = cls(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            run_dir._remove_temporaries()
            if not config_path.is_file() or rescoring:
                write_text(config_path, dump_config(config))
        except OSError as exc:
            raise RunDirError(f"{root}: cannot write ({exc.strerror or exc})") from None
        return run_dir

    def _remove_temporaries(self) -> None:
        for leftover in self.root.rglob(_TEMP_PREFIX + "*"):
            leftover.unlink(missing_ok=True)

    def file(self, name: str) -> Path:
        return self.root / name

    def shard_file(self, condition: str, first: int, last: int) -> Path:
        """The shard holding models ``first..last`` (inclusive) of ``condition``."""
        return self.root / "shards" / condition / f"models-{first:04d}-{last:04d}.npz"
