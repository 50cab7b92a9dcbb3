"""Reading ``.npz`` files that users hand us, without ever unpickling anything."""

from __future__ import annotations

import math
import stat
import zipfile
from pathlib import Path

import numpy as np

from truthserum.errors import TruthserumError

_ZIP_MAGIC = b"PK\x03\x04"
# deflate's best ratio is about 1032:1, so a member claiming more than this many bytes per
# stored byte is lying (or a zip bomb), and is refused before anything is allocated for it
_MAX_DEFLATE_RATIO = 1100


def refuse_special_file(path: Path, source: str, error: type[TruthserumError]) -> None:
    """Refuse ``path`` if it exists and is neither a folder nor a regular file: reading a named
    pipe blocks until someone writes to it, and a device may never end."""
    path = Path(path)
    if path.exists() and not path.is_dir() and not path.is_file():
        raise error(f"{source}: not a regular file (a pipe, device or socket)")


def require_regular_file(path: Path, what: str, error: type[TruthserumError]) -> Path:
    """``path`` if it is a regular file (or a link to one); a named pipe, a device or a socket
    would block or never end, so it is refused before anything opens it.

    Raises:
        error: naming the file and what it is instead.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a directory, not {what}")
    if not stat.S_ISREG(mode):
        raise error(f"{path}: not a regular file (a pipe, device or socket), so not {what}")
    return path


def _check_member_sizes(path: Path, error: type[TruthserumError]) -> None:
    """Compare what each member's header claims with what the file holds, before numpy
    allocates an array of the claimed shape: a truncated or forged header is refused here,
    not met as an out-of-memory error."""
    file_size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if info.compress_size > file_size:
                raise error(f"{path}: member {name} claims {info.compress_size:,} bytes but the file has "
                            f"{file_size:,}; it is truncated or damaged")
            ratio_limit = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
            if info.file_size > ratio_limit * info.compress_size + 4096:
                raise error(f"{path}: member {name} claims {info.file_size:,} bytes from {info.compress_size:,} "
                            "stored; it is damaged or forged")
            if not name.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
            if dtype.hasobject:
                continue  # refused by np.load itself (no pickles)
            claimed = math.prod(shape) * dtype.itemsize
            if claimed > info.file_size:
                raise error(f"{path}: array {name[:-4]} claims shape {shape} of {dtype} ({claimed:,} bytes) but "
                            f"holds {info.file_size:,} bytes; it is truncated or its header is wrong")


def read_user_npz(
    path: Path, *, required: tuple[str, ...], error: type[TruthserumError]
) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, loaded with ``allow_pickle=False``.

    Raises:
        error: naming the file and the problem: missing, not a regular file, not a zip
            archive, an object array (which would need unpickling), a member whose header
            claims more than the file holds, or a missing required array.
    """
    path = require_regular_file(Path(path), "an .npz file", error)
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_ZIP_MAGIC))
        if magic != _ZIP_MAGIC:
            # np.load would take any other file for a pickle; refuse it before that.
            raise error(f"{path}: not a readable .npz file (not a zip archive)")
        _check_member_sizes(path, error)
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in required if key not in archive.files]
            if missing:
                raise error(f"{path}: missing array(s) {missing}; found {sorted(archive.files)}")
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, EOFError) as exc:
        raise error(f"{path}: not a readable .npz file ({exc})") from None
    except ValueError as exc:  # object arrays under allow_pickle=False, corrupt or oversized headers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{path}: cannot read arrays safely ({first})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read file ({exc.strerror or exc})") from None
