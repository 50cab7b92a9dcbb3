"""Reading ``.npz`` files that users hand us, without ever unpickling anything."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from truthserum.errors import TruthserumError

_ZIP_MAGIC = b"PK\x03\x04"


def read_user_npz(
    path: Path, *, required: tuple[str, ...], error: type[TruthserumError]
) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, loaded with ``allow_pickle=False``.

    Raises:
        error: naming the file and the problem: missing, not a zip archive, an object array
            (which would need unpickling), a truncated member, or a missing required array.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a directory, not an .npz file")
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(_ZIP_MAGIC))
        if magic != _ZIP_MAGIC:
            # np.load would take any other file for a pickle; refuse it before that.
            raise error(f"{path}: not a readable .npz file (not a zip archive)")
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in required if key not in archive.files]
            if missing:
                raise error(f"{path}: missing array(s) {missing}; found {sorted(archive.files)}")
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, EOFError) as exc:
        raise error(f"{path}: not a readable .npz file ({exc})") from None
    except ValueError as exc:  # object arrays under allow_pickle=False, corrupt headers
        raise error(f"{path}: cannot read arrays safely ({exc})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read file ({exc.strerror or exc})") from None
