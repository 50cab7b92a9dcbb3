"""One run per directory: an OS lock on the run directory's ``.lock`` file.

The lock is ``flock(2)`` on an open descriptor, so the kernel releases it when the process
ends however it ends (a crash, ``kill -9``, a lost machine): a killed run never leaves a stale
lock behind, and the file itself staying in place means nothing. The holder writes its process
id, host and command into the file, so that a second run can say who holds it.

Why not the ``filelock`` package (installed with torch): its Unix lock truncates the file on
every attempt and records no holder, and a message that names the other process is the point.

Where ``fcntl`` does not exist (Windows) runs are not locked; the run directory's own files
are still written atomically.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time
from pathlib import Path

from truthserum.errors import RunDirError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
_CONTENDED = {errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK}
_MAX_HOLDER_TEXT = 300


def _holder_text() -> str:
    command = " ".join(os.path.basename(part) if i == 0 else part for i, part in enumerate(sys.argv))
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    return f"pid {os.getpid()} on {socket.gethostname()} since {started}: {command}"[:_MAX_HOLDER_TEXT]


class RunLock:
    """The lock of one run directory, held from :meth:`acquire` until :meth:`release`.

    ``shared`` takes a shared lock instead (readers that write nothing into the directory):
    any number of them may hold it together, never beside a writer.
    """

    def __init__(self, root: Path, *, shared: bool = False):
        self.path = Path(root) / LOCK_FILE
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock at once, or refuse.

        Raises:
            RunDirError: another process holds it (the message names that process), or the
                lock file cannot be opened (a writer's lock on a read-only folder).
        """
        if fcntl is None or self._fd is not None:
            return self
        flags = os.O_RDONLY if self.shared else os.O_RDWR | os.O_CREAT
        try:
            fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileNotFoundError:
            if self.shared:  # nobody ever wrote here, so nobody writes now
                return self
            raise
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _CONTENDED:
                raise
            raise RunDirError(f"{self.path.parent}: another truthserum run is using it ({self.holder()}); "
                              "wait for it to finish, or use another out_dir") from None
        self._fd = fd
        return self

    def announce(self) -> None:
        """Write who holds the lock (pid, host, start, command) into the lock file, for the
        message of a run refused meanwhile. Separate from :meth:`acquire` so that a run refused
        for another reason (a different config) leaves the file as it was."""
        if self._fd is None or self.shared:
            return
        try:
            os.ftruncate(self._fd, 0)
            os.write(self._fd, (_holder_text() + "\n").encode("utf-8", "replace"))
        except OSError:
            pass  # who holds it is a courtesy; the lock itself is what counts

    def holder(self) -> str:
        """What the holder wrote into the lock file (its pid, host, start and command)."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            text = ""
        return text[:_MAX_HOLDER_TEXT] or "a process that has not yet said which"

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> RunLock:
        self.acquire().announce()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
