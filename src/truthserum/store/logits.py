"""Stage 5's output for large audits: the logits of every model on every point, on disk.

The logits of M models on N points with A query views and C classes are M*N*A*C numbers:
1 GB in float32 for M = 256, N = 50,000, A = 2, C = 10. A :class:`LogitStore` keeps them in
a standard ``.npy`` file (C order, shape ``(M, N, A, C)``), so ``np.load(path,
mmap_mode="r")`` maps it, and every stage reads only a chunk of points at a time.

Reads and writes go through positioned file I/O rather than through a memory map: the pages a
memory map has touched count as the process's resident memory until it is unmapped, so
streaming through a mapped 1 GB file would show 1 GB resident, the very thing the streaming
avoids. A chunk of points is one contiguous run of bytes per model.

float16 halves the file. Its 11-bit mantissa rounds a logit of size 10 to within 0.004; the
effect on the attack scores is measured by ``benchmarks/scoring_memory.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from truthserum.errors import SignalsError

DEFAULT_CHUNK_POINTS = 2048
_RUN_GAP = 64  # points between two wanted columns read through rather than skipped


def chunk_points() -> int:
    """Points processed together by every chunked step (read at call time, so tests can make
    it small)."""
    return DEFAULT_CHUNK_POINTS


class LogitDtype(str, Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"


def _header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


@dataclass(frozen=True)
class LogitStore:
    """An ``(M, N, A, C)`` float ``.npy`` file read and written in chunks of points."""

    path: Path
    shape: tuple[int, int, int, int]
    dtype: np.dtype
    offset: int  # bytes before the data

    @classmethod
    def create(cls, path: Path, shape: tuple[int, int, int, int], dtype: LogitDtype) -> LogitStore:
        """A new file of the full size (sparse until written), header first."""
        np_dtype = np.dtype(dtype.value)
        header = _header(tuple(int(n) for n in shape), np_dtype)
        size = len(header) + int(np.prod(shape)) * np_dtype.itemsize
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            handle.write(header)
            handle.truncate(size)
        return cls(path=path, shape=tuple(int(n) for n in shape), dtype=np_dtype, offset=len(header))

    @classmethod
    def open(cls, path: Path) -> LogitStore:
        """An existing store; raises :class:`SignalsError` for anything but a 4-D float32 or
        float16 C-order ``.npy`` of the right size (never unpickles: no object dtype)."""
        path = Path(path)
        try:
            with path.open("rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(handle)
                offset = handle.tell()
        except FileNotFoundError:
            raise SignalsError(f"{path}: no such file") from None
        except (OSError, ValueError) as exc:
            raise SignalsError(f"{path}: not a readable .npy file ({exc})") from None
        if fortran or dtype not in (np.dtype(np.float32), np.dtype(np.float16)) or len(shape) != 4:
            raise SignalsError(
                f"{path}: logits must be a C-order float32 or float16 array (M, N, A, C), "
                f"got {dtype} {shape}{' in Fortran order' if fortran else ''}"
            )
        expected = offset + int(np.prod(shape)) * dtype.itemsize
        if path.stat().st_size != expected:
            raise SignalsError(f"{path}: {path.stat().st_size} bytes, expected {expected} for {shape} {dtype}")
        return cls(path=path, shape=tuple(shape), dtype=dtype, offset=offset)

    @property
    def num_models(self) -> int:
        return self.shape[0]

    @property
    def num_points(self) -> int:
        return self.shape[1]

    @property
    def ndim(self) -> int:
        return 4

    def _row_bytes(self) -> int:
        return self.shape[2] * self.shape[3] * self.dtype.itemsize  # one (model, point)

    def write_models(self, first: int, logits: np.ndarray) -> None:
        """Store models ``first .. first + len(logits) - 1`` (contiguous in the file)."""
        if logits.shape[1:] != self.shape[1:] or first < 0 or first + logits.shape[0] > self.shape[0]:
            raise ValueError(f"logits {logits.shape} do not fit models {first}.. of {self.shape}")
        if self.dtype == np.float16 and np.abs(logits).max(initial=0.0) > np.finfo(np.float16).max:
            raise SignalsError(
                f"{self.path.name}: a logit of size {float(np.abs(logits).max()):.3g} does not fit float16; "
                "set query.signals_dtype: float32"
            )
        data = np.ascontiguousarray(logits, dtype=self.dtype)
        start = self.offset + first * self.shape[1] * self._row_bytes()
        fd = os.open(self.path, os.O_WRONLY)
        try:
            view = memoryview(data).cast("B")
            while view:
                try:
                    written = os.pwrite(fd, view, start)
                except OSError as exc:  # a full disk: pwrite names no file
                    raise OSError(exc.errno, exc.strerror, str(self.path)) from None
                view, start = view[written:], start + written
        finally:
            os.close(fd)

    def read_points(self, start: int, stop: int) -> np.ndarray:
        """``(M, stop - start, A, C)`` float32: the points ``start .. stop - 1`` of every model."""
        count = stop - start
        row = self._row_bytes()
        out = np.empty((self.shape[0], count, *self.shape[2:]), dtype=self.dtype)
        with self.path.open("rb") as handle:
            for model in range(self.shape[0]):
                handle.seek(self.offset + (model * self.shape[1] + start) * row)
                if handle.readinto(memoryview(out[model]).cast("B")) != count * row:
                    raise SignalsError(f"{self.path}: truncated")
        return out.astype(np.float32, copy=False)

    def __getitem__(self, index: tuple) -> np.ndarray:
        """``store[:, columns]``: every model on the given point indices, as float32."""
        if not (isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None)):
            raise TypeError("a LogitStore is indexed as store[:, columns]")
        columns = np.asarray(index[1], dtype=np.int64)
        out = np.empty((self.shape[0], columns.size, *self.shape[2:]), dtype=np.float32)
        if columns.size == 0:
            return out
        if columns.min() < 0 or columns.max() >= self.shape[1]:
            raise IndexError(f"point index out of range 0..{self.shape[1] - 1}")
        # read runs of nearby columns, so that scattered columns never pull in what lies between
        order = np.argsort(columns, kind="stable")
        ordered = columns[order]
        breaks = np.nonzero(np.diff(ordered) > _RUN_GAP)[0] + 1
        for run in np.split(np.arange(columns.size), breaks):
            # a long run of sparse columns (every 50th point, say) is read a span at a time
            spans = (ordered[run] - ordered[run[0]]) // (2 * chunk_points())
            for span in np.split(run, np.nonzero(np.diff(spans))[0] + 1):
                low, high = int(ordered[span[0]]), int(ordered[span[-1]]) + 1
                out[:, order[span]] = self.read_points(low, high)[:, ordered[span] - low]
        return out


def position_chunks(count: int, chunk: int | None = None) -> list[np.ndarray]:
    """``0 .. count - 1`` in consecutive chunks of :func:`chunk_points` (or ``chunk``)."""
    chunk = chunk or chunk_points()
    return [np.arange(start, min(start + chunk, count)) for start in range(0, count, chunk)]


def column_chunks(
    logits: np.ndarray | LogitStore, columns: np.ndarray, chunk: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yields ``(positions, logits[:, columns[positions]])`` over ``columns`` in chunks.

    Columns are visited in ascending order, so that each chunk of a store is one short run of
    bytes per model and a whole pass reads the file once, whatever order ``columns`` has.
    """
    chunk = chunk or chunk_points()
    order = np.argsort(columns, kind="stable")
    for begin in range(0, columns.size, chunk):
        positions = order[begin:begin + chunk]
        yield positions, np.asarray(logits[:, columns[positions]])


# The largest logit size taken: trained models' logits are tens or hundreds; past a million,
# float32 (the attacks' arithmetic) keeps no fraction of a logit, and float64 files of 1e308
# would overflow float32 (to inf, with numpy warnings) before any check could name them.
MAX_ABS_LOGIT = 1e6


def check_finite(logits: np.ndarray | LogitStore, *, source: str, max_abs: float | None = MAX_ABS_LOGIT) -> None:
    """Raise :class:`SignalsError` if any logit is NaN, infinite or larger than ``max_abs`` in
    size (None: no limit), read chunk by chunk."""
    for _, values in column_chunks(logits, np.arange(logits.shape[1])):
        if not np.isfinite(values).all():
            raise SignalsError(f"{source}: logits contain NaN or inf")
        if max_abs is not None and np.abs(values).max(initial=0.0) > max_abs:
            raise SignalsError(f"{source}: logits must be at most {max_abs:g} in size, found "
                               f"{float(np.abs(values).max()):.3g}")
