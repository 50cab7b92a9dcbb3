"""Tabular data: CSV, Adult and CPS loaders, and the recorded preprocessing."""

import json
import subprocess
import sys

import numpy as np
import pytest

from truthserum.errors import DataError
from truthserum.data.tables import (
    ADULT_DEFAULT_ROLES,
    CPS_COLUMN_NAMES,
    CPS_DEFAULT_ROLES,
    CPS_INCOME_THRESHOLD,
    Preprocessing,
    TableColumns,
    check_roles,
    complete,
    completions,
    encode,
    fit_preprocessing,
    load_cps,
    read_adult,
    read_csv_table,
)

ROLES = TableColumns(label="income", sensitive="married", numeric=("age", "hours"), categorical=("city",))

GOOD = """\
age,city,hours,married,income,notes
30,paris,40,yes,high,a
41,lyon,35,no,low,b
25,paris,20,no,low,c
52,nice,45,yes,high,d
38,lyon,40,widowed,low,e
"""


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def good_table(tmp_path):
    return read_csv_table(write(tmp_path, GOOD), ROLES)


def replace_line(text, lineno, new):
    lines = text.splitlines()
    lines[lineno - 1] = new
    return "\n".join(lines) + "\n"


def at(lineno, new):
    """A mutation of GOOD: line ``lineno`` becomes ``new``."""
    return lambda text: replace_line(text, lineno, new)


# ---- CSV ------------------------------------------------------------------------------------


def test_good_csv_loads_values_and_roles(tmp_path):
    table = good_table(tmp_path)
    assert table.num_rows == 5 and table.dropped_rows == 0
    assert table.name == str(tmp_path / "data.csv")
    assert table.columns == ROLES
    assert set(table.numeric) == {"age", "hours"} and set(table.categorical) == {"city"}
    assert table.numeric["age"].dtype == np.float64
    np.testing.assert_array_equal(table.numeric["age"], [30, 41, 25, 52, 38])
    assert list(table.categorical["city"]) == ["paris", "lyon", "paris", "nice", "lyon"]
    assert list(table.sensitive) == ["yes", "no", "no", "yes", "widowed"]
    assert list(table.label) == ["high", "low", "low", "high", "low"]
    sub = table.subset(np.array([4, 0]))
    assert sub.num_rows == 2 and list(sub.sensitive) == ["widowed", "yes"]
    np.testing.assert_array_equal(sub.numeric["hours"], [40, 40])


def test_bom_whitespace_crlf_and_extra_columns(tmp_path):
    text = "\ufeff age , city,hours , married,income,unused\r\n"
    text += " 30 ,  paris ,40,yes , high,\r\n41,lyon,35.5,no,low,x\r\n\r\n"
    text += "25,paris,2e1,no,low,\r\n52,nice,45,yes,high,z\r\n"
    table = read_csv_table(write(tmp_path, text), ROLES)
    assert table.num_rows == 4
    np.testing.assert_array_equal(table.numeric["age"], [30, 41, 25, 52])
    np.testing.assert_array_equal(table.numeric["hours"], [40, 35.5, 20, 45])
    assert table.categorical["city"][0] == "paris" and table.sensitive[0] == "yes" and table.label[0] == "high"


def test_quoted_fields_with_commas(tmp_path):
    text = GOOD.replace("30,paris,40", '30,"paris, 1er",40')
    table = read_csv_table(write(tmp_path, text), ROLES)
    assert table.categorical["city"][0] == "paris, 1er"


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (at(3, "41,lyon,35,no"), r"line 3 has 4 fields but the header has 6"),
        (at(4, "abc,paris,20,no,low,c"), r"column 'age' is numeric but line 4 holds 'abc'"),
        (at(4, "1_000,paris,20,no,low,c"), r"column 'age' is numeric but line 4 holds '1_000'"),
        (at(5, "52,nice,inf,yes,high,d"), r"column 'hours' is numeric but line 5 holds 'inf'.*not finite"),
        (at(5, "52,nice,1e999,yes,high,d"), r"column 'hours'.*line 5.*not finite"),
        (
            lambda t: at(5, " ,nice,45,yes,high,d")(at(3, "NA,lyon,35,no,low,b")(t)),
            r"column 'age' has 2 missing values \(first at line 3\); fill or drop those rows",
        ),
        (at(6, "38,lyon,40,N/A,low,e"), r"column 'married' has 1 missing value \(first at line 6\)"),
        (at(2, "30,?,40,yes,high,a"), r"column 'city' has 1 missing value \(first at line 2\)"),
        (at(2, "30,None,40,yes,high,a"), r"column 'city' has 1 missing value"),
        (at(2, "30,paris,40,yes,nan,a"), r"column 'income' has 1 missing value"),
        (
            lambda t: t.replace("yes", "no").replace("widowed", "no"),
            r"sensitive column 'married' has a single value \('no'\): there is nothing to infer",
        ),
        (lambda t: t.replace("high", "low"), r"label column 'income' has a single value \('low'\)"),
        (lambda t: t.replace("city,hours", "city,city"), r"the header names column 'city' twice"),
        (lambda t: "\n".join(t.splitlines()[:4]) + "\n", r"only 3 rows; at least 4 are needed"),
        (lambda t: t.splitlines()[0] + "\n", r"header but no rows"),
        (lambda t: "", r"the file is empty"),
        (lambda t: "\n \n", r"the file is empty"),
        (lambda t: t.replace("lyon", '"ly"on', 1), r"line 3: malformed CSV \(',' expected after"),
        (lambda t: t.replace("nice", '"nice', 1), r"line 5: malformed CSV \(unexpected end of data\)"),
    ],
)
def test_csv_errors_are_one_line(tmp_path, mutate, pattern):
    path = write(tmp_path, mutate(GOOD))
    with pytest.raises(DataError, match=pattern) as info:
        read_csv_table(path, ROLES)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))


def test_unused_columns_may_hold_anything(tmp_path):
    text = GOOD.replace(",a\n", ",\n").replace(",b\n", ",NA\n")
    assert read_csv_table(write(tmp_path, text), ROLES).num_rows == 5


def test_missing_file_and_not_utf8(tmp_path):
    with pytest.raises(DataError, match=r"nope.csv: file not found"):
        read_csv_table(tmp_path / "nope.csv", ROLES)
    path = tmp_path / "latin.csv"
    path.write_bytes(GOOD.replace("nice", "nîce").encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.csv: line 5 is not valid UTF-8"):
        read_csv_table(path, ROLES)
    with pytest.raises(DataError, match=r"is a directory"):
        read_csv_table(tmp_path, ROLES)


def test_too_many_sensitive_values_and_identifier_columns(tmp_path):
    rows = [f"{20 + i % 30},c{i},40,m{i % 65},{'high' if i % 2 else 'low'},x" for i in range(1001)]
    text = "age,city,hours,married,income,notes\n" + "\n".join(rows) + "\n"
    with pytest.raises(DataError, match=r"column 'city' has 1,001 distinct values.*identifier"):
        read_csv_table(write(tmp_path, text), ROLES)
    roles = TableColumns(label="income", sensitive="married", numeric=("age",))
    with pytest.raises(DataError, match=r"sensitive column 'married' has 65 distinct values, more than 64"):
        read_csv_table(write(tmp_path, text), roles)


@pytest.mark.parametrize(
    ("roles", "pattern"),
    [
        (
            TableColumns(label="income", sensitive="married", numeric=("agee",)),
            r"unknown column 'agee' for data.columns.numeric "
            r"\(the header has: age, city, hours, married, income, notes\)",
        ),
        (TableColumns(label="incme", sensitive="married"), r"unknown column 'incme' for data.columns.label"),
        (TableColumns(label="income", sensitive="income"), r"both data.columns.label and data.columns.sensitive"),
        (
            TableColumns(label="income", sensitive="married", numeric=("age",), categorical=("age",)),
            r"column 'age' is used for both data.columns.numeric and data.columns.categorical",
        ),
        (
            TableColumns(label="income", sensitive="married", categorical=("married",)),
            r"column 'married' is used for both data.columns.sensitive and data.columns.categorical",
        ),
        (
            TableColumns(label="income", sensitive="married", numeric=("age", "age")),
            r"column 'age' is listed twice in data.columns.numeric",
        ),
    ],
)
def test_role_errors(tmp_path, roles, pattern):
    with pytest.raises(DataError, match=pattern):
        read_csv_table(write(tmp_path, GOOD), roles)


def test_check_roles_direct():
    check_roles(ROLES, ["age", "hours", "city", "married", "income"], source="s")
    with pytest.raises(DataError, match=r"^s: unknown column 'city'"):
        check_roles(ROLES, ["age", "hours", "married", "income"], source="s")


def test_roles_accept_lists():
    roles = TableColumns(label="y", sensitive="s", numeric=["a"], categorical=["b"])
    assert roles.numeric == ("a",) and roles.categorical == ("b",)


# ---- preprocessing --------------------------------------------------------------------------


def test_fit_preprocessing_values(tmp_path):
    table = good_table(tmp_path)
    prep = fit_preprocessing(table)
    age = np.array([30, 41, 25, 52, 38], dtype=float)
    assert prep.numeric[0].name == "age"
    assert prep.numeric[0].mean == pytest.approx(age.mean())
    assert prep.numeric[0].scale == pytest.approx(age.std(ddof=0))
    assert prep.categorical[0].categories == ("lyon", "nice", "paris")
    assert prep.sensitive.categories == ("no", "widowed", "yes")
    assert prep.label.categories == ("high", "low") and prep.num_classes == 2


def test_constant_numeric_column_gets_scale_one(tmp_path):
    text = GOOD
    for hours in (",40,", ",35,", ",20,", ",45,"):
        text = text.replace(hours, ",7,")
    table = read_csv_table(write(tmp_path, text), ROLES)
    prep = fit_preprocessing(table)
    assert prep.numeric[1].scale == 1.0 and prep.numeric[1].mean == 7.0
    np.testing.assert_array_equal(encode(table, prep).x[:, 1], 0.0)


def test_encode_layout(tmp_path):
    table = good_table(tmp_path)
    prep = fit_preprocessing(table)
    assert prep.feature_names == (
        "age", "hours", "city=lyon", "city=nice", "city=paris", "married=no", "married=widowed", "married=yes",
    )  # fmt: skip
    assert prep.num_features == 8 and prep.sensitive_slice == slice(5, 8)
    enc = encode(table, prep)
    assert enc.x.shape == (5, 8) and enc.x.dtype == np.float32
    assert enc.y.dtype == np.int64 and enc.sensitive.dtype == np.int64
    np.testing.assert_array_equal(enc.y, [0, 1, 1, 0, 1])
    np.testing.assert_array_equal(enc.sensitive, [2, 0, 0, 2, 1])
    np.testing.assert_allclose(enc.x[:, :2].mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(enc.x[:, :2].std(axis=0), 1, atol=1e-6)
    for block in (slice(2, 5), prep.sensitive_slice):
        assert set(np.unique(enc.x[:, block])) == {0.0, 1.0}
        np.testing.assert_array_equal(enc.x[:, block].sum(axis=1), 1)
    np.testing.assert_array_equal(enc.x[:, prep.sensitive_slice].argmax(axis=1), enc.sensitive)
    np.testing.assert_array_equal(enc.x[0, 2:], [0, 0, 1, 0, 0, 1])


def test_json_round_trip_is_exact(tmp_path):
    table = good_table(tmp_path)
    prep = fit_preprocessing(table)
    record = json.loads(json.dumps(prep.to_json_dict()))
    again = Preprocessing.from_json_dict(record, source="prep.json")
    assert again == prep
    assert again.numeric[0].mean == prep.numeric[0].mean  # bit for bit, not approximately
    first, second = encode(table, prep), encode(table, again)
    np.testing.assert_array_equal(first.x, second.x)
    np.testing.assert_array_equal(first.y, second.y)
    np.testing.assert_array_equal(first.sensitive, second.sensitive)


def test_reapplied_preprocessing_rejects_unseen_values(tmp_path):
    prep = fit_preprocessing(good_table(tmp_path))
    other = read_csv_table(write(tmp_path, GOOD.replace("nice", "lille"), "other.csv"), ROLES)
    pattern = r"other.csv: column 'city' holds 'lille' .*never saw \(it knows: lyon, nice, paris\)"
    with pytest.raises(DataError, match=pattern):
        encode(other, prep)
    other = read_csv_table(write(tmp_path, GOOD.replace("widowed", "divorced"), "other.csv"), ROLES)
    with pytest.raises(DataError, match=r"column 'married' holds 'divorced'"):
        encode(other, prep)


def test_reapplied_preprocessing_rejects_other_columns(tmp_path):
    prep = fit_preprocessing(good_table(tmp_path))
    roles = TableColumns(label="income", sensitive="married", numeric=("age",), categorical=("city",))
    with pytest.raises(DataError, match=r"numeric columns \(age, hours\) but the table has \(age\)"):
        encode(read_csv_table(write(tmp_path, GOOD), roles), prep)


def _record(tmp_path):
    return fit_preprocessing(good_table(tmp_path)).to_json_dict()


def numeric(**change):
    """A mutation of a record: its numeric list becomes one entry for 'age', changed."""
    return lambda r: {**r, "numeric": [{"name": "age", "mean": 0.0, "scale": 1.0, **change}]}


def role(key, name, categories):
    return lambda r: {**r, key: {"name": name, "categories": categories}}


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda r: [r], r"the record must be an object"),
        (lambda r: {**r, "extra": 1}, r"the record must have exactly the keys"),
        (lambda r: {**r, "numeric": {}}, r"numeric must be a list"),
        (numeric(mean="0"), r"numeric\[0\].mean must be a finite number"),
        (numeric(mean=True), r"numeric\[0\].mean must be a finite number"),
        (numeric(scale=0.0), r"numeric\[0\].scale must be positive"),
        (numeric(name=""), r"numeric\[0\].name must be a non-empty string"),
        (role("sensitive", "married", ["yes", "no"]), r"sensitive.categories must be sorted and distinct"),
        (role("label", "income", ["low"]), r"label.categories must hold at least 2"),
        (role("label", "income", [1, 2]), r"label.categories must be a list of strings"),
        (role("label", "age", ["a", "b"]), r"column 'age' appears more than once"),
        (lambda r: {**r, "categorical": [{"name": "city"}]}, r"categorical\[0\] must have exactly the keys name, "),
    ],
)
def test_malformed_record(tmp_path, mutate, pattern):
    with pytest.raises(DataError, match=r"^prep.json: malformed preprocessing record: " + pattern):
        Preprocessing.from_json_dict(mutate(_record(tmp_path)), source="prep.json")


def test_complete_and_completions(tmp_path):
    table = good_table(tmp_path)
    prep = fit_preprocessing(table)
    enc = encode(table, prep)
    block = prep.sensitive_slice
    for value in range(3):
        done = complete(enc.x, prep, value)
        assert done.shape == enc.x.shape and done.dtype == np.float32
        np.testing.assert_array_equal(done[:, : block.start], enc.x[:, : block.start])
        np.testing.assert_array_equal(done[:, block], np.tile(np.eye(3)[value], (5, 1)))
    original = enc.x.copy()
    every = completions(enc.x, prep)
    np.testing.assert_array_equal(enc.x, original)  # inputs are not modified
    assert every.shape == (5, 3, 8)
    for value in range(3):
        np.testing.assert_array_equal(every[:, value], complete(enc.x, prep, value))
    np.testing.assert_array_equal(every[np.arange(5), enc.sensitive], enc.x)  # the true completion
    with pytest.raises(ValueError):
        complete(enc.x, prep, 3)


# ---- Adult ----------------------------------------------------------------------------------

ADULT_DATA = """\
39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K
50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, <=50K
38, Private, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, White, Male, 0, 0, 40, United-States, <=50K
54, ?, 180211, Some-college, 10, Married-civ-spouse, ?, Husband, Asian-Pac-Islander, Male, 0, 0, 60, South, >50K
52, Self-emp-not-inc, 209642, HS-grad, 9, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 45, ?, >50K

"""
ADULT_TEST = """\
|1x3 Cross validator
25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, United-States, <=50K.
44, Private, 160323, Some-college, 10, Married-civ-spouse, Machine-op-inspct, Husband, Black, Male, 7688, 0, 40, United-States, >50K.
"""


def adult_dir(tmp_path, data=ADULT_DATA, test=ADULT_TEST):
    write(tmp_path, data, "adult.data")
    write(tmp_path, test, "adult.test")
    return tmp_path


def test_adult_reads_both_files(tmp_path):
    table = read_adult(adult_dir(tmp_path))
    assert table.name == "adult" and table.columns == ADULT_DEFAULT_ROLES
    assert table.num_rows == 6 and table.dropped_rows == 1  # native-country '?' is unused, so kept
    assert set(table.label) == {"<=50K", ">50K"}
    assert list(table.label[-2:]) == ["<=50K", ">50K"]
    np.testing.assert_array_equal(table.numeric["age"], [39, 50, 38, 52, 25, 44])
    assert table.categorical["workclass"][0] == "State-gov"
    assert table.sensitive[1] == "Married-civ-spouse"


def test_adult_drops_question_marks_only_in_used_columns(tmp_path):
    roles = TableColumns(
        label="income", sensitive="marital-status", numeric=("age",), categorical=("native-country",)
    )
    table = read_adult(adult_dir(tmp_path), roles)
    assert table.num_rows == 6 and table.dropped_rows == 1
    assert "?" not in set(table.categorical["native-country"])


def test_adult_categorical_rest_and_no_sensitive(tmp_path):
    numeric = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
    table = read_adult(adult_dir(tmp_path), TableColumns(label="income", numeric=numeric, categorical="rest"))
    assert table.columns.categorical == (
        "workclass", "education", "marital-status", "occupation", "relationship", "race", "sex", "native-country",
    )
    assert table.sensitive is None and table.dropped_rows == 2  # every column is used now, so '?' anywhere drops
    assert fit_preprocessing(table).sensitive is None


def test_adult_errors(tmp_path):
    write(tmp_path, ADULT_DATA, "adult.data")
    with pytest.raises(DataError, match=r"adult.test not found \(the UCI Adult files adult.data and adult.test, "):
        read_adult(tmp_path)
    bad = ADULT_TEST.replace("25, Private, 226802,", "25, Private,")
    with pytest.raises(DataError, match=r"adult.test: line 2 has 14 fields but Adult rows have 15"):
        read_adult(adult_dir(tmp_path, test=bad))
    bad = ADULT_TEST.replace("44, Private", "4x4, Private")
    with pytest.raises(DataError, match=r"column 'age' is numeric but adult.test line 3 holds '4x4'"):
        read_adult(adult_dir(tmp_path, test=bad))
    with pytest.raises(DataError, match=r"unknown column 'salary' for data.columns.label \(the Adult columns are: "):
        read_adult(adult_dir(tmp_path), TableColumns(label="salary", sensitive="sex"))


# ---- CPS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cps():
    return load_cps()


def test_cps_loads_as_documented(cps):
    assert cps.name == "cps" and cps.columns == CPS_DEFAULT_ROLES
    assert 13_000 < cps.num_rows < 15_992 and cps.num_rows + cps.dropped_rows == 15_992
    assert set(cps.numeric) == {"age", "education", "earnings_1974", "earnings_1975"}
    assert set(cps.categorical) == {"race", "no_degree"}
    assert set(cps.sensitive) == {"no", "yes"} and set(cps.label) == {"high", "low"}
    assert set(cps.categorical["race"]) <= {"black", "hispanic", "other", "black-hispanic"}
    assert 0.4 < np.mean(cps.label == "high") < 0.6
    assert 0.5 < np.mean(cps.sensitive == "yes") < 0.9
    assert cps.numeric["age"].min() >= 16 and cps.numeric["education"].max() <= 18
    assert cps.numeric["earnings_1975"].max() < 30_000
    rows = set(zip(*cps.numeric.values(), *cps.categorical.values(), cps.sensitive, cps.label))
    assert len(rows) == cps.num_rows  # no duplicate rows


def test_cps_threshold_is_the_file_median():
    import pandas as pd

    from truthserum.data.tables.builtin import _cps_path

    re78 = np.round(pd.read_stata(_cps_path())["re78"].to_numpy(np.float64), 2)
    assert np.median(re78) == pytest.approx(CPS_INCOME_THRESHOLD, abs=0.005)


def test_cps_other_roles():
    roles = TableColumns(
        label="income_1978", sensitive="race", numeric=("age", "education"), categorical=("married", "no_degree")
    )
    table = load_cps(roles)
    assert set(table.sensitive) >= {"black", "hispanic", "other"}
    assert set(table.categorical) == {"married", "no_degree"}
    prep = fit_preprocessing(table)
    assert prep.feature_names[-3:] == ("race=black", "race=hispanic", "race=other")
    assert encode(table, prep).x.shape == (table.num_rows, 2 + 4 + len(prep.sensitive.categories))


def test_cps_rest_without_sensitive():
    table = load_cps(TableColumns(label="income_1978", numeric="rest", categorical=("race", "no_degree", "married")))
    assert table.columns.numeric == ("age", "education", "earnings_1974", "earnings_1975")
    assert table.sensitive is None and table.num_rows == 13_614


def test_cps_role_errors():
    assert "married" in CPS_COLUMN_NAMES
    with pytest.raises(DataError, match=r"^cps: unknown column 're78' for data.columns.numeric \(the cps columns"):
        load_cps(TableColumns(label="income_1978", sensitive="married", numeric=("re78",)))
    with pytest.raises(DataError, match=r"^cps: column 'married' is used for both"):
        load_cps(TableColumns(label="income_1978", sensitive="married", categorical=("married",)))


def test_importing_tabular_leaves_pandas_alone():
    code = "import sys, truthserum.data.tables; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
