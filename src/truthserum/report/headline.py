"""Stage 8, report: the summary at the top of the HTML report, the headline of each task (the
best attack, the clean baseline against the condition where poisoning helped most, with
intervals, counts and the accuracy cost).

Every number in it is a :class:`Number` that knows where in ``results.json`` it comes from, so
the page can carry that path and a test can check the page against the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PERCENT, FIXED3, FIXED2, COUNT = "percent", "fixed3", "fixed2", "count"
_FORMATS: dict[str, Callable[[float], str]] = {
    PERCENT: lambda value: f"{100 * value:.1f}%",
    FIXED3: lambda value: f"{value:.3f}",
    FIXED2: lambda value: f"{value:.2f}",
    COUNT: lambda value: f"{value:,.0f}",
}


@dataclass(frozen=True)
class Number:
    """A value of ``results.json``: its path there, the value and how it is written."""

    path: tuple[str | int, ...]
    value: float
    kind: str

    @property
    def text(self) -> str:
        return _FORMATS[self.kind](self.value)


Cell = list["Number | str"]  # numbers and the words between them


@dataclass(frozen=True)
class Headline:
    """What was attacked (``sentence``), the verdict in words, and the table of the headline
    measurements: one row per measure, one column per condition shown."""

    sentence: str
    verdict: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    attack: str | None
    baseline: str | None
    compared: str | None
    notes: list[str]


def lookup(results: dict, path: tuple[str | int, ...]) -> Any:
    value: Any = results
    for key in path:
        value = value[key]
    return value


def _number(results: dict, path: tuple[str | int, ...], kind: str) -> Number | str:
    try:
        value = lookup(results, path)
    except (KeyError, IndexError, TypeError):
        return "-"
    return "-" if value is None else Number(path, float(value), kind)


def _with_interval(results: dict, path: tuple[str | int, ...], interval: tuple[str | int, ...], kind: str) -> Cell:
    cell: Cell = [_number(results, path, kind)]
    low, high = _number(results, (*interval, 0), kind), _number(results, (*interval, 1), kind)
    if isinstance(low, Number) and isinstance(high, Number):
        cell += [" [", low, ", ", high, "]"]
    return cell


def _rank(value: float | None) -> float:
    """A value to rank by: NaN and missing values rank last (max() would keep a leading NaN)."""
    return -math.inf if value is None or math.isnan(value) else value


def _strength(metrics: dict) -> tuple[float, float]:
    return _rank(metrics["tpr_at_fpr"].get("0.01")), _rank(metrics.get("auc"))


def _strongest(conditions: dict, candidates: list[str]) -> tuple[str, str]:
    """The (condition, attack) with the highest TPR at 1% FPR (then AUC) among ``candidates``."""
    return max(((c, a) for c in candidates for a in conditions[c]["attacks"]),
               key=lambda pair: _strength(conditions[pair[0]]["attacks"][pair[1]]))


def _change_words(before: float, after: float) -> str:
    """"rose from 19.2% to 72.3%, 3.8 times as many" and its kin, by the sign."""
    if math.isnan(before) or math.isnan(after) or after == before:
        return f"was {100 * before:.1f}% and then {100 * after:.1f}%"
    text = f"{'rose' if after > before else 'fell'} from {100 * before:.1f}% to {100 * after:.1f}%"
    if after > before > 0:
        text += f", {after / before:.1f} times as many"
    return text


def _roc_headline(results: dict) -> Headline:
    """The first condition (the clean baseline) against the one where the strongest attack
    does best. The defense matrix compares undefended cells only (``none.*``: what poisoning
    does), and adds the defended cell where that attack still does best (what survives)."""
    conditions = results["conditions"]
    names = list(conditions)
    baseline = names[0] if len(names) > 1 else None
    candidates = names[1:] if baseline else names
    defended: list[str] = []
    if results.get("task") == "defenses":  # cells are <defense>.<strategy>; .clean has no poisons
        defended = [c for c in candidates if not c.startswith("none.") and not c.endswith(".clean")]
        candidates = [c for c in candidates if c.startswith("none.")] or candidates
    compared, attack = _strongest(conditions, candidates)
    if defended:
        defended = [max(defended, key=lambda c: _strength(conditions[c]["attacks"][attack]))]
    shown = [c for c in (baseline, compared, *defended) if c is not None]

    def attack_path(condition: str, *rest: str | int) -> tuple[str | int, ...]:
        return ("conditions", condition, "attacks", attack, *rest)

    rows: list[tuple[str, list[Cell]]] = []
    for level, words in (("0.01", "TPR at 1% FPR"), ("0.001", "TPR at 0.1% FPR")):
        rows.append((words, [_with_interval(results, attack_path(c, "tpr_at_fpr", level),
                                            attack_path(c, "tpr_at_fpr_ci", level), PERCENT) for c in shown]))
    rows.append(("AUC", [_with_interval(results, attack_path(c, "auc"), attack_path(c, "auc_ci"), FIXED3)
                         for c in shown]))
    if conditions[compared]["attacks"][attack].get("epsilon_lower_bound") is not None:
        rows.append(("epsilon lower bound", [[_number(results, attack_path(c, "epsilon_lower_bound"), FIXED2)]
                                             for c in shown]))
    rows.append(("member / non-member pairs", [[_number(results, attack_path(c, "members"), COUNT), " / ",
                                                _number(results, attack_path(c, "nonmembers"), COUNT)] for c in shown]))
    if all("accuracy" in conditions[c] for c in shown):
        rows.append(("test accuracy", [[_number(results, ("conditions", c, "accuracy", "test"), PERCENT)]
                                       for c in shown]))
    best = conditions[compared]["attacks"][attack]["tpr_at_fpr"]["0.01"]
    if baseline is None:
        verdict = f"The strongest attack, {attack}, reaches {100 * best:.1f}% TPR at 1% FPR."
    else:
        before = conditions[baseline]["attacks"][attack]["tpr_at_fpr"]["0.01"]
        verdict = (f"From {baseline} to {compared}, the strongest attack's TPR at 1% FPR "
                   f"{_change_words(before, best)} ({attack}).")
        test = [conditions[c].get("accuracy", {}).get("test") for c in shown]
        if None not in test:
            verdict += f" Test accuracy went from {100 * test[0]:.1f}% to {100 * test[1]:.1f}%."
        for cell in defended:
            verdict += (f" Behind a defense the attack does best in {cell}: "
                        f"{100 * conditions[cell]['attacks'][attack]['tpr_at_fpr']['0.01']:.1f}%.")
    notes = []
    for condition in shown:
        low = [level for level, flag in conditions[condition]["attacks"][attack].get("low_support", {}).items() if flag]
        if low:
            levels = ", ".join(f"{100 * float(level):g}%" for level in low)
            notes.append(f"{condition}: fewer than 10 non-members can be false positives at {levels} FPR; "
                         "the TPR there is one at (almost) zero false positives.")
    return Headline(sentence=_roc_sentence(results), verdict=verdict, columns=shown, rows=rows, attack=attack,
                    baseline=baseline, compared=compared, notes=notes)


def _roc_sentence(results: dict) -> str:
    task = results.get("task", "membership")
    config = results.get("config") or {}
    data = (config.get("data") or {}).get("source")
    if "attacked" in results:  # truthserum attack: signals, or a plan's logits, from elsewhere
        attacked = results["attacked"]
        source = attacked.get("signals") or attacked.get("logits") or "signals"
        return (f"Membership inference on models trained elsewhere ({source}); attacks: "
                f"{', '.join(attacked.get('attacks', []))}.")
    if task == "untargeted":
        return (f"Untargeted poisoning of {data}: the adversary holds {results.get('adversary', '?')} points, the "
                f"victims {results.get('victims', '?')}; membership inference on every victim point.")
    design = config.get("design") or {}
    poison = results.get("poison") or {}
    text = (f"Membership inference on {design.get('num_targets', '?')} target records of {data}, "
            f"{design.get('num_models', '?')} models")
    adaptive = poison.get("adaptive")
    if poison.get("total") and (not adaptive or "poisoned" in results.get("conditions", {})):
        text += (f"; the adversary adds {poison['replicas']} mislabeled replicas of each target "
                 f"({poison['total']} poisons, {100 * poison['fraction']:.1f}% of a model's training set)")
    if adaptive:  # the adaptive condition's own poisons, not the fixed budget it is compared with
        text += (f"; adaptively, a replica count chosen per target on the adversary's calibration models "
                 f"({adaptive['goal']} goal): {adaptive['total']} poisons, {adaptive['mean_replicas']:.2f} per target"
                 + (f", {100 * adaptive['fraction']:.1f}% of a model's training set" if "fraction" in adaptive else ""))
    if task == "defenses":
        text += "; each cell of the defense matrix is a (defense, poison strategy) pair"
    return text + "."


def _attribute_headline(results: dict) -> Headline:
    conditions = results["conditions"]
    names = list(conditions)
    baseline = names[0] if len(names) > 1 else None
    compared = names[-1]
    attacks = conditions[compared]["attacks"]
    attack = max(attacks, key=lambda name: _rank(attacks[name]["members"]["accuracy"]))
    shown = [c for c in (baseline, compared) if c is not None]

    def path(condition: str, *rest: str) -> tuple[str, ...]:
        return ("conditions", condition, "attacks", attack, *rest)

    rows: list[tuple[str, list[Cell]]] = [
        ("accuracy of the guess (members)", [_with_interval(results, path(c, "members", "accuracy"),
                                                            path(c, "members", "accuracy_ci"), PERCENT) for c in shown]),
        ("balanced accuracy (members)", [_with_interval(results, path(c, "members", "balanced_accuracy"),
                                                        path(c, "members", "balanced_accuracy_ci"), PERCENT)
                                         for c in shown]),
        ("accuracy on non-members (control)", [_with_interval(results, path(c, "nonmembers", "accuracy"),
                                                              path(c, "nonmembers", "accuracy_ci"), PERCENT)
                                               for c in shown]),
        ("base rate (most common value)", [[_number(results, path(c, "members", "base_rate"), PERCENT)] for c in shown]),
        ("test accuracy", [[_number(results, ("conditions", c, "accuracy", "test"), PERCENT)] for c in shown]),
    ]
    sensitive = results["sensitive"]
    best = attacks[attack]["members"]["accuracy"]
    verdict = f"The best attack, {attack}, guesses '{sensitive['column']}' right for {100 * best:.1f}% of member pairs"
    if baseline is not None:
        before = conditions[baseline]["attacks"][attack]["members"]["accuracy"]
        verdict += f" in {compared}, against {100 * before:.1f}% in {baseline}"
    verdict += f" (base rate {100 * attacks[attack]['members']['base_rate']:.1f}%)."
    sentence = (f"Attribute inference of '{sensitive['column']}' ({len(sensitive['values'])} values) for "
                f"{results['targets']} targets of {(results['config'].get('data') or {}).get('source')}.")
    return Headline(sentence=sentence, verdict=verdict, columns=shown, rows=rows, attack=attack, baseline=baseline,
                    compared=compared, notes=[])


def _lm_headline(results: dict) -> Headline:
    conditions = results["conditions"]
    names = list(conditions)
    baseline = names[0] if len(names) > 1 else None
    key = f"raw_{'exposure' if results['exact'] else 'extrapolated'}"
    calibrated = key.replace("raw_", "calibrated_")
    candidates = names[1:] or names
    compared = max(candidates, key=lambda c: _rank(conditions[c]["metrics"][key]["mean"]))
    shown = [c for c in (baseline, compared) if c is not None]
    k = results["config"]["lm"]["exposure"]["top_k"][0]

    def metric(c: str, name: str, part: str) -> tuple[str, ...]:
        return ("conditions", c, "metrics", name, part)

    rows: list[tuple[str, list[Cell]]] = [
        (f"mean {key.replace('_', ' ')} (bits)", [_with_interval(results, metric(c, key, "mean"),
                                                                   metric(c, key, "interval"), FIXED2) for c in shown]),
        (f"mean {calibrated.replace('_', ' ')} (bits)",
         [_with_interval(results, metric(c, calibrated, "mean"), metric(c, calibrated, "interval"), FIXED2)
          for c in shown]),
        (f"extracted in the top {k} (raw)", [[_number(results, metric(c, f"raw_top_{k}", "mean"), PERCENT)]
                                              for c in shown]),
        ("validation bits per token", [[_number(results, ("conditions", c, "validation_bits_per_token"), FIXED3)]
                                       for c in shown]),
        ("poison lines", [[_number(results, ("conditions", c, "poison_lines"), COUNT)] for c in shown]),
    ]
    change = conditions[compared]["change_vs_clean"].get(key)
    if change is None:
        verdict = f"Mean {key.replace('_', ' ')}: {conditions[compared]['metrics'][key]['mean']:.2f} bits."
    else:
        low, high = change["interval"] if change.get("interval") else (float("nan"), float("nan"))
        verdict = (f"The condition with the highest mean {key.replace('_', ' ')}, {compared}, changes it by "
                   f"{change['mean']:+.2f} bits against {baseline} (paired, interval [{low:+.2f}, {high:+.2f}]).")
    lm = results["config"]["lm"]
    sentence = (f"Secrets planted in language-model training text: {lm['canaries']['count']} canaries per "
                f"replicate, {lm['replicates']} replicates, {lm['canaries']['digits']} digits each.")
    return Headline(sentence=sentence, verdict=verdict, columns=shown, rows=rows, attack=None, baseline=baseline,
                    compared=compared, notes=[])


# The headline of each task; membership, untargeted and the defense matrix share the ROC one.
_HEADLINES: dict[str, Callable[[dict], Headline]] = {"attribute": _attribute_headline, "lm": _lm_headline}


def headline(results: dict) -> Headline:
    """The summary of any task's ``results.json``."""
    return _HEADLINES.get(results.get("task", "membership"), _roc_headline)(results)
