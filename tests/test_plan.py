"""truthserum plan, then training elsewhere, then truthserum attack --plan: the plan is what a
run trains, the attack of a run's own logits reproduces the run's numbers, and every bad input
is one line that leaves what was there untouched."""

import csv
import json
import shutil

import numpy as np
import pytest
import yaml
from scipy.special import softmax

from conftest import TINY_CONFIG, run_main
from test_cli import assert_one_line_error
from truthserum import __version__
from truthserum.config import parse_config
from truthserum.poison.label_flip import replicate_poisons
from truthserum.tasks.membership import conditions_for, membership_job, run_experiment
from truthserum.tasks.plan import read_plan, write_plan
from truthserum.tasks.plan_attack import attack_plan
from truthserum.errors import RunDirError
from truthserum.tasks.results import RunResults
from truthserum.tasks.stages import prepare_pool
from truthserum.train.shard import shard_training_set


def quiet(_message):
    pass


def tree(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """TINY_CONFIG planned, and run: ``(plan directory, run directory, the run's logits .npz)``.
    Tests that write into the plan work on a copy."""
    root = tmp_path_factory.mktemp("plan")
    config = parse_config(TINY_CONFIG)
    write_plan(config=config, out_dir=root / "plan", log=quiet)
    run_experiment(config, root / "run", progress=False, log=quiet)
    logits = {name: np.load(root / "run" / f"signals-{name}-logits.npy") for name in ("clean", "poisoned")}
    np.savez(root / "logits.npz", **logits)
    return root / "plan", root / "run", root / "logits.npz"


def copy_plan(planned, tmp_path):
    return shutil.copytree(planned[0], tmp_path / "plan")


def test_the_plan_is_what_a_run_trains(planned):
    plan_dir, run_dir, _ = planned
    for name in ("design.npz", "poisons.npz"):
        with np.load(plan_dir / name) as planned_file, np.load(run_dir / name) as run_file:
            assert planned_file.files == run_file.files
            for key in run_file.files:
                np.testing.assert_array_equal(planned_file[key], run_file[key], err_msg=f"{name}: {key}")
    config = parse_config(TINY_CONFIG)
    plan = read_plan(plan_dir)
    pool = prepare_pool(config)
    with np.load(plan_dir / "pool.npz") as stored:
        np.testing.assert_array_equal(stored["x"], pool.x)
        np.testing.assert_array_equal(stored["y"], pool.y)
    design, poisons = plan.design(), plan.poison_labels()
    assert [c.name for c in plan.conditions] == ["clean", "poisoned"] == [c.name for c in conditions_for(config)]
    for condition in plan.conditions:
        condition_poisons = replicate_poisons(x=pool.x, targets=design.targets, target_labels=poisons,
                                              replicas=condition.replicas)
        job = membership_job(pool, design, condition_poisons, condition)
        x, y, rows = shard_training_set(job, range(plan.num_models))  # what the run's shards train on
        for m in range(plan.num_models):
            with np.load(plan.train_file(condition.name, m)) as training:
                np.testing.assert_array_equal(training["x"], x[rows[m]])
                np.testing.assert_array_equal(training["y"], y[rows[m]])
                np.testing.assert_array_equal(training["indices"], rows[m][rows[m] < pool.num_points])
                np.testing.assert_array_equal(training["poison"], rows[m] >= pool.num_points)
        assert condition_poisons.total == condition.replicas * len(design.targets)
    described = json.loads((plan_dir / "plan.json").read_text())
    assert described["complete"] and described["seed"] == 3 and described["truthserum_version"] == __version__
    assert described["logits"]["arrays"] == {"clean": [4, 300, 10], "poisoned": [4, 300, 10]}
    assert "model m of that condition" in described["logits"]["layout"]
    assert set(described["files"]) >= {"pool.npz", "design.npz", "train/<condition>/model-<m>.npz"}
    assert "pool.csv" not in described["files"]  # images: no raw rows


def test_attacking_the_runs_own_logits_reproduces_the_run(planned, tmp_path):
    plan_dir, run_dir, logits = planned
    before = tree(plan_dir)
    results = attack_plan(plan_dir=plan_dir, logits=logits, out_dir=tmp_path / "out", log=quiet)
    assert tree(plan_dir) == before
    run = RunResults.read(run_dir)
    for name, condition in run.conditions.items():
        mine = results.conditions[name]
        theirs = {attack: result.to_json() for attack, result in condition.attacks.items()}
        assert {attack: result.to_json() for attack, result in mine.attacks.items()} == theirs
        for key in ("accuracy", "poison_fit", "poison_fraction", "replicas"):
            assert mine.measurements[key] == condition.measurements[key], (name, key)
    assert results.details["poison"] == {key: run.details["poison"][key] for key in results.details["poison"]}
    assert (tmp_path / "out" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    # the same judgement of the amplification as the run's, its changes worded for models trained elsewhere
    assert results.guidance.amplified == run.guidance.amplified
    assert results.guidance.clean == run.guidance.clean and results.guidance.poisoned == run.guidance.poisoned
    assert results.guidance.model["name"] == "your models (trained elsewhere)"
    for suggestion in (s for finding in results.guidance.findings for s in finding.suggestions):
        assert suggestion.key is None or suggestion.key.startswith(("design.", "poison."))
    with np.load(tmp_path / "out" / "scores-poisoned.npz") as mine, np.load(run_dir / "scores-poisoned.npz") as theirs:
        for key in theirs.files:
            np.testing.assert_array_equal(mine[key], theirs[key])


def train_elsewhere(plan_dir, path):
    """Models trained outside truthserum: a logistic regression per model on its training set."""
    from sklearn.linear_model import LogisticRegression

    plan = read_plan(plan_dir)
    with np.load(plan_dir / "pool.npz") as pool:
        queries = pool["x"].reshape(plan.num_points, -1)
    logits = {}
    for condition in plan.conditions:
        models = []
        for m in range(plan.num_models):
            with np.load(plan.train_file(condition.name, m)) as training:
                model = LogisticRegression(C=10.0, max_iter=300).fit(
                    training["x"].reshape(len(training["y"]), -1), training["y"])
            out = np.full((plan.num_points, plan.num_classes), -30.0)
            out[:, model.classes_] = model.decision_function(queries)
            models.append(out)
        logits[condition.name] = np.stack(models)
    np.savez(path, **logits)
    return logits


def test_plan_train_elsewhere_then_attack(tmp_path, capsys, tiny_config_file):
    plan_dir = tmp_path / "plan"
    done = run_main(capsys, "plan", str(tiny_config_file), "--out", str(plan_dir))
    assert done.returncode == 0, done.stderr
    assert f"truthserum attack --plan {plan_dir} --logits LOGITS.npz" in done.stdout
    logits = train_elsewhere(plan_dir, tmp_path / "logits.npz")
    planned_files = tree(plan_dir)
    done = run_main(capsys, "attack", "--plan", str(plan_dir), "--logits", str(tmp_path / "logits.npz"))
    assert done.returncode == 0, done.stderr
    assert "clean" in done.stdout and "poisoned" in done.stdout and "lira-online AUC" in done.stdout
    assert all(tree(plan_dir)[path] == content for path, content in planned_files.items())  # the plan untouched
    results = RunResults.read(plan_dir)
    assert set(results.conditions) == {"clean", "poisoned"}
    poisoned = results.conditions["poisoned"]
    assert poisoned.measurements["poison_fit"] > 0.9  # a model that trains on the poisons fits them
    assert results.conditions["clean"].measurements["poison_fit"] is None
    assert results.attack("poisoned", "lira-online").auc > results.attack("clean", "lira-online").auc
    assert (plan_dir / "roc.png").exists() and (plan_dir / "scores-clean.npz").exists()
    assert results.details["attacked"]["logits_kind"] == {"clean": "logits", "poisoned": "logits"}
    # probabilities: a warning, and the scores of the logits
    np.savez(tmp_path / "probabilities.npz", **{name: softmax(array, axis=-1) for name, array in logits.items()})
    done = run_main(capsys, "attack", "--plan", str(plan_dir), "--logits", str(tmp_path / "probabilities.npz"),
                    "--attack", "lira-online", "--out", str(tmp_path / "from-probabilities"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("look like probabilities") == 2  # one per condition
    again = RunResults.read(tmp_path / "from-probabilities")
    assert len([w for w in again.warnings if "look like probabilities" in w]) == 2
    for name in ("clean", "poisoned"):
        assert again.attack(name, "lira-online").auc == pytest.approx(results.attack(name, "lira-online").auc)
    # planning the same config again keeps the attack's outputs and the user's files
    (plan_dir / "my-notes.txt").write_text("mine")
    assert run_main(capsys, "plan", str(tiny_config_file), "--out", str(plan_dir)).returncode == 0
    assert (plan_dir / "my-notes.txt").read_text() == "mine" and (plan_dir / "results.json").exists()


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda a: {**a, "clean": a["clean"][:3]}, "clean holds 3 models; the plan has 4"),
    (lambda a: {"clean": a["clean"], "poisned": a["poisoned"]},
     "no array for condition(s) poisoned; unexpected array(s) poisned (the plan's conditions: clean, poisoned"),
    (lambda a: {**a, "poisoned": np.where(np.arange(300)[None, :, None, None] == 7, np.nan, a["poisoned"])},
     "poisoned holds 40 NaN or infinite values (the first at model 0, point 7)"),
    (lambda a: {**a, "clean": a["clean"][:, :250]}, "clean holds 250 points; the pool has 300"),
    (lambda a: {**a, "clean": a["clean"][..., :9]}, "clean holds 9 classes; the pool has 10"),
    (lambda a: {**a, "clean": a["clean"][:, :, 0, 0]}, "clean has shape (4, 300); expected (M, N, C) = (4, 300, 10)"),
    (lambda a: {**a, "clean": a["clean"].astype(np.int32)}, "clean is int32; logits must be floating point"),
])
def test_logits_that_do_not_fit_the_plan_are_one_line(planned, tmp_path, capsys, change, fragment):
    plan_dir, _, logits = planned
    with np.load(logits) as stored:
        arrays = {name: stored[name] for name in stored.files}
    np.savez(tmp_path / "bad.npz", **change(arrays))
    before = tree(plan_dir)
    done = run_main(capsys, "attack", "--plan", str(plan_dir), "--logits", str(tmp_path / "bad.npz"))
    assert_one_line_error(done, fragment)
    assert tree(plan_dir) == before


def test_targets_without_shadows_in_a_plan(planned, tmp_path, capsys):
    plan_dir = copy_plan(planned, tmp_path)
    with np.load(plan_dir / "design.npz") as design:
        keep, targets = design["keep"].copy(), design["targets"]
    keep[:, targets[[1, 4]]] = [[True], [False], [False], [False]]  # one IN model: none left when it is the target
    np.savez(plan_dir / "design.npz", keep=keep, targets=targets)
    args = ("attack", "--plan", str(plan_dir), "--logits", str(planned[2]), "--attack", "lira-online")
    done = run_main(capsys, *args)
    assert_one_line_error(done, "2 of 8 target points have too few shadow models for lira-online")
    assert f"points {targets[1]}, {targets[4]}; use --skip-unsupported" in done.stderr
    assert not (plan_dir / "results.json").exists()
    done = run_main(capsys, *args, "--skip-unsupported")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("dropped 2 of 8 target points") == 1
    results = RunResults.read(plan_dir)
    # six targets left, each in two of the four models
    assert results.attack("poisoned", "lira-online").metrics.members == 6 * 2
    with np.load(plan_dir / "scores-clean.npz") as scores:
        np.testing.assert_array_equal(scores["targets"], np.delete(targets, [1, 4]))


def test_bad_places_and_plans_are_one_line(planned, tmp_path, capsys, tiny_config_file):
    plan_dir, run_dir, logits = planned
    run_before, plan_before = tree(run_dir), tree(plan_dir)
    attack = ("attack", "--plan", str(plan_dir), "--logits", str(logits), "--attack", "global-threshold")
    assert_one_line_error(run_main(capsys, *attack, "--out", str(run_dir)), "is a truthserum run directory")
    (tmp_path / "file").write_text("keep me")
    assert_one_line_error(run_main(capsys, *attack, "--out", str(tmp_path / "file")), "exists and is not a directory")
    copy = copy_plan(planned, tmp_path)
    (copy / "results.json").write_text("my own")
    assert_one_line_error(run_main(capsys, "attack", "--plan", str(copy), "--logits", str(logits)),
                          "holds results.json, not written by truthserum attack")
    assert (copy / "results.json").read_text() == "my own"
    assert_one_line_error(run_main(capsys, "attack", "--plan", str(plan_dir)), "--plan needs --logits")
    assert_one_line_error(run_main(capsys, *attack, "--out", str(tmp_path / "s.npz")),
                          "with --plan, --out names a directory")
    assert_one_line_error(run_main(capsys, "attack", "--signals", str(logits), "--logits", str(logits)),
                          "--logits is for --plan")
    assert_one_line_error(run_main(capsys, "attack", "--plan", str(tmp_path / "none"), "--logits", str(logits)),
                          "no such plan directory")
    assert_one_line_error(run_main(capsys, "attack", "--plan", str(run_dir), "--logits", str(logits)),
                          "not a plan directory")
    unfinished = copy_plan(planned, tmp_path / "u")
    described = json.loads((unfinished / "plan.json").read_text())
    (unfinished / "plan.json").write_text(json.dumps({**described, "complete": False}))
    assert_one_line_error(run_main(capsys, "attack", "--plan", str(unfinished), "--logits", str(logits)),
                          "an unfinished plan; run truthserum plan again")
    # plan: another task, a directory of other things, a plan of another config, a run directory
    other = tmp_path / "attribute.yaml"
    other.write_text(yaml.safe_dump({"task": "untargeted"}))
    assert_one_line_error(run_main(capsys, "plan", str(other), "--out", str(tmp_path / "p")),
                          "truthserum plan is for task 'membership' (targeted poisons), not 'untargeted'")
    reseeded = tmp_path / "reseeded.yaml"
    reseeded.write_text(yaml.safe_dump({**TINY_CONFIG, "seed": 4}))
    assert_one_line_error(run_main(capsys, "plan", str(reseeded), "--out", str(plan_dir)),
                          "an earlier plan of another config")
    assert_one_line_error(run_main(capsys, "plan", str(tiny_config_file), "--out", str(run_dir)),
                          "is a truthserum run directory, not a plan")
    assert_one_line_error(run_main(capsys, "plan", str(tiny_config_file), "--out", str(tmp_path)),
                          "not empty and not an earlier plan")
    assert not (tmp_path / "p").exists()
    assert tree(run_dir) == run_before and tree(plan_dir) == plan_before
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize("sensitive", ["status", None])
def test_a_table_plan_has_its_raw_rows(tmp_path, sensitive):
    rng = np.random.default_rng(0)
    rows = 60
    lines = ["age,hours,city,status,income"] + [
        f"{a},{h},{c},{s},{'high' if a + h > 80 else 'low'}" for a, h, c, s in zip(
            rng.integers(18, 70, rows), rng.integers(10, 60, rows), rng.choice(["north", "south"], rows),
            rng.choice(["single", "married"], rows))
    ]
    (tmp_path / "people.csv").write_text("\n".join(lines) + "\n")
    columns = {"label": "income", "numeric": ["age", "hours"], "categorical": ["city"]}
    columns |= {"sensitive": sensitive} if sensitive else {"categorical": ["city", "status"]}
    config = parse_config({
        "seed": 1, "data": {"source": "csv", "path": str(tmp_path / "people.csv"), "columns": columns},
        "design": {"num_models": 4, "num_targets": 3}, "poison": {"replicas": 2},
        "model": {"architecture": "mlp", "hidden_sizes": [8]},
    })
    plan = write_plan(config=config, out_dir=tmp_path / "plan", log=quiet)
    assert plan.is_table and read_plan(tmp_path / "plan").is_table
    with open(tmp_path / "plan" / "pool.csv", newline="") as handle:
        pool_rows = list(csv.reader(handle))
    assert pool_rows[0] == ["age", "hours", "city", "status", "income"] and len(pool_rows) == rows + 1
    assert sorted(",".join(row) for row in pool_rows[1:]) == sorted(
        ",".join([f"{float(line.split(',')[0])!r}", f"{float(line.split(',')[1])!r}", *line.split(",")[2:]])
        for line in lines[1:])
    with np.load(plan.train_file("poisoned", 2)) as training, \
            open(plan.train_file("poisoned", 2, ".csv"), newline="") as handle:
        raw = list(csv.reader(handle))[1:]
        assert len(raw) == len(training["y"]) and training["poison"].sum() == 6
        for row, index in zip(raw, training["indices"], strict=False):
            assert row == pool_rows[1 + index]
        flipped = {"high": "low", "low": "high"}
        poison_rows = [row for row, poison in zip(raw, training["poison"], strict=True) if poison]
        for row, target in zip(poison_rows, np.repeat(plan.design().targets, 2), strict=True):
            assert row[:-1] == pool_rows[1 + target][:-1] and row[-1] == flipped[pool_rows[1 + target][-1]]
    assert json.loads((tmp_path / "plan" / "preprocessing.json").read_text())


def test_a_plan_is_not_rewritten_over_other_data(tmp_path):
    table = tmp_path / "people.csv"
    rng = np.random.default_rng(0)
    table.write_text("a,b,label\n" + "".join(f"{x},{y},{int(x > y)}\n" for x, y in rng.normal(size=(40, 2))))
    config = parse_config({"data": {"source": "csv", "path": str(table),
                                    "columns": {"label": "label", "numeric": "rest"}},
                           "design": {"num_models": 4, "num_targets": 3}, "poison": {"replicas": 1}})
    write_plan(config=config, out_dir=tmp_path / "plan", log=quiet)
    write_plan(config=config, out_dir=tmp_path / "plan", log=quiet)  # the same data: rewritten alike
    before = tree(tmp_path / "plan")
    table.write_text(table.read_text() + "9,1,1\n")  # one more row: every standardised value moves
    with pytest.raises(RunDirError, match="an earlier plan of other data"):
        write_plan(config=config, out_dir=tmp_path / "plan", log=quiet)
    assert tree(tmp_path / "plan") == before
