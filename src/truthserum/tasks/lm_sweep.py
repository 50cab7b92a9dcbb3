"""Insertion sweep for the language-model task: where does poisoning help?

One lm run per insertion count (``lm.canaries.insertions``), each in ``OUT/insertions-<n>/``
and each a whole run directory of its own (its report, its resume). The runs draw the same
canaries, secrets, poisons and initial weights, so the grid insertions x poisoning conditions
is paired throughout, and under ``lm.pretrain`` they share one base model: the first run
pretrains it and the others take a copy of its files (reused only if the inputs match). The
sweep writes ``OUT/sweep-insertions.json`` (a point per insertion count and condition) and
``OUT/sweep-insertions.png``.
"""

from __future__ import annotations

from pathlib import Path

from truthserum.config import RunConfig, Task
from truthserum.errors import ConfigError, RunDirError
from truthserum.report.lm import plot_insertion_sweep
from truthserum.store.rundir import write_json
from truthserum.tasks.lm import run_lm
from truthserum.tasks.stages import Log, log_to_stderr
from truthserum.train.executors import ShardBackend

INSERTION_FILES = ("sweep-insertions.json", "sweep-insertions.png")
MAX_INSERTIONS = 1000


def run_dir_for(out_dir: Path, insertions: int) -> Path:
    return Path(out_dir) / f"insertions-{insertions}"


def _check(config: RunConfig, out_dir: Path, insertions: list[int]) -> None:
    if config.task is not Task.LM:
        raise ConfigError(f"--insertions sweeps the lm task, not '{config.task.value}'")
    if not insertions or len(set(insertions)) != len(insertions):
        raise ConfigError("--insertions: give distinct counts, e.g. 1,2,4,8")
    if min(insertions) < 1:
        raise ConfigError("--insertions: each count must be at least 1 (a canary inserted 0 times is no canary)")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise RunDirError(f"{out_dir}: exists and is not a directory; an insertion sweep writes its runs under "
                          "a directory")
    if (Path(out_dir) / "config.yaml").exists():
        raise RunDirError(f"{out_dir}: holds a run of its own; an insertion sweep writes one run per count under "
                          "its directory, so use another --out")


def _point(insertions: int, name: str, entry: dict, exposure_key: str, ks: list[int]) -> dict:
    metrics, change = entry["metrics"], entry["change_vs_clean"]
    point = {
        "insertions": insertions, "condition": name, "poison_lines": entry["poison_lines"],
        "poison_share": entry["poison_share"], "validation_bits_per_token": entry["validation_bits_per_token"],
    }
    for kind in ("raw", "calibrated"):
        key = f"{kind}_{exposure_key}"
        point[f"{kind}_exposure"] = metrics[key]
        point[f"{kind}_change"] = change.get(key)
        point[f"{kind}_top"] = {str(k): metrics[f"{kind}_top_{k}"]["mean"] for k in ks}
    return point


def run_insertion_sweep(
    config: RunConfig, out_dir: Path, insertions: list[int], *, device: str = "cpu", progress: bool = True,
    log: Log = log_to_stderr, backend: ShardBackend | None = None,
) -> dict:
    """Run the lm experiment once per insertion count; write and return the sweep's summary."""
    _check(config, out_dir, insertions)
    lm = config.lm
    points, warnings, pretrain = [], [], {}
    first_dir: Path | None = None
    ks = list(lm.exposure.top_k)
    for count in insertions:
        canaries = lm.canaries.model_copy(update={"insertions": count})
        sub_config = config.model_copy(update={"lm": lm.model_copy(update={"canaries": canaries})})
        sub_dir = run_dir_for(out_dir, count)
        log(f"insertions {count}: {sub_dir}")
        results = run_lm(sub_config, sub_dir, device=device, progress=progress, log=log, backend=backend,
                         base_from=first_dir).to_json()
        first_dir = first_dir or sub_dir
        for name, entry in results["conditions"].items():
            points.append(_point(count, name, entry, lm.exposure_key, ks))
        warnings += [f"insertions {count}: {w}" for w in results["warnings"]]
        pretrain = results.get("pretrain") or pretrain
    summary = {
        "sweep": "insertions", "insertions": insertions, "exposure": lm.exposure_key,
        "max_exposure": results["max_exposure"], "canaries": lm.canaries.count * lm.replicates,
        "pretrain": pretrain or None, "points": points, "warnings": warnings, "config": config.to_json_dict(),
    }
    write_json(Path(out_dir) / INSERTION_FILES[0], summary)
    plot_insertion_sweep(summary, Path(out_dir) / INSERTION_FILES[1])
    return summary
