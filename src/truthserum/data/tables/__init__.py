"""Tabular data for attribute inference: tables with a label and a sensitive column, and the
recorded encoding that turns them into model inputs and candidate completions.

pandas is imported only when the built-in CPS table is loaded, because it is slow to import.
"""

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
    CPS_COLUMN_NAMES,
    CPS_DEFAULT_ROLES,
    CPS_INCOME_THRESHOLD,
    MAX_CATEGORIES,
    MAX_SENSITIVE_VALUES,
    MIN_ROWS,
    MISSING_TOKENS,
    Table,
    TableColumns,
    check_roles,
    load_cps,
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
    "read_adult",
    "read_csv_table",
]
