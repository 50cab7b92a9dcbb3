"""Why a membership run's poisons amplified little, read from what the run measured, and what
to change.

Truth Serum's poisons (Tramèr et al., CCS 2022) expose a target's membership only when the
models fit them: a model that did not train on the target must predict the poison label on it,
so that a model that did train on it, pulled back towards the true label, stands out. Models
that do not fit their poisons behave as if unpoisoned, and the poisoned attack is no better
than the clean one. :func:`membership_guidance` judges whether the amplification is small (the
rule is :func:`is_amplified`) and, when it is, names each measurement that explains it (poison
fit, train and test accuracy, parameters against training points, poison share) with the
change it calls for: as text, and as config keys that
:func:`truthserum.config.suggestions.apply_suggestions` writes into a
config. Everything here is plain data in, plain data out; docs/membership.md ("When the
amplification is small") gives the same rules for readers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FPR_LEVEL = "0.01"  # the key of TPR at 1% FPR in results.json
FPR = float(FPR_LEVEL)

# The rule for "amplified": the poisoned best TPR at 1% FPR is at least 10 points above the
# clean one and at least twice it. +10 points is what separates an attack from a handful of
# pairs (1.4% -> 7.1% doubles, five times over, yet finds one member in fifteen); doubling is
# what makes a clean attack a different attack, the least of the paper's "one to two orders of
# magnitude". A clean attack above 50% cannot double, so there the 10 points alone count.
RELATIVE_GAIN = 2.0
ABSOLUTE_GAIN = 0.10
DOUBLING_CEILING = 0.5
# Past this clean TPR not even +10 points fit under 100%: nothing is left to amplify.
NEAR_PERFECT_CLEAN = 1.0 - ABSOLUTE_GAIN

# The diagnoses, each looked for only once the amplification is small.
FEW_REPLICAS = 4  # a heavy poison share gives up replicas down to this before it gives up targets
MIN_TARGETS = 10  # nor does it cut the targets below this: fewer points measure little of the data
MIN_PAIRS = 400  # (model, target) pairs: 200 non-member pairs make 1% FPR two false positives
MAX_SUGGESTED_MODELS = 256
POISON_FIT_GOOD = 0.9  # an unfitted OUT pair looks like a member; at 1% FPR nearly all must fit
TRAIN_ACCURACY_FITTED = 0.95  # models wrong on their own clean points are far from fitting poisons
MEMORISATION_GAP = 0.03  # train - test under 3 points: members are treated like non-members
PARAMETERS_PER_POINT = 2  # Zhang et al. 2017: ~2n weights let a ReLU net fit any labels of n points
POISON_SHARE_LIMIT = 0.10  # as tasks.stages.POISON_FRACTION_WARNING: past it, label noise costs power
EPOCHS_FACTOR = 3  # a step, not a search: rerun and read the poison fit again
MAX_EPOCHS = 100_000  # train.epochs' bound in the config


@dataclass(frozen=True)
class ConditionMeasurements:
    """What one condition of a membership run measured, with its strongest attack at 1% FPR."""

    name: str
    replicas: float  # poisons per target; an adaptive budget's mean is not a whole number
    poison_share: float  # poisons / (poisons + members) of a model's training set; 0 when clean
    poison_fit: float | None  # None when clean
    train_accuracy: float
    test_accuracy: float
    best_attack: str
    tpr: float  # the best attack's TPR at 1% FPR
    auc: float  # the same attack's AUC
    adaptive: bool = False  # a count per target chosen on calibration models, set by its cap

    @staticmethod
    def _replicas(data: Mapping[str, Any], adaptive: bool) -> float:
        """Poisons per target: a fixed budget's count, or an adaptive budget's mean."""
        return float(data.get("replicas", 0)) if adaptive else int(data.get("replicas", 0))

    @classmethod
    def from_entry(cls, name: str, entry: Mapping[str, Any]) -> ConditionMeasurements:
        """From a condition's entry of results.json; the best attack is the one with the
        highest TPR at 1% FPR (the first on ties)."""
        attacks = entry["attacks"]
        best = max(attacks, key=lambda attack: attacks[attack]["tpr_at_fpr"][FPR_LEVEL])
        adaptive = bool(entry.get("adaptive"))
        replicas = cls._replicas(entry, adaptive)
        return cls(
            name=name, replicas=replicas, adaptive=adaptive,
            poison_share=float(entry["poison_fraction"]) if replicas else 0.0,
            poison_fit=None if entry.get("poison_fit") is None else float(entry["poison_fit"]),
            train_accuracy=float(entry["accuracy"]["train"]), test_accuracy=float(entry["accuracy"]["test"]),
            best_attack=best, tpr=float(attacks[best]["tpr_at_fpr"][FPR_LEVEL]), auc=float(attacks[best]["auc"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "condition": self.name, "replicas": self.replicas, "poison_share": self.poison_share,
            "poison_fit": self.poison_fit, "accuracy": {"train": self.train_accuracy, "test": self.test_accuracy},
            "best_attack": self.best_attack, "tpr_at_1pct_fpr": self.tpr, "auc": self.auc,
            **({"adaptive": True} if self.adaptive else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConditionMeasurements:
        adaptive = bool(data.get("adaptive"))
        return cls(
            name=data["condition"], replicas=cls._replicas(data, adaptive), adaptive=adaptive,
            poison_share=float(data["poison_share"]),
            poison_fit=data["poison_fit"], train_accuracy=float(data["accuracy"]["train"]),
            test_accuracy=float(data["accuracy"]["test"]), best_attack=data["best_attack"],
            tpr=float(data["tpr_at_1pct_fpr"]), auc=float(data["auc"]),
        )


@dataclass(frozen=True)
class Suggestion:
    """One change. ``key`` is a config key (``train.epochs``) with its ``current`` and
    ``suggested`` values, or None for a change to the user's own model or trainer, which only
    ``text`` can describe."""

    text: str
    key: str | None = None
    current: Any = None
    suggested: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "current": plain(self.current), "suggested": plain(self.suggested),
                "text": self.text}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Suggestion:
        return cls(text=data["text"], key=data.get("key"), current=plain(data.get("current")),
                   suggested=plain(data.get("suggested")))


def config_change(key: str, current: Any, suggested: Any) -> Suggestion:
    """A change of a config key, worded ``key: current -> suggested``."""
    return Suggestion(f"{key}: {_shown(current)} -> {_shown(suggested)}", key, current, suggested)


@dataclass(frozen=True)
class Finding:
    """One reason for a small amplification: what was measured (``measured``, and its numbers
    in ``values``), why it holds the amplification down, and the changes that address it."""

    kind: str
    measured: str
    why: str
    values: Mapping[str, Any] = field(default_factory=dict)
    suggestions: tuple[Suggestion, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "measured": self.measured, "why": self.why, "values": dict(self.values),
                "suggestions": [suggestion.to_json() for suggestion in self.suggestions]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        return cls(kind=data["kind"], measured=data["measured"], why=data["why"], values=dict(data.get("values", {})),
                   suggestions=tuple(Suggestion.from_json(item) for item in data.get("suggestions", ())))


@dataclass(frozen=True)
class ModelFacts:
    """What a run knows of the models it trains: a short ``name``, the trainable
    ``parameters`` (None where they cannot be counted, e.g. a scikit-learn model), whether the
    config's ``model`` section builds them and its ``train`` section trains them (False for a
    user's own model or trainer: the changes are then worded "your model" / "your trainer"),
    and ``larger``: the config changes that give a larger model (empty where there are none)."""

    name: str
    parameters: int | None
    model_in_config: bool = True
    training_in_config: bool = True
    larger: tuple[Suggestion, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "parameters": self.parameters, "model_in_config": self.model_in_config,
                "training_in_config": self.training_in_config}


@dataclass(frozen=True)
class RunSettings:
    """The settings the diagnoses weigh. ``epochs`` and ``weight_decay`` are the config's (None
    where ``model.training_in_config`` is False); ``members_per_model`` is a model's training
    set before poisons."""

    model: ModelFacts
    epochs: int | None
    weight_decay: float | None
    members_per_model: float
    num_targets: int
    num_models: int | None = None


@dataclass(frozen=True)
class Guidance:
    """The judgement on one run: ``amplified`` (:func:`is_amplified` on the two conditions
    compared) and, when it is not, the findings that explain why (none when it is)."""

    amplified: bool
    clean: ConditionMeasurements
    poisoned: ConditionMeasurements
    model: Mapping[str, Any]
    findings: tuple[Finding, ...] = ()

    @property
    def suggestions(self) -> tuple[Suggestion, ...]:
        """Every config change the findings suggest, one per key (the first finding's)."""
        chosen: dict[str, Suggestion] = {}
        for finding in self.findings:
            for suggestion in finding.suggestions:
                if suggestion.key is not None:
                    chosen.setdefault(suggestion.key, suggestion)
        return tuple(chosen.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "amplified": self.amplified, "rule": RULE, "clean": self.clean.to_json(),
            "poisoned": self.poisoned.to_json(), "model": dict(self.model),
            "findings": [finding.to_json() for finding in self.findings],
            "suggestions": [{key: value for key, value in suggestion.to_json().items() if key != "text"}
                            for suggestion in self.suggestions],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Guidance:
        """From results.json's ``guidance`` entry (its ``suggestions`` are recomputed)."""
        return cls(
            amplified=bool(data["amplified"]), clean=ConditionMeasurements.from_json(data["clean"]),
            poisoned=ConditionMeasurements.from_json(data["poisoned"]), model=dict(data.get("model", {})),
            findings=tuple(Finding.from_json(item) for item in data.get("findings", ())),
        )


RULE = (f"amplified when the poisoned condition's best TPR at 1% FPR is at least {100 * ABSOLUTE_GAIN:g} points "
        f"above the clean one and at least {RELATIVE_GAIN:g}x it (above {100 * DOUBLING_CEILING:g}% clean, the "
        "points alone)")


def is_amplified(clean_tpr: float, poisoned_tpr: float) -> bool:
    """The rule for "amplified" (:data:`RULE`), on the best TPRs at 1% FPR."""
    doubled = poisoned_tpr >= RELATIVE_GAIN * clean_tpr or clean_tpr > DOUBLING_CEILING
    return doubled and poisoned_tpr >= clean_tpr + ABSOLUTE_GAIN


def larger_model(architecture: str, *, hidden_sizes: Iterable[int] = (), channels: Iterable[int] = (),
                 widen: int = 1) -> tuple[Suggestion, ...]:
    """The config changes that make a built-in architecture larger: an MLP twice as wide (two
    layers where it had one), a CNN with twice the channels, a WRN twice as wide, and an MLP in
    place of a linear model (which memorises nothing its features do not separate)."""
    hidden, convs = list(hidden_sizes), list(channels)
    if architecture == "logreg":
        return (config_change("model.architecture", "logreg", "mlp"),
                config_change("model.hidden_sizes", hidden, [512, 512]))
    if architecture == "mlp" and hidden:
        wider = [2 * width for width in hidden]
        return (config_change("model.hidden_sizes", hidden, wider * 2 if len(wider) == 1 else wider),)
    if architecture == "cnn" and convs:
        return (config_change("model.channels", convs, [2 * width for width in convs]),)
    if architecture == "wrn" and widen < 32:
        return (config_change("model.widen", widen, min(32, 2 * widen)),)
    return ()


def membership_guidance(clean: ConditionMeasurements, poisoned: ConditionMeasurements,
                        settings: RunSettings) -> Guidance:
    """Judge the amplification from ``clean`` to ``poisoned`` and, when it is small, explain
    it. No findings when it is amplified; only "clean-near-perfect" when the clean attack
    already leaves nothing to amplify; "unexplained" when no measurement accounts for it."""
    amplified = is_amplified(clean.tpr, poisoned.tpr)
    findings: tuple[Finding, ...] = ()
    if not amplified:
        if clean.tpr > NEAR_PERFECT_CLEAN:
            findings = (_near_perfect_clean(clean),)
        else:
            found = (check(poisoned, settings) for check in _CHECKS)
            findings = tuple(finding for finding in found if finding is not None) or (_unexplained(poisoned),)
    return Guidance(amplified=amplified, clean=clean, poisoned=poisoned, model=settings.model.to_json(),
                    findings=findings)


def guidance_for_conditions(conditions: Mapping[str, Mapping[str, Any]], settings: RunSettings) -> Guidance | None:
    """:func:`membership_guidance` on a run's condition entries (as in results.json): "clean"
    against the poisoned condition with the strongest attack (a sweep has several). None
    without a clean and a poisoned condition."""
    if "clean" not in conditions:
        return None
    poisoned = [ConditionMeasurements.from_entry(name, entry) for name, entry in conditions.items()
                if entry.get("replicas")]
    if not poisoned:
        return None
    strongest = max(poisoned, key=lambda condition: condition.tpr)
    return membership_guidance(ConditionMeasurements.from_entry("clean", conditions["clean"]), strongest, settings)


def guidance_warning(guidance: Guidance) -> str | None:
    """The run's one warning line about a small amplification, or None."""
    if guidance.amplified:
        return None
    clean, poisoned = guidance.clean, guidance.poisoned
    kinds = ", ".join(finding.kind for finding in guidance.findings)
    return (f"{poisoned.name}: small amplification (best TPR at 1% FPR {clean.tpr:.1%} clean -> {poisoned.tpr:.1%}; "
            f"AUC {clean.auc:.3f} -> {poisoned.auc:.3f}); why: {kinds} (see guidance in results.json)")


def _poison_fit(poisoned: ConditionMeasurements, settings: RunSettings) -> Finding | None:
    fit = poisoned.poison_fit
    if fit is None or fit >= POISON_FIT_GOOD:
        return None
    return Finding(
        kind="poison-fit",
        measured=(f"poison fit {fit:.0%}: the models that did not train on a target predict its poison label in "
                  f"{fit:.0%} of (model, target) pairs (wanted: {POISON_FIT_GOOD:.0%} or more)"
                  f"{_trained_for(settings)}"),
        why=("an OUT model that has not fitted the poisons still predicts the target's true label, as a member "
             "would; at 1% FPR those pairs are the false positives that hold the attack down. Poisons amplify "
             "only when (nearly) every model fits them."),
        values={"poison_fit": fit, "epochs": settings.epochs, "parameters": settings.model.parameters},
        suggestions=(*_train_longer(settings), *_larger(settings), *_regularise_less(settings)),
    )


def _poisons_dominate(poisoned: ConditionMeasurements) -> bool:
    """The models fit their poisons, which are a heavy share of what they learn: their clean
    accuracy then reflects the label noise, not too little training (poison-share says so)."""
    fitted = poisoned.poison_fit is not None and poisoned.poison_fit >= POISON_FIT_GOOD
    return fitted and poisoned.poison_share > POISON_SHARE_LIMIT


def _training_set_fit(poisoned: ConditionMeasurements, settings: RunSettings) -> Finding | None:
    train = poisoned.train_accuracy
    if train >= TRAIN_ACCURACY_FITTED or _poisons_dominate(poisoned):
        return None
    return Finding(
        kind="train-accuracy",
        measured=(f"train accuracy {train:.1%} (wanted: {TRAIN_ACCURACY_FITTED:.0%} or more){_trained_for(settings)}"),
        why=("models that get their own correctly labeled training points wrong are far from fitting mislabeled "
             "copies of a target, which its features contradict: the training stopped short of memorising."),
        values={"train_accuracy": train, "epochs": settings.epochs},
        suggestions=(*_train_longer(settings), *_regularise_less(settings)),
    )


def _memorisation(poisoned: ConditionMeasurements, settings: RunSettings) -> Finding | None:
    gap = poisoned.train_accuracy - poisoned.test_accuracy
    if gap >= MEMORISATION_GAP or _poisons_dominate(poisoned):
        return None
    return Finding(
        kind="memorisation",
        measured=(f"train accuracy {poisoned.train_accuracy:.1%} against test {poisoned.test_accuracy:.1%}: "
                  f"a gap of {100 * gap:.1f} points (wanted: {100 * MEMORISATION_GAP:g} or more)"),
        why=("models that do as well on points they never saw as on their members have not memorised single "
             "points: membership leaves little mark, and a few mislabeled copies are what such models smooth over."),
        values={"train_accuracy": poisoned.train_accuracy, "test_accuracy": poisoned.test_accuracy, "gap": gap},
        suggestions=(*_larger(settings), *_train_longer(settings)),
    )


def _capacity(poisoned: ConditionMeasurements, settings: RunSettings) -> Finding | None:
    parameters = settings.model.parameters
    points = settings.members_per_model + poisoned.replicas * settings.num_targets
    if parameters is None or parameters >= PARAMETERS_PER_POINT * points:
        return None
    return Finding(
        kind="capacity",
        measured=(f"{settings.model.name} has {parameters:,} trainable parameters for {points:,.0f} training points "
                  f"(members and poisons; wanted: {PARAMETERS_PER_POINT} per point or more)"),
        why=("a model needs room to memorise labels its features contradict: a two-layer ReLU network with about "
             "2 weights per point can fit any labelling (Zhang et al. 2017); with fewer, fitting every poison "
             "cannot be counted on."),
        values={"parameters": parameters, "training_points": points},
        suggestions=_larger(settings),
    )


def _poison_share(poisoned: ConditionMeasurements, settings: RunSettings) -> Finding | None:
    share = poisoned.poison_share
    # an adaptive budget is set by its cap, not by poison.replicas: no change to suggest here
    if share <= POISON_SHARE_LIMIT or not poisoned.replicas or poisoned.adaptive:
        return None
    targets, replicas = settings.num_targets, poisoned.replicas
    # the most poisons a training set of this size takes at the limit: T R / (T R + m) <= limit
    budget = POISON_SHARE_LIMIT * settings.members_per_model / (1 - POISON_SHARE_LIMIT)
    # replicas go down to FEW_REPLICAS first: past a few, more replicas of a target add little
    # (the demo's sweep), while every target they cost is pairs the attack is measured on; then
    # further, down to one, while fewer than MIN_TARGETS targets would fit under the limit
    kept_targets = min(targets, MIN_TARGETS)
    fewer_replicas = min(replicas, FEW_REPLICAS)
    while fewer_replicas > 1 and math.floor(budget / fewer_replicas) < kept_targets:
        fewer_replicas -= 1
    # a table too small for MIN_TARGETS single replicas under the limit keeps them anyway: a
    # measurement of a handful of points says little of the table
    fewer_targets = min(targets, max(math.floor(budget / fewer_replicas), kept_targets))
    over = fewer_targets * fewer_replicas / (fewer_targets * fewer_replicas + settings.members_per_model)
    changes: tuple[Suggestion, ...] = ()
    if fewer_replicas != replicas:
        # fewer copies of a wrong label weigh less against its features: the models must
        # memorise each harder to fit it (measured: scikit-learn's MLP on breast cancer fits 90%
        # of 4 replicas, 22% of 1)
        changes += (config_change("poison.replicas", replicas, fewer_replicas), *_train_longer(settings))
    if fewer_targets != targets:
        changes += (config_change("design.num_targets", targets, fewer_targets),)
    models = settings.num_models
    if models is not None and fewer_targets * models < MIN_PAIRS:
        # one (model, target) pair per model and target: more models keep the 1% FPR level
        # resolvable with fewer targets
        more = min(MAX_SUGGESTED_MODELS, 2 * math.ceil(MIN_PAIRS / fewer_targets / 2))
        if more > models:
            changes += (config_change("design.num_models", models, more),)
    return Finding(
        kind="poison-share",
        measured=(f"{targets} targets x {replicas} replicas: poisons are {share:.1%} of a model's training set "
                  f"(wanted: {POISON_SHARE_LIMIT:.0%} or less)"),
        why=("label noise this heavy costs the models accuracy and the room to fit each target's poisons"
             + (f" (here they fit {poisoned.poison_fit:.0%} of them, and learn the wrong labels at the cost of their "
                f"train accuracy, {poisoned.train_accuracy:.1%})" if _poisons_dominate(poisoned) else "")
             + f"; fewer replicas (down to {FEW_REPLICAS}, and further only as far as {MIN_TARGETS} targets need, "
             "with longer training, since fewer copies of a wrong label are harder to fit), "
             f"then fewer targets, bring it down, and more models give back the (model, target) pairs that fewer "
             f"targets take away (at least {MIN_PAIRS}, so that 1% FPR is two false positives or more)."
             + (f" This training set is too small for {kept_targets} targets' single replicas to stay under "
                f"{POISON_SHARE_LIMIT:.0%} (they make {over:.1%}): the suggestion keeps the targets and accepts the "
                "label noise" if over > POISON_SHARE_LIMIT else "")),
        values={"poison_share": share, "num_targets": targets, "replicas": replicas},
        suggestions=changes,
    )


_CHECKS = (_poison_fit, _training_set_fit, _memorisation, _capacity, _poison_share)


def _near_perfect_clean(clean: ConditionMeasurements) -> Finding:
    return Finding(
        kind="clean-near-perfect",
        measured=(f"the clean condition's best attack ({clean.best_attack}) already reaches {clean.tpr:.1%} TPR "
                  "at 1% FPR"),
        why=("these models leak membership without poisons: there is nothing left to amplify (not even "
             f"{100 * ABSOLUTE_GAIN:g} points fit under 100%). Nothing needs changing."),
        values={"clean_tpr": clean.tpr},
    )


def _unexplained(poisoned: ConditionMeasurements) -> Finding:
    fit = "-" if poisoned.poison_fit is None else f"{poisoned.poison_fit:.0%}"
    return Finding(
        kind="unexplained",
        measured=(f"poison fit {fit}, train accuracy {poisoned.train_accuracy:.1%} against test "
                  f"{poisoned.test_accuracy:.1%}, poisons {poisoned.poison_share:.1%} of a training set: "
                  "none of these explains the small amplification"),
        why=("the models fit the poisons and memorise, yet membership stays hidden: the targets may have near "
             "duplicates with the true label that pull every model back, or the budget of replicas may not suit "
             "these data."),
        values={},
        suggestions=(Suggestion("compare poison budgets: truthserum sweep CONFIG --replicas 1,2,4,8,16"),),
    )


def _trained_for(settings: RunSettings) -> str:
    parts = [] if settings.epochs is None else [f"{settings.epochs} epochs"]
    if settings.model.parameters is not None:
        parts.append(f"{settings.model.name} with {settings.model.parameters:,} parameters")
    return f", after {', '.join(parts)}" if parts else ""


def _train_longer(settings: RunSettings) -> tuple[Suggestion, ...]:
    if not settings.model.training_in_config or settings.epochs is None:
        return (Suggestion(f"your trainer: train about {EPOCHS_FACTOR}x longer (epochs or iterations)"),)
    if settings.epochs >= MAX_EPOCHS:
        return ()
    return (config_change("train.epochs", settings.epochs, min(MAX_EPOCHS, EPOCHS_FACTOR * settings.epochs)),)


def _larger(settings: RunSettings) -> tuple[Suggestion, ...]:
    if not settings.model.model_in_config:
        return (Suggestion("your model: a larger one (wider or more layers)"),)
    return settings.model.larger


def _regularise_less(settings: RunSettings) -> tuple[Suggestion, ...]:
    if not settings.model.training_in_config or settings.weight_decay is None:
        return (Suggestion("your trainer: less regularisation (weight decay, dropout, early stopping)"),)
    if settings.weight_decay > 0:
        return (config_change("train.weight_decay", settings.weight_decay, 0.0),)
    return ()


def plain(value: Any) -> Any:
    """Tuples as lists, as JSON and the config's YAML write them."""
    return [plain(item) for item in value] if isinstance(value, list | tuple) else value


def _shown(value: Any) -> str:
    """A value as a config file writes it: ``[512, 512]``, ``0.001``."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)
