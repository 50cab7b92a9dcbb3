"""One run per directory: an OS lock on the run directory's ``.lock`` file.

The lock is ``flock(2)`` on an open descriptor, so the kernel releases it when the process
ends however it ends (a crash, ``kill -9``, a lost machine): a killed run never leaves a stale
lock behind, and the file itself staying in place means nothing. The holder writes its process
id, host and command into the file, so that a second run can say who holds it.

Why not the ``filelock`` package (installed with torch): its Unix lock truncates the file on
every attempt and records no holder, and a message that names the other process is the point.

Where ``fcntl`` does not exist (Windows), or the file system cannot lock, runs are not locked;
the run directory's own files are still written atomically. A child process forked (not
exec'd) while the lock is held holds it too until it exits; truthserum forks none.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
import time
from pathlib import Path

from truthserum.errors import RunDirError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
_CONTENDED = {errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK}  # EACCES: some file systems say so
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_MAX_HOLDER_TEXT = 300
# Every open of the lock file: no link followed, no pipe waited on, not inherited by an exec
# (getattr: Windows has none of them, and takes no lock anyway).
_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


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

        Where the file system cannot lock (NFS without a lock daemon, some FUSE mounts) the
        run goes on unlocked, as on Windows; a shared lock where the lock file can neither be
        opened nor made (a read-only medium) is not needed, since nobody can write there.

        Raises:
            RunDirError: another process holds it (the message says who was recorded last), or
                the lock file is a link, a pipe or another non-regular file.
            OSError: the lock file cannot be made (an exclusive lock on a read-only folder).
        """
        if fcntl is None or self._fd is not None:
            return self
        # a copied tree's .lock could be a link pointing anywhere, or a pipe
        flags = os.O_CREAT | _OPEN_FLAGS
        try:
            fd = os.open(self.path, flags | (os.O_RDONLY if self.shared else os.O_RDWR), 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RunDirError(f"{self.path}: is a symbolic link, not a lock file; remove it") from None
            if self.shared and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return self
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RunDirError(f"{self.path}: is not a regular file, so not a lock file; remove it")
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _UNSUPPORTED:
                return self
            if exc.errno not in _CONTENDED:
                raise
            raise RunDirError(self._refusal()) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _refusal(self) -> str:
        """Why the lock was refused: a writer holds it, or only readers (re-reports) do."""
        if not self.shared and self._only_readers():
            return (f"{self.path.parent}: another truthserum process is re-reporting it (report_to); wait for it to "
                    "finish, or use another out_dir")
        return (f"{self.path.parent}: another truthserum run is using it (last recorded holder: {self.holder()}); "
                "wait for it to finish, or use another out_dir")

    def _only_readers(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | _OPEN_FLAGS)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

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
            fd = os.open(self.path, os.O_RDONLY | _OPEN_FLAGS)
            try:
                text = os.read(fd, _MAX_HOLDER_TEXT).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
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
