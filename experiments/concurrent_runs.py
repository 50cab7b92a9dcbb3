"""Two runs of one config on one run directory, the second started 0, 3 and 8 s after the first.

For each gap: both commands' exit status and last line, and whether the finished run's metrics
equal those of the same config run alone into its own directory. Prints a Markdown table
(docs/run-directory.md and issue 18's closing note).

Run: ``.venv/bin/python experiments/concurrent_runs.py CONFIG OUT_ROOT`` (the packaged demo
config takes about 2 minutes a run on 2 cores).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

GAPS = (0.0, 3.0, 8.0)


def command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "truthserum.cli", "run", str(config), "--out", str(out), "--quiet"]


def metrics(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {name: entry["attacks"] for name, entry in results["conditions"].items()}


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1][:160] if lines else ""


def main(config: Path, root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    alone = subprocess.run(command(config, root / "alone"), capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr
    expected = metrics(root / "alone")
    print("| gap (s) | first: exit, last line | second: exit, last line | metrics equal the run alone |")
    print("|---|---|---|---|")
    for gap in GAPS:
        out = root / f"gap-{gap:g}"
        first = subprocess.Popen(command(config, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(gap)
        second = subprocess.Popen(command(config, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ends = [process.communicate() for process in (first, second)]
        codes = (first.returncode, second.returncode)
        cells = [f"{code}: `{last_line(err) if code else 'finished'}`" for code, (_, err) in zip(codes, ends)]
        print(f"| {gap:g} | {cells[0]} | {cells[1]} | {metrics(out) == expected} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
