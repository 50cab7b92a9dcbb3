"""The built-in tables, read offline from files that installed packages ship: the CPS census
extract (``causaldata``) and scikit-learn's breast-cancer and wine tables.

pandas is imported only when the CPS table is loaded, and scikit-learn's loaders only when theirs
are, because both are slow to import.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from truthserum.data.tables.table import REST, Table, TableColumns, assemble_table, check_roles
from truthserum.errors import DataError

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
    columns = check_roles(columns, CPS_COLUMN_NAMES, source="cps", listing="the cps columns are")
    derived = _cps_derived(_cps_path())
    keep = _first_occurrences(derived)
    numeric = {col: derived[col][keep] for col in columns.numeric}
    text = {col: derived[col][keep] for col in columns.text}
    dropped = int(derived["age"].shape[0] - keep.shape[0])
    return assemble_table("cps", columns, numeric, text, dropped_rows=dropped, source="cps")


#: scikit-learn's bundled tables: the name of each as a data source, and its loader.
SKLEARN_TABLES = {"breast-cancer": "load_breast_cancer", "wine": "load_wine"}
#: Their class column, holding the class names (``malignant``/``benign``; ``class_0`` .. ``class_2``).
SKLEARN_LABEL = "target"
#: Every feature of a scikit-learn table is numeric, so the defaults are "the class, from the rest".
SKLEARN_DEFAULT_ROLES = TableColumns(label=SKLEARN_LABEL, numeric=REST)


def load_sklearn_table(name: str, columns: TableColumns = SKLEARN_DEFAULT_ROLES) -> Table:
    """One of scikit-learn's bundled tables (:data:`SKLEARN_TABLES`), every row, the columns
    named as in its ``feature_names`` plus :data:`SKLEARN_LABEL`, the class names."""
    from sklearn import datasets  # slow to import, so only when the table is asked for

    bunch = getattr(datasets, SKLEARN_TABLES[name])()
    features = tuple(str(feature) for feature in bunch.feature_names)
    columns = check_roles(columns, (*features, SKLEARN_LABEL), source=name, listing=f"the {name} columns are")
    classes = np.asarray(bunch.target_names, dtype=np.str_)
    if SKLEARN_LABEL in columns.numeric:
        raise DataError(f"{name}: column {SKLEARN_LABEL!r} holds class names ({', '.join(classes)}), "
                        "not numbers; it cannot be in data.columns.numeric")
    values: dict[str, np.ndarray] = {feature: bunch.data[:, j].astype(np.float64) for j, feature in enumerate(features)}
    numeric = {col: values[col] for col in columns.numeric}
    # the shortest repr of each number, so a feature read as categorical keeps its exact values
    text = {col: values[col].astype(np.str_) for col in columns.text if col != SKLEARN_LABEL}
    text[SKLEARN_LABEL] = classes[np.asarray(bunch.target, dtype=np.int64)]
    return assemble_table(name, columns, numeric, text, dropped_rows=0, source=name)
