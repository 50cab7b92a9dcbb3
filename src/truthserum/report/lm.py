"""Stage 8, report: the language-model task's table, clean against each poisoning condition."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from truthserum.report.plots import save_figure
from truthserum.report.blocks import Block, Table, render_text
from truthserum.report.text import interval_text, percent

MAX_CANARY_ROWS = 24  # past this, the per-canary table is left to results.json


def _bits(summary: dict) -> str:
    return f"{summary['mean']:.2f}{interval_text(summary['interval'], scale=1.0, digits=2)}"


def _change(summary: dict | None) -> str:
    if summary is None:
        return ""
    return f"{summary['mean']:+.2f}{interval_text(summary['interval'], scale=1.0, digits=2)}"


def _rates(metrics: dict, kind: str, ks: list[int]) -> str:
    return " / ".join(percent(metrics[f"{kind}_top_{k}"]["mean"]) for k in ks)


def format_lm(results: dict) -> str:
    """Exposure and extraction per condition, with intervals over canaries."""
    return render_text(lm_blocks(results))


def lm_blocks(results: dict) -> list[Block]:
    """:func:`format_lm` as blocks."""
    config = results["config"]["lm"]
    conditions = results["conditions"]
    ks = list(config["exposure"]["top_k"])
    first = next(iter(conditions.values()))["metrics"]
    exact = results["exact"]
    exposure_key = "exposure" if exact else "extrapolated"
    canaries = first[f"raw_{exposure_key}"]["canaries"]
    records = first[f"raw_{exposure_key}"]["records"]
    template = config["canaries"]["template"]
    lines: list[Block] = [
        f"Language-model secrets: {canaries} canaries ({config['replicates']} x {config['canaries']['count']}) "
        f"of the form {template!r}, {config['canaries']['digits']} digits "
        f"(|S| = {results['space_size']:,}, maximum exposure {results['max_exposure']:.2f} bits);",
        f"each inserted "
        f"{config['canaries']['insertions']} times into {config['num_models'] // 2} of {config['num_models']} "
        f"models, {records} (canary, model) pairs per condition; {config['train']['passes']:g} pass(es) over "
        f"{results['corpus']['train_bytes']:,} bytes of {results['corpus']['name']}.",
    ]
    if results.get("pretrain"):
        base = results["pretrain"]
        lines.append(f"Fine-tuned from one base model pretrained on {base['public_bytes']:,} bytes of public text "
                     f"(validation {base['validation_bits_per_token']:.3f} bits/byte before fine-tuning).")
    lines.append("")
    unit = "byte" if config["model"]["kind"] == "byte" else "token"
    header = ["condition", "poison lines", f"val. bits/{unit}", f"raw {exposure_key}", "calibrated",
              "change raw", "change calibrated"]
    rows = []
    for name, summary in conditions.items():
        metrics, change = summary["metrics"], summary["change_vs_clean"]
        rows.append([
            name, str(summary["poison_lines"]), f"{summary['validation_bits_per_token']:.3f}",
            _bits(metrics[f"raw_{exposure_key}"]), _bits(metrics[f"calibrated_{exposure_key}"]),
            _change(change.get(f"raw_{exposure_key}")), _change(change.get(f"calibrated_{exposure_key}")),
        ])
    lines.append(Table(header, rows, caption="Exposure per condition"))
    lines.append("")
    k_text = "/".join(str(k) for k in ks)
    header = ["condition", f"extraction top-{k_text} raw", f"top-{k_text} calibrated"]
    if exact:
        header.append("extrapolated raw / calibrated")
    rows = []
    for name, summary in conditions.items():
        metrics = summary["metrics"]
        row = [name, _rates(metrics, "raw", ks), _rates(metrics, "calibrated", ks)]
        if exact:
            row.append(f"{metrics['raw_extrapolated']['mean']:.2f} / {metrics['calibrated_extrapolated']['mean']:.2f}")
        rows.append(row)
    lines.append(Table(header, rows, caption="Extraction per condition"))
    if len(results.get("per_canary", [])) <= MAX_CANARY_ROWS:
        lines += ["", f"per canary, mean {exposure_key} over its target models (raw / calibrated):"]
        names = list(conditions)
        rows = [[f"{row['name']} (r{row['replicate']})"] + [
            f"{row['conditions'][c]['raw']:.1f} / {row['conditions'][c]['calibrated']:.1f}" for c in names
        ] for row in results["per_canary"]]
        lines.append(Table(["canary", *names], rows, caption="Mean exposure per canary (raw / calibrated)"))
    bootstrap = results["config"]["metrics"]
    note = (f"exposure in bits (means over pairs); intervals: {100 * bootstrap['confidence']:g}% percentile "
            f"bootstrap over canaries ({bootstrap['bootstrap']} resamples); change: paired with the clean "
            "condition (same canaries and positions; the same initial weights, or the same base unless the "
            "poisons went into the public text)")
    lines += ["", note]
    leaks = results["most_leaking"]
    lines.append("highest mean: " + "; ".join(f"{key.replace('_', ' ')}, {name}" for key, name in leaks.items())
                 + " (a gain counts only where its change interval excludes 0)")
    return lines


def plot_exposure(results: dict, path: Path) -> None:
    """Cumulative distribution of the per-pair exposure, raw (dashed) and calibrated (solid),
    one colour per condition: how many pairs reach each exposure, not just the mean."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    suffix = "exposure" if results["exact"] else "extrapolated"
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for i, (name, values) in enumerate(results["exposures"].items()):
        for kind, style in (("raw", "--"), ("calibrated", "-")):
            ordered = np.sort(values[kind])
            share_at_least = 1.0 - np.arange(len(ordered)) / len(ordered)
            axes.step(ordered, share_at_least, where="post", linestyle=style, color=f"C{i}",
                      label=f"{name} {kind}")
    axes.axvline(results["max_exposure"], color="grey", linewidth=0.8, linestyle=":")
    axes.set_ylim(0, 1.02)
    axes.set_xlabel(f"{suffix} (bits)")
    axes.set_ylabel("share of (canary, model) pairs at or above")
    axes.set_title("Exposure of the canaries' secrets")
    axes.legend(fontsize=7, loc="upper right")
    save_figure(figure, path)


def _by_condition(summary: dict) -> dict[str, dict[int, dict]]:
    table: dict[str, dict[int, dict]] = {}
    for point in summary["points"]:
        table.setdefault(point["condition"], {})[point["insertions"]] = point
    return table


def format_insertion_sweep(summary: dict) -> str:
    """The insertion sweep as tables: clean's exposure and each condition's paired change,
    raw and calibrated, then validation loss and extraction, per insertion count."""
    return render_text(insertion_sweep_blocks(summary))


def insertion_sweep_blocks(summary: dict) -> list[Block]:
    table = _by_condition(summary)
    counts = summary["insertions"]
    heads = [f"{n} insertion{'s' if n > 1 else ''}" for n in counts]
    blocks: list[Block] = [
        f"Insertion sweep: {summary['canaries']} canaries; {summary['exposure']} in bits (maximum "
        f"{summary['max_exposure']:.2f}); clean: its mean, the others: the paired change from clean at the same "
        "insertions, with 95% bootstrap intervals over canaries.",
    ]
    for kind in ("raw", "calibrated"):
        rows = []
        for name, by_count in table.items():
            cells = []
            for n in counts:
                point = by_count.get(n)
                if point is None:
                    cells.append("")
                elif point[f"{kind}_change"] is None:
                    cells.append(_bits(point[f"{kind}_exposure"]))
                else:
                    cells.append(_change(point[f"{kind}_change"]))
            rows.append([name, str(next(iter(by_count.values()))["poison_lines"]), *cells])
        blocks += ["", Table(["condition", "poison lines", *heads], rows, caption=f"{kind.capitalize()} exposure")]
    k = max(int(key) for key in summary["points"][0]["raw_top"])
    unit = "byte" if summary["config"]["lm"]["model"]["kind"] == "byte" else "token"
    rows = [[name, *(
        "" if by_count.get(n) is None else
        f"{by_count[n]['validation_bits_per_token']:.3f}  {percent(by_count[n]['raw_top'][str(k)])} / "
        f"{percent(by_count[n]['calibrated_top'][str(k)])}"
        for n in counts)] for name, by_count in table.items()]
    blocks += ["", Table(["condition", *heads], rows,
                         caption=f"Validation bits per {unit}, and the share of pairs with the secret among the top {k} "
                                 "guesses (raw / calibrated)")]
    return blocks


def _placement(name: str) -> tuple[str, str]:
    """``"dilution-64-public"`` -> ("dilution-64", "public"); a private condition's name is its own."""
    for into in ("public", "both"):
        if name.endswith(f"-{into}"):
            return name[: -len(into) - 1], into
    return name, "private"


def plot_insertion_sweep(summary: dict, path: Path) -> None:
    """Paired change in exposure against insertions, raw and calibrated, a line per condition."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    table = _by_condition(summary)
    styles = {"private": "-", "public": "--", "both": ":"}  # the text the poisons went into
    bases = sorted({_placement(name)[0] for name in table})  # a colour per strategy and count
    palette = plt.get_cmap("tab10" if len(bases) <= 10 else "tab20")
    colours = {base: palette(i % palette.N) for i, base in enumerate(bases)}
    figure, panels = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for axis, kind in zip(panels, ("raw", "calibrated"), strict=True):
        axis.axhline(0.0, color="grey", linewidth=0.8)
        poisoned = [name for name in table if any(p[f"{kind}_change"] for p in table[name].values())]
        for i, name in enumerate(poisoned):
            counts = sorted(table[name])
            changes = [table[name][n][f"{kind}_change"] for n in counts]
            means = np.array([c["mean"] for c in changes])
            low = np.array([c["mean"] - (c["interval"] or [c["mean"]] * 2)[0] for c in changes])
            high = np.array([(c["interval"] or [c["mean"]] * 2)[1] - c["mean"] for c in changes])
            shift = (i - (len(poisoned) - 1) / 2) * 0.03  # side by side, on a log axis
            base, into = _placement(name)
            axis.errorbar(np.array(counts) * (1 + shift), means, yerr=[low, high], marker="o", capsize=2,
                          color=colours[base], linestyle=styles[into], label=name)
        axis.set_xscale("log", base=2)
        axis.set_xticks(summary["insertions"], [str(n) for n in summary["insertions"]])
        axis.set_xlabel("insertions of each canary")
        axis.set_title(f"{kind} exposure: change from clean")
    panels[0].set_ylabel("paired change (bits)")
    panels[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    save_figure(figure, path)
