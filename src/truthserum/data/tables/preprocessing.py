"""Turning a :class:`Table` into model inputs, with every fitted quantity recorded.

The encoding is fitted once on the pool, written into the run (as JSON) and reapplied unchanged,
so that the models, the attack's candidate completions and any later audit all see the same
features. Layout of a row ``x``: standardized numeric columns, then one one-hot block per
categorical column in declared order, then the sensitive column's one-hot block last (when the
table has one), so that a candidate completion "this row with sensitive = v" only rewrites the
tail of the vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from truthserum.errors import DataError
from truthserum.data.tables.table import Table


@dataclass(frozen=True)
class NumericColumn:
    """A numeric column standardized as ``(v - mean) / scale``."""

    name: str
    mean: float
    scale: float  # population standard deviation over the pool; 1.0 when that is 0


@dataclass(frozen=True)
class CategoricalColumn:
    """A one-hot column; position in ``categories`` (sorted) is the value's code."""

    name: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class Preprocessing:
    """Everything needed to encode a table the same way again; ``sensitive`` is None for a
    table without a sensitive column."""

    numeric: tuple[NumericColumn, ...]
    categorical: tuple[CategoricalColumn, ...]
    sensitive: CategoricalColumn | None
    label: CategoricalColumn

    @property
    def one_hot(self) -> tuple[CategoricalColumn, ...]:
        """The one-hot blocks in the order of ``x``: categorical columns, then sensitive."""
        return (*self.categorical, *(() if self.sensitive is None else (self.sensitive,)))

    @property
    def feature_names(self) -> tuple[str, ...]:
        """One name per feature, ``"age"`` or ``"race=black"``, in the order of ``x``'s columns."""
        names = [col.name for col in self.numeric]
        for col in self.one_hot:
            names += [f"{col.name}={value}" for value in col.categories]
        return tuple(names)

    @property
    def num_features(self) -> int:
        return len(self.numeric) + sum(len(col.categories) for col in self.one_hot)

    @property
    def sensitive_slice(self) -> slice:
        """Where the sensitive one-hot block lies in a row (always the last block).

        Raises:
            DataError: when the table has no sensitive column.
        """
        sensitive = self.require_sensitive()
        return slice(self.num_features - len(sensitive.categories), self.num_features)

    def require_sensitive(self) -> CategoricalColumn:
        """The sensitive column, or a DataError when the table was encoded without one."""
        if self.sensitive is None:
            raise DataError("the table has no sensitive column (data.columns.sensitive), so it has no "
                            "candidate completions")
        return self.sensitive

    @property
    def num_classes(self) -> int:
        return len(self.label.categories)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON types; floats are written by ``json`` as their shortest repr, so they
        read back bit for bit."""

        def categorical(col: CategoricalColumn) -> dict[str, Any]:
            return {"name": col.name, "categories": list(col.categories)}

        return {
            "numeric": [{"name": col.name, "mean": col.mean, "scale": col.scale} for col in self.numeric],
            "categorical": [categorical(col) for col in self.categorical],
            "sensitive": None if self.sensitive is None else categorical(self.sensitive),
            "label": categorical(self.label),
        }

    @classmethod
    def from_json_dict(cls, data: Any, *, source: str) -> Preprocessing:
        """Rebuild a recorded preprocessing, checking its shape and types.

        Raises:
            DataError: naming the first malformed entry of the record.
        """
        _expect_keys(data, ("numeric", "categorical", "sensitive", "label"), "the record", source)
        if not isinstance(data["numeric"], list):
            _malformed(source, "numeric must be a list")
        if not isinstance(data["categorical"], list):
            _malformed(source, "categorical must be a list")
        numeric = tuple(
            _numeric_from_json(item, f"numeric[{i}]", source) for i, item in enumerate(data["numeric"])
        )
        categorical = tuple(
            _categorical_from_json(item, f"categorical[{i}]", source, minimum=1)
            for i, item in enumerate(data["categorical"])
        )
        sensitive = (
            None if data["sensitive"] is None
            else _categorical_from_json(data["sensitive"], "sensitive", source, minimum=2)
        )
        label = _categorical_from_json(data["label"], "label", source, minimum=2)
        names = [col.name for col in (*numeric, *categorical, *([] if sensitive is None else [sensitive]), label)]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            _malformed(source, f"column {repeated[0]!r} appears more than once")
        return cls(numeric=numeric, categorical=categorical, sensitive=sensitive, label=label)


def _malformed(source: str, what: str) -> NoReturn:
    raise DataError(f"{source}: malformed preprocessing record: {what}")


def _expect_keys(item: Any, keys: tuple[str, ...], where: str, source: str) -> None:
    if not isinstance(item, dict):
        _malformed(source, f"{where} must be an object, got {type(item).__name__}")
    if set(item) != set(keys):
        got = ", ".join(map(str, item)) or "none"
        _malformed(source, f"{where} must have exactly the keys {', '.join(keys)}, got {got}")


def _name_from_json(item: dict[str, Any], where: str, source: str) -> str:
    name = item["name"]
    if not isinstance(name, str) or not name:
        _malformed(source, f"{where}.name must be a non-empty string")
    return name


def _numeric_from_json(item: Any, where: str, source: str) -> NumericColumn:
    _expect_keys(item, ("name", "mean", "scale"), where, source)
    name = _name_from_json(item, where, source)
    values = []
    for key in ("mean", "scale"):
        value = item[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            _malformed(source, f"{where}.{key} must be a finite number")
        values.append(float(value))
    if values[1] <= 0:
        _malformed(source, f"{where}.scale must be positive")
    return NumericColumn(name=name, mean=values[0], scale=values[1])


def _categorical_from_json(item: Any, where: str, source: str, *, minimum: int) -> CategoricalColumn:
    _expect_keys(item, ("name", "categories"), where, source)
    name = _name_from_json(item, where, source)
    categories = item["categories"]
    if not isinstance(categories, list) or not all(isinstance(value, str) for value in categories):
        _malformed(source, f"{where}.categories must be a list of strings")
    if len(categories) < minimum:
        _malformed(source, f"{where}.categories must hold at least {minimum} values")
    if categories != sorted(set(categories)):
        _malformed(source, f"{where}.categories must be sorted and distinct")
    return CategoricalColumn(name=name, categories=tuple(categories))


def _fit_categories(name: str, values: np.ndarray) -> CategoricalColumn:
    return CategoricalColumn(name=name, categories=tuple(sorted({str(value) for value in values})))


def fit_preprocessing(table: Table) -> Preprocessing:
    """Fit the encoding on ``table`` (the pool): numeric means and population standard deviations,
    and the sorted distinct values of every categorical, sensitive and label column.

    Raises:
        DataError: when the pool has a single sensitive value or a single label.
    """
    if not table.columns.is_resolved:
        raise DataError(f"{table.name}: the table's roles still hold 'rest'")
    if table.num_rows == 0:
        raise DataError(f"{table.name}: cannot fit the preprocessing on an empty pool")
    numeric = []
    for name in table.columns.numeric:
        values = table.numeric[name]
        mean, std = float(np.mean(values)), float(np.std(values))
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise DataError(f"{table.name}: numeric column {name!r} is too large to standardize")
        numeric.append(NumericColumn(name=name, mean=mean, scale=std if std > 0 else 1.0))
    categorical = tuple(_fit_categories(name, table.categorical[name]) for name in table.columns.categorical)
    sensitive = (
        None if table.sensitive is None or table.columns.sensitive is None
        else _fit_categories(table.columns.sensitive, table.sensitive)
    )
    label = _fit_categories(table.columns.label, table.label)
    for role, col in (("sensitive", sensitive), ("label", label)):
        if col is not None and len(col.categories) < 2:
            raise DataError(f"{table.name}: the pool's {role} column {col.name!r} has a single value")
    return Preprocessing(numeric=tuple(numeric), categorical=categorical, sensitive=sensitive, label=label)


@dataclass(frozen=True, eq=False)
class EncodedTable:
    """Model inputs: ``x`` (N, D) float32, ``y`` (N,) int64 class codes, and ``sensitive`` (N,)
    int64, the code of each row's true sensitive value (None without a sensitive column)."""

    x: np.ndarray
    y: np.ndarray
    sensitive: np.ndarray | None


def _codes(values: np.ndarray, column: CategoricalColumn, source: str) -> np.ndarray:
    """Each value's position among the recorded categories; unseen values are a DataError."""
    uniques, inverse = np.unique(np.asarray(values).astype(str), return_inverse=True)
    position = {value: i for i, value in enumerate(column.categories)}
    unseen = [str(value) for value in uniques if str(value) not in position]
    if unseen:
        rows = int(np.isin(values, unseen).sum())
        others = f" and {len(unseen) - 1} other unseen values" if len(unseen) > 1 else ""
        known = ", ".join(column.categories[:20]) + (", ..." if len(column.categories) > 20 else "")
        raise DataError(
            f"{source}: column {column.name!r} holds {unseen[0]!r}{others} ({rows} rows in all), "
            f"which the recorded preprocessing never saw (it knows: {known})"
        )
    lookup = np.array([position[str(value)] for value in uniques], dtype=np.int64)
    return lookup[inverse.reshape(-1)]


def _check_column_set(table: Table, preprocessing: Preprocessing) -> None:
    expected = (
        ("numeric", tuple(col.name for col in preprocessing.numeric), table.columns.numeric),
        ("categorical", tuple(col.name for col in preprocessing.categorical), table.columns.categorical),
        ("sensitive", () if preprocessing.sensitive is None else (preprocessing.sensitive.name,),
         table.columns.sensitive_columns),
        ("label", (preprocessing.label.name,), (table.columns.label,)),
    )
    for role, recorded, actual in expected:
        if recorded != actual:
            raise DataError(
                f"{table.name}: the recorded preprocessing has {role} columns ({', '.join(recorded) or 'none'}) "
                f"but the table has ({', '.join(actual) or 'none'})"
            )


def encode(table: Table, preprocessing: Preprocessing) -> EncodedTable:
    """Encode ``table`` with a fitted or recorded preprocessing (layout: see the module docstring).

    Raises:
        DataError: when the table's columns differ from the recorded ones, or a categorical,
            sensitive or label value was never seen when the preprocessing was fitted.
    """
    _check_column_set(table, preprocessing)
    n = table.num_rows
    x = np.zeros((n, preprocessing.num_features), dtype=np.float32)
    for j, col in enumerate(preprocessing.numeric):
        x[:, j] = (table.numeric[col.name] - col.mean) / col.scale
    offset = len(preprocessing.numeric)
    rows = np.arange(n)
    blocks = [(col, table.categorical[col.name]) for col in preprocessing.categorical]
    if preprocessing.sensitive is not None and table.sensitive is not None:  # both or neither: checked above
        blocks.append((preprocessing.sensitive, table.sensitive))
    for col, values in blocks:
        codes = _codes(values, col, table.name)
        x[rows, offset + codes] = 1.0
        offset += len(col.categories)
    return EncodedTable(
        x=x,
        y=_codes(table.label, preprocessing.label, table.name),
        sensitive=(
            None if preprocessing.sensitive is None or table.sensitive is None
            else _codes(table.sensitive, preprocessing.sensitive, table.name)
        ),
    )


def _check_rows(x: np.ndarray, preprocessing: Preprocessing) -> None:
    if x.ndim != 2 or x.shape[1] != preprocessing.num_features:
        raise ValueError(f"expected encoded rows of shape (N, {preprocessing.num_features}), got {x.shape}")


def complete(x: np.ndarray, preprocessing: Preprocessing, value: int) -> np.ndarray:
    """A copy of the encoded rows ``x`` with the sensitive block set to ``one_hot(value)``: the
    candidate completion "these rows, had their sensitive attribute been ``value``"."""
    x = np.asarray(x)
    _check_rows(x, preprocessing)
    k = len(preprocessing.require_sensitive().categories)
    if not 0 <= value < k:
        raise ValueError(f"sensitive value code {value} is outside 0..{k - 1}")
    out = x.copy()
    out[:, preprocessing.sensitive_slice] = 0
    out[:, preprocessing.sensitive_slice.start + value] = 1
    return out


def completions(x: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Every candidate completion of every row, shape ``(N, k, D)``: ``[:, v]`` is
    ``complete(x, preprocessing, v)``."""
    x = np.asarray(x)
    _check_rows(x, preprocessing)
    k = len(preprocessing.require_sensitive().categories)
    out = np.repeat(x[:, None, :], k, axis=1)
    out[:, :, preprocessing.sensitive_slice] = np.eye(k, dtype=x.dtype)
    return out
