"""The CIFAR-10 path on the CPU: the binary format, the Wide-ResNet in the vectorized ensemble,
flip-and-crop augmentation, mixed precision (off the GPU), and configs/cifar10.yaml end to end on a
tiny folder written in CIFAR-10's binary format."""

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from truthserum.config import MembershipConfig, RunConfig, load_config, parse_config
from truthserum.data.datasets import CIFAR10_MEAN, CIFAR10_STD, CIFAR10_URL, DataSource, load_dataset
from truthserum.errors import ConfigError, DataError
from truthserum.query.views import IDENTITY, QueryView, check_views_fit_data
from truthserum.train import (
    Architecture, Ensemble, OptimizerName, Schedule, TrainSettings, build_model, train_ensemble,
)
from truthserum.train.augment import (
    CROP_PADDING, Augment, augment_images, check_augment_fits_data, draw_augmentations,
)
from truthserum.train.ensemble import uses_mixed_precision

REPO = Path(__file__).parent.parent
KNOWN_LABEL = 7


def known_image() -> np.ndarray:
    """(3, 32, 32) uint8 whose channels and axes tell each other apart: red rises down the rows,
    green across the columns, blue along both."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([8 * rows, 8 * cols, rows + cols + 100]).astype(np.uint8)


def write_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny ``cifar-10-batches-bin`` in the real format: five training batches of ``per_batch``
    records and a test batch, each record 1 label byte and 3072 pixel bytes (1024 red, 1024 green,
    1024 blue, each 32x32 row by row). The first training image is :func:`known_image`, labelled
    :data:`KNOWN_LABEL`. Returns the training images ``(N, 3, 32, 32)`` uint8 and labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    images, labels = [], []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        pixels = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        batch_labels = rng.permutation(np.arange(per_batch) % 10).astype(np.uint8)
        if name == "data_batch_1.bin":
            pixels[0], batch_labels[0] = known_image(), KNOWN_LABEL
        records = np.concatenate([batch_labels[:, None], pixels.reshape(per_batch, -1)], axis=1)
        records.tofile(folder / name)
        if name != "test_batch.bin":
            images.append(pixels)
            labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    write_cifar10(tmp_path)
    return tmp_path


def to_bytes(x: np.ndarray) -> np.ndarray:
    """Undo the loader's scaling: back to pixel values 0..255."""
    mean = np.asarray(CIFAR10_MEAN)[:, None, None]
    std = np.asarray(CIFAR10_STD)[:, None, None]
    return np.rint((x * std + mean) * 255.0)


# --- data ---------------------------------------------------------------------------------------


def test_cifar10_decodes_the_binary_layout(tmp_path):
    images, labels = write_cifar10(tmp_path)
    for path in (tmp_path / "cifar-10-batches-bin", tmp_path):  # the folder, or its parent
        dataset = load_dataset(DataSource.CIFAR10, path)
        assert dataset.x.shape == (100, 3, 32, 32) and dataset.x.dtype == np.float32
        assert dataset.num_classes == 10 and dataset.is_image
        assert dataset.y.tolist() == labels.tolist()  # the five training batches, in order
        assert dataset.y[0] == KNOWN_LABEL
        decoded = to_bytes(dataset.x[0])
        assert decoded[0, 5, 0] == 40 and decoded[0, 0, 5] == 0  # red rises down the rows
        assert decoded[1, 0, 5] == 40 and decoded[1, 5, 0] == 0  # green across the columns
        np.testing.assert_array_equal(decoded, known_image())
        np.testing.assert_array_equal(to_bytes(dataset.x), images)
    # standardised: a mid-grey pixel of every channel lands near 0, the whole pool near N(0, 1)
    assert abs(float(dataset.x.mean())) < 0.2 and 1.0 < float(dataset.x.std()) < 1.3


def _corrupt(folder: Path, how: str) -> Path:
    """Break the fixture one way; returns the path the error must name."""
    batches = folder / "cifar-10-batches-bin"
    third = batches / "data_batch_3.bin"
    if how == "missing-folder":
        return folder / "nowhere"
    if how == "no-files":
        empty = folder / "empty"
        empty.mkdir()
        return empty
    if how == "missing-file":
        third.unlink()
    elif how == "truncated":
        third.write_bytes(third.read_bytes()[:-1])
    elif how == "empty-file":
        third.write_bytes(b"")
    elif how == "bad-label":
        raw = bytearray(third.read_bytes())
        raw[3073 * 2] = 10  # the label byte of record 2
        third.write_bytes(bytes(raw))
    return third


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing-folder", "does not exist: data.path must name cifar-10-batches-bin"),
        ("no-files", "holds neither cifar-10-batches-bin nor its files"),
        ("missing-file", "missing; a CIFAR-10 binary folder holds data_batch_1.bin"),
        ("truncated", "61459 bytes is not a whole number of CIFAR-10 records of 3073 bytes"),
        ("empty-file", "empty; a CIFAR-10 batch holds records of 3073 bytes"),
        ("bad-label", "record 2 has label 10; CIFAR-10 labels are 0..9"),
    ],
)
def test_cifar10_problems_are_one_line_data_errors(cifar_root, how, message):
    named = _corrupt(cifar_root, how)
    with pytest.raises(DataError) as info:
        load_dataset(DataSource.CIFAR10, cifar_root if how not in ("missing-folder", "no-files") else named)
    text = str(info.value)
    assert message in text and str(named) in text and "\n" not in text
    if how not in ("bad-label",):
        assert CIFAR10_URL in text  # says where the data come from


def test_cifar10_config_needs_its_folder_and_allows_mirrors(tmp_path):
    with pytest.raises(ConfigError, match="data: source 'cifar10' needs a path"):
        parse_config({"data": {"source": "cifar10"}})
    assert DataSource.CIFAR10.mirror_keeps_label
    check_views_fit_data([IDENTITY, QueryView.MIRROR.view], is_image=True, source=DataSource.CIFAR10)


# --- the Wide-ResNet ----------------------------------------------------------------------------


def make_wrn(depth: int = 10, widen: int = 1, shape=(3, 32, 32), classes: int = 10):
    def make():
        return build_model(Architecture.WRN, feature_shape=shape, num_classes=classes, depth=depth, widen=widen)

    return make


def test_wrn_ensemble_forward_equals_each_models_own():
    seeds = [5, 6]
    ensemble = Ensemble.initialise(make_wrn(), seeds, torch.device("cpu"))
    x = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    per_model, shared = ensemble.forward_per_model(x), ensemble.forward_shared(x[0])
    assert per_model.shape == (2, 4, 10)
    for k, seed in enumerate(seeds):
        torch.manual_seed(seed)
        alone = make_wrn()()
        with torch.no_grad():
            torch.testing.assert_close(per_model[k], alone(x[k]), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(shared[k], alone(x[0]), rtol=1e-4, atol=1e-5)


def test_wrn_has_no_running_statistics_so_a_point_is_scored_alone():
    torch.manual_seed(0)
    model = build_model(Architecture.WRN, feature_shape=(3, 32, 32), num_classes=10, depth=16, widen=2)
    assert sum(p.numel() for p in model.parameters()) > 600_000  # WRN-16-2: 16-32-64 x 2 channels
    assert not list(model.buffers())  # nothing vmap would have to update in place
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"architecture": "wrn", "depth": 12}, "model.depth: must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got 12"),
        ({"architecture": "wrn", "depth": 4}, "model.depth: Input should be greater than or equal to 10"),
        ({"architecture": "wrn", "widen": 0}, "model.widen: Input should be greater than or equal to 1"),
    ],
)
def test_wrn_sizes_are_validated(model, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({"model": model})


def test_wrn_needs_images_and_its_sizes():
    with pytest.raises(ConfigError, match="'wrn' needs image data"):
        build_model(Architecture.WRN, feature_shape=(20,), num_classes=3, depth=10, widen=1)
    with pytest.raises(ValueError, match="needs depth and widen"):
        build_model(Architecture.WRN, feature_shape=(3, 8, 8), num_classes=3)
    assert MembershipConfig().model.depth == 16 and MembershipConfig().model.widen == 4


SGD = TrainSettings(optimizer=OptimizerName.SGD, learning_rate=0.05, momentum=0.9, epochs=4, batch_size=16,
                    weight_decay=5e-4, schedule=Schedule.COSINE)


def fixture_tensors(tmp_path):
    write_cifar10(tmp_path)
    pool = load_dataset(DataSource.CIFAR10, tmp_path)
    return torch.from_numpy(pool.x), torch.from_numpy(pool.y)


def train_wrn(seeds, subsets, settings, x, y, *, steps=None, losses=None):
    ensemble = Ensemble.initialise(make_wrn(), seeds, torch.device("cpu"))
    train_ensemble(
        ensemble, x=x, y=y, train_indices=subsets, settings=settings, steps=steps,
        order_rngs=[np.random.default_rng([s, 1]) for s in seeds],
        augment_rngs=[np.random.default_rng([s, 2]) for s in seeds],
        on_epoch=None if losses is None else (lambda epoch, loss: losses.append(loss)),
    )
    return ensemble


def test_small_wrn_learns_the_fixture(tmp_path):
    """WRN-10-1 memorises 16 random images with random labels: the loss falls from ~ln 10."""
    x, y = fixture_tensors(tmp_path)
    losses: list[float] = []
    settings = replace(SGD, learning_rate=0.1, epochs=10, batch_size=8, schedule=Schedule.CONSTANT)
    train_wrn([0, 1], [np.arange(0, 16), np.arange(8, 24)], settings, x, y, losses=losses)
    assert losses[0] > 2.0 and losses[-1] < losses[0] - 0.5, losses


def test_wrn_ensemble_trains_the_same_models_as_one_at_a_time_with_augmentation(tmp_path):
    """A model's initialisation, data order and flips and crops are its own: trained with a
    partner whose larger subset widens every batch, it ends where it ends alone."""
    x, y = fixture_tensors(tmp_path)
    augmenting = replace(SGD, epochs=2, augment=Augment.FLIP_CROP)
    seeds, subsets = [3, 4], [np.arange(0, 24), np.arange(10, 60)]
    together = train_wrn(seeds, subsets, augmenting, x, y, steps=3)
    for k, (seed, subset) in enumerate(zip(seeds, subsets)):
        alone = train_wrn([seed], [subset], augmenting, x, y, steps=3)
        for name, stacked in together.params.items():
            torch.testing.assert_close(stacked[k], alone.params[name][0], rtol=1e-4, atol=1e-5)
    plain = train_wrn(seeds, subsets, replace(augmenting, augment=Augment.NONE), x, y, steps=3)
    assert not torch.equal(plain.params["classifier.weight"], together.params["classifier.weight"])


# --- augmentation -------------------------------------------------------------------------------


def images(*lead: int, size: int = 6) -> torch.Tensor:
    return torch.arange(np.prod(lead) * 2 * size * size, dtype=torch.float32).reshape(*lead, 2, size, size)


def identity_draws(*lead: int):
    return torch.zeros(lead, dtype=torch.bool), torch.full(lead, CROP_PADDING), torch.full(lead, CROP_PADDING)


def test_identity_draws_keep_the_image_and_a_flip_mirrors_it():
    x = images(2, 3)
    before = x.clone()
    flip, top, left = identity_draws(2, 3)
    assert torch.equal(augment_images(x, flip, top, left), x)
    flip[0, 0] = True
    out = augment_images(x, flip, top, left)
    assert torch.equal(out[0, 0], x[0, 0].flip(-1)) and out[0, 0, 0, 0].tolist() == [5, 4, 3, 2, 1, 0]
    assert torch.equal(out[1], x[1]) and torch.equal(x, before)  # others untouched, input unmodified


def test_a_crop_is_a_shifted_window_of_the_reflect_padded_image():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 2, 7, 6, generator=generator)
    flip = torch.rand(3, 5, generator=generator) < 0.5
    top = torch.randint(0, 2 * CROP_PADDING + 1, (3, 5), generator=generator)
    left = torch.randint(0, 2 * CROP_PADDING + 1, (3, 5), generator=generator)
    out = augment_images(x, flip, top, left)
    assert out.shape == x.shape
    pad = CROP_PADDING
    for m in range(3):
        for b in range(5):
            image = x[m, b].numpy()[..., ::-1] if flip[m, b] else x[m, b].numpy()
            padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
            t, l = int(top[m, b]), int(left[m, b])
            np.testing.assert_array_equal(out[m, b].numpy(), padded[:, t : t + 7, l : l + 6])
    shifted = augment_images(x, torch.zeros(3, 5, dtype=torch.bool), top * 0 + pad + 1, left * 0 + pad)
    assert torch.equal(shifted[..., :-1, :], x[..., 1:, :])  # top = pad + 1: the content moves up a row


def test_draws_are_each_models_own_and_deterministic():
    def batches(*subset_sizes: int, steps: int = 3) -> np.ndarray:
        width = -(-max(subset_sizes) // steps)
        out = np.full((steps, len(subset_sizes), width), -1)
        for m, size in enumerate(subset_sizes):
            for s, chunk in enumerate(np.array_split(np.arange(size), steps)):
                out[s, m, : len(chunk)] = chunk
        return out

    def model_draws(draws, layout, m):
        valid = layout[:, m] >= 0
        return draws.flip[:, m][valid], draws.top[:, m][valid], draws.left[:, m][valid]

    narrow, wide = batches(10, 12), batches(10, 40)  # model 0's partner widens every batch
    first = draw_augmentations(narrow, [np.random.default_rng(1), np.random.default_rng(2)], Augment.FLIP_CROP)
    again = draw_augmentations(wide, [np.random.default_rng(1), np.random.default_rng(9)], Augment.FLIP_CROP)
    for a, b in zip(model_draws(first, narrow, 0), model_draws(again, wide, 0)):
        np.testing.assert_array_equal(a, b)
    flips, tops, _ = model_draws(first, narrow, 0)
    assert 0 < flips.sum() < 10 and set(tops.tolist()) <= set(range(2 * CROP_PADDING + 1))
    assert (first.top[narrow < 0] == CROP_PADDING).all() and not first.flip[narrow < 0].any()
    crop_only = draw_augmentations(narrow, [np.random.default_rng(1), np.random.default_rng(2)], Augment.CROP)
    assert not crop_only.flip.any()


def test_augmentation_is_refused_without_images(tmp_path):
    for shape in [(20,), (1, 4, 4)]:
        with pytest.raises(ConfigError, match="train.augment 'flip-crop' needs") as info:
            check_augment_fits_data(Augment.FLIP_CROP, shape)
        assert "\n" not in str(info.value)
    check_augment_fits_data(Augment.NONE, (20,))
    with pytest.raises(ConfigError, match="needs images; data.source 'cps' is a table"):
        parse_config({"task": "attribute", "data": {"source": "cps"}, "train": {"augment": "crop"}})
    with pytest.raises(ConfigError, match="mirrors images, which does not suit data.source 'digits'"):
        parse_config({"data": {"source": "digits"}, "train": {"augment": "flip-crop"}})
    assert parse_config({"data": {"source": "digits"}, "train": {"augment": "crop"}}).train.augment is Augment.CROP
    # a user's npz is only known to be flat once loaded: refused before the first step
    flat = TrainSettings(optimizer=OptimizerName.SGD, learning_rate=0.1, epochs=1, batch_size=4,
                         augment=Augment.CROP)
    ensemble = Ensemble.initialise(lambda: build_model(Architecture.MLP, feature_shape=(5,), num_classes=2), [0],
                                   torch.device("cpu"))
    before = {name: p.clone() for name, p in ensemble.params.items()}
    with pytest.raises(ConfigError, match=r"needs image data \(C, H, W\), got feature shape \(5,\)"):
        train_ensemble(ensemble, x=torch.zeros(8, 5), y=torch.zeros(8, dtype=torch.long),
                       train_indices=[np.arange(8)], order_rngs=[np.random.default_rng(0)],
                       augment_rngs=[np.random.default_rng(1)], settings=flat)
    assert all(torch.equal(before[name], p) for name, p in ensemble.params.items())


def test_augmentation_needs_each_models_generator(tmp_path):
    x, y = fixture_tensors(tmp_path)
    settings = replace(SGD, epochs=1, augment=Augment.FLIP_CROP)
    ensemble = Ensemble.initialise(make_wrn(), [0], torch.device("cpu"))
    with pytest.raises(ValueError, match="augment_rngs"):
        train_ensemble(ensemble, x=x, y=y, train_indices=[np.arange(10)], order_rngs=[np.random.default_rng(0)],
                       settings=settings)


# --- mixed precision ----------------------------------------------------------------------------


def test_mixed_precision_is_never_used_on_the_cpu(tmp_path, monkeypatch):
    x, y = fixture_tensors(tmp_path)
    settings = replace(SGD, epochs=1)
    asked = replace(settings, mixed_precision=True)
    assert not uses_mixed_precision(asked, torch.device("cpu"))
    reference = train_wrn([0], [np.arange(20)], settings, x, y)

    def no_autocast(*args, **kwargs):
        raise AssertionError("autocast entered on the CPU")

    monkeypatch.setattr(torch, "autocast", no_autocast)
    mixed = train_wrn([0], [np.arange(20)], asked, x, y)
    for name, p in reference.params.items():
        assert torch.equal(p, mixed.params[name]) and p.dtype == torch.float32


# --- configs/cifar10.yaml -----------------------------------------------------------------------


def test_cifar10_config_is_the_published_setting():
    config = load_config(REPO / "configs" / "cifar10.yaml")
    assert config.data.source is DataSource.CIFAR10
    assert config.data.path == (REPO / "data" / "cifar-10-batches-bin").resolve()
    assert (config.design.num_models, config.design.num_targets, config.poison.replicas) == (16, 250, 8)
    assert (config.model.architecture, config.model.depth, config.model.widen) == (Architecture.WRN, 28, 2)
    train = config.train
    assert (train.optimizer, train.learning_rate, train.momentum) == (OptimizerName.SGD, 0.1, 0.9)
    assert train.weight_decay == 5e-4
    assert (train.schedule, train.epochs, train.batch_size) == (Schedule.COSINE, 100, 256)
    assert train.augment is Augment.FLIP_CROP and train.mixed_precision
    assert [view.name for view in config.query.resolved_views()] == ["identity", "mirror"]
    poisons = config.design.num_targets * config.poison.replicas
    assert poisons / (poisons + 50_000 / 2) < 0.10  # no poison-fraction warning


def shrunk(config: RunConfig, **sections) -> RunConfig:
    """``config`` with some keys of some sections replaced, validated again."""
    raw = config.to_json_dict()
    for section, values in sections.items():
        raw[section] = {**raw[section], **values} if isinstance(values, dict) else values
    return parse_config(raw)


def test_cifar10_config_runs_end_to_end_on_the_fixture(cifar_root, tmp_path):
    from truthserum.tasks.membership import run_experiment

    config = shrunk(
        load_config(REPO / "configs" / "cifar10.yaml"),
        data={"path": str(cifar_root)}, design={"num_models": 4, "num_targets": 4},
        poison={"replicas": 2}, model={"depth": 10, "widen": 1},
        train={"epochs": 2, "batch_size": 32, "shard_size": 2}, metrics={"bootstrap": 20},
    )
    results = run_experiment(config, tmp_path / "run", device="cpu", progress=False, log=lambda message: None).to_json()
    assert set(results["conditions"]) == {"clean", "poisoned"}
    assert results["config"]["model"]["depth"] == 10 and results["config"]["train"]["augment"] == "flip-crop"
    logits = np.load(tmp_path / "run" / "signals-poisoned-logits.npy")
    assert logits.shape == (4, 100, 2, 10)  # 4 models, the pool, identity + mirror, 10 classes
    assert np.isfinite(logits).all()
    for name, condition in results["conditions"].items():  # accuracy on the view the models saw
        identity = np.load(tmp_path / "run" / f"signals-{name}-logits.npy")[:, :, 0]
        with np.load(tmp_path / "run" / f"signals-{name}.npz") as signals:
            correct, keep = identity.argmax(-1) == signals["labels"], signals["keep"]
        for split, mask in (("train", keep), ("test", ~keep)):
            expected = np.mean([correct[m][mask[m]].mean() for m in range(len(keep))])
            assert condition["accuracy"][split] == pytest.approx(expected), (name, split)
