"""Large audits: logits on disk read a chunk of points at a time, and attacks whose
temporaries are bounded by the chunk, with the same scores as computed all at once."""

import numpy as np
import pytest
from scipy.special import log_ndtr

from truthserum.attacks import AttackInputs, AttackName, AttackOptions, RmiaOptions, score_attacks
from truthserum.attacks.lira import SCALE_FLOOR, lira
from truthserum.attacks.shadows import ShadowPlan
from truthserum.errors import SignalsError
from truthserum.store import logits as logit_store
from truthserum.store.logits import LogitDtype, LogitStore, column_chunks
from truthserum.metrics.roc import roc_curve, tpr_at_fpr


def _signals(seed=0, models=12, points=90, views=2, classes=4):
    rng = np.random.default_rng(seed)
    keep = rng.random((models, points)).argsort(axis=0) < models // 2  # balanced
    labels = rng.integers(0, classes, points)
    logits = rng.normal(size=(models, points, views, classes)).astype(np.float32)
    logits[keep] += np.eye(classes, dtype=np.float32)[np.broadcast_to(labels, keep.shape)[keep]][:, None] * 1.5
    return logits, labels, keep


def test_store_round_trip_and_numpy_can_map_it(tmp_path):
    logits, _, _ = _signals()
    store = LogitStore.create(tmp_path / "logits.npy", logits.shape, LogitDtype.FLOAT32)
    store.write_models(4, logits[4:])  # shards arrive in any order
    store.write_models(0, logits[:4])
    reopened = LogitStore.open(tmp_path / "logits.npy")
    np.testing.assert_array_equal(reopened.read_points(0, 90), logits)
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy", mmap_mode="r"), logits)
    scattered = np.array([85, 3, 40, 4, 0])  # unsorted, with gaps wider than one read run
    np.testing.assert_array_equal(reopened[:, scattered], logits[:, scattered])
    seen = np.zeros(90, dtype=int)
    for positions, chunk in column_chunks(reopened, np.arange(90)[::-1], chunk=16):
        np.testing.assert_array_equal(chunk, logits[:, np.arange(90)[::-1][positions]])
        seen[positions] += 1
    assert (seen == 1).all()


def test_float16_store_rounds_like_float16(tmp_path):
    logits, _, _ = _signals()
    store = LogitStore.create(tmp_path / "half.npy", logits.shape, LogitDtype.FLOAT16)
    store.write_models(0, logits)
    assert (tmp_path / "half.npy").stat().st_size < logits.nbytes / 2 + 200
    read = LogitStore.open(tmp_path / "half.npy").read_points(0, 90)
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, logits.astype(np.float16).astype(np.float32))


def test_a_bad_store_is_one_signals_error(tmp_path):
    with pytest.raises(SignalsError, match="no such file"):
        LogitStore.open(tmp_path / "missing.npy")
    np.save(tmp_path / "ints.npy", np.zeros((2, 3, 1, 2), dtype=np.int64))
    with pytest.raises(SignalsError, match="float32 or float16"):
        LogitStore.open(tmp_path / "ints.npy")
    np.save(tmp_path / "short.npy", np.zeros((2, 3, 1, 2), dtype=np.float32))
    with open(tmp_path / "short.npy", "r+b") as handle:
        handle.truncate(140)  # the header is 128 bytes; the data 48
    with pytest.raises(SignalsError, match="bytes, expected"):
        LogitStore.open(tmp_path / "short.npy")
    (tmp_path / "pickle.npy").write_bytes(b"\x80\x04not an npy")
    with pytest.raises(SignalsError, match="not a readable .npy"):
        LogitStore.open(tmp_path / "pickle.npy")


@pytest.mark.parametrize("options", [AttackOptions(rmia=RmiaOptions(offline_a=0.5)), AttackOptions(shadow_models=4, seed=2)])
def test_scores_from_a_store_in_small_chunks_equal_scores_from_memory(tmp_path, monkeypatch, options):
    """Every attack over chunks of 7 points (signals, LiRA, label-only, RMIA and its tuning)
    against the same attack on all 90 points at once."""
    logits, labels, keep = _signals(seed=3)
    store = LogitStore.create(tmp_path / "logits.npy", logits.shape, LogitDtype.FLOAT32)
    store.write_models(0, logits)
    targets = np.random.default_rng(0).permutation(90)[:50]
    in_memory = AttackInputs.from_arrays(logits=logits, labels=labels, keep=keep, targets=targets)
    expected = score_attacks(in_memory, list(AttackName), options)
    monkeypatch.setattr(logit_store, "DEFAULT_CHUNK_POINTS", 7)
    on_disk = AttackInputs.from_arrays(logits=store, labels=labels, keep=keep, targets=targets)
    streamed = score_attacks(on_disk, list(AttackName), options)
    for name in AttackName:
        np.testing.assert_allclose(streamed[name], expected[name], rtol=1e-12, atol=1e-12)


def test_sparse_columns_of_a_store_are_read_a_span_at_a_time(tmp_path, monkeypatch):
    logits, _, _ = _signals(points=400)
    store = LogitStore.create(tmp_path / "logits.npy", logits.shape, LogitDtype.FLOAT32)
    store.write_models(0, logits)
    monkeypatch.setattr(logit_store, "DEFAULT_CHUNK_POINTS", 8)  # spans of at most 16 points
    spans = []
    original = LogitStore.read_points
    monkeypatch.setattr(LogitStore, "read_points",
                        lambda self, start, stop: spans.append(stop - start) or original(self, start, stop))
    every_fifth = np.arange(0, 400, 5)[::-1]  # gaps under the run gap: one run, many spans
    np.testing.assert_array_equal(store[:, every_fifth], logits[:, every_fifth])
    assert max(spans) <= 16 and len(spans) > 20


def test_a_logit_too_large_for_float16_is_one_signals_error(tmp_path):
    store = LogitStore.create(tmp_path / "half.npy", (2, 3, 1, 2), LogitDtype.FLOAT16)
    with pytest.raises(SignalsError, match="does not fit float16; set query.signals_dtype: float32"):
        store.write_models(0, np.full((2, 3, 1, 2), 1e5, dtype=np.float32))


def test_the_thinned_roc_keeps_the_low_fpr_region_and_the_ends():
    rng = np.random.default_rng(0)
    members = rng.random(200_000) < 0.5
    scores = rng.normal(size=200_000) + members
    full = roc_curve(scores, members)
    thin = full.thinned()  # at most about 20,000 points
    assert thin.fpr.size < 25_000 < full.fpr.size
    low = full.fpr < 1e-3
    np.testing.assert_array_equal(thin.fpr[: low.sum()], full.fpr[low])  # every step below 1e-3
    assert thin.fpr[-1] == full.fpr[-1] == 1.0 and thin.tpr[-1] == 1.0
    assert (np.diff(thin.fpr) >= 0).all() and (np.diff(thin.tpr) >= 0).all()
    for level in (1e-3, 1e-2, 0.1):
        assert abs(tpr_at_fpr(thin, level) - tpr_at_fpr(full, level)) < 0.01


def _lira_by_definition(phi, keep, plan, *, online, fixed_variance):
    """Each target model's shadows taken literally, medians by np.median: the slow reference."""
    models, targets, views = phi.shape
    scores = np.empty((models, targets))
    pooled = {}
    for m in range(models):
        mask = plan.mask(m, np.arange(targets))
        stats = {}
        for name, group in (("in", mask & keep), ("out", mask & ~keep)):
            location = np.array([[np.median(phi[group[:, j], j, a]) for a in range(views)] for j in range(targets)])
            spread = np.array([[np.std(phi[group[:, j], j, a]) for a in range(views)] for j in range(targets)])
            deviations = [(phi[group[:, j], j, :] - location[j]) ** 2 for j in range(targets)]
            pooled[name] = np.sqrt(np.concatenate(deviations).mean(axis=0))
            scale = np.broadcast_to(pooled[name], location.shape) if fixed_variance else spread
            stats[name] = location, np.maximum(scale, SCALE_FLOOR)
        (mu_in, s_in), (mu_out, s_out) = stats["in"], stats["out"]
        x = phi[m]
        if online:
            ratio = (-0.5 * ((x - mu_in) / s_in) ** 2 - np.log(s_in)) - (-0.5 * ((x - mu_out) / s_out) ** 2 - np.log(s_out))
        else:
            ratio = log_ndtr((x - mu_out) / s_out)
        scores[m] = ratio.mean(axis=-1)
    return scores


@pytest.mark.parametrize("design", ["balanced", "unbalanced", "budget", "one-survivor"])
@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("fixed_variance", [False, True])
def test_chunked_lira_equals_its_definition(design, online, fixed_variance):
    """The sorted-group shortcut (balanced and unbalanced designs: one or two shadows
    removed per group) and the direct fallback (a shadow budget) against the definition, over
    chunks smaller than the targets."""
    rng = np.random.default_rng(7)
    models, targets = (4 if design == "one-survivor" else 10), 23  # 4: one shadow per group
    if design == "unbalanced":
        keep = rng.random((models, targets)) < 0.5
        keep[:3], keep[3:6] = True, False  # at least 3 IN and 3 OUT per point
    else:
        keep = rng.random((models, targets)).argsort(axis=0) < models // 2
    phi = rng.normal(size=(models, targets, 2))
    phi[:, 5] = 1.0  # ties everywhere in one column
    plan = ShadowPlan(keep=keep, count=4 if design == "budget" else None, seed=1)
    scores = lira(phi, keep, lambda m, columns: plan.mask(m, columns), online=online,
                  fixed_variance=fixed_variance, chunk=6)
    expected = _lira_by_definition(phi, keep, plan, online=online, fixed_variance=fixed_variance)
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-9)


def test_a_run_keeps_its_logits_in_a_float16_store_and_the_attack_command_reads_it(tmp_path, capsys):
    from conftest import run_main

    from truthserum.config import parse_config
    from truthserum.tasks.membership import run_experiment

    config = parse_config({
        "seed": 2, "data": {"source": "digits", "pool_size": 200},
        "design": {"num_models": 4, "num_targets": 10}, "poison": {"replicas": 2},
        "model": {"hidden_sizes": [16]}, "train": {"epochs": 2, "shard_size": 3},
        "query": {"signals_dtype": "float16"}, "attacks": ["lira-offline"], "metrics": {"bootstrap": 10},
    })
    results = run_experiment(config, tmp_path / "run", progress=False, log=lambda _: None).to_json()
    stored = np.load(tmp_path / "run" / "signals-poisoned-logits.npy", mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (4, 200, 1, 10)
    with np.load(tmp_path / "run" / "scores-poisoned.npz") as scores:
        assert set(scores.files) == {"members", "lira-offline"} and scores["lira-offline"].shape == (4, 10)
    done = run_main(capsys, "attack", "--signals", str(tmp_path / "run" / "signals-poisoned.npz"),
                    "--attack", "lira-offline")
    assert done.returncode == 0, done.stderr
    auc = results["conditions"]["poisoned"]["attacks"]["lira-offline"]["auc"]
    assert f"AUC {auc:.3f}" in done.stdout
    # the storage type may change on resume: the logits are rebuilt from the trained shards
    messages = []
    as_float32 = config.model_copy(update={"query": config.query.model_copy(update={"signals_dtype": LogitDtype.FLOAT32})})
    run_experiment(as_float32, tmp_path / "run", progress=False, log=messages.append)
    assert np.load(tmp_path / "run" / "signals-poisoned-logits.npy").dtype == np.float32
    assert not any("trained models" in m for m in messages)
    (tmp_path / "run" / "signals-poisoned-logits.npy").unlink()
    missing = run_main(capsys, "attack", "--signals", str(tmp_path / "run" / "signals-poisoned.npz"),
                       "--attack", "lira-offline")
    assert missing.returncode == 2 and "signals-poisoned-logits.npy is not beside it" in missing.stderr
