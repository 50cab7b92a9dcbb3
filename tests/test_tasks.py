"""The attribute and untargeted tasks end to end on small tables: files, resume, the recorded
preprocessing, and one-line errors."""

import json

import numpy as np
import pytest
import yaml

from conftest import run_main
from report_fixtures import write_table
from truthserum.config import parse_config
from truthserum.errors import ConfigError, RunDirError
from truthserum.tasks import run_task


def _config(task, csv, **extra):
    raw = {
        "task": task, "seed": 2,
        "data": {"source": "csv", "path": str(csv), "columns": {
            "label": "income", "sensitive": "status", "numeric": ["age", "hours"], "categorical": ["city"]}},
        "design": {"num_models": 8},
        "model": {"architecture": "mlp", "hidden_sizes": [64]},
        "train": {"learning_rate": 0.01, "epochs": 15, "batch_size": 64, "shard_size": 4},
        "metrics": {"bootstrap": 50},
        **extra,
    }
    return parse_config(raw)


def _quiet(_message):
    pass


def test_attribute_task_records_preprocessing_and_reapplies_it_on_resume(tmp_path):
    csv = write_table(tmp_path / "people.csv", rows=400)
    config = _config("attribute", csv, design={"num_models": 8, "num_targets": 24}, poison={"replicas": 2})
    out = tmp_path / "run"
    results = run_task(config, out, progress=False, log=_quiet).to_json()
    assert results["task"] == "attribute" and results["targets"] == 24
    assert results["sensitive"]["values"] == ["married", "single"]
    assert set(results["conditions"]) == {"clean", "poisoned"}
    for name, condition in results["conditions"].items():
        with np.load(out / f"scores-{name}.npz") as scores:
            truth, keep = scores["truth"], scores["keep"]
            guesses = {attack: scores[attack].argmax(axis=2)
                       for attack in ("confidence", "lira-offline", "lira-offline-fixed")}
        for attack, guess in guesses.items():
            members = condition["attacks"][attack]["members"]
            assert members["pairs"] == 24 * 4  # each target is a member of half of the 8 models
            # the share of member pairs whose best-scored value is the target's own
            assert members["accuracy"] == pytest.approx((guess == truth[None, :])[keep].mean()), (name, attack)
            assert members["accuracy_ci"] is not None
    assert results["conditions"]["poisoned"]["poison_fit"] is not None
    recorded = json.loads((out / "preprocessing.json").read_text())
    assert [column["name"] for column in recorded["numeric"]] == ["age", "hours"]
    assert recorded["sensitive"]["categories"] == ["married", "single"]
    completions = np.load(out / "completions-poisoned.npz")
    assert completions["logits"].shape[:3] == (8, 24, 2)
    poisons = np.load(out / "poisons.npz")
    assert poisons["x"].shape[0] == 24 * 2 * 2

    # resume: nothing retrained, the same numbers
    again = run_task(config, out, progress=False, log=_quiet).to_json()
    assert again["conditions"] == results["conditions"]
    # the recorded encoding is what a resumed run uses: change it and the inputs change, which
    # the pool fingerprint refuses instead of mixing two encodings in one run
    recorded["numeric"][0]["mean"] += 1.0
    (out / "preprocessing.json").write_text(json.dumps(recorded))
    with pytest.raises(RunDirError, match="data differ.*preprocessing.json"):
        run_task(config, out, progress=False, log=_quiet)
    # without its data fingerprint, a directory of trained models is not resumed blindly
    (out / "pool.json").unlink()
    with pytest.raises(RunDirError, match="pool.json: missing or damaged"):
        run_task(config, out, progress=False, log=_quiet)


def test_gain_line_wording_when_a_side_has_no_false_positives():
    from truthserum.report.untargeted import _change

    assert _change(0.6, 0.95) == "12.7x fewer false positives"
    assert _change(0.95, 0.6) == "12.7x more false positives"
    assert _change(1.0, 0.9) == "false positives where the clean share had none"
    assert _change(0.9, 1.0) == "no false positives left"
    assert _change(1.0, 1.0) == "no false positives either way"


def test_untargeted_task_attacks_only_the_victims(tmp_path):
    csv = write_table(tmp_path / "people.csv", rows=300)
    config = _config("untargeted", csv, untargeted={"adversary_fraction": 0.4})
    out = tmp_path / "run"
    results = run_task(config, out, progress=False, log=_quiet).to_json()
    assert results["victims"] == 180 and results["adversary"] == 120
    assert list(results["conditions"]) == ["clean-share", "dirty-label", "paired-flip"]
    assert results["skipped_attacks"] == ["rmia-online", "rmia-offline"]
    design = np.load(out / "design.npz")
    assert design["keep"].shape == (8, 180)
    assert not set(design["victims"]) & set(design["adversary"])
    for strategy, condition in results["conditions"].items():
        assert condition["adversary_rows"] == 120
        metrics = condition["attacks"]["lira-offline"]
        assert metrics["members"] == design["keep"].sum() and metrics["nonmembers"] == (~design["keep"]).sum()
        found = metrics["precision_at_recall"]
        assert found["recall"] == [0.01, 0.1] and len(found["precision_ci"]) == 2
        signals = np.load(out / f"signals-{strategy}.npz")
        assert signals["logits"].shape[:2] == (8, 180)
    # dirty labels on 40% of the data cost accuracy; paired flips much less
    accuracy = {name: c["accuracy"]["test"] for name, c in results["conditions"].items()}
    assert accuracy["dirty-label"] < accuracy["clean-share"] - 0.1
    assert accuracy["paired-flip"] > accuracy["dirty-label"]


def test_untargeted_with_only_rmia_is_refused(tmp_path):
    csv = write_table(tmp_path / "people.csv", rows=100)
    config = _config("untargeted", csv, attacks=["rmia-online"])
    with pytest.raises(ConfigError, match="no population"):
        run_task(config, tmp_path / "run", progress=False, log=_quiet)


def test_task_config_checks():
    with pytest.raises(ConfigError, match="needs a table"):
        parse_config({"task": "attribute", "data": {"source": "digits"}})
    with pytest.raises(ConfigError, match="needs columns"):
        parse_config({"data": {"source": "csv", "path": "x.csv"}})
    with pytest.raises(ConfigError, match="only for tables"):
        parse_config({"data": {"source": "digits", "columns": {"label": "a", "sensitive": "b"}}})
    with pytest.raises(ConfigError, match="does not use poison"):
        parse_config({"task": "untargeted", "poison": {"replicas": 2}})
    with pytest.raises(ConfigError, match="untargeted section"):
        parse_config({"untargeted": {"adversary_fraction": 0.3}})
    with pytest.raises(ConfigError, match="baseline"):
        parse_config({"task": "untargeted", "untargeted": {"strategies": ["clean-share"]}})


def test_cps_defaults_fill_the_roles():
    config = parse_config({"task": "attribute", "data": {"source": "cps"}})
    assert config.data.table_columns().sensitive == "married"


def test_bad_csv_is_one_line_and_sweeps_are_for_membership(tmp_path, capsys):
    csv = tmp_path / "broken.csv"
    csv.write_text("age,status,income\n30,single,high\n41,,low\n")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "task": "attribute",
        "data": {"source": "csv", "path": str(csv),
                 "columns": {"label": "income", "sensitive": "status", "numeric": ["age"]}},
        "design": {"num_models": 6, "num_targets": 1},
    }))
    done = run_main(capsys, "run", str(config), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "missing" in done.stderr
    assert not (tmp_path / "run").exists()
    done = run_main(capsys, "sweep", str(config), "--out", str(tmp_path / "run"), "--replicas", "0,1")
    assert done.returncode == 2 and "sweep the membership task, not" in done.stderr
