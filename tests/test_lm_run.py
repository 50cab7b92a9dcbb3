"""The lm task end to end: a tiny byte model and a tiny local GPT-2 through `truthserum run`,
resume, the results' structure, and one-line errors."""

import json

import numpy as np
import pytest
import yaml

from conftest import run_main
from lm_fixtures import make_tiny_gpt2
from truthserum.config import parse_config
from truthserum.errors import ConfigError, DataError, RunDirError
from truthserum.tasks import run_task


def _byte_config(**lm):
    raw = {
        "task": "lm", "seed": 1,
        "metrics": {"bootstrap": 50},
        "lm": {
            "corpus": {"max_bytes": 20_000},
            "model": {"layers": 1, "width": 16, "heads": 2, "context": 48},
            "train": {"passes": 0.5, "batch_size": 8, "learning_rate": 0.01},
            "canaries": {"digits": 3, "count": 3, "insertions": 2},
            "num_models": 2,
            "poisons": [{"strategy": "dilution", "count": 2}, {"strategy": "sibling", "count": 2}],
            "exposure": {"sample": 200, "beam_width": 20, "top_k": [1, 10]},
            **lm,
        },
    }
    return parse_config(raw)


def _from_records(run_dir, condition, space_size):
    """The mean raw exposure and calibrated top-10 rate of a condition, computed here from the
    ranks in its measured-<condition>.json: exposure log2(space) - log2(rank), top-10 rank <= 10."""
    records = json.loads((run_dir / f"lm/r0/measured-{condition}.json").read_text())["records"]
    raw = np.mean([np.log2(space_size) - np.log2(record["raw_rank"]) for record in records])
    return raw, np.mean([record["calibrated_rank"] <= 10 for record in records])


def _without_timing(results):
    return {name: {k: v for k, v in summary.items() if k != "train_seconds"}
            for name, summary in results["conditions"].items()}


def test_byte_lm_run_measures_every_condition_and_resumes(tmp_path):
    config = _byte_config()
    logs = []
    results = run_task(config, tmp_path / "run", progress=False, log=logs.append).to_json()
    assert set(results["conditions"]) == {"clean", "dilution-2", "sibling-2"}
    assert results["exact"] and results["space_size"] == 1000
    assert results["max_exposure"] == pytest.approx(np.log2(1000))
    for name, summary in results["conditions"].items():
        metrics = summary["metrics"]
        assert metrics["raw_exposure"]["canaries"] == 3 and metrics["raw_exposure"]["records"] == 3
        raw, top_10 = _from_records(tmp_path / "run", name, 1000)
        assert metrics["raw_exposure"]["mean"] == pytest.approx(raw)
        assert metrics["calibrated_top_10"]["mean"] == pytest.approx(top_10)
        assert summary["validation_bits_per_token"] < 8
        assert (name == "clean") == (summary["poison_lines"] == 0)
    assert results["conditions"]["dilution-2"]["poison_lines"] == 6
    assert "raw_exposure" in results["conditions"]["dilution-2"]["change_vs_clean"]
    measured = json.loads((tmp_path / "run/lm/r0/measured-clean.json").read_text())
    assert len(measured["records"]) == 3 and len(measured["validation_loss"]) == 2
    canaries = json.loads((tmp_path / "run/lm/r0/canaries.json").read_text())
    assert len(canaries["lines"]) == 3 and all(line.startswith("the PIN of ") for line in canaries["lines"])
    poisons = json.loads((tmp_path / "run/lm/r0/poisons-dilution-2.json").read_text())
    assert len(poisons) == 6
    # Resume: nothing is trained or measured again, and the numbers are the same.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run/lm/r0").iterdir()}
    logs.clear()
    again = run_task(config, tmp_path / "run", progress=True, log=logs.append).to_json()
    assert again["conditions"] == results["conditions"]
    assert not any("step" in line for line in logs)
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "run/lm/r0").iterdir()}
    # Rescoring from the saved models gives the same records.
    (tmp_path / "run/lm/r0/measured-sibling-2.json").unlink()
    third = run_task(config, tmp_path / "run", progress=False, log=logs.append).to_json()
    assert third["conditions"]["sibling-2"] == results["conditions"]["sibling-2"]
    assert any("reusing trained models" in line for line in logs)


def test_same_seed_same_numbers_and_other_text_is_refused(tmp_path):
    config = _byte_config(poisons=[{"strategy": "neutral", "count": 1}])
    first = run_task(config, tmp_path / "a", progress=False, log=lambda m: None).to_json()
    second = run_task(config, tmp_path / "b", progress=False, log=lambda m: None).to_json()
    assert _without_timing(first) == _without_timing(second)
    other = _byte_config(poisons=[{"strategy": "neutral", "count": 1}], corpus={"max_bytes": 30_000})
    with pytest.raises(RunDirError, match="different config"):
        run_task(other, tmp_path / "a", progress=False, log=lambda m: None)


def test_large_spaces_use_the_extrapolated_exposure(tmp_path):
    config = _byte_config(canaries={"digits": 8, "count": 2, "insertions": 1}, poisons=[],
                          exposure={"sample": 150, "beam_width": 10, "top_k": [1, 10], "exact_max": 1000})
    results = run_task(config, tmp_path / "big", progress=False, log=lambda m: None).to_json()
    metrics = results["conditions"]["clean"]["metrics"]
    assert not results["exact"] and "raw_exposure" not in metrics
    assert metrics["raw_extrapolated"]["records"] == 2


def test_hugging_face_model_runs_end_to_end(tmp_path, capsys):
    folder = make_tiny_gpt2(tmp_path / "gpt2")
    config_path = tmp_path / "hf.yaml"
    config_path.write_text(yaml.safe_dump({
        "task": "lm", "metrics": {"bootstrap": 20},
        "lm": {
            "corpus": {"max_bytes": 12_000},
            "model": {"kind": "hf", "path": str(folder), "context": 32},
            "train": {"passes": 0.3, "batch_size": 4, "learning_rate": 0.003},
            "canaries": {"digits": 2, "count": 2, "insertions": 2},
            "num_models": 2,
            "poisons": [{"strategy": "neutral", "count": 2}],
            "exposure": {"sample": 100, "beam_width": 10, "top_k": [1, 10]},
        },
    }))
    done = run_main(capsys, "run", str(config_path), "--out", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "Language-model secrets" in done.stdout and "neutral-2" in done.stdout
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert results["space_size"] == 100
    for name, summary in results["conditions"].items():
        assert summary["metrics"]["raw_exposure"]["records"] == 2
        raw, _ = _from_records(tmp_path / "run", name, 100)
        assert summary["metrics"]["raw_exposure"]["mean"] == pytest.approx(raw)


def test_lm_config_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="lm.model.path"):
        parse_config({"task": "lm", "lm": {"model": {"kind": "hf"}}})
    with pytest.raises(ConfigError, match="does not use design"):
        parse_config({"task": "lm", "design": {"num_models": 8}})
    with pytest.raises(ConfigError, match="the lm section is for task 'lm'"):
        parse_config({"lm": {"num_models": 8}})
    with pytest.raises(ConfigError, match="beam_width"):
        parse_config({"task": "lm", "lm": {"exposure": {"beam_width": 5}}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"task": "lm", "lm": {"model": {"kind": "hf", "path": str(tmp_path / "nope")}}}))
    done = run_main(capsys, "run", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "nope" in done.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def _text_config(path, **lm):
    return parse_config({
        "task": "lm", "metrics": {"bootstrap": 20},
        "lm": {
            "corpus": {"source": "text", "path": str(path), "validation_every": 3},
            "model": {"layers": 1, "width": 16, "heads": 2, "context": 32},
            "train": {"passes": 0.2, "batch_size": 4},
            "canaries": {"digits": 2, "count": 2, "insertions": 1},
            "num_models": 2, "poisons": [],
            "exposure": {"sample": 100, "beam_width": 10, "top_k": [1, 10]},
            **lm,
        },
    })


def test_text_corpus_changes_and_short_texts_are_refused_before_writing(tmp_path):
    from pydoc_data.topics import topics

    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(topics[key] for key in sorted(topics)[:12]))
    config = _text_config(text)
    run_task(config, tmp_path / "run", progress=False, log=lambda m: None)
    text.write_text(text.read_text() + "\n\nOne more paragraph of text.")
    with pytest.raises(RunDirError, match="other text"):
        run_task(config, tmp_path / "run", progress=False, log=lambda m: None)
    short = tmp_path / "short.txt"
    short.write_text("A few words.\n\nAnd a few more.\n\nThe end.")
    with pytest.raises(DataError, match="fewer than one window"):
        run_task(_text_config(short), tmp_path / "short-run", progress=False, log=lambda m: None)
    assert not (tmp_path / "short-run").exists()
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("\n\n".join(" ".join(str(i * j) for i in range(40)) for j in range(8)))
    with pytest.raises(DataError, match="digit-free words"):
        run_task(_text_config(numbers, poisons=[{"strategy": "neutral", "count": 1}]), tmp_path / "n-run",
                 progress=False, log=lambda m: None)
    assert not (tmp_path / "n-run").exists()


def test_relative_corpus_path_is_read_next_to_the_config_and_heavy_poisons_warn(tmp_path, monkeypatch):
    from pydoc_data.topics import topics

    from truthserum.config import load_config

    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "corpus.txt").write_text("\n\n".join(topics[key] for key in sorted(topics)[:6]))
    (folder / "lm.yaml").write_text(yaml.safe_dump({
        "task": "lm", "metrics": {"bootstrap": 10},
        "lm": {"corpus": {"source": "text", "path": "corpus.txt", "validation_every": 3},
               "model": {"layers": 1, "width": 16, "heads": 2, "context": 32},
               "train": {"passes": 0.1, "batch_size": 4},
               "canaries": {"digits": 2, "count": 2, "insertions": 1}, "num_models": 2,
               "poisons": [{"strategy": "dilution", "count": 400}],
               "exposure": {"sample": 100, "beam_width": 10, "top_k": [1, 10]}},
    }))
    monkeypatch.chdir(tmp_path)  # not the config's folder
    config = load_config(folder / "lm.yaml")
    assert config.lm.corpus.path == (folder / "corpus.txt").resolve()
    results = run_task(config, tmp_path / "run", progress=False, log=lambda m: None).to_json()
    assert any("dilution-400" in w and "size of the training text" in w for w in results["warnings"])


def test_template_with_an_unknown_slot_is_refused():
    with pytest.raises(ConfigError, match=r"unknown slots \['kind'\]"):
        parse_config({"task": "lm", "lm": {"canaries": {"template": "the {kind} PIN of {name} is {secret}"}}})
