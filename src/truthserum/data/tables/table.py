"""Tables with named columns: the user's CSV files and the UCI Adult files (the built-in tables
are in :mod:`truthserum.data.tables.builtin`).

A table names the column the models predict (the label), how every feature column is read and,
for attribute inference, the column the attacker completes (the sensitive attribute; optional
otherwise). Loaders return a :class:`Table` whose cells are already validated, so later stages
never meet a missing or malformed value; every problem becomes one :class:`DataError` line naming
the file, the column and, where it applies, the 1-based line.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from truthserum.errors import DataError
from truthserum.store.user_files import refuse_special_file

#: Cells (compared case-insensitively) that mean "no value"; pandas, R and Adult write these.
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
#: Every sensitive value is a candidate the attack must score, so their number is kept small.
MAX_SENSITIVE_VALUES = 64
#: More distinct values than this in a categorical column is almost surely an identifier.
MAX_CATEGORIES = 1000
#: Below this there is nothing to split into members, non-members and targets.
MIN_ROWS = 4

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INFINITE = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


#: In place of the numeric or categorical list: every column of the table without another role.
REST = "rest"


@dataclass(frozen=True)
class TableColumns:
    """Which column plays which role.

    ``sensitive`` (optional; attribute inference needs it) is implicitly a categorical feature
    (the attack completes it), so it must not also be listed in ``numeric`` or ``categorical``.
    Either list may be :data:`REST` (the string ``"rest"``, not a list holding it): every column
    of the table without another role, resolved by :func:`check_roles` once the header is known.
    """

    label: str
    sensitive: str | None = None
    numeric: tuple[str, ...] | str = ()
    categorical: tuple[str, ...] | str = ()

    def __post_init__(self) -> None:
        # Accept lists from a config, but store tuples so that the roles stay hashable and equal.
        for role in ("numeric", "categorical"):
            value = getattr(self, role)
            if value == REST:
                continue
            object.__setattr__(self, role, (value,) if isinstance(value, str) else tuple(value))

    @property
    def is_resolved(self) -> bool:
        """Whether both feature lists name their columns (neither is ``rest``)."""
        return REST not in (self.numeric, self.categorical)

    @property
    def sensitive_columns(self) -> tuple[str, ...]:
        """The sensitive column, if there is one, as a tuple."""
        return () if self.sensitive is None else (self.sensitive,)

    @property
    def used(self) -> tuple[str, ...]:
        """Every column a loader must read, features first, then sensitive and label."""
        self._require_resolved()
        return (*self.numeric, *self.categorical, *self.sensitive_columns, self.label)

    @property
    def text(self) -> tuple[str, ...]:
        """The columns kept as strings: categorical features, sensitive, label."""
        self._require_resolved()
        return (*self.categorical, *self.sensitive_columns, self.label)

    def _require_resolved(self) -> None:
        if not self.is_resolved:
            raise ValueError("the roles still hold 'rest'; resolve them with check_roles against the header")


@dataclass(frozen=True, eq=False)
class Table:
    """A validated table: float64 numeric columns and string columns, all of one length.
    ``sensitive`` is None when the roles name no sensitive column."""

    name: str
    columns: TableColumns
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    sensitive: np.ndarray | None
    label: np.ndarray
    dropped_rows: int = 0

    @property
    def num_rows(self) -> int:
        return int(self.label.shape[0])

    def subset(self, indices: np.ndarray | Sequence[int]) -> Table:
        """The rows at ``indices`` (integer positions or a boolean mask), roles unchanged."""
        idx = np.asarray(indices)
        return replace(
            self,
            numeric={k: v[idx] for k, v in self.numeric.items()},
            categorical={k: v[idx] for k, v in self.categorical.items()},
            sensitive=None if self.sensitive is None else self.sensitive[idx],
            label=self.label[idx],
        )


def _show(cell: str) -> str:
    """A cell for an error line: quoted, and cut short so that the line stays readable."""
    return repr(cell if len(cell) <= 40 else cell[:37] + "...")


def _listing(available: Sequence[str]) -> str:
    return ", ".join(available[:25]) + (f", ... ({len(available) - 25} more)" if len(available) > 25 else "")


def _resolve_rest(columns: TableColumns, available: Sequence[str], *, source: str) -> TableColumns:
    """``columns`` with a ``rest`` list replaced by the available columns no other role names,
    in the table's order (a column without a name, such as pandas' index, is left out)."""
    rest = [role for role in ("numeric", "categorical") if getattr(columns, role) == REST]
    if not rest:
        return columns
    if len(rest) == 2:
        raise DataError(f"{source}: data.columns.numeric and data.columns.categorical are both 'rest'; "
                        "at most one may be")
    role = rest[0]
    other = columns.categorical if role == "numeric" else columns.numeric
    named = {columns.label, *columns.sensitive_columns, *other}
    chosen = tuple(name for name in dict.fromkeys(available) if name and name not in named)
    if not chosen:
        raise DataError(f"{source}: data.columns.{role} is 'rest' but every column already has a role")
    return replace(columns, **{role: chosen})


def check_roles(
    columns: TableColumns, available: Sequence[str], *, source: str, listing: str = "the header has"
) -> TableColumns:
    """Resolve a ``rest`` list against ``available`` (the table's columns, in order), check that
    every role names a known column and that no column has two roles, and return the roles with
    every column named.

    Raises:
        DataError: naming the first offending column and the config key of its role.
    """
    roles = [("data.columns.label", columns.label)]
    if columns.sensitive is not None:
        roles.append(("data.columns.sensitive", columns.sensitive))
    for role in ("numeric", "categorical"):
        value = getattr(columns, role)
        if value != REST:
            roles += [(f"data.columns.{role}", name) for name in value]
    known = set(available)
    for role, name in roles:
        if not isinstance(name, str) or not name:
            raise DataError(f"{source}: {role} must name a column, got {name!r}")
        if name not in known:
            raise DataError(
                f"{source}: unknown column {name!r} for {role} ({listing}: {_listing(available)})"
            )
    if columns.label == columns.sensitive:
        raise DataError(
            f"{source}: column {columns.label!r} is both data.columns.label and "
            "data.columns.sensitive; the label and the sensitive attribute must differ"
        )
    seen: dict[str, str] = {}
    for role, name in roles:
        if name in seen:
            if seen[name] == role:
                raise DataError(f"{source}: column {name!r} is listed twice in {role}")
            raise DataError(
                f"{source}: column {name!r} is used for both {seen[name]} and {role}; "
                "give each column one role"
            )
        seen[name] = role
    columns = _resolve_rest(columns, available, source=source)
    if not columns.numeric and not columns.categorical and columns.sensitive is None:
        raise DataError(f"{source}: no feature columns; name data.columns.numeric or data.columns.categorical "
                        "(or write numeric: rest)")
    return columns


def _read_text(path: Path, source: str) -> str:
    """The file's text (UTF-8, optional BOM), or a DataError saying why it cannot be had."""
    refuse_special_file(path, source, DataError)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{source}: is a directory, not a file") from None
    except OSError as exc:
        raise DataError(f"{source}: cannot read the file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{source}: line {line} is not valid UTF-8 (byte {data[exc.start]:#04x}); "
            "save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{source}: the file is empty")
    return text


def _check_missing(name: str, cells: list[str], *, source: str, locate: Callable[[int], str]) -> None:
    missing = [i for i, cell in enumerate(cells) if cell.lower() in MISSING_TOKENS]
    if missing:
        count = len(missing)
        raise DataError(
            f"{source}: column {name!r} has {count} missing value{'s' if count > 1 else ''} "
            f"(first at {locate(missing[0])}); fill or drop those rows"
        )


def _parse_numeric(name: str, cells: list[str], *, source: str, locate: Callable[[int], str]) -> np.ndarray:
    """Plain decimal numbers only: no thousands separators, underscores or non-ASCII digits."""
    out = np.empty(len(cells), dtype=np.float64)
    for i, cell in enumerate(cells):
        if _NUMBER.fullmatch(cell):
            value = float(cell)
        elif cell.lower() in _INFINITE:
            value = math.inf
        else:
            raise DataError(f"{source}: column {name!r} is numeric but {locate(i)} holds {_show(cell)}")
        if not math.isfinite(value):
            raise DataError(
                f"{source}: column {name!r} is numeric but {locate(i)} holds {_show(cell)}, "
                "which is not finite"
            )
        out[i] = value
    return out


def _parse_cells(
    cells: dict[str, list[str]], columns: TableColumns, *, source: str, locate: Callable[[int], str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Raw stripped cells of the used columns -> (numeric float64 arrays, string arrays)."""
    for name in columns.used:
        _check_missing(name, cells[name], source=source, locate=locate)
    numeric = {
        name: _parse_numeric(name, cells[name], source=source, locate=locate) for name in columns.numeric
    }
    text = {name: np.asarray(cells[name], dtype=np.str_) for name in columns.text}
    return numeric, text


def assemble_table(
    name: str,
    columns: TableColumns,
    numeric: dict[str, np.ndarray],
    text: dict[str, np.ndarray],
    *,
    dropped_rows: int,
    source: str,
) -> Table:
    """Run the whole-column checks shared by every loader and build the :class:`Table`
    (``columns`` resolved by :func:`check_roles`)."""
    rows = int(text[columns.label].shape[0])
    if rows < MIN_ROWS:
        after = f" after dropping {dropped_rows}" if dropped_rows else ""
        raise DataError(f"{source}: only {rows} rows{after}; at least {MIN_ROWS} are needed")
    for col in columns.categorical:
        distinct = np.unique(text[col]).size
        if distinct > MAX_CATEGORIES:
            raise DataError(
                f"{source}: categorical column {col!r} has {distinct:,} distinct values (more than "
                f"{MAX_CATEGORIES:,}); it is probably an identifier: declare it numeric or leave it out"
            )
    for role, col, limit, why in (
        *(("sensitive", col, MAX_SENSITIVE_VALUES, "nothing to infer") for col in columns.sensitive_columns),
        ("label", columns.label, MAX_CATEGORIES, "nothing to learn"),
    ):
        values = np.unique(text[col])
        if values.size == 1:
            raise DataError(
                f"{source}: {role} column {col!r} has a single value ({str(values[0])!r}): there is {why}"
            )
        if values.size > limit:
            raise DataError(
                f"{source}: {role} column {col!r} has {values.size:,} distinct values, more than {limit:,}"
                + (" (the attack scores every value as a candidate)" if role == "sensitive" else "")
            )
    return Table(
        name=name,
        columns=columns,
        numeric={col: numeric[col] for col in columns.numeric},
        categorical={col: text[col] for col in columns.categorical},
        sensitive=None if columns.sensitive is None else text[columns.sensitive],
        label=text[columns.label],
        dropped_rows=dropped_rows,
    )


def read_csv_table(path: Path, columns: TableColumns) -> Table:
    """Read a comma-separated file with a header row; extra, unused columns are ignored (a
    ``rest`` list takes every named column of the header that has no other role).

    Raises:
        DataError: one line naming the file, and the column and line where it applies.
    """
    path = Path(path)
    source = str(path)
    # strict: a stray quote is an error here rather than a silently merged or split row later.
    reader = csv.reader(io.StringIO(_read_text(path, source), newline=""), strict=True)
    start = 1  # the line where the row being read begins
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            start = reader.line_num + 1
            header = next(reader, None)
        if header is None:
            raise DataError(f"{source}: the file is empty")
        header = [cell.strip() for cell in header]
        first: dict[str, int] = {}
        for i, col in enumerate(header, start=1):
            if col and col in first:
                raise DataError(
                    f"{source}: the header names column {col!r} twice (fields {first[col]} and {i})"
                )
            first.setdefault(col, i)
        numeric_by_rest = columns.numeric == REST
        columns = check_roles(columns, [col for col in header if col], source=source)
        index = {col: i - 1 for col, i in first.items()}
        cells: dict[str, list[str]] = {col: [] for col in columns.used}
        lines: list[int] = []
        start = reader.line_num + 1
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                if len(row) != len(header):
                    raise DataError(
                        f"{source}: line {start} has {len(row)} fields but the header has {len(header)}"
                    )
                lines.append(start)
                for col in columns.used:
                    cells[col].append(row[index[col]].strip())
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{source}: line {start}: malformed CSV ({exc})") from None
    if not lines:
        raise DataError(f"{source}: the file has a header but no rows")
    try:
        numeric, text = _parse_cells(cells, columns, source=source, locate=lambda i: f"line {lines[i]}")
    except DataError as exc:
        if numeric_by_rest and "is numeric but" in str(exc):  # the user never called it numeric
            raise DataError(f"{exc} (numeric: rest took it; list it under data.columns.categorical, or name "
                            "the numeric columns)") from None
        raise
    return assemble_table(source, columns, numeric, text, dropped_rows=0, source=source)


ADULT_COLUMNS: tuple[str, ...] = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
)  # fmt: skip
ADULT_DEFAULT_ROLES = TableColumns(
    label="income",
    sensitive="marital-status",
    numeric=("age", "education-num", "capital-gain", "capital-loss", "hours-per-week"),
    categorical=("workclass", "occupation", "relationship", "race", "sex"),
)
ADULT_FILES = ("adult.data", "adult.test")
ADULT_URL = "https://archive.ics.uci.edu/dataset/2/adult"


def read_adult(directory: Path, columns: TableColumns = ADULT_DEFAULT_ROLES) -> Table:
    """Read the UCI Adult files ``adult.data`` and ``adult.test`` from ``directory`` as one table.

    Rows with ``?`` in a used column are dropped, as is usual for Adult, and counted in
    ``dropped_rows``; the test file's labels lose their trailing ``.`` so both files share them.
    """
    directory = Path(directory)
    source = str(directory)
    columns = check_roles(columns, ADULT_COLUMNS, source=source, listing="the Adult columns are")
    for fname in ADULT_FILES:
        if not (directory / fname).is_file():
            raise DataError(
                f"{source}: {fname} not found (the UCI Adult files adult.data and adult.test, {ADULT_URL})"
            )
    position = {col: ADULT_COLUMNS.index(col) for col in columns.used}
    cells: dict[str, list[str]] = {col: [] for col in columns.used}
    where: list[tuple[str, int]] = []
    dropped = 0
    for fname in ADULT_FILES:
        text = _read_text(directory / fname, str(directory / fname))
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("|"):
                continue
            fields = [field.strip() for field in stripped.split(",")]
            if len(fields) != len(ADULT_COLUMNS):
                raise DataError(
                    f"{directory / fname}: line {lineno} has {len(fields)} fields "
                    f"but Adult rows have {len(ADULT_COLUMNS)}"
                )
            fields[-1] = fields[-1].removesuffix(".")
            if any(fields[position[col]] == "?" for col in columns.used):
                dropped += 1
                continue
            for col in columns.used:
                cells[col].append(fields[position[col]])
            where.append((fname, lineno))
    def locate(i: int) -> str:
        return f"{where[i][0]} line {where[i][1]}"

    numeric, text = _parse_cells(cells, columns, source=source, locate=locate)
    return assemble_table("adult", columns, numeric, text, dropped_rows=dropped, source=source)
