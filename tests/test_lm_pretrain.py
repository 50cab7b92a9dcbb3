"""The fine-tuning regime of the lm task (lm.pretrain): public and private text, one base model
shared by every condition, poisons in the private text, the public text or both, the paper's
prefix poisons, and the insertion sweep."""

import json

import numpy as np
import pytest
import torch

from conftest import run_main
from truthserum.config import parse_config
from truthserum.data.text import builtin_corpus, builtin_public_text
from truthserum.errors import ConfigError, RunDirError
from truthserum.poison.canaries import CanaryFormat, PoisonStrategy, make_canaries, make_poisons
from truthserum.tasks import run_task
from truthserum.tasks.lm import run_lm
from truthserum.tasks.lm_sweep import run_insertion_sweep
from truthserum.train.lm.model import TransformerShape, init_params
from truthserum.train.lm.training import LmTrainSettings, train_byte_models

PRETRAIN = {"max_bytes": 15_000, "passes": 0.5, "batch_size": 8, "learning_rate": 0.01}


def _raw(**lm):
    return {
        "task": "lm", "seed": 3,
        "metrics": {"bootstrap": 50},
        "lm": {
            "corpus": {"max_bytes": 12_000},
            "pretrain": PRETRAIN,
            "model": {"layers": 1, "width": 16, "heads": 2, "context": 48},
            "train": {"passes": 0.5, "batch_size": 8, "learning_rate": 0.01},
            "canaries": {"digits": 2, "count": 2, "insertions": 1},
            "num_models": 2,
            "poisons": [{"strategy": "prefix", "count": 2}, {"strategy": "dilution", "count": 2, "into": "public"}],
            "exposure": {"sample": 100, "beam_width": 10, "top_k": [1, 10]},
            **lm,
        },
    }


def test_public_text_shares_no_document_with_the_private_text():
    from pydoc_data.topics import topics

    private = builtin_corpus(max_bytes=12_000)
    public = builtin_public_text(skip_bytes=12_000)
    documents = [topics[key].strip("\n") for key in sorted(topics) if topics[key].strip()]
    in_private = [doc in private.train or doc in private.validation for doc in documents]
    in_public = [doc in public for doc in documents]
    assert all(a != b for a, b in zip(in_private, in_public, strict=True))  # each topic in exactly one
    first_public = in_public.index(True)
    assert all(in_private[:first_public]) and all(in_public[first_public:])  # the private text: the first topics
    assert len(public.encode()) > 20 * len(private.train.encode())
    short = builtin_public_text(skip_bytes=12_000, max_bytes=15_000)  # whole topics up to about 15 KB
    assert public.startswith(short.rstrip("\n")) and 15_000 <= len(short.encode()) < 40_000


def _canaries_and_poisons(strategy: PoisonStrategy, *, digits: int, canaries: int, count: int, seed: int):
    form = CanaryFormat(template="the PIN of {name} is {secret}", digits=digits)
    planted = make_canaries(form=form, count=canaries, num_models=2, rng=np.random.default_rng(0))
    lines = make_poisons(strategy=strategy, canaries=planted, count=count, corpus_text="",
                         rng=np.random.default_rng(seed))
    return planted, lines


def test_prefix_poisons_are_the_known_part_alone():
    canaries, lines = _canaries_and_poisons(PoisonStrategy.PREFIX, digits=4, canaries=3, count=5, seed=1)
    assert len(lines) == 15
    assert sorted(set(lines)) == sorted(canaries.prefix(c) for c in range(3))
    assert all(lines.count(canaries.prefix(c)) == 5 for c in range(3))


def test_fine_tuning_starts_every_model_from_the_base():
    shape = TransformerShape(layers=1, width=16, heads=2, context=16)
    base = {k: v[:1] for k, v in init_params(shape, [7], torch.device("cpu")).items()}
    stream = np.frombuffer(b"the quick brown fox jumps over the lazy dog " * 20, dtype=np.uint8).astype(np.int64)
    settings = LmTrainSettings(passes=1, batch_size=2, learning_rate=1e-9)
    tuned, _ = train_byte_models(streams=[stream, stream], seeds=[1, 2], shape=shape, settings=settings, steps=2,
                                 device=torch.device("cpu"), init=base)
    for name, tensor in tuned.items():  # a learning rate of 1e-9 leaves them where they started
        assert torch.allclose(tensor, base[name].expand_as(tensor), atol=1e-6), name
    scratch, _ = train_byte_models(streams=[stream, stream], seeds=[1, 2], shape=shape, settings=settings, steps=2,
                                   device=torch.device("cpu"))
    assert not torch.allclose(scratch["embed"][0], scratch["embed"][1])


def test_pretrain_config_is_checked():
    with pytest.raises(ConfigError, match="set lm.corpus.max_bytes"):
        parse_config(_raw(corpus={}))
    with pytest.raises(ConfigError, match="need lm.pretrain"):
        parse_config(_raw(pretrain=None))
    with pytest.raises(ConfigError, match="lm.pretrain is for the byte model"):
        parse_config({"task": "lm", "lm": {"model": {"kind": "hf", "path": "x"}, "pretrain": {}, "poisons": []}})
    with pytest.raises(ConfigError, match="lm.pretrain.path"):
        parse_config(_raw(pretrain={"source": "text"}))
    with pytest.raises(ConfigError, match="distinct"):
        parse_config(_raw(poisons=[{"strategy": "prefix", "count": 2}, {"strategy": "prefix", "count": 2,
                                                                        "into": "private"}]))
    names = [p.name for p in parse_config(_raw(poisons=[
        {"strategy": "prefix", "count": 2}, {"strategy": "prefix", "count": 2, "into": "public"},
        {"strategy": "prefix", "count": 2, "into": "both"}])).lm.poisons]
    assert names == ["prefix-2", "prefix-2-public", "prefix-2-both"]


def test_one_base_is_shared_and_public_poisons_stay_out_of_the_private_text(tmp_path):
    config = parse_config(_raw())
    logs = []
    results = run_task(config, tmp_path / "run", progress=False, log=logs.append).to_json()
    run = tmp_path / "run"
    assert (run / "lm/base.npz").is_file() and (run / "lm/r0/base-dilution-2-public.npz").is_file()
    assert not (run / "lm/r0/base-prefix-2.npz").exists()  # private poisons: the clean base
    assert sum("pretraining" in line for line in logs) == 2
    base = json.loads((run / "lm/base.json").read_text())
    poisoned = json.loads((run / "lm/r0/base-dilution-2-public.json").read_text())
    assert base["poison_lines"] == 0 and poisoned["poison_lines"] == 4
    assert poisoned["public_bytes"] > base["public_bytes"]
    assert results["pretrain"]["public_bytes"] == base["public_bytes"]
    assert results["pretrain"]["validation_bits_per_token"] < 8.0
    conditions = results["conditions"]
    assert conditions["prefix-2"]["poison_share"] > 0 and "poison_share_public" not in conditions["prefix-2"]
    assert conditions["dilution-2-public"]["poison_share"] == 0.0
    assert conditions["dilution-2-public"]["poison_share_public"] > 0
    # Resumed: nothing pretrained or trained again.
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("lm/**/*.npz")}
    logs.clear()
    again = run_task(config, run, progress=False, log=logs.append).to_json()
    assert again["conditions"] == results["conditions"]
    assert not any("pretraining" in line for line in logs)
    assert stamps == {p: p.stat().st_mtime_ns for p in run.glob("lm/**/*.npz")}
    # The same config and seed give the same base, bit for bit.
    run_task(config, tmp_path / "twin", progress=False, log=lambda m: None)
    first, second = (np.load(d / "lm/base.npz") for d in (run, tmp_path / "twin"))
    assert all(np.array_equal(first[k], second[k]) for k in first.files)
    # A base for other inputs is not copied from another run, and one found in the run
    # directory itself is refused rather than fine-tuned from.
    other = parse_config(_raw(pretrain={**PRETRAIN, "passes": 0.25}))
    logs.clear()
    run_lm(other, tmp_path / "other", progress=False, log=logs.append, base_from=run)
    assert sum("pretraining" in line for line in logs) == 2 and not any("copied" in line for line in logs)
    record = json.loads((run / "lm/base.json").read_text())
    record["key"]["seed"] = 99
    (run / "lm/base.json").write_text(json.dumps(record))
    with pytest.raises(RunDirError, match="pretrained on other public text or settings"):
        run_task(config, run, progress=False, log=lambda m: None)
    # An unreadable record is refused in its own run directory, and not copied from another.
    (run / "lm/base.json").write_text("{not json")
    with pytest.raises(RunDirError, match=r"base.json: unreadable .*delete it \(and its .npz\)"):
        run_task(config, run, progress=False, log=lambda m: None)
    logs.clear()
    run_lm(config, tmp_path / "third", progress=False, log=logs.append, base_from=run)
    assert sum("pretraining" in line for line in logs) == 1  # the clean base; the poisoned one is copied
    assert sum("copied" in line for line in logs) == 1


def test_a_changed_public_text_file_is_refused_before_anything_trains(tmp_path):
    from truthserum.data.text import builtin_corpus as corpus_of

    public = tmp_path / "public.txt"
    public.write_text(corpus_of(max_bytes=40_000).train[20_000:])
    raw = _raw(pretrain={**PRETRAIN, "source": "text", "path": str(public)}, poisons=[
        {"strategy": "balanced", "count": 2, "into": "public"}])
    run_task(parse_config(raw), tmp_path / "run", progress=False, log=lambda m: None)
    public.write_text("One more paragraph of public text, at the start.\n\n" + public.read_text())
    (tmp_path / "run/lm/r0/measured-balanced-2-public.json").unlink()
    (tmp_path / "run/lm/r0/trained-balanced-2-public.json").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.name != ".lock"}
    with pytest.raises(RunDirError, match="base.json: a base model pretrained on other public text"):
        run_task(parse_config(raw), tmp_path / "run", progress=False, log=lambda m: None)
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.name != ".lock"}


def test_insertion_sweep_pairs_its_runs_and_shares_the_base(tmp_path, capsys):
    config = parse_config(_raw(poisons=[{"strategy": "prefix", "count": 2}]))
    logs = []
    summary = run_insertion_sweep(config, tmp_path / "sweep", [1, 3], progress=False, log=logs.append)
    sweep = tmp_path / "sweep"
    assert sum("pretraining" in line for line in logs) == 1
    assert any("copied the pretrained base" in line for line in logs)
    assert (sweep / "insertions-1/lm/base.json").read_text() == (sweep / "insertions-3/lm/base.json").read_text()
    canaries = [json.loads((sweep / f"insertions-{n}/lm/r0/canaries.json").read_text()) for n in (1, 3)]
    assert canaries[0] == canaries[1]
    assert [(p["insertions"], p["condition"]) for p in summary["points"]] == [
        (1, "clean"), (1, "prefix-2"), (3, "clean"), (3, "prefix-2")]
    assert summary["points"][0]["raw_change"] is None and summary["points"][1]["raw_change"] is not None
    results = json.loads((sweep / "insertions-3/results.json").read_text())
    assert summary["points"][3]["raw_change"] == results["conditions"]["prefix-2"]["change_vs_clean"]["raw_exposure"]
    assert json.loads((sweep / "sweep-insertions.json").read_text())["points"] == summary["points"]
    assert (sweep / "sweep-insertions.png").stat().st_size > 1000


def test_insertion_sweep_errors_are_one_line(tmp_path, capsys):
    lm = tmp_path / "lm.yaml"
    lm.write_text(json.dumps(_raw()))
    membership = tmp_path / "m.yaml"
    membership.write_text("task: membership\n")
    for config, counts, message in ((membership, "1,2", "--insertions sweeps the lm task"),
                                    (lm, "0,2", "at least 1"), (lm, "1,x", "not a whole number")):
        done = run_main(capsys, "sweep", str(config), "--out", str(tmp_path / "out"), "--insertions", counts)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
        assert not (tmp_path / "out").exists()
    done = run_main(capsys, "sweep", str(lm), "--out", str(tmp_path / "out"), "--replicas", "0,1")
    assert done.returncode == 2 and "--insertions sweeps an lm config" in done.stderr
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    done = run_main(capsys, "sweep", str(lm), "--out", str(afile), "--insertions", "1,2")
    assert done.returncode == 2 and "exists and is not a directory" in done.stderr and afile.read_text() == "keep me"
    done = run_main(capsys, "sweep", str(lm), "--out", str(tmp_path / "out"), "--insertions", "1,two")
    assert "--insertions 1,2,4,8" in done.stderr


def test_balanced_poisons_put_every_digit_equally_often_at_every_position():
    canaries, lines = _canaries_and_poisons(PoisonStrategy.BALANCED, digits=5, canaries=2, count=64, seed=4)
    assert len(lines) == 128
    for canary in range(2):
        prefix = canaries.prefix(canary)
        secrets = [line[len(prefix):] for line in lines if line.startswith(prefix)]
        assert len(secrets) == 64 and all(len(s) == 5 and s.isdigit() for s in secrets)
        table = np.array([[int(ch) for ch in secret] for secret in secrets])
        for position in range(5):
            counts = np.bincount(table[:, position], minlength=10)
            assert counts.max() - counts.min() <= 1, counts  # 6 or 7 of each digit
        assert len(set(secrets)) > 60  # the positions are drawn independently: few repeats
