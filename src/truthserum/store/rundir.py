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

import contextlib
import copy
import errno
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from truthserum.config import PATH_KEYS, SCORING_KEYS, RunConfig, dump_config, parse_config
from truthserum.errors import ConfigError, RunDirError
from truthserum.store.lock import LOCK_FILE, RunLock

CONFIG_FILE = "config.yaml"
REPORT_FILE = "report.html"  # the HTML report (truthserum.report.html)
_TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def naming_errors(path: Path) -> Iterator[None]:
    """Give an ``OSError`` raised meanwhile the name ``path`` when it names no file (a full disk
    fails a ``write`` that knows no name) or only a temporary one."""
    try:
        yield
    except OSError as exc:
        named = exc.filename is not None and not Path(str(exc.filename)).name.startswith(_TEMP_PREFIX)
        if named or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, then rename it into place."""
    refuse_writes_under(path)
    with naming_errors(path):
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
        refuse_writes_under(self.path)
        with naming_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._temp = tempfile.mkstemp(prefix=_TEMP_PREFIX + self.path.name + ".", dir=self.path.parent)
            os.close(fd)
            self._zip = zipfile.ZipFile(self._temp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def add(self, name: str, array: np.ndarray) -> None:
        with naming_errors(self.path), self._zip.open(name + ".npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            with naming_errors(self.path):
                self._zip.close()
                if kind is None:
                    commit_temporary(Path(self._temp), self.path)
        finally:
            Path(self._temp).unlink(missing_ok=True)  # gone already once committed


def write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an ``.npz`` written by truthserum, or None if it is missing or unreadable
    (or not a regular file: a pipe would block the read)."""
    if not Path(path).is_file():
        return None
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


def training_part(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the keys that do not change what is trained: those that only
    change how signals are scored or stored (``SCORING_KEYS``, ``query.signals_dtype``: the
    logits file is rebuilt from the shards on every run), and the paths of the inputs
    (``PATH_KEYS``), whose contents the run directory's fingerprints compare instead."""
    part = copy.deepcopy({key: value for key, value in config.items() if key not in SCORING_KEYS})
    if isinstance(part.get("query"), dict):
        part["query"].pop("signals_dtype", None)
    for dotted in PATH_KEYS:
        *sections, leaf = dotted.split(".")
        parent: Any = part
        for name in sections:
            parent = parent.get(name) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(leaf, None)
    return part


def _with_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config with every current default filled in, so that a run directory made
    before a key existed (``task``, say) still matches a config that spells the default out."""
    try:
        return parse_config(stored, source=CONFIG_FILE).to_json_dict()
    except ConfigError:
        return stored  # compared as it is; the differences name what no longer fits


def _check_stored_config(root: Path, config: RunConfig, record_scoring: bool) -> bool:
    """Compare ``config`` with the one ``root`` recorded; True when only scoring settings or
    input paths differ and ``record_scoring`` asks for them to be recorded.

    Raises:
        RunDirError: the recorded config is unreadable or trains something else.
    """
    config_path = root / CONFIG_FILE
    if not config_path.is_file():
        return False
    try:
        stored = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunDirError(f"{config_path}: unreadable ({reason}); use another out_dir") from None
    stored = _with_defaults(stored if isinstance(stored, dict) else {})
    wanted = config.to_json_dict()
    differences = config_differences(training_part(stored), training_part(wanted))
    if differences:
        raise RunDirError(
            f"{root} was made by a different config ({'; '.join(_cut(d) for d in differences[:3])}"
            f"{'; ...' if len(differences) > 3 else ''}); use another out_dir or delete it"
        )
    return record_scoring and stored != wanted  # only scoring settings or paths differ


def _cut(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Files a run derives from its stage files on every run; with ``report_to`` they are written
# there instead of into the run directory.
_REPORT_PREFIXES = ("signals-", "scores-", "completions-", "poisons-", "results", "sweep-", CONFIG_FILE)
_REPORT_SUFFIXES = (".png", ".html")


def is_report_file(name: str) -> bool:
    """Whether ``name`` (relative to the run directory) is derived again on every run."""
    return "/" not in name and (name.startswith(_REPORT_PREFIXES) or name.endswith(_REPORT_SUFFIXES))


REPORT_MARK = ".truthserum-report"  # in a report_to directory: the run directory it re-reports

# Run directories being re-reported in this context: nothing may be written under them (see
# refuse_writes_under). A context variable, not a global, so that threads and tasks keep theirs.
_READ_ONLY_ROOTS: ContextVar[tuple[Path, ...]] = ContextVar("read_only_roots", default=())


def refuse_writes_under(path: Path) -> None:
    """Raise if ``path`` lies in a run directory that is only being re-reported (``report_to``):
    a stage file missing or damaged there would otherwise be made again inside it.

    Raises:
        RunDirError: naming the run directory and the file.
    """
    for root in _READ_ONLY_ROOTS.get():
        resolved = Path(path).resolve()
        if resolved == root or root in resolved.parents:
            raise RunDirError(f"{root}: not a finished run ({resolved.relative_to(root)} is missing or damaged), so "
                              "re-reporting it would write into it; resume it without report_to first")


def holds_only_scratch(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but temporaries and a lock file (or does not exist)."""
    return not folder.is_dir() or all(p.name.startswith(_TEMP_PREFIX) or p.name == LOCK_FILE for p in folder.iterdir())


class RunDirectory:
    """A run directory bound to one config; see the module docstring for its layout.

    :meth:`open` locks it (:class:`~truthserum.store.lock.RunLock`) until :meth:`close` (or the
    end of a ``with`` block): one run per directory at a time.

    With ``output`` set (``report_to``), the run directory is only read: the files a run
    derives again every time (signals, scores, results, plots, the config they were made
    with) go to ``output``; the stage files (design, poisons, shards) are read from ``root``,
    and any write into ``root`` is refused (:func:`refuse_writes_under`).
    """

    def __init__(self, root: Path, *, output: Path | None = None, locks: tuple[RunLock, ...] = ()):
        self.root = Path(root)
        self.output = self.root if output is None else Path(output)
        self._locks = locks
        self._config_to_record: str | None = None
        self._read_only_token: Token | None = None

    @property
    def read_only(self) -> bool:
        """Whether the run directory is only read (re-reported elsewhere)."""
        return self.output != self.root

    @classmethod
    def open(cls, root: Path, config: RunConfig, *, record_scoring: bool = True,
             report_to: Path | None = None) -> RunDirectory:
        """Create ``root`` for ``config``, or reopen it if ``config`` made it, and lock it.

        A config that differs only in scoring settings (``SCORING_KEYS``) or in the paths of
        its inputs (``PATH_KEYS``: the data are compared by fingerprint when the task resumes)
        reopens it too; with ``record_scoring`` its settings replace the stored ones when the
        caller calls :meth:`record_config`, after checking its inputs' fingerprints (the caller
        rewrites results.json with them).

        With ``report_to``, ``root`` must be a run directory made by ``config``; it is only
        read (under a shared lock, so it may be on a read-only medium), and what the run writes
        goes to ``report_to`` (see the class docstring).

        Raises:
            RunDirError: ``root`` is a file, a non-empty folder that is not a run directory,
                a run directory made by a different config, or in use by another run.
        """
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise RunDirError(f"{root}: exists and is not a directory")
        if report_to is not None:
            return cls._open_for_report(root, config, Path(report_to))
        config_path = root / CONFIG_FILE
        if not config_path.is_file() and not holds_only_scratch(root):
            raise RunDirError(
                f"{root}: not empty and holds no {CONFIG_FILE}, so it is not a truthserum run "
                "directory; use another out_dir"
            )
        _check_stored_config(root, config, record_scoring)  # a refusal here leaves even the lock file be
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock = RunLock(root).acquire()
        except OSError as exc:
            hint = ("; report_to re-reports a finished run without writing into it"
                    if config_path.is_file() and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "")
            raise RunDirError(f"{root}: cannot write ({exc.strerror or exc}){hint}") from None
        run_dir = cls(root, locks=(lock,))
        try:
            lock.announce()
            # again under the lock: another run may have made the directory meanwhile
            if _check_stored_config(root, config, record_scoring):
                run_dir._config_to_record = dump_config(config)  # recorded once the fingerprints matched
            run_dir._remove_temporaries()  # under the lock: no other live run has any
            if not config_path.is_file():
                write_text(config_path, dump_config(config))
        except BaseException:
            run_dir.close()
            raise
        return run_dir

    @classmethod
    def _open_for_report(cls, root: Path, config: RunConfig, output: Path) -> RunDirectory:
        if not (root / CONFIG_FILE).is_file():
            raise RunDirError(f"{root}: not a truthserum run directory (no {CONFIG_FILE}); report_to re-reports one")
        source, target = root.resolve(), output.resolve()
        if target == source or source in target.parents or target in source.parents:
            raise RunDirError(f"{output}: report_to must lie outside the run directory {root} (and not around it)")
        if output.exists() and not output.is_dir():
            raise RunDirError(f"{output}: exists and is not a directory")
        if not holds_only_scratch(output) and not (output / REPORT_MARK).is_file():
            raise RunDirError(f"{output}: not empty and not an earlier report (no {REPORT_MARK}); give report_to "
                              "an empty or new directory")
        _check_stored_config(root, config, record_scoring=False)
        reading = RunLock(root, shared=True)
        try:
            reading.acquire()
        except OSError as exc:
            raise RunDirError(f"{root}: cannot read its lock ({exc.strerror or exc})") from None
        run_dir = cls(root, output=output, locks=(reading,))
        try:
            try:
                output.mkdir(parents=True, exist_ok=True)
                writing = RunLock(output).acquire()
            except OSError as exc:
                raise RunDirError(f"{output}: cannot write ({exc.strerror or exc})") from None
            run_dir._locks = (reading, writing)
            writing.announce()
            for earlier in output.iterdir():  # an earlier report's files, and any temporaries
                if earlier.is_file() and (is_report_file(earlier.name) or earlier.name.startswith(_TEMP_PREFIX)):
                    earlier.unlink()
            write_text(output / REPORT_MARK, f"{source}\n")
            write_text(output / CONFIG_FILE, dump_config(config))
            run_dir._read_only_token = _READ_ONLY_ROOTS.set((*_READ_ONLY_ROOTS.get(), source))
        except BaseException:
            run_dir.close()
            raise
        return run_dir

    def record_config(self) -> None:
        """Write the config :meth:`open` was given over the stored one, where they differ in
        scoring settings or input paths only: called once the inputs' fingerprints matched."""
        if self._config_to_record is not None:
            write_text(self.root / CONFIG_FILE, self._config_to_record)
            self._config_to_record = None

    def close(self) -> None:
        """Release the run directory's lock (the kernel does it too if the process dies)."""
        if self._read_only_token is not None:
            _READ_ONLY_ROOTS.reset(self._read_only_token)
            self._read_only_token = None
        for lock in self._locks:
            lock.release()

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _remove_temporaries(self) -> None:
        for leftover in self.root.rglob(_TEMP_PREFIX + "*"):
            leftover.unlink(missing_ok=True)

    def file(self, name: str) -> Path:
        """Where ``name`` is read and written (a derived file goes to ``output``)."""
        return self.output / name if is_report_file(name) else self.root / name

    def shard_file(self, condition: str, first: int, last: int) -> Path:
        """The shard holding models ``first..last`` (inclusive) of ``condition``."""
        return self.root / "shards" / condition / f"models-{first:04d}-{last:04d}.npz"
