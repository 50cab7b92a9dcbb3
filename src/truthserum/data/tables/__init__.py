"""Tabular data: tables with a label, feature columns and (for attribute inference) a sensitive
column, and the recorded encoding that turns them into model inputs and candidate completions.

pandas is imported only when the built-in CPS table is loaded, and scikit-learn's table loaders
only when their tables are, because both are slow to import.
"""

from truthserum.data.tables.builtin import (
    CPS_COLUMN_NAMES,
    CPS_DEFAULT_ROLES,
    CPS_INCOME_THRESHOLD,
    SKLEARN_DEFAULT_ROLES,
    SKLEARN_LABEL,
    SKLEARN_TABLES,
    load_cps,
    load_sklearn_table,
)
from truthserum.data.tables.preprocessing import (
    CategoricalColumn,
    EncodedTable,
    NumericColumn,
    Preprocessing,
    complete,
    completions,
    encode,
    fit_preprocessing,
)
from truthserum.data.tables.table import (
    ADULT_COLUMNS,
    ADULT_DEFAULT_ROLES,
    MAX_CATEGORIES,
    MAX_SENSITIVE_VALUES,
    MIN_ROWS,
    MISSING_TOKENS,
    REST,
    Table,
    TableColumns,
    check_roles,
    read_adult,
    read_csv_table,
)

__all__ = [
    "ADULT_COLUMNS",
    "ADULT_DEFAULT_ROLES",
    "CPS_COLUMN_NAMES",
    "CPS_DEFAULT_ROLES",
    "CPS_INCOME_THRESHOLD",
    "MAX_CATEGORIES",
    "MAX_SENSITIVE_VALUES",
    "MIN_ROWS",
    "MISSING_TOKENS",
    "REST",
    "SKLEARN_DEFAULT_ROLES",
    "SKLEARN_LABEL",
    "SKLEARN_TABLES",
    "CategoricalColumn",
    "EncodedTable",
    "NumericColumn",
    "Preprocessing",
    "Table",
    "TableColumns",
    "check_roles",
    "complete",
    "completions",
    "encode",
    "fit_preprocessing",
    "load_cps",
    "load_sklearn_table",
    "read_adult",
    "read_csv_table",
]
