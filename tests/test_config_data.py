"""Config and data validation: each problem is named in one line."""

import re

import numpy as np
import pytest

from truthserum.config import MembershipConfig, load_config, parse_config
from truthserum.data.datasets import DataSource, load_dataset, load_npz
from truthserum.errors import ConfigError, DataError
from truthserum.tasks.stages import prepare_pool


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_demo_config_parse(tmp_path):
    assert MembershipConfig().design.num_models % 2 == 0
    config = load_config(write(tmp_path, "design:\n  num_models: 8\n"))
    assert config.design.num_models == 8 and config.train.epochs == MembershipConfig().train.epochs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("desing:\n  num_models: 8\n", "desing: unknown key"),
        ("design:\n  num_models: 8\n  targets: 3\n", "design.targets: unknown key"),
        ("design:\n  num_models: 7\n", "design.num_models: must be even"),
        ("design:\n  num_models: 2\n", "design.num_models: Input should be greater than or equal to 4"),
        ("train:\n  learning_rate: -1\n", "train.learning_rate: Input should be greater than 0"),
        ("train:\n  optimizer: lbfgs\n", "train.optimizer: Input should be 'sgd' or 'adam'"),
        ("data:\n  source: npz\n", "data: source 'npz' needs a path"),
        ("data:\n  source: digits\n  path: x.npz\n", "path is only for sources npz, csv, adult and cifar10"),
        ("query:\n  views: [shift-left, identity]\n", "the first view must be 'identity'"),
        ("attacks: [lira-online, lira-bogus]\n", "attacks: unknown attack 'lira-bogus'; registered: lira-online"),
        ("rmia:\n  offline_a: yes\n", "rmia.offline_a: must be a number in [0, 1] or 'tune', got True"),
        ("rmia:\n  offline_a: 1.5\n", "rmia.offline_a: must be a number in [0, 1] or 'tune', got 1.5"),
        ("rmia:\n  offline_a: Tune\n", "rmia.offline_a: must be a number in [0, 1] or 'tune'"),
        ("rmia:\n  gamma: yes\n", "rmia.gamma: must be a number, not true"),
        ("train:\n  learning_rate: no\n", "train.learning_rate: must be a number, not false"),
        ("metrics:\n  confidence: 1.0\n", "metrics.confidence: Input should be less than 1"),
        ("metrics:\n  bootstrap: -1\n", "metrics.bootstrap: Input should be greater than or equal to 0"),
        ("- 1\n- 2\n", "the top level must be a mapping"),
        ("design: {num_models: 8\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "the config is empty; `truthserum demo` runs the built-in experiment"),
        ("# only a comment\n", "the config is empty"),
        ("{}\n", "the config is empty"),
        ("seed: 1\nseed: 2\n", "key 'seed' is given twice in one section (line 2); keep one"),
        ("design:\n  num_models: 8\n  num_models: 16\n", "key 'num_models' is given twice in one section (line 3)"),
        ("x: " + "[" * 30 + "]" * 30 + "\n", "nested more than 20 levels deep"),
        ("x: " + "[" * 1000 + "]" * 1000 + "\n", "nested too deeply to read"),
        ("x: " + "[" * 20000 + "]" * 20000 + "\n", "nested too deeply to read"),
    ],
)
def test_empty_duplicated_or_deeply_nested_configs_are_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("model:\n  hidden_sizes: [4611686018427387904]\n", "model.hidden_sizes: widths must be at most 65,536"),
        ("model:\n  hidden_sizes: [" + ", ".join(["8"] * 65) + "]\n", "at most 64 items"),
        ("model:\n  architecture: cnn\n  channels: [70000]\n", "model.channels: widths must be at most 65,536"),
        ("train:\n  batch_size: 1000000000000\n", "train.batch_size: Input should be less than or equal to 1000000"),
        ("train:\n  shard_size: 1000000000000000000\n", "train.shard_size: Input should be less than or equal to 4096"),
    ],
)
def test_sizes_past_any_memory_are_refused_naming_the_limit(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text))


def test_a_duplicated_key_is_echoed_cut_short(tmp_path):
    key = "k" * 500
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"{key}: 1\n{key}: 2\n"))
    assert "given twice" in str(info.value) and len(str(info.value)) < 300


def test_yaml_is_loaded_safely(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "seed: !!python/object/apply:os.system ['true']\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_relative_data_path_resolves_against_the_config_folder(tmp_path):
    config = load_config(write(tmp_path, "data:\n  source: npz\n  path: data/points.npz\n"))
    assert config.data.path == (tmp_path / "data" / "points.npz").resolve()


def save(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


GOOD_X = np.random.default_rng(0).normal(size=(40, 5))
GOOD_Y = np.arange(40) % 3


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": GOOD_X}, r"missing array\(s\) \['y'\]"),
        ({"x": GOOD_X[:30], "y": GOOD_Y}, "x has 30 rows but y has 40 labels"),
        ({"x": GOOD_X[:, 0], "y": GOOD_Y}, "x must have shape"),
        ({"x": GOOD_X, "y": GOOD_Y[:, None]}, "y must have shape"),
        ({"x": np.where(np.eye(40, 5) > 0, np.nan, GOOD_X), "y": GOOD_Y}, "NaN or inf in 5 rows"),
        ({"x": np.where(np.eye(40, 5) > 0, np.inf, GOOD_X), "y": GOOD_Y}, "NaN or inf"),
        ({"x": GOOD_X, "y": GOOD_Y, "num_classes": np.int64(2)}, r"labels must lie in 0..1"),
        ({"x": GOOD_X, "y": np.zeros(40, dtype=int)}, "at least two classes"),
        ({"x": GOOD_X, "y": GOOD_Y + 0.5}, "integer class labels"),
        ({"x": GOOD_X, "y": np.array(["a"] * 40)}, "integer class labels"),
    ],
)
def test_bad_npz_data_names_the_problem(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        load_npz(save(tmp_path, **arrays))


def test_object_arrays_are_never_unpickled(tmp_path):
    path = save(tmp_path, x=np.array([object()] * 40, dtype=object), y=GOOD_Y)
    with pytest.raises(DataError, match="cannot read arrays safely"):
        load_npz(path)


def test_not_an_npz(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(path)


def test_good_npz_loads_with_image_channel(tmp_path):
    dataset = load_npz(save(tmp_path, x=np.zeros((40, 6, 6)), y=GOOD_Y))
    assert dataset.x.shape == (40, 1, 6, 6) and dataset.num_classes == 3 and dataset.is_image


def test_builtin_datasets_load_offline():
    digits = load_dataset(DataSource.DIGITS)
    assert digits.x.shape == (1797, 1, 8, 8) and digits.num_classes == 10
    assert 0.0 <= digits.x.min() and digits.x.max() <= 1.0
    mnist = load_dataset(DataSource.MNIST5K)
    assert mnist.x.shape == (5000, 1, 28, 28) and np.bincount(mnist.y).tolist() == [500] * 10


def test_pool_too_small_for_the_design(tmp_path):
    path = save(tmp_path, x=GOOD_X, y=GOOD_Y)
    config = parse_config({"data": {"source": "npz", "path": str(path)}, "design": {"num_targets": 41}})
    with pytest.raises(DataError, match="40 points, too few for design.num_targets = 41"):
        prepare_pool(config)
    config = parse_config({"data": {"source": "digits", "pool_size": 5000}})
    with pytest.raises(DataError, match="pool_size is 5000 but digits has only 1797"):
        prepare_pool(config)


def test_image_only_options_on_tabular_data(tmp_path):
    path = save(tmp_path, x=GOOD_X, y=GOOD_Y)
    base = {"data": {"source": "npz", "path": str(path)}, "design": {"num_targets": 5}}
    with pytest.raises(ConfigError, match="need image data"):
        prepare_pool(parse_config({**base, "query": {"views": ["identity", "mirror"]}}))
    with pytest.raises(ConfigError, match="'cnn' needs image data"):
        prepare_pool(parse_config({**base, "model": {"architecture": "cnn"}}))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed: true\n", "seed: Input should be a valid integer"),
        ("design:\n  num_models: '8'\n", "design.num_models: Input should be a valid integer"),
        ("train:\n  epochs: 5.0\n", "train.epochs: Input should be a valid integer"),
        ("train:\n  learning_rate: .nan\n", "train.learning_rate: Input should be a finite number"),
        ("attacks: [lira-online, lira-online]\n", "attacks must be distinct"),
        ("model:\n  hidden_sizes: []\n", "model.hidden_sizes: Tuple should have at least 1 item"),
    ],
)
def test_counts_are_not_coerced(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_rates_written_without_a_dot_still_parse(tmp_path):
    assert load_config(write(tmp_path, "train:\n  learning_rate: 1e-3\n")).train.learning_rate == 1e-3


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": GOOD_X, "y": GOOD_Y - 1}, "labels must be non-negative class indices, found -1"),
        ({"x": GOOD_X, "y": GOOD_Y, "num_classes": np.int64(1)}, "num_classes must be between 2 and 100,000, got 1"),
        ({"x": GOOD_X, "y": GOOD_Y, "num_classes": np.int64(-3)}, "num_classes must be between 2 and 100,000, got -3"),
    ],
)
def test_label_range_messages(tmp_path, arrays, message):
    with pytest.raises(DataError, match=message):
        load_npz(save(tmp_path, **arrays))
