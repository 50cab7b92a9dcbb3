"""Tables without ceremony: an optional sensitive column, ``numeric: rest`` / ``categorical: rest``,
scikit-learn's bundled breast-cancer and wine tables, and the ``arrays`` source that only Python
can fill."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from truthserum.config import dump_config, parse_config
from truthserum.data.datasets import DataSource, load_dataset, load_table
from truthserum.data.tables import (
    REST,
    SKLEARN_DEFAULT_ROLES,
    Preprocessing,
    TableColumns,
    check_roles,
    complete,
    completions,
    encode,
    fit_preprocessing,
    load_sklearn_table,
    read_csv_table,
)
from truthserum.errors import ConfigError, DataError
from truthserum.tasks.stages import prepare_pool

# What pandas' to_csv writes: an unnamed index column first.
PEOPLE = """\
,age,city,hours,married,income
0,30,paris,40,yes,high
1,41,lyon,35,no,low
2,25,paris,20,no,low
3,52,nice,45,yes,high
4,38,lyon,40,widowed,low
5,47,nice,30,no,high
"""


@pytest.fixture
def people(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(PEOPLE, encoding="utf-8")
    return path


def csv_config(path, columns, **extra):
    return parse_config({"data": {"source": "csv", "path": str(path), "columns": columns}, **extra})


# ---- optional sensitive column and `rest` ----------------------------------------------------------


def test_membership_csv_without_sensitive_and_numeric_rest(people):
    config = csv_config(people, {"label": "income", "categorical": ["city", "married"], "numeric": REST},
                        design={"num_targets": 3})
    assert config.data.columns.sensitive is None and config.data.columns.numeric == REST
    pool = prepare_pool(config)
    # rest: the header's order, without the label, the other list and pandas' unnamed index column
    assert pool.table.columns == TableColumns(
        label="income", numeric=("age", "hours"), categorical=("city", "married")
    )
    assert pool.table.sensitive is None and pool.sensitive is None
    np.testing.assert_array_equal(pool.table.numeric["hours"], [40, 35, 20, 45, 40, 30])
    # 2 standardised numbers, city (3 values) and married (3 values) one-hot
    assert pool.x.shape == (6, 8) and pool.num_classes == 2
    assert pool.preprocessing.feature_names == (
        "age", "hours", "city=lyon", "city=nice", "city=paris", "married=no", "married=widowed", "married=yes",
    )
    np.testing.assert_allclose(pool.x[:, :2].mean(axis=0), 0, atol=1e-6)
    np.testing.assert_array_equal(pool.y, [0, 1, 1, 0, 1, 0])  # high < low


def test_a_text_column_that_rest_made_numeric_says_so(people):
    columns = TableColumns(label="income", numeric=REST)
    with pytest.raises(DataError, match=r"column 'city' is numeric but line 2 holds 'paris' \(numeric: rest took it; "
                                        r"list it under data.columns.categorical"):
        read_csv_table(people, columns)
    with pytest.raises(DataError, match=r"holds 'paris'$"):  # named numeric by the user: no such hint
        read_csv_table(people, TableColumns(label="income", numeric=("age", "city")))


def test_categorical_rest_takes_the_columns_left(people):
    columns = TableColumns(label="income", sensitive="married", numeric=("age",), categorical=REST)
    table = read_csv_table(people, columns)
    assert table.columns.categorical == ("city", "hours")  # the index column has no name: left out
    assert list(table.sensitive) == ["yes", "no", "no", "yes", "widowed", "no"]
    assert encode(table, fit_preprocessing(table)).x.shape == (6, 1 + 3 + 5 + 3)  # age, city, hours, married


def test_rest_stays_rest_in_the_dumped_config(people):
    config = csv_config(people, {"label": "income", "numeric": REST})
    text = dump_config(config)
    columns = yaml.safe_load(text)["data"]["columns"]
    assert columns == {"label": "income", "sensitive": None, "numeric": "rest", "categorical": []}
    assert parse_config(yaml.safe_load(text)) == config
    # a list holding "rest" names a column called rest, which is another config
    listed = csv_config(people, {"label": "income", "numeric": [REST]})
    assert listed.data.columns.numeric == (REST,) and listed != config


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"label": "income", "numeric": REST, "categorical": REST},
         "data.columns: numeric and categorical cannot both be 'rest'"),
        ({"label": "income", "numeric": "age"}, "data.columns.numeric: must be a list of column names or 'rest', got 'age'"),
        ({"label": "income", "categorical": [1]}, "data.columns.categorical: must be a list of column names or 'rest'"),
        ({"label": "income"}, "data.columns: no feature columns"),
    ],
)
def test_bad_column_roles_are_one_config_line(people, columns, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        csv_config(people, columns)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (TableColumns(label="income", numeric=REST, categorical=REST), "both 'rest'; at most one may be"),
        (TableColumns(label="income", sensitive="married", numeric=REST, categorical=("age", "city", "hours")),
         "data.columns.numeric is 'rest' but every column already has a role"),
        (TableColumns(label="income"), "no feature columns"),
        (TableColumns(label="income", numeric=REST, categorical=("town",)), "unknown column 'town'"),
    ],
)
def test_bad_roles_at_load_time(people, columns, message):
    with pytest.raises(DataError, match=message) as info:
        read_csv_table(people, columns)
    assert "\n" not in str(info.value)


def test_check_roles_resolves_rest():
    columns = check_roles(TableColumns(label="y", numeric=REST, categorical=("c",)), ("a", "y", "b", "c"), source="t")
    assert columns == TableColumns(label="y", numeric=("a", "b"), categorical=("c",)) and columns.is_resolved
    with pytest.raises(ValueError, match="still hold 'rest'"):
        TableColumns(label="y", numeric=REST).used  # noqa: B018


def test_attribute_needs_a_sensitive_column(people):
    base = {"task": "attribute", "design": {"num_models": 6}}
    with pytest.raises(ConfigError, match=r"task 'attribute' needs data.columns.sensitive") as info:
        csv_config(people, {"label": "income", "numeric": REST}, **base)
    assert "\n" not in str(info.value)
    config = csv_config(people, {"label": "income", "sensitive": "married", "numeric": REST}, **base)
    assert config.data.table_columns().sensitive == "married"


def test_a_table_without_sensitive_has_no_completions(people):
    table = read_csv_table(people, TableColumns(label="income", numeric=("age",), categorical=("city",)))
    prep = fit_preprocessing(table)
    assert prep.sensitive is None and prep.num_features == 4
    x = encode(table, prep).x
    with pytest.raises(DataError, match=r"no sensitive column \(data.columns.sensitive\)"):
        completions(x, prep)
    with pytest.raises(DataError, match="no sensitive column"):
        complete(x, prep, 0)
    record = json.loads(json.dumps(prep.to_json_dict()))
    assert record["sensitive"] is None
    assert Preprocessing.from_json_dict(record, source="p.json") == prep
    # a record with a sensitive column does not encode a table without one
    with_sensitive = read_csv_table(
        people, TableColumns(label="income", sensitive="married", numeric=("age",), categorical=("city",))
    )
    with pytest.raises(DataError, match=r"sensitive columns \(married\) but the table has \(none\)"):
        encode(table, fit_preprocessing(with_sensitive))


# ---- scikit-learn's tables ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "rows", "features", "classes"),
    [
        ("breast-cancer", 569, 30, ("benign", "malignant")),
        ("wine", 178, 13, ("class_0", "class_1", "class_2")),
    ],
)
def test_sklearn_tables_load_as_documented(source, rows, features, classes):
    dataset = load_dataset(DataSource(source))
    assert dataset.x.shape == (rows, features) and dataset.num_classes == len(classes)
    assert dataset.preprocessing.label.categories == classes
    assert dataset.preprocessing.label.name == "target" and dataset.sensitive is None
    assert len(dataset.table.columns.numeric) == features and dataset.preprocessing.categorical == ()
    np.testing.assert_allclose(dataset.x.mean(axis=0), 0, atol=1e-5)  # standardised over the pool
    np.testing.assert_allclose(dataset.x.std(axis=0), 1, atol=1e-4)


def test_sklearn_table_codes_follow_sorted_class_names():
    from sklearn.datasets import load_breast_cancer

    table = load_sklearn_table("breast-cancer")
    assert table.columns.numeric[:2] == ("mean radius", "mean texture")
    np.testing.assert_array_equal(table.numeric["mean radius"], load_breast_cancer().data[:, 0])
    y = encode(table, fit_preprocessing(table)).y
    np.testing.assert_array_equal(y, 1 - load_breast_cancer().target)  # sklearn: 0 malignant; here 0 benign
    assert np.bincount(y).tolist() == [357, 212]


def test_sklearn_table_with_own_roles_and_pool(tmp_path):
    config = parse_config({
        "data": {"source": "wine", "pool_size": 100,
                 "columns": {"label": "target", "numeric": ["alcohol", "hue"], "categorical": ["ash"]}},
        "design": {"num_targets": 10},
    })
    pool = prepare_pool(config)
    assert pool.num_points == 100 and pool.table.columns.numeric == ("alcohol", "hue")
    assert pool.x.shape[1] == 2 + len(pool.preprocessing.categorical[0].categories)
    with pytest.raises(DataError, match="column 'target' holds class names .* cannot be in data.columns.numeric"):
        load_sklearn_table("wine", TableColumns(label="alcohol", numeric=("target",)))
    with pytest.raises(DataError, match="wine: unknown column 'proline ' for data.columns.numeric"):
        load_sklearn_table("wine", TableColumns(label="target", numeric=("proline ",)))
    assert SKLEARN_DEFAULT_ROLES.sensitive is None


@pytest.mark.parametrize("source", ["breast-cancer", "wine"])
def test_attribute_on_sklearn_tables_is_refused(source):
    with pytest.raises(ConfigError, match=f"task 'attribute' needs a table with a categorical sensitive column.*"
                                          f"not '{source}': every feature of it is numeric") as info:
        parse_config({"task": "attribute", "design": {"num_models": 6}, "data": {"source": source}})
    assert "\n" not in str(info.value)


def test_importing_tables_leaves_sklearn_and_pandas_alone():
    code = "import sys, truthserum.data.tables; print('sklearn' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_tiny_membership_run_on_breast_cancer(tmp_path):
    from truthserum import run_task

    config = parse_config({
        "seed": 1, "data": {"source": "breast-cancer", "pool_size": 200},
        "design": {"num_models": 4, "num_targets": 8}, "poison": {"replicas": 2},
        "model": {"architecture": "mlp", "hidden_sizes": [16]},
        "train": {"epochs": 2, "batch_size": 64, "shard_size": 2, "learning_rate": 0.01},
        "metrics": {"bootstrap": 0}, "attacks": ["lira-offline"],
    })
    results = run_task(config, tmp_path / "run", progress=False, log=lambda _: None).to_json()
    assert results["config"]["data"]["source"] == "breast-cancer"
    record = json.loads((tmp_path / "run" / "preprocessing.json").read_text())
    assert record["sensitive"] is None and len(record["numeric"]) == 30
    assert record["label"] == {"name": "target", "categories": ["benign", "malignant"]}


# ---- arrays ---------------------------------------------------------------------------------------


def test_arrays_source_parses_but_does_not_load(tmp_path):
    config = parse_config({"data": {"source": "arrays"}})
    assert config.data.source is DataSource.ARRAYS and config.data.table_columns() is None
    assert parse_config(yaml.safe_load(dump_config(config))) == config
    expected = (r"data.source 'arrays' takes its data from Python \(truthserum.audit_membership\(data=...\)\); "
                "a config file must name a file or a built-in source")
    for load in (lambda: prepare_pool(config), lambda: load_dataset(DataSource.ARRAYS),
                 lambda: load_table(DataSource.ARRAYS, None, TableColumns(label="y", numeric=REST))):
        with pytest.raises(DataError, match=expected) as info:
            load()
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="path is only for sources .* not 'arrays'"):
        parse_config({"data": {"source": "arrays", "path": str(tmp_path / "x.npz")}})
    with pytest.raises(ConfigError, match=r"columns are only for tables \(cps, csv, adult, breast-cancer, wine\)"):
        parse_config({"data": {"source": "arrays", "columns": {"label": "y", "numeric": REST}}})
    with pytest.raises(ConfigError, match="task 'attribute' needs a table .* not 'arrays': it is not a table"):
        parse_config({"task": "attribute", "design": {"num_models": 6}, "data": {"source": "arrays"}})
