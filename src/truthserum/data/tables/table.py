"""Tables with named columns: the user's CSV files, the UCI Adult files and the built-in CPS extract.

Attribute inference needs to know which column the model predicts (the label), which one the
attacker completes (the sensitive attribute) and how every other used column is read. Loaders
return a :class:`Table` whose cells are already validated, so later stages never meet a missing or
malformed value; every problem becomes one :class:`DataError` line naming the file, the column
and, where it applies, the 1-based line.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from truthserum.errors import DataError

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


@dataclass(frozen=True)
class TableColumns:
    """Which column plays which role.

    The sensitive column is implicitly a categorical feature (the attack completes it), so it must
    not also be listed in ``numeric`` or ``categorical``.
    """

    label: str
    sensitive: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept lists from a config, but store tuples so that the roles stay hashable and equal.
        for role in ("numeric", "categorical"):
            value = getattr(self, role)
            object.__setattr__(self, role, (value,) if isinstance(value, str) else tuple(value))

    @property
    def used(self) -> tuple[str, ...]:
        """Every column a loader must read, features first, then sensitive and label."""
        return (*self.numeric, *self.categorical, self.sensitive, self.label)

    @property
    def text(self) -> tuple[str, ...]:
        """The columns kept as strings: categorical features, sensitive, label."""
        return (*self.categorical, self.sensitive, self.label)


@dataclass(frozen=True, eq=False)
class Table:
    """A validated table: float64 numeric columns and string columns, all of one length."""

    name: str
    columns: TableColumns
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    sensitive: np.ndarray
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
            sensitive=self.sensitive[idx],
            label=self.label[idx],
        )


def _show(cell: str) -> str:
    """A cell for an error line: quoted, and cut short so that the line stays readable."""
    return repr(cell if len(cell) <= 40 else cell[:37] + "...")


def check_roles(
    columns: TableColumns, available: Sequence[str], *, source: str, listing: str = "the header has"
) -> None:
    """Check that every role names a known column and that no column has two roles.

    Raises:
        DataError: naming the first offending column and the config key of its role.
    """
    roles = [("data.columns.label", columns.label), ("data.columns.sensitive", columns.sensitive)]
    roles += [("data.columns.numeric", name) for name in columns.numeric]
    roles += [("data.columns.categorical", name) for name in columns.categorical]
    known = set(available)
    listed = ", ".join(available[:25]) + (f", ... ({len(available) - 25} more)" if len(available) > 25 else "")
    for role, name in roles:
        if not isinstance(name, str) or not name:
            raise DataError(f"{source}: {role} must name a column, got {name!r}")
        if name not in known:
            raise DataError(
                f"{source}: unknown column {name!r} for {role} ({listing}: {listed})"
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


def _read_text(path: Path, source: str) -> str:
    """The file's text (UTF-8, optional BOM), or a DataError saying why it cannot be had."""
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


def _assemble(
    name: str,
    columns: TableColumns,
    numeric: dict[str, np.ndarray],
    text: dict[str, np.ndarray],
    *,
    dropped_rows: int,
    source: str,
) -> Table:
    """Run the whole-column checks shared by every loader and build the :class:`Table`."""
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
        ("sensitive", columns.sensitive, MAX_SENSITIVE_VALUES, "nothing to infer"),
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
        sensitive=text[columns.sensitive],
        label=text[columns.label],
        dropped_rows=dropped_rows,
    )


def read_csv_table(path: Path, columns: TableColumns) -> Table:
    """Read a comma-separated file with a header row; extra, unused columns are ignored.

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
        check_roles(columns, [col for col in header if col], source=source)
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
    numeric, text = _parse_cells(cells, columns, source=source, locate=lambda i: f"line {lines[i]}")
    return _assemble(source, columns, numeric, text, dropped_rows=0, source=source)


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
    check_roles(columns, ADULT_COLUMNS, source=source, listing="the Adult columns are")
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
    return _assemble("adult", columns, numeric, text, dropped_rows=dropped, source=source)


#: The derived columns of the built-in census table (see :func:`load_cps`).
CPS_COLUMN_NAMES: tuple[str, ...] = (
    "age", "education", "earnings_1974", "earnings_1975", "race", "no_degree", "married", "income_1978",
)  # fmt: skip
CPS_DEFAULT_ROLES = TableColumns(
    label="income_1978",
    sensitive="married",
    numeric=("age", "education", "earnings_1974", "earnings_1975"),
    categorical=("race", "no_degree"),
)
#: ``income_1978`` is "high" above this many 1978 dollars, else "low". It is the median of ``re78``
#: (rounded to cents) over all 15,992 rows of the file, before duplicates are dropped, so that the
#: label is balanced; fixed here so that the label does not depend on which roles are chosen.
CPS_INCOME_THRESHOLD = 16_421.975
_CPS_SOURCE = ("age", "educ", "black", "hisp", "marr", "nodegree", "re74", "re75", "re78")


def _cps_path() -> Path:
    """Where causaldata keeps the file, found without importing the (slow) package itself."""
    spec = importlib.util.find_spec("causaldata")
    if spec is None:  # an optional extra
        raise DataError("data.source 'cps' needs the causaldata package, which is not installed: "
                        "pip install 'truthserum[tables]'")
    for location in spec.submodule_search_locations or []:
        candidate = Path(location) / "cps_mixtape" / "cps_mixtape.dta"
        if candidate.is_file():
            return candidate
    raise DataError("cps: the causaldata package lacks cps_mixtape/cps_mixtape.dta; reinstall it: "
                    "pip install --force-reinstall causaldata")


def _cps_derived(path: Path) -> dict[str, np.ndarray]:
    """The file's columns turned into the derived ones, all rows in file order."""
    import pandas as pd  # slow to import, so only when the table is asked for

    try:
        frame = pd.read_stata(path, convert_categoricals=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cps: cannot read {path} ({exc})") from None
    absent = [col for col in _CPS_SOURCE if col not in frame.columns]
    if absent:
        raise DataError(f"cps: {path} lacks the columns {', '.join(absent)}; reinstall causaldata")
    raw = {col: frame[col].to_numpy(dtype=np.float64) for col in _CPS_SOURCE}
    if not all(np.isfinite(v).all() for v in raw.values()):
        raise DataError(f"cps: {path} has missing values; reinstall causaldata")
    black, hisp = raw["black"] == 1, raw["hisp"] == 1
    # The two flags never co-occur in this file; should they, the person is named by both.
    race = np.select([black & hisp, black, hisp], ["black-hispanic", "black", "hispanic"], "other")
    # Stata stores earnings as float32; rounding to cents recovers the dollar amounts exactly.
    re78 = np.round(raw["re78"], 2)
    return {
        "age": raw["age"],
        "education": raw["educ"],
        "earnings_1974": np.round(raw["re74"], 2),
        "earnings_1975": np.round(raw["re75"], 2),
        "race": race.astype(np.str_),
        "no_degree": np.where(raw["nodegree"] == 1, "yes", "no"),
        "married": np.where(raw["marr"] == 1, "yes", "no"),
        "income_1978": np.where(re78 > CPS_INCOME_THRESHOLD, "high", "low"),
    }


def _first_occurrences(derived: dict[str, np.ndarray]) -> np.ndarray:
    """Sorted positions of the first occurrence of every distinct record, the label aside: two
    people with the same record are one point to a model, whatever their labels."""
    names = [name for name in derived if name != "income_1978"]
    records = np.rec.fromarrays([derived[name] for name in names], names=names)
    _, first = np.unique(records, return_index=True)
    return np.sort(first)


def load_cps(columns: TableColumns = CPS_DEFAULT_ROLES) -> Table:
    """The built-in census table: 1976 Current Population Survey people (Dehejia and Wahba's CPS
    comparison group, public domain), shipped offline by the ``causaldata`` package.

    Duplicate records (equal in every derived column but the label) are dropped, keeping the
    first, because a duplicated person makes membership ill-defined; their number is
    ``dropped_rows``.
    """
    check_roles(columns, CPS_COLUMN_NAMES, source="cps", listing="the cps columns are")
    derived = _cps_derived(_cps_path())
    keep = _first_occurrences(derived)
    numeric = {col: derived[col][keep] for col in columns.numeric}
    text = {col: derived[col][keep] for col in columns.text}
    dropped = int(derived["age"].shape[0] - keep.shape[0])
    return _assemble("cps", columns, numeric, text, dropped_rows=dropped, source="cps")
