"""truthserum attack --signals: every attack in one process into an output directory
(results.json, roc.png, scores.npz), probabilities read as logits, target points without
shadow models refused (with their count and the first few) or dropped on request."""

import json

import numpy as np
import pytest
from scipy.special import softmax

from conftest import run_main
from test_cli import assert_one_line_error
from truthserum.attacks import AttackInputs, AttackOptions, registered_attacks, score_attacks
from truthserum.attacks.inputs import read_as_logits
from truthserum.errors import RunDirError, SignalsError
from truthserum.tasks.results import RunResults
from truthserum.tasks.signals import attack_signals, default_out_dir

FAST = ("--rmia-offline-a", "0.5")  # no tuning: these tests check the wiring, not RMIA's a


def signals_arrays(seed=0, num_models=8, num_points=40, classes=3, views=1):
    rng = np.random.default_rng(seed)
    keep = rng.random((num_models, num_points)).argsort(axis=0) < num_models // 2
    labels = rng.integers(0, classes, num_points)
    logits = rng.normal(size=(num_models, num_points, views, classes))
    logits += 2.0 * (keep[:, :, None, None] & (np.arange(classes) == labels[:, None])[None, :, None, :])
    return {"logits": logits, "labels": labels, "keep": keep, "targets": np.arange(12)}


def write_signals(path, **arrays):
    np.savez(path, **arrays)
    return path


def tree(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_all_attacks_in_one_process_write_results_roc_and_scores(tmp_path, capsys):
    signals = write_signals(tmp_path / "mine.npz", **signals_arrays())
    done = run_main(capsys, "attack", "--signals", str(signals), *FAST)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "mine-attack"
    assert default_out_dir(signals) == out
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = RunResults.read(out)
    attacks = results.conditions["mine"].attacks
    assert list(attacks) == list(registered_attacks())
    with np.load(out / "scores.npz", allow_pickle=False) as stored:
        assert set(stored.files) == {*registered_attacks(), "members", "targets"}
        np.testing.assert_array_equal(stored["targets"], np.arange(12))
        np.testing.assert_array_equal(stored["members"], signals_arrays()["keep"][:, :12])
        for name in ("lira-online", "global-threshold"):  # the numbers measured are those of the stored scores
            from truthserum.metrics.attack import evaluate

            assert attacks[name].auc == pytest.approx(evaluate(stored[name], stored["members"], resamples=0).auc)
    for name, result in attacks.items():
        assert f"{name}: AUC {result.auc:.3f}" in done.stdout
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["attacked"]["attacks"] == list(registered_attacks())
    assert on_disk["attacked"]["logits_kind"] == "logits" and on_disk["warnings"] == []
    accuracy = on_disk["conditions"]["mine"]["accuracy"]
    assert 0.5 < accuracy["train"] <= 1.0 and accuracy["train"] > accuracy["test"]
    # an earlier output may be overwritten; the numbers repeat
    again = run_main(capsys, "attack", "--signals", str(signals), "--attack", "lira-online", "--attack",
                     "global-threshold", "--attack", "lira-online", *FAST)
    assert again.returncode == 0, again.stderr
    rerun = RunResults.read(out).conditions["mine"].attacks
    assert list(rerun) == ["lira-online", "global-threshold"]
    assert rerun["lira-online"].to_json() == attacks["lira-online"].to_json()


def test_probabilities_are_read_as_their_logarithm(tmp_path, capsys):
    arrays = signals_arrays(seed=1, views=2)
    probabilities = softmax(arrays["logits"], axis=-1)
    as_logits = AttackInputs.from_arrays(**arrays)
    as_probabilities = AttackInputs.from_arrays(**{**arrays, "logits": probabilities})
    converted, found = read_as_logits(as_probabilities)
    assert found and not read_as_logits(as_logits)[1]
    names = ["lira-online", "lira-offline-fixed", "label-only"]
    expected = score_attacks(as_logits, names)
    got = score_attacks(converted, names)
    for name in names:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=1e-9)
    # through the command: a warning on stderr and in results.json, the scores of the logits
    signals = write_signals(tmp_path / "p.npz", **{**arrays, "logits": probabilities})
    done = run_main(capsys, "attack", "--signals", str(signals), "--attack", "lira-online")
    assert done.returncode == 0, done.stderr
    assert "look like probabilities" in done.stderr and "--logits-kind logits" in done.stderr
    results = RunResults.read(tmp_path / "p-attack")
    assert any("look like probabilities" in warning for warning in results.warnings)
    assert results.details["attacked"]["logits_kind"] == "probabilities"
    with np.load(tmp_path / "p-attack" / "scores.npz") as stored:
        np.testing.assert_allclose(stored["lira-online"], expected["lira-online"], rtol=1e-9, atol=1e-9)
    # overridden: taken as logits, no warning, other scores
    done = run_main(capsys, "attack", "--signals", str(signals), "--attack", "lira-online",
                    "--logits-kind", "logits", "--out", str(tmp_path / "raw"))
    assert done.returncode == 0 and "look like probabilities" not in done.stderr
    with np.load(tmp_path / "raw" / "scores.npz") as stored:
        assert not np.allclose(stored["lira-online"], expected["lira-online"])
    # said to be probabilities when they are not: one line
    logits_file = write_signals(tmp_path / "l.npz", **arrays)
    assert_one_line_error(run_main(capsys, "attack", "--signals", str(logits_file), "--logits-kind",
                                   "probabilities"), "--logits-kind is probabilities, but some values lie outside")
    assert not (tmp_path / "l-attack").exists()


def test_probabilities_in_a_logits_store_beside_the_signals(tmp_path):
    """A run's layout (labels, keep, targets in the .npz, logits in a .npy beside it): the
    probabilities are converted a chunk at a time."""
    arrays = signals_arrays(seed=2)
    signals = write_signals(tmp_path / "s.npz", labels=arrays["labels"], keep=arrays["keep"], targets=arrays["targets"])
    np.save(tmp_path / "s-logits.npy", softmax(arrays["logits"], axis=-1).astype(np.float32))
    results = attack_signals(signals=signals, attacks=["lira-online"], log=lambda _: None)
    assert results.details["attacked"]["logits_kind"] == "probabilities"
    expected = score_attacks(AttackInputs.from_arrays(**arrays), ["lira-online"])["lira-online"]
    with np.load(tmp_path / "s-attack" / "scores.npz") as stored:
        np.testing.assert_allclose(stored["lira-online"], expected, rtol=1e-4, atol=1e-4)  # float32 on disk


def unsupported_arrays():
    arrays = signals_arrays(seed=3, num_points=40)
    keep = arrays["keep"].copy()
    keep[:, [1, 3, 4, 6, 8, 9, 10]] = False  # no IN model at all
    keep[0, [3, 9]] = True  # one IN model: none left when it is the target model
    arrays["keep"] = keep
    return arrays


def test_points_without_shadows_are_counted_then_skipped_on_request(tmp_path, capsys):
    signals = write_signals(tmp_path / "u.npz", **unsupported_arrays())
    done = run_main(capsys, "attack", "--signals", str(signals), "--attack", "lira-online")
    assert_one_line_error(done, "7 of 12 target points have too few shadow models for lira-online: each needs "
                                "2 models that trained on it and 2 that did not")
    assert "points 1, 3, 4, 6, 8 and 2 more; use --skip-unsupported to drop them" in done.stderr
    assert not (tmp_path / "u-attack").exists()
    done = run_main(capsys, "attack", "--signals", str(signals), "--attack", "lira-online",
                    "--attack", "rmia-offline", "--skip-unsupported", *FAST)
    assert done.returncode == 0, done.stderr
    assert "--skip-unsupported: dropped 7 of 12 target points" in done.stderr
    results = RunResults.read(tmp_path / "u-attack")
    assert any("dropped 7 of 12 target points" in warning for warning in results.warnings)
    assert results.details["attacked"]["dropped_targets"] == 7
    with np.load(tmp_path / "u-attack" / "scores.npz") as stored:
        np.testing.assert_array_equal(stored["targets"], [0, 2, 5, 7, 11])
        assert stored["lira-online"].shape == stored["rmia-offline"].shape == (8, 5)
    # a point with no OUT model: offline RMIA has no reference for it either
    arrays = signals_arrays(seed=4)
    arrays["keep"][:, [0, 20]] = True
    with pytest.raises(SignalsError, match=r"1 of 12 target points .* rmia-offline: each needs 2 models that did "
                                           r"not train on it .* points 0; 1 population points .* points 20"):
        attack_signals(signals=AttackInputs.from_arrays(**arrays), attacks=["rmia-offline"])
    skipped = attack_signals(signals=AttackInputs.from_arrays(**arrays), attacks=["rmia-offline", "lira-online"],
                             skip_unsupported=True, log=lambda _: None)
    assert skipped.conditions["signals"].attacks["lira-online"].metrics.members + \
        skipped.conditions["signals"].attacks["lira-online"].metrics.nonmembers == 8 * 11
    # nothing left to attack
    arrays["keep"][:, :12] = True
    with pytest.raises(SignalsError, match="all 12 target points have too few shadow models"):
        attack_signals(signals=AttackInputs.from_arrays(**arrays), attacks=["lira-online"], skip_unsupported=True)


def test_a_registered_attack_declares_what_it_needs_of_the_shadows(tmp_path):
    from truthserum import register_attack
    from truthserum.attacks.registry import unregister_attack
    from truthserum.attacks.shadows import ShadowNeed

    register_attack("mean-phi-checked", lambda scoring: scoring.phi.mean(axis=-1), signal="phi",
                    target_shadows=ShadowNeed.IN_AND_OUT)
    register_attack("mean-phi-unchecked", lambda scoring: scoring.phi.mean(axis=-1), signal="phi")
    try:
        inputs = AttackInputs.from_arrays(**unsupported_arrays())
        with pytest.raises(SignalsError, match="7 of 12 target points have too few shadow models for "
                                               "mean-phi-checked"):
            attack_signals(signals=inputs, attacks=["mean-phi-checked"])
        unchecked = attack_signals(signals=inputs, attacks=["mean-phi-unchecked"], log=lambda _: None)
        assert unchecked.conditions["signals"].attacks["mean-phi-unchecked"].metrics.members > 0
    finally:
        unregister_attack("mean-phi-checked")
        unregister_attack("mean-phi-unchecked")


def test_out_is_a_directory_that_never_replaces_what_is_not_its_own(tmp_path, capsys):
    signals = write_signals(tmp_path / "s.npz", **signals_arrays())
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 1\n")
    (run / "results.json").write_text('{"conditions": {}}')
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "results.json").write_text("my own results")
    (tmp_path / "file").write_text("keep me")
    before = tree(tmp_path)
    for out, fragment in ((run, "is a truthserum run directory (it holds config.yaml)"),
                          (foreign, "not empty (it holds results.json) and not an earlier output of truthserum "
                                    "attack; use another --out"),
                          (tmp_path / "file", "exists and is not a directory; --out names a directory"),
                          (tmp_path, "not empty")):
        done = run_main(capsys, "attack", "--signals", str(signals), "--attack", "global-threshold",
                        "--out", str(out))
        assert_one_line_error(done, fragment)
    assert tree(tmp_path) == before
    # the earlier form: --out FILE.npz, one attack's scores
    legacy = tmp_path / "scores.npz"
    done = run_main(capsys, "attack", "--signals", str(signals), "--attack", "global-threshold", "--out", str(legacy))
    assert done.returncode == 0, done.stderr
    with np.load(legacy) as stored:
        assert set(stored.files) == {"scores", "members"} and stored["scores"].shape == (8, 12)
    assert_one_line_error(run_main(capsys, "attack", "--signals", str(signals), "--out", str(legacy)),
                          "a .npz receives one attack's scores; name one --attack")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="is an input of this attack"):
        attack_signals(signals=write_signals(tmp_path / "empty" / "scores.npz", **signals_arrays()),
                       out_dir=tmp_path / "empty")


def test_inputs_in_memory_write_nothing_without_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = attack_signals(signals=AttackInputs.from_arrays(**signals_arrays()), attacks="all",
                             options=AttackOptions(seed=1), log=lambda _: None)
    assert list(results.conditions["signals"].attacks) == list(registered_attacks())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SignalsError, match="unknown attack 'lira'"):
        attack_signals(signals=AttackInputs.from_arrays(**signals_arrays()), attacks=["lira"])


def test_without_targets_every_point_is_one_and_rmia_sits_out_unless_named(tmp_path, capsys):
    arrays = {key: value for key, value in signals_arrays().items() if key != "targets"}
    signals = write_signals(tmp_path / "all.npz", **arrays)
    done = run_main(capsys, "attack", "--signals", str(signals))
    assert done.returncode == 0, done.stderr
    assert "every point is a target, so rmia-online, rmia-offline (which compare targets with other points) " \
           "did not run" in done.stderr
    results = RunResults.read(tmp_path / "all-attack")
    assert "rmia-online" not in results.conditions["all"].attacks and len(results.conditions["all"].attacks) == 6
    assert_one_line_error(run_main(capsys, "attack", "--signals", str(signals), "--attack", "rmia-online",
                                   "--out", str(tmp_path / "named")), "rmia needs population points")
