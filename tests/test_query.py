"""Query views: the generated order, what each view does to an image, and where views are refused."""

import numpy as np
import pytest
import torch
import yaml

from truthserum.config import dump_config, parse_config
from truthserum.config.sections import QueryConfig
from truthserum.data.datasets import DataSource
from truthserum.errors import ConfigError
from truthserum.query.views import (
    IDENTITY, MAX_SHIFT, QueryView, View, apply_view, check_views_fit_data, generate_views, max_views,
    query_logits,
)
from truthserum.tasks.stages import prepare_pool
from truthserum.train import Architecture, Ensemble, build_model


def names(views):
    return [view.name for view in views]


def test_generated_views_go_nearest_first():
    assert names(generate_views(9, flip=False)) == [
        "identity", "shift(-1,0)", "shift(+1,0)", "shift(0,-1)", "shift(0,+1)",
        "shift(-1,-1)", "shift(+1,-1)", "shift(-1,+1)", "shift(+1,+1)",
    ]
    assert names(generate_views(13, flip=False))[9:] == ["shift(-2,0)", "shift(+2,0)", "shift(0,-2)", "shift(0,+2)"]
    assert names(generate_views(6, flip=True)) == [
        "identity", "mirror", "shift(-1,0)", "mirror+shift(-1,0)", "shift(+1,0)", "mirror+shift(+1,0)",
    ]


@pytest.mark.parametrize("flip", [False, True])
def test_every_count_is_a_prefix_of_distinct_views_within_the_max_shift(flip):
    everything = generate_views(max_views(flip=flip), flip=flip)
    assert len(everything) == len(set(everything)) == (50 if flip else 25)
    assert everything[0] == IDENTITY
    assert all(abs(v.dx) <= MAX_SHIFT and abs(v.dy) <= MAX_SHIFT for v in everything)
    assert any(v.mirror for v in everything) == flip
    for count in range(1, len(everything) + 1):
        assert generate_views(count, flip=flip) == everything[:count]


@pytest.mark.parametrize(("count", "flip"), [(0, False), (26, False), (51, True)])
def test_generate_views_refuses_counts_out_of_range(count, flip):
    with pytest.raises(ConfigError, match="query.count must lie in 1.."):
        generate_views(count, flip=flip)


def test_named_views_are_the_one_pixel_views():
    assert [name.view for name in QueryView] == [
        View(), View(dx=-1), View(dx=1), View(dy=-1), View(dy=1), View(mirror=True),
    ]
    assert View(dx=-1, dy=2, mirror=True).name == "mirror+shift(-1,+2)"


X = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4)


def test_apply_view_shifts_with_zero_fill():
    right = apply_view(X, View(dx=1))
    assert right[0, 0].tolist() == [[0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10], [0, 12, 13, 14]]
    up_left_two = apply_view(X, View(dx=-2, dy=-2))
    assert up_left_two[0, 0].tolist() == [[10, 11, 0, 0], [14, 15, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    down_right_two = apply_view(X, View(dx=2, dy=2))
    assert down_right_two[1, 1].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 48, 49], [0, 0, 52, 53]]
    assert torch.equal(apply_view(X, View(dx=4)), torch.zeros_like(X))  # shifted wholly out of frame


def test_apply_view_mirrors_then_shifts():
    assert apply_view(X, View(mirror=True))[0, 0].tolist() == [
        [3, 2, 1, 0], [7, 6, 5, 4], [11, 10, 9, 8], [15, 14, 13, 12],
    ]
    mirrored_right = apply_view(X, View(dx=1, mirror=True))
    assert mirrored_right[0, 0, 0].tolist() == [0, 3, 2, 1]
    assert X[0, 0, 0].tolist() == [0, 1, 2, 3]  # never modified


def test_apply_view_matches_a_pixel_by_pixel_reference():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 2, 5, 7)).astype(np.float32))
    before = x.clone()
    for view in generate_views(max_views(flip=True), flip=True):
        source = x.flip(3) if view.mirror else x
        expected = torch.zeros_like(x)
        for row in range(5):
            for col in range(7):
                if 0 <= row - view.dy < 5 and 0 <= col - view.dx < 7:
                    expected[..., row, col] = source[..., row - view.dy, col - view.dx]
        assert torch.equal(apply_view(x, view), expected), view.name
    assert torch.equal(x, before)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"views": ["identity", "mirror"], "count": 2}, "query: give views or count, not both"),
        ({"count": 26}, "query: count 26 is more than the 25 views .* flip: true doubles them"),
        ({"count": 51, "flip": True}, "query.count: Input should be less than or equal to 50"),
        ({"count": 0}, "query.count: Input should be greater than or equal to 1"),
        ({"flip": True}, "query: flip goes with count"),
        ({"views": ["identity"], "flip": True}, "query: flip goes with count"),
        ({"count": 2, "flip": "yes"}, "query.flip: Input should be a valid boolean"),
        ({"views": ["mirror", "identity"]}, "the first view must be 'identity'"),
    ],
)
def test_bad_query_configs_name_the_problem(query, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_config({"query": query})
    assert "\n" not in str(info.value)


def test_resolved_views():
    assert QueryConfig().resolved_views() == (IDENTITY,)
    assert QueryConfig(views=["identity", "shift-up"]).resolved_views() == (IDENTITY, View(dy=-1))
    assert QueryConfig(count=4, flip=True).resolved_views() == generate_views(4, flip=True)


@pytest.mark.parametrize(
    ("query", "written"),
    [
        (None, {"views": ["identity"], "signals_dtype": "float32"}),
        ({"views": ["identity", "mirror"]}, {"views": ["identity", "mirror"], "signals_dtype": "float32"}),
        ({"count": 5, "signals_dtype": "float16"}, {"count": 5, "flip": False, "signals_dtype": "float16"}),
    ],
)
def test_the_dumped_config_writes_the_form_in_use_and_reads_back(query, written):
    """Views and count exclude each other, so a dump holds only one; the views form is what was
    written before count existed, so older run directories still match their config."""
    config = parse_config({} if query is None else {"query": query})
    dumped = yaml.safe_load(dump_config(config))
    assert dumped["query"] == written
    assert parse_config(dumped) == config


def image_npz(tmp_path, shape=(40, 3, 6, 6)):
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x=rng.random(shape).astype(np.float32), y=np.arange(shape[0]) % 4)
    return {"source": "npz", "path": str(path)}


def test_digits_refuse_mirrored_views():
    for query in ({"count": 2, "flip": True}, {"views": ["identity", "mirror"]}):
        config = parse_config({"data": {"source": "digits"}, "query": query})
        with pytest.raises(ConfigError, match="a mirrored digit is not the same digit") as info:
            prepare_pool(config)
        assert "\n" not in str(info.value)
    assert prepare_pool(parse_config({"data": {"source": "digits"}, "query": {"count": 25}})).is_image
    # mnist5k is refused by the same rule; checked without loading its 5,000 images
    with pytest.raises(ConfigError, match="'mnist5k'"):
        check_views_fit_data(generate_views(2, flip=True), is_image=True, source=DataSource.MNIST5K)
    assert not DataSource.MNIST5K.mirror_keeps_label and not DataSource.DIGITS.mirror_keeps_label


def test_user_images_may_be_mirrored(tmp_path):
    config = parse_config({
        "data": image_npz(tmp_path), "design": {"num_targets": 5}, "query": {"count": 50, "flip": True},
    })
    assert prepare_pool(config).feature_shape == (3, 6, 6)


def test_tabular_data_refuses_every_view_but_identity(tmp_path):
    base = {"data": image_npz(tmp_path, shape=(40, 5)), "design": {"num_targets": 5}}
    with pytest.raises(ConfigError, match="need image data"):
        prepare_pool(parse_config({**base, "query": {"count": 2}}))
    assert prepare_pool(parse_config({**base, "query": {"count": 1}})).num_points == 40


@pytest.mark.parametrize("count", [1, 7])
def test_query_logits_has_one_slice_per_view(count):
    def make():
        return build_model(Architecture.CNN, feature_shape=(1, 6, 6), num_classes=3, channels=(4,))

    ensemble = Ensemble.initialise(make, [0, 1], torch.device("cpu"))
    x = torch.from_numpy(np.random.default_rng(1).random((10, 1, 6, 6)).astype(np.float32))
    views = QueryConfig(count=count).resolved_views()
    logits = query_logits(ensemble, x, views, batch_size=4)
    assert logits.shape == (2, 10, count, 3) and logits.dtype == np.float32
    np.testing.assert_allclose(logits[:, :, 0], ensemble.forward_shared(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    for a, view in enumerate(views):
        expected = ensemble.forward_shared(apply_view(x, view)).detach().numpy()
        np.testing.assert_allclose(logits[:, :, a], expected, rtol=1e-5, atol=1e-6)


def test_noise_views_are_fixed_per_point_whatever_the_batches():
    from truthserum.query.views import NOISE_BLOCK, noise_views

    views = noise_views(3, 0.5)
    assert [view.name for view in views] == ["noise(0.5)#1", "noise(0.5)#2", "noise(0.5)#3"]
    x = torch.zeros((NOISE_BLOCK + 300, 4))
    whole = apply_view(x, views[0])
    parts = torch.cat([apply_view(x[:700], views[0]), apply_view(x[700:], views[0], rows=np.arange(700, len(x)))])
    assert torch.equal(whole, parts) and not torch.equal(whole, apply_view(x, views[1]))
    # a job that queries some points alone (the adaptive calibration: the targets) sees their noise
    chosen = np.array([3, 1030, 5, NOISE_BLOCK + 299])
    assert torch.equal(apply_view(x[chosen], views[0], rows=chosen), whole[chosen])
    assert abs(float(whole.std()) - 0.5) < 0.02 and abs(float(whole.mean())) < 0.02
    assert torch.equal(x, torch.zeros_like(x))  # the points themselves are left as they are


def test_noise_views_come_after_the_named_views_and_suit_tables(tmp_path):
    query = QueryConfig(views=["identity"], noise_views=2, noise_scale=0.1)
    assert query.resolved_views() == (IDENTITY, View(noise=0.1, draw=1), View(noise=0.1, draw=2))
    base = {"data": image_npz(tmp_path, shape=(40, 5)), "design": {"num_targets": 5}}
    assert prepare_pool(parse_config({**base, "query": {"noise_views": 4, "noise_scale": 0.2}})).num_points == 40
    dumped = yaml.safe_load(dump_config(parse_config({"query": {"noise_views": 4, "noise_scale": 0.2}})))
    assert dumped["query"] == {"views": ["identity"], "noise_views": 4, "noise_scale": 0.2, "signals_dtype": "float32"}
    for query, message in (({"noise_views": 2}, "noise_views needs noise_scale"),
                           ({"noise_scale": 0.1}, "noise_scale goes with noise_views")):
        with pytest.raises(ConfigError, match=message):
            parse_config({"query": query})


def test_label_only_counts_right_answers_over_noise_views(tmp_path):
    """On a table, noise views turn the label-only attack's one bit per model into a count."""
    from truthserum.tasks.membership import run_experiment
    from truthserum.attacks import load_signals

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    path = tmp_path / "table.npz"
    np.savez(path, x=x, y=(x[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(np.int64))
    config = parse_config({
        "data": {"source": "npz", "path": str(path)}, "design": {"num_models": 4, "num_targets": 8},
        "poison": {"replicas": 1}, "model": {"architecture": "mlp", "hidden_sizes": [16]},
        "train": {"epochs": 3, "batch_size": 64, "shard_size": 4}, "query": {"noise_views": 5, "noise_scale": 0.3},
        "attacks": ["label-only"], "metrics": {"bootstrap": 10},
    })
    run_experiment(config, tmp_path / "run", progress=False, log=lambda _: None)
    inputs = load_signals(tmp_path / "run" / "signals-clean.npz")
    assert inputs.num_views == 6
    logits = np.load(tmp_path / "run" / "signals-clean-logits.npy")
    counts = (logits.argmax(axis=3) == inputs.labels[None, :, None]).sum(axis=2)
    assert len(np.unique(counts)) > 2  # not one bit: some points are right under some noise, wrong under other
