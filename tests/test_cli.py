"""The command line: bad input gets one clear line and a non-zero exit, never a traceback.

Most commands run ``main`` in this process (:func:`conftest.run_main`); test_missing_config runs
the real entry point in a child process, as do tests/test_runner.py's runs and attacks.
"""

import numpy as np
import pytest

from conftest import run_cli, run_main


def assert_one_line_error(done, fragment):
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("truthserum: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in done.stderr


def test_missing_config(tmp_path):
    """The one error case through the real entry point: exit status 2 and one line on stderr."""
    assert_one_line_error(run_cli("run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")),
                          "no such config file")
    assert not (tmp_path / "o").exists()


def test_unknown_key_in_config(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("design:\n  num_modles: 8\n")
    assert_one_line_error(run_main(capsys, "run", str(config), "--out", str(tmp_path / "o")),
                          "design.num_modles: unknown key")


def test_bad_user_data_is_reported_before_anything_is_written(tmp_path, capsys):
    data = tmp_path / "data.npz"
    np.savez(data, x=np.full((50, 4), np.nan), y=np.arange(50) % 2)
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  source: npz\n  path: {data}\ndesign:\n  num_targets: 5\n")
    assert_one_line_error(run_main(capsys, "run", str(config), "--out", str(tmp_path / "o")),
                          "NaN or inf in 50 rows")
    assert not (tmp_path / "o").exists()


def test_cuda_requested_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = tmp_path / "c.yaml"
    config.write_text("seed: 1\n")
    assert_one_line_error(
        run_main(capsys, "run", str(config), "--out", str(tmp_path / "o"), "--device", "cuda"), "no CUDA device"
    )


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"logits": np.zeros((4, 3, 2)), "labels": np.zeros(3, int)}, "missing array(s) ['keep']"),
        ({"logits": np.zeros((4, 3, 2)), "labels": np.zeros(3, int), "keep": np.ones((4, 2), bool)},
         "keep must have shape (4, 3)"),
        ({"logits": np.full((4, 3, 2), np.nan), "labels": np.zeros(3, int), "keep": np.ones((4, 3), bool)},
         "logits contain NaN or inf"),
        ({"logits": np.zeros((4, 3, 2)), "labels": np.full(3, 2), "keep": np.ones((4, 3), bool)},
         "labels must lie in 0..1"),
        ({"logits": np.zeros((4, 3, 2)), "labels": np.zeros(3, int), "keep": np.ones((4, 3), bool),
          "targets": np.array([0, 7])}, "targets must lie in 0..2"),
        ({"logits": np.zeros((4, 3, 2)), "labels": np.zeros(3, int), "keep": np.ones((4, 3), bool)},
         "3 of 3 target points have too few shadow models for lira-online: each needs 2 models that trained on "
         "it and 2 that did not (one of each besides the target model); points 0, 1, 2; use --skip-unsupported"),
    ],
)
def test_bad_signals(tmp_path, capsys, arrays, fragment):
    signals = tmp_path / "s.npz"
    np.savez(signals, **arrays)
    assert_one_line_error(run_main(capsys, "attack", "--signals", str(signals), "--attack", "lira-online"),
                          fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # no output directory for bad input


def test_attack_refuses_to_overwrite_its_input(tmp_path, capsys):
    signals = tmp_path / "s.npz"
    np.savez(signals, logits=np.zeros((4, 3, 2)), labels=np.zeros(3, int), keep=np.ones((4, 3), bool))
    before = signals.read_bytes()
    done = run_main(capsys, "attack", "--signals", str(signals), "--attack", "global-threshold",
                    "--out", str(signals))
    assert_one_line_error(done, "would overwrite the signals file")
    assert signals.read_bytes() == before


def test_attack_all_on_a_signals_file_in_one_process(tmp_path):
    """The real entry point, once: every attack scored by one command into one output directory."""
    import json

    rng = np.random.default_rng(0)
    keep = rng.random((6, 30)).argsort(axis=0) < 3
    labels = rng.integers(0, 3, 30)
    logits = rng.normal(size=(6, 30, 3)) + 2.0 * (keep[:, :, None] & (np.arange(3) == labels[:, None])[None])
    signals = tmp_path / "s.npz"
    np.savez(signals, logits=logits, labels=labels, keep=keep, targets=np.arange(10))
    done = run_cli("attack", "--signals", str(signals), "--attack", "all", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    from truthserum.attacks import registered_attacks

    assert list(results["conditions"]["s"]["attacks"]) == list(registered_attacks())
    assert (tmp_path / "out" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(tmp_path / "out" / "scores.npz") as scores:
        assert set(scores.files) == {*registered_attacks(), "members", "targets"}
    assert all(f"{name}: AUC" in done.stdout for name in registered_attacks())
    assert f"results: {tmp_path / 'out' / 'results.json'}" in done.stdout


def test_attack_on_a_pickle_is_refused(tmp_path, capsys):
    import pickle

    signals = tmp_path / "s.npz"
    signals.write_bytes(pickle.dumps({"logits": 1}))
    assert_one_line_error(run_main(capsys, "attack", "--signals", str(signals), "--attack", "lira-online"),
                          "not a zip archive")


def test_demo_config_is_the_packaged_one_and_within_the_poison_budget():
    from pathlib import Path

    from truthserum.cli import DEMO_CONFIGS, demo_config_text
    from truthserum.config import load_config

    repo = Path(__file__).parent.parent / "configs"
    for task, name in DEMO_CONFIGS.items():
        assert (repo / name).read_text() == demo_config_text(task), name
        assert load_config(repo / name).task.value == task
    repo_copy = repo / "demo.yaml"
    config = load_config(repo_copy)
    poisons = config.design.num_targets * config.poison.replicas
    assert poisons / (poisons + 5000 / 2) < 0.10  # no poison-fraction warning on mnist5k
    assert config.poison.replicas > 0 and config.data.source.value == "mnist5k"


def test_demo_command_prints_the_side_by_side_table(tmp_path, monkeypatch, capsys):
    """The demo's own wiring, on the tiny config (the real demo takes minutes)."""
    import yaml

    from conftest import TINY_CONFIG
    from truthserum import cli

    monkeypatch.setattr(cli, "demo_config_text", lambda task: yaml.safe_dump(TINY_CONFIG))
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "clean" in line and "poisoned" in line)
    assert header.split() == ["clean", "poisoned"]
    assert "lira-online-fixed AUC" in out and "TPR @ 1% FPR" in out
    assert (tmp_path / "demo" / "results.json").exists()


def test_attack_out_never_replaces_a_foreign_file(tmp_path, capsys):
    signals = tmp_path / "s.npz"
    np.savez(signals, logits=np.zeros((4, 3, 2)), labels=np.zeros(3, int),
             keep=np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]], bool))
    mine = tmp_path / "notes.txt"
    mine.write_text("keep me")
    done = run_main(capsys, "attack", "--signals", str(signals), "--attack", "global-threshold",
                    "--out", str(mine))
    assert_one_line_error(done, "notes.txt: exists and is not a directory; --out names a directory")
    assert mine.read_text() == "keep me"
    mine_npz = tmp_path / "notes.npz"  # the earlier form, --out FILE.npz, never replaces another .npz either
    mine_npz.write_bytes(b"keep me")
    done = run_main(capsys, "attack", "--signals", str(signals), "--attack", "global-threshold",
                    "--out", str(mine_npz))
    assert_one_line_error(done, "exists and is not an earlier scores file")
    assert mine_npz.read_bytes() == b"keep me"
    scores = tmp_path / "scores.npz"
    for _ in range(2):  # an earlier scores file may be replaced
        done = run_main(capsys, "attack", "--signals", str(signals), "--attack", "global-threshold",
                        "--out", str(scores))
        assert done.returncode == 0, done.stderr


def test_file_system_errors_are_one_line(tmp_path, capsys, small_config_file):
    blocker = tmp_path / "run" / "shards"
    blocker.parent.mkdir()
    (blocker.parent / "config.yaml").write_text("placeholder: 1\n")
    done = run_main(capsys, "run", str(small_config_file), "--out", str(tmp_path / "run"))
    assert_one_line_error(done, "different config")
    (tmp_path / "file").write_text("x")
    done = run_main(capsys, "run", str(small_config_file), "--out", str(tmp_path / "file" / "run"))
    assert_one_line_error(done, "file/run")


def test_os_errors_inside_a_run_are_one_line(tmp_path, capsys, tiny_config_file):
    """A path the run must write is blocked by a file: one line, not a traceback."""
    out = tmp_path / "run"
    assert run_main(capsys, "run", str(tiny_config_file), "--out", str(out), "--quiet").returncode == 0
    import shutil

    shutil.rmtree(out / "shards" / "poisoned")
    (out / "shards" / "poisoned").write_text("in the way")
    done = run_main(capsys, "run", str(tiny_config_file), "--out", str(out), "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("truthserum: error: ")]
    assert errors == [done.stderr.strip().splitlines()[-1]]  # progress lines, then one error line
    assert "shards/poisoned: File exists" in errors[0]
