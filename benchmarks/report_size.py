"""Benchmark: the size of report.html and the time to make it, for finished run directories and
for the large scoring case of benchmarks/scoring_memory.py (M = 256 models, N = 50,000 points,
40,000 targets, 2 views, 10 classes, every attack), whose per-record view must stay bounded.

Run: ``.venv/bin/python benchmarks/report_size.py [RUN_DIR ...] [--large] [--workdir DIR]``.
For each run directory given (the membership demo's ``runs/demo``, say) and, with ``--large``,
for the synthetic audit (written once into ``--workdir``, then attacked by ``attack_signals``
with 100 bootstrap resamples, which writes its own report), the report is rebuilt with
:func:`truthserum.report.html.report_run` ``--repeats`` times (default 3) into a scratch file;
the fastest time is reported, with the size, the per-record rows and the share of the bytes
that are inline images. Writes JSON (default ``benchmarks/results/report_size.json``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from scoring_memory import write_synthetic  # noqa: E402  (the same synthetic audit)


def measure(run_dir: Path, repeats: int) -> dict:
    from truthserum.report.html import report_run

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "report.html"
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            report_run(run_dir=run_dir, out_file=out)
            times.append(time.perf_counter() - started)
        text = out.read_text(encoding="utf-8")
    images = sum(len(match) for match in re.findall(r'src="data:image/png;base64,[^"]*"', text))
    return {
        "run_dir": str(run_dir), "bytes": len(text.encode("utf-8")), "fastest_seconds": min(times),
        "seconds": times, "image_share": images / max(len(text), 1),
        "record_rows": text.count("<tr><th scope=\"row\">#"),
    }


def large_case(workdir: Path) -> Path:
    """The synthetic audit attacked once (its output folder, with its report); reused if done."""
    from truthserum.attacks import AttackOptions
    from truthserum.config.sections import MetricsConfig
    from truthserum.tasks.signals import attack_signals

    out = workdir / "attack"
    if (out / "results.json").is_file():
        return out
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "signals.npz").is_file():
        seconds = write_synthetic(workdir, models=256, points=50_000, targets=40_000, dtype="float32", seed=0)
        print(f"synthetic signals written in {seconds:.0f} s", file=sys.stderr)
    started = time.perf_counter()
    attack_signals(signals=workdir / "signals.npz", options=AttackOptions(seed=0),
                   metrics=MetricsConfig(bootstrap=100), out_dir=out)
    print(f"attacked (scoring, metrics, plots, report) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="*", type=Path)
    parser.add_argument("--large", action="store_true", help="also the M=256, N=50,000 scoring case")
    parser.add_argument("--workdir", type=Path, default=Path("runs/report-size"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/report_size.json"))
    args = parser.parse_args()
    dirs = list(args.run_dirs) + ([large_case(args.workdir)] if args.large else [])
    rows = [measure(run_dir, args.repeats) for run_dir in dirs]
    print("| run | report size | fastest of {} | per-record rows | inline images |".format(args.repeats))
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['run_dir']} | {row['bytes'] / 1024:,.0f} KB | {row['fastest_seconds']:.2f} s | "
              f"{row['record_rows']} | {100 * row['image_share']:.0f}% of the bytes |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
