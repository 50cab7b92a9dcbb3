"""Guidance on a small amplification: the rule, each diagnosis on constructed measurements, the
config changes written into a config, and a tiny run whose results and summary carry them."""

import dataclasses
import json
import math
import shutil

import pytest

from conftest import TINY_CONFIG
from truthserum import apply_suggestions
from truthserum.config import parse_config
from truthserum.metrics import guidance as g
from truthserum.metrics.guidance import (
    ConditionMeasurements, Guidance, ModelFacts, RunSettings, Suggestion, config_change,
    guidance_for_conditions, is_amplified, larger_model, membership_guidance,
)
from truthserum.report.membership import guidance_lines
from truthserum.tasks.membership import MembershipRunner, run_experiment
from truthserum.tasks.results import RunResults
from truthserum.tasks.skeleton import execute
from truthserum.tasks.stages import POISON_FIT_WARNING, POISON_FRACTION_WARNING


def condition(name="poisoned", *, tpr, replicas=8, share=0.05, fit=1.0, train=1.0, test=0.9, auc=0.9):
    """A condition whose models fit everything and generalise with a gap, unless told otherwise."""
    return ConditionMeasurements(
        name=name, replicas=replicas, poison_share=share if replicas else 0.0, poison_fit=fit if replicas else None,
        train_accuracy=train, test_accuracy=test, best_attack="lira-online", tpr=tpr, auc=auc,
    )


def clean(tpr=0.032):
    return condition("clean", tpr=tpr, replicas=0, auc=0.633)


MLP = ModelFacts(name="mlp [256]", parameters=100_000,
                 larger=larger_model("mlp", hidden_sizes=(256,)))


def settings(model=MLP, *, epochs=20, weight_decay=0.0, members=3000.0, targets=32):
    return RunSettings(model=model, epochs=epochs, weight_decay=weight_decay, members_per_model=members,
                       num_targets=targets)


def kinds(guidance):
    return [finding.kind for finding in guidance.findings]


def changes(guidance):
    return {s.key: (s.current, s.suggested) for s in guidance.suggestions}


@pytest.mark.parametrize(("clean_tpr", "poisoned_tpr", "amplified"), [
    (0.032, 0.042, False),  # the real table: +1 point, 1.3x
    (0.191, 0.726, True),  # the demo
    (0.60, 0.72, True),  # doubling impossible, +12 points
    (0.60, 0.65, False),
    (0.01, 0.025, False),  # 2.5x, but 2.5 members found per false positive
    (0.014, 0.071, False),  # breast-cancer with every default: 5x, yet +5.7 points
    (0.0, 0.05, False),
    (0.0, 0.10, True),
    (0.30, 0.55, False),  # +25 points, but not doubled
    (0.30, 0.60, True),
    (0.30, 0.10, False),  # poisons that hurt
])
def test_the_rule(clean_tpr, poisoned_tpr, amplified):
    assert is_amplified(clean_tpr, poisoned_tpr) is amplified


def test_amplified_runs_have_no_findings():
    guidance = membership_guidance(clean(0.191), condition(tpr=0.726, fit=0.2, train=0.5, share=0.3), settings())
    assert guidance.amplified
    assert guidance.findings == () and guidance.suggestions == ()


def test_unfitted_poisons_call_for_longer_training_a_larger_model_and_less_weight_decay():
    guidance = membership_guidance(clean(), condition(tpr=0.042, fit=0.31), settings(weight_decay=5e-4))
    assert not guidance.amplified
    assert kinds(guidance) == ["poison-fit"]
    assert "31%" in guidance.findings[0].measured
    assert changes(guidance) == {
        "train.epochs": (20, 60), "model.hidden_sizes": ([256], [512, 512]), "train.weight_decay": (5e-4, 0.0),
    }
    assert "train.epochs: 20 -> 60" in [s.text for s in guidance.suggestions]


def test_a_fit_under_the_bar_but_over_the_run_warning_is_still_a_finding():
    # the run warns under 50%; at 1% FPR even 20% of unfitted OUT pairs are false positives enough
    fit = (POISON_FIT_WARNING + g.POISON_FIT_GOOD) / 2
    assert kinds(membership_guidance(clean(), condition(tpr=0.042, fit=fit), settings())) == ["poison-fit"]
    assert kinds(membership_guidance(clean(), condition(tpr=0.042, fit=g.POISON_FIT_GOOD), settings())) \
        == ["unexplained"]


def test_models_that_underfit_their_training_set_should_train_longer():
    guidance = membership_guidance(clean(), condition(tpr=0.042, train=0.80, test=0.70), settings(epochs=40))
    assert kinds(guidance) == ["train-accuracy"]
    assert changes(guidance) == {"train.epochs": (40, 120)}


def test_no_generalisation_gap_calls_for_a_larger_model_first():
    guidance = membership_guidance(clean(), condition(tpr=0.042, train=0.97, test=0.96), settings())
    assert kinds(guidance) == ["memorisation"]
    assert [s.key for s in guidance.suggestions] == ["model.hidden_sizes", "train.epochs"]


def test_too_few_parameters_for_the_training_set():
    small = ModelFacts(name="logreg", parameters=5_000, larger=larger_model("logreg"))
    guidance = membership_guidance(clean(), condition(tpr=0.042), settings(small, members=3000, targets=32))
    # 3,000 members + 32 x 8 poisons = 3,256 points; 5,000 < 2 x 3,256
    assert kinds(guidance) == ["capacity"]
    assert guidance.findings[0].values["training_points"] == 3256
    assert changes(guidance) == {"model.architecture": ("logreg", "mlp"), "model.hidden_sizes": ([], [512, 512])}
    roomy = dataclasses.replace(small, parameters=2 * 3256)
    assert kinds(membership_guidance(clean(), condition(tpr=0.042), settings(roomy))) == ["unexplained"]


def test_a_heavy_poison_share_calls_for_fewer_replicas_then_fewer_targets_under_the_limit():
    members, replicas = 2500.0, 8
    share = 100 * replicas / (100 * replicas + members)  # 24%
    guidance = membership_guidance(clean(), condition(tpr=0.042, share=share, replicas=replicas),
                                   settings(members=members, targets=100))
    assert kinds(guidance) == ["poison-share"]
    suggested = changes(guidance)
    assert suggested["poison.replicas"] == (8, g.FEW_REPLICAS)
    current, fewer = suggested["design.num_targets"]
    assert current == 100
    r = g.FEW_REPLICAS
    assert fewer * r / (fewer * r + members) <= g.POISON_SHARE_LIMIT  # under the limit ...
    assert (fewer + 1) * r / ((fewer + 1) * r + members) > g.POISON_SHARE_LIMIT  # ... by a target


def test_an_adaptive_budget_is_not_told_to_change_poison_replicas():
    """Its share is set by its cap; a mean that happens to be a whole number changes nothing."""
    members = 2500.0
    share = 100 * 8 / (100 * 8 + members)
    adaptive = ConditionMeasurements.from_entry("adaptive", {
        "adaptive": True, "replicas": 8.0, "poison_fraction": share, "poison_fit": 1.0,
        "accuracy": {"train": 1.0, "test": 0.9},
        "attacks": {"lira-online": {"tpr_at_fpr": {"0.01": 0.042}, "auc": 0.9}},
    })
    assert adaptive.adaptive and isinstance(adaptive.replicas, float)
    guidance = membership_guidance(clean(), adaptive, settings(members=members, targets=100))
    assert "poison-share" not in kinds(guidance)
    assert ConditionMeasurements.from_json(json.loads(json.dumps(adaptive.to_json()))) == adaptive


def test_a_small_table_keeps_its_targets_with_one_replica_and_more_models():
    members, replicas, targets = 89.0, 8, 100  # wine with every default
    share = targets * replicas / (targets * replicas + members)
    guidance = membership_guidance(clean(), condition(tpr=0.085, share=share, replicas=replicas),
                                   dataclasses.replace(settings(members=members, targets=targets), num_models=16))
    suggested = changes(guidance)
    # 10% of 89 rows is 9 poisons: fewer than MIN_TARGETS targets at one replica, so the targets stay
    assert suggested["poison.replicas"] == (8, 1) and suggested["design.num_targets"] == (100, g.MIN_TARGETS)
    new_models = suggested["design.num_models"][1]
    assert new_models % 2 == 0 and g.MIN_TARGETS * new_models >= g.MIN_PAIRS > g.MIN_TARGETS * (new_models - 2)
    share = g.MIN_TARGETS / (g.MIN_TARGETS + members)
    assert "too small" in guidance.findings[0].why and f"they make {share:.1%}" in guidance.findings[0].why


def test_a_mid_sized_table_gives_up_replicas_before_targets_fall_under_the_minimum():
    members, replicas, targets = 284.0, 8, 100  # breast cancer with every default
    share = targets * replicas / (targets * replicas + members)
    guidance = membership_guidance(clean(), condition(tpr=0.07, share=share, replicas=replicas),
                                   dataclasses.replace(settings(members=members, targets=targets), num_models=16))
    suggested = changes(guidance)
    new_replicas, new_targets = suggested["poison.replicas"][1], suggested["design.num_targets"][1]
    assert new_targets >= g.MIN_TARGETS
    assert new_targets * new_replicas / (new_targets * new_replicas + members) <= g.POISON_SHARE_LIMIT
    assert new_replicas == 3 and new_targets == 10  # at 4 replicas only 7 targets would fit


def test_when_one_targets_replicas_are_too_many_the_replicas_go_down():
    members, replicas, targets = 100.0, 50, 4
    share = targets * replicas / (targets * replicas + members)
    guidance = membership_guidance(clean(), condition(tpr=0.042, share=share, replicas=replicas),
                                   settings(members=members, targets=targets))
    suggested = changes(guidance)
    new_replicas = suggested["poison.replicas"][1]
    new_targets = suggested.get("design.num_targets", (targets, targets))[1]
    assert new_replicas < replicas and new_targets >= 1
    assert new_targets * new_replicas / (new_targets * new_replicas + members) <= g.POISON_SHARE_LIMIT


def test_a_near_perfect_clean_attack_leaves_nothing_to_amplify():
    guidance = membership_guidance(clean(0.95), condition(tpr=0.97, fit=0.2, train=0.6), settings())
    assert not guidance.amplified
    assert kinds(guidance) == ["clean-near-perfect"]  # not "train longer": there is nothing to gain
    assert guidance.suggestions == ()


def test_nothing_measured_explains_it():
    guidance = membership_guidance(clean(), condition(tpr=0.042), settings())
    assert kinds(guidance) == ["unexplained"]
    assert guidance.suggestions == ()  # the sweep it suggests is no config key
    assert "--replicas" in guidance.findings[0].suggestions[0].text


def test_a_users_own_model_and_trainer_are_named_instead_of_config_keys():
    own = ModelFacts(name="RandomForestClassifier", parameters=None, model_in_config=False,
                     training_in_config=False)
    guidance = membership_guidance(clean(), condition(tpr=0.042, fit=0.3, train=0.9, test=0.89),
                                   settings(own, epochs=None, weight_decay=None))
    assert kinds(guidance) == ["poison-fit", "train-accuracy", "memorisation"]  # no capacity: nothing to count
    texts = [s.text for finding in guidance.findings for s in finding.suggestions]
    assert all(s.key is None for finding in guidance.findings for s in finding.suggestions)
    assert any(text.startswith("your trainer") for text in texts)
    assert any(text.startswith("your model") for text in texts)
    assert guidance.suggestions == ()


def test_larger_models():
    assert [(s.key, s.suggested) for s in larger_model("mlp", hidden_sizes=(128, 64))] \
        == [("model.hidden_sizes", [256, 128])]
    assert [(s.key, s.suggested) for s in larger_model("cnn", channels=(16, 32))] == [("model.channels", [32, 64])]
    assert [(s.key, s.suggested) for s in larger_model("wrn", widen=4)] == [("model.widen", 8)]
    assert larger_model("wrn", widen=32) == ()


def test_the_share_limit_is_the_runs_warning_limit():
    assert g.POISON_SHARE_LIMIT == POISON_FRACTION_WARNING


def test_guidance_reads_back_from_json():
    guidance = membership_guidance(clean(), condition(tpr=0.042, fit=0.31, share=0.2), settings(weight_decay=1e-4))
    written = json.loads(json.dumps(guidance.to_json()))
    assert Guidance.from_json(written) == guidance
    assert written["suggestions"] == [
        {"key": s.key, "current": g.plain(s.current), "suggested": g.plain(s.suggested)} for s in guidance.suggestions
    ]


def test_apply_suggestions_writes_a_config_that_parses():
    config = parse_config({"model": {"hidden_sizes": [256]}, "train": {"epochs": 20, "weight_decay": 5e-4},
                           "design": {"num_targets": 100}})
    guidance = membership_guidance(clean(), condition(tpr=0.042, fit=0.31, share=0.24),
                                   settings(weight_decay=5e-4, members=2500, targets=100))
    new = apply_suggestions(config, guidance)
    assert type(new) is type(config)
    assert new.train.epochs == 60 and new.train.weight_decay == 0.0
    assert new.model.hidden_sizes == (512, 512)
    assert new.design.num_targets == changes(guidance)["design.num_targets"][1] < 100
    assert new.seed == config.seed and new.data == config.data  # nothing else moves
    assert parse_config(new.to_json_dict()) == new
    # findings and suggestions take the same path; changes to the user's own model are skipped
    assert apply_suggestions(config, guidance.findings) == new
    assert apply_suggestions(config, [Suggestion("your model: a larger one")]) == config
    # a run's recorded config (read-only views, as RunResults.config holds it) takes them too
    from truthserum.tasks.results import RunResults

    recorded = RunResults.from_json({"config": config.to_json_dict(), "conditions": {}}).config
    assert apply_suggestions(recorded, guidance) == new


def test_apply_suggestions_refuses_what_the_config_refuses():
    from truthserum.errors import ConfigError

    config = parse_config({})
    with pytest.raises(ConfigError, match="epochs"):
        apply_suggestions(config, [config_change("train.epochs", 20, 0)])
    with pytest.raises(ConfigError, match="no section"):
        apply_suggestions(parse_config({"task": "lm"}), [config_change("train.epochs", 20, 60)])
    with pytest.raises(ConfigError, match="pass a config"):
        apply_suggestions("configs/demo.yaml", [config_change("train.epochs", 20, 60)])


def test_conditions_without_a_clean_or_poisoned_one_get_no_guidance():
    entry = {"replicas": 0, "poison_fraction": 0.1, "poison_fit": None, "accuracy": {"train": 1.0, "test": 0.9},
             "attacks": {"lira-online": {"tpr_at_fpr": {"0.01": 0.1}, "auc": 0.7}}}
    assert guidance_for_conditions({"clean": entry}, settings()) is None
    poisoned = entry | {"replicas": 8, "poison_fit": 1.0}
    assert guidance_for_conditions({"poisoned": poisoned}, settings()) is None
    # several budgets (a sweep): the strongest poisoned one is judged
    strong = poisoned | {"attacks": {"rmia-online": {"tpr_at_fpr": {"0.01": 0.5}, "auc": 0.9},
                                     "lira-online": {"tpr_at_fpr": {"0.01": 0.2}, "auc": 0.95}}}
    judged = guidance_for_conditions({"clean": entry, "replicas-1": poisoned, "replicas-4": strong}, settings())
    strongest = judged.poisoned
    assert (strongest.name, strongest.best_attack, strongest.tpr) == ("replicas-4", "rmia-online", 0.5)
    assert judged.amplified


def test_the_summary_block_lists_findings_and_changes():
    guidance = membership_guidance(clean(), condition(tpr=0.042, fit=0.31), settings()).to_json()
    lines = guidance_lines(guidance)
    assert lines[1].startswith("Why the amplification is small (best TPR at 1% FPR: 3.2% clean, 4.2% poisoned")
    assert "What to change:" in lines
    assert "  train.epochs: 20 -> 60" in lines and "  model.hidden_sizes: [256] -> [512, 512]" in lines
    amplified = membership_guidance(clean(0.19), condition(tpr=0.72), settings()).to_json()
    assert guidance_lines(amplified) == [] and guidance_lines(None) == []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-guidance") / "run"
    logged: list[str] = []
    results = run_experiment(parse_config(TINY_CONFIG), out, progress=False, log=logged.append)
    return out, results, logged


def test_a_run_writes_its_guidance_and_the_summary_prints_it(tiny_run):
    out, results, logged = tiny_run
    written = json.loads((out / "results.json").read_text())
    guidance = results.guidance
    assert guidance is not None and written["guidance"] == guidance.to_json()
    assert RunResults.read(out).guidance == guidance
    poisoned = written["conditions"]["poisoned"]
    assert guidance.poisoned.poison_fit == poisoned["poison_fit"]
    assert guidance.poisoned.tpr == max(a["tpr_at_fpr"]["0.01"] for a in poisoned["attacks"].values())
    # mlp [32] on 64 features and 10 classes: 64 x 32 + 32 + 32 x 10 + 10 weights
    assert written["guidance"]["model"] == {"name": "mlp [32]", "parameters": 2410, "model_in_config": True,
                                            "training_in_config": True}
    # 2 epochs fit few poisons: the tiny run does not amplify, and says why
    assert not guidance.amplified and "poison-fit" in kinds(guidance)
    assert changes(guidance)["train.epochs"] == (2, 6)
    warnings = [w for w in written["warnings"] if "small amplification" in w]
    assert len(warnings) == 1 and any(line.endswith(warnings[0]) for line in logged)
    summary = results.summary()
    assert "Why the amplification is small" in summary and "train.epochs: 2 -> 6" in summary
    assert parse_config(TINY_CONFIG) != apply_suggestions(parse_config(TINY_CONFIG), guidance)


def test_a_runner_subclass_describes_its_own_model(tiny_run, tmp_path):
    out, _, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)

    class OwnModel(MembershipRunner):
        def model_description(self, config, pool):
            return ModelFacts(name="MyNet", parameters=None, model_in_config=False)

    results = execute(OwnModel(), parse_config(TINY_CONFIG), copy, progress=False, log=lambda _: None)
    guidance = results.guidance
    assert guidance.model["name"] == "MyNet" and guidance.model["parameters"] is None
    texts = [s.text for finding in guidance.findings for s in finding.suggestions]
    assert "your model: a larger one (wider or more layers)" in texts
    assert not any(s.key and s.key.startswith("model.") for s in guidance.suggestions)
    assert ("train.epochs" in changes(guidance)) and math.isfinite(guidance.poisoned.auc)


def test_results_written_before_the_guidance_have_none():
    from pathlib import Path

    old = json.loads((Path(__file__).parent / "fixtures" / "v0.1" / "membership-results.json").read_text())
    results = RunResults.from_json(old)
    assert results.guidance is None
    assert "Why the amplification" not in results.summary()


def test_poisons_that_dominate_are_blamed_for_the_low_train_accuracy():
    # breast-cancer with every default: the models fit every poison, which are 74% of what they learn
    dominated = condition(tpr=0.071, share=0.738, fit=1.0, train=0.246, test=0.15)
    guidance = membership_guidance(clean(0.014), dominated, settings(members=284.0, targets=100))
    assert kinds(guidance) == ["poison-share"]  # not "train-accuracy": the training was not short
    assert "fit 100% of them" in guidance.findings[0].why and "24.6%" in guidance.findings[0].why
    # fewer replicas each weigh less: the same finding asks for the longer training they need
    assert changes(guidance)["poison.replicas"] == (8, 3) and changes(guidance)["train.epochs"] == (20, 60)
    # the same accuracy with poisons unfitted: the training is short, and said so
    unfitted = membership_guidance(clean(0.014), condition(tpr=0.071, share=0.738, fit=0.4, train=0.246, test=0.15),
                                   settings(members=284.0, targets=100))
    assert "train-accuracy" in kinds(unfitted) and "train.epochs" in changes(unfitted)
