"""The bad-input corpus (tests/bad_input_cases.py) through the command line.

The rule (docs/usage.md): a user's mistake gets exactly one line on stderr, starting
``truthserum: error: `` and naming the problem, and exit status 2: never a traceback, never a
Python warning, never a hang, and nothing already on disk changed. Every case must fail before
anything is trained.

Most cases run ``truthserum.cli.main`` in this process. A Python warning would not reach stderr
under pytest (pytest records warnings), so each case records them with Python's default filters
and counts each as the stderr line it would be. The cases that involve a named pipe (a reader
blocks until a writer comes) or a YAML alias bomb run ``main`` in forked children instead: all
forked when this module starts (torch already imported, so they start at once), each killed
after 20 s and reported as a hang.

A finished tiny run directory (the guard) is made once; its sha256 checksums are taken before
the corpus, compared after every case, and once more after all of them. Every case's own input
files must be byte for byte what its builder wrote.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bad_input_cases import CASES, IN_CHILD, IN_PROCESS, MARKER, Case, Ctx
from conftest import TINY_CONFIG

ERROR_PREFIX = "truthserum: error: "
CHILD_TIMEOUT = 20  # seconds a child may take once torch is imported


def test_the_corpus_is_large():
    assert len(CASES) >= 110


# --------------------------------------------------------------------------------------------
# What is on disk


# A run directory's lock file (truthserum.store.lock): its text is a note of the last holder
# (pid, host, time, command), rewritten by every command that takes the lock, so it is not
# compared; instead it must not be left locked (see unlocked()).
LOCK_FILE = ".lock"


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every regular file under ``root`` but its lock file, by relative path."""
    sums = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if stat.S_ISREG(path.lstat().st_mode) and path.relative_to(root) != Path(LOCK_FILE):
                sums[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def unlocked(root: Path) -> bool:
    """Nobody holds the run directory's lock (a flock taken and never released would keep every
    later command out): True when we can take it at once."""
    from truthserum.errors import RunDirError
    from truthserum.store.lock import RunLock

    if not (root / LOCK_FILE).exists():
        return True
    try:
        RunLock(root).acquire().release()
    except RunDirError:
        return False
    return True


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (named pipes and folders left out), by relative path."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if stat.S_ISREG(path.lstat().st_mode):
                files[str(path.relative_to(root))] = path.read_bytes()
    return files


def changed(before: dict, after: dict) -> list[str]:
    """What differs between two listings: files changed, removed, or added."""
    return ([f"changed {name}" for name in sorted(before) if name in after and after[name] != before[name]]
            + [f"removed {name}" for name in sorted(before) if name not in after]
            + [f"added {name}" for name in sorted(after) if name not in before])


@dataclass
class Guard:
    root: Path
    sums: dict[str, str]


@pytest.fixture(scope="module")
def guard(tmp_path_factory, request) -> Guard:
    """A finished tiny run (TINY_CONFIG), made once; its checksums before any case ran.

    In one process it forks the ``children`` first, so that they run (or hang) while the corpus
    does; under pytest-xdist only the worker that runs their tests forks them."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        request.getfixturevalue("children")
    from truthserum.config import parse_config
    from truthserum.tasks.membership import run_experiment

    root = tmp_path_factory.mktemp("guard") / "run"
    run_experiment(parse_config(TINY_CONFIG), root, progress=False, log=lambda _: None)
    sums = checksums(root)
    assert "results.json" in sums and any(name.startswith("shards") for name in sums)
    return Guard(root, sums)


# --------------------------------------------------------------------------------------------
# The checks every case passes through


@dataclass
class Outcome:
    returncode: int | None  # None: it hung
    stdout: str
    stderr: str
    escaped: str | None = None  # an exception that main let through, as a traceback


def rule_problems(case: Case, done: Outcome) -> list[str]:
    """How ``done`` breaks the rule for bad input, if it does."""
    if done.returncode is None:
        return [f"hang: no exit within {CHILD_TIMEOUT} s"]
    problems = []
    if done.escaped is not None:
        problems.append("an exception escaped main:\n" + done.escaped[-1500:])
    if done.returncode != 2:
        problems.append(f"exit status {done.returncode}, not 2")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, not 1")
    if lines and not lines[0].startswith(ERROR_PREFIX):
        problems.append(f"stderr does not start with {ERROR_PREFIX!r}")
    line = next((line for line in lines if line.startswith(ERROR_PREFIX)), "")
    if case.fragment.lower() not in line.lower():
        problems.append(f"the error line lacks {case.fragment!r}")
    if len(line) >= case.max_line:
        problems.append(f"the error line is {len(line):,} characters (limit {case.max_line})")
    if "Traceback" in done.stdout or "Traceback" in done.stderr:
        problems.append("a traceback was printed")
    return problems


def disk_problems(ctx: Ctx, inputs: dict[str, bytes], guard: Guard, guard_before: dict[str, str]) -> list[str]:
    problems = []
    after = snapshot(ctx.root)
    damaged = [name for name in changed(inputs, after) if not name.startswith("added")]
    if damaged:
        problems.append("its input files were touched: " + ", ".join(damaged[:5]))
    trained = [name for name in after if name not in inputs and ("shards" + os.sep) in name]
    if trained:
        problems.append("it trained before failing: " + ", ".join(trained[:3]))
    if (ctx.root / MARKER).exists():
        problems.append("something in its inputs was unpickled")
    guard_changes = changed(guard_before, checksums(guard.root))
    if guard_changes:
        problems.append("the finished run directory changed: " + ", ".join(guard_changes[:5]))
    if not unlocked(guard.root):
        problems.append("the finished run directory was left locked")
    return problems


def report(done: Outcome, problems: list[str]) -> str:
    rc = "hang" if done.returncode is None else done.returncode
    return (f"rc={rc} stderr[:300]={done.stderr[:300]!r}\n" + "\n".join(f"- {p}" for p in problems))


# --------------------------------------------------------------------------------------------
# In this process

# Python's default warning filters: what a user running the command would see.
_HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def call_main(argv: list[str]) -> tuple[int, str | None, str]:
    """``main(argv)``: its exit status, the traceback of an exception it let through (None if
    none), and the warnings it raised as Python's default filters would print them."""
    from truthserum.cli import main

    escaped = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for category in _HIDDEN_BY_DEFAULT:
            warnings.filterwarnings("ignore", category=category)
        try:
            returncode = main(argv)
        except SystemExit as exc:  # argparse
            returncode = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            escaped = traceback.format_exc()
            returncode = 1
    printed = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line) for w in caught)
    return returncode, escaped, printed


def run_in_process(capsys, argv: list[str]) -> Outcome:
    capsys.readouterr()
    returncode, escaped, printed = call_main(argv)
    out, err = capsys.readouterr()
    return Outcome(returncode, out, err + printed, escaped)


@pytest.mark.parametrize("case", IN_PROCESS, ids=[case.id for case in IN_PROCESS])
def test_bad_input_is_one_line_and_status_2(case: Case, guard: Guard, tmp_path, capsys, monkeypatch):
    ctx = Ctx(root=tmp_path / "case", guard=guard.root)
    ctx.root.mkdir()
    monkeypatch.chdir(ctx.root)  # anything written to a relative path stays in the case's folder
    guard_before = checksums(guard.root)
    try:
        argv = case.build(ctx)
        inputs = snapshot(ctx.root)
        done = run_in_process(capsys, argv)
    finally:
        for cleanup in ctx.cleanups:
            cleanup()
    problems = rule_problems(case, done) + disk_problems(ctx, inputs, guard, guard_before)
    assert not problems, report(done, problems)


# --------------------------------------------------------------------------------------------
# In child processes: named pipes and the alias bomb


@dataclass
class Child:
    case: Case
    ctx: Ctx
    inputs: dict[str, bytes]
    fifos: list[Path]
    pid: int
    output: Path  # where the child's stdout and stderr go: output/out, output/err
    thread: threading.Thread | None = None
    outcome: Outcome | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # kill it now: its test is not run


def _fork_main(argv: list[str], cwd: Path, output: Path) -> int:
    """``main(argv)`` in a forked child (torch is imported already, so it starts at once), its
    stdout and stderr in files under ``output``, warnings written as the command would write
    them; returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    returncode = 1
    try:  # the child: never return into pytest
        os.chdir(cwd)
        for fd, name in ((1, "out"), (2, "err")):
            target = os.open(output / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        returncode, escaped, printed = call_main(argv)
        sys.stderr.write((escaped or "") + printed)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(returncode)


def _watch(child: Child, deadline: float) -> None:
    """Reap the child, or kill it at ``deadline`` (a hang) or when told to stop."""
    hung = False
    while True:
        pid, status = os.waitpid(child.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline or child.stop.is_set():
            os.kill(child.pid, signal.SIGKILL)  # not reaped yet, so the pid is still the child's
            _, status = os.waitpid(child.pid, 0)
            hung = True
            break
        time.sleep(0.05)
    out = (child.output / "out").read_text(errors="replace")
    err = (child.output / "err").read_text(errors="replace")
    child.outcome = Outcome(None if hung else os.waitstatus_to_exitcode(status), out, err)


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Every child case, forked together when the module starts, so that their waiting (or
    hanging) overlaps the in-process corpus; a thread per child reaps it, or kills it after
    CHILD_TIMEOUT seconds."""
    import truthserum.cli
    import truthserum.train.executors  # torch: imported once, before forking

    assert truthserum.cli.main and truthserum.train.executors.LocalBackend

    forked = {}
    for case in IN_CHILD:
        root = tmp_path_factory.mktemp(case.id)
        ctx = Ctx(root=root / "case", guard=root / "no-guard")
        ctx.root.mkdir()
        output = root / "output"
        output.mkdir()
        argv = case.build(ctx)
        inputs = snapshot(ctx.root)
        fifos = [path for path in ctx.root.rglob("*") if path.is_fifo()]
        forked[case.id] = Child(case, ctx, inputs, fifos, _fork_main(argv, ctx.root, output), output)
    for child in forked.values():  # threads only after every fork
        child.thread = threading.Thread(target=_watch, args=(child, time.monotonic() + CHILD_TIMEOUT), daemon=True)
        child.thread.start()
    yield forked
    for child in forked.values():  # those whose tests were not selected
        child.stop.set()
        child.thread.join(timeout=10)


@pytest.mark.parametrize("case", IN_CHILD, ids=[case.id for case in IN_CHILD])
def test_named_pipes_and_alias_bombs_in_a_child(case: Case, children):
    child = children[case.id]
    child.thread.join(timeout=CHILD_TIMEOUT + 10)
    assert child.outcome is not None, f"{case.id}: the child was neither reaped nor killed"
    done = child.outcome
    problems = rule_problems(case, done)
    touched = [name for name in changed(child.inputs, snapshot(child.ctx.root)) if not name.startswith("added")]
    if touched:
        problems.append("its input files were touched: " + ", ".join(touched[:5]))
    lost = [path.name for path in child.fifos if not path.is_fifo()]
    if lost:
        problems.append("its named pipes were replaced: " + ", ".join(lost))
    if (child.ctx.root / MARKER).exists():
        problems.append("something in its inputs was unpickled")
    assert not problems, report(done, problems)


# --------------------------------------------------------------------------------------------
# After every case


def test_the_finished_run_is_untouched_after_the_whole_corpus(guard: Guard):
    from truthserum.tasks.results import RunResults

    assert not changed(guard.sums, checksums(guard.root))
    assert unlocked(guard.root)
    assert RunResults.read(guard.root).conditions  # still a readable run
