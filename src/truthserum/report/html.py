"""Stage 8, report: ``report.html``, one self-contained page per run directory, made from the
files alone (``results.json``, the score files, the figures, the config), so that
``truthserum report DIR`` rebuilds it at any time and a copied run directory carries it.

The page has no scripts, fonts or links to fetch: figures and thumbnails are inline PNGs. It is
rendered by Jinja2 with autoescaping, so nothing in a config or a file name becomes markup.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from truthserum.errors import RunDirError
from truthserum.report.blocks import Block, Table
from truthserum.report.files import FileEntry, directory_files, human_size
from truthserum.report.headline import Headline, Number, headline
from truthserum.report.records import RecordView, attribute_records, membership_records, rank_records, target_images
from truthserum.store.rundir import REPORT_FILE, atomic_write

# The figures a run may hold, in the order shown, with what each shows in words (the text
# alternative; the caption adds the file name).
FIGURES: tuple[tuple[str, str], ...] = (
    ("roc.png", "Log-log ROC curves, a panel per attack family; one colour per condition, one line style per "
                "attack. A curve higher up at the left finds more members at few false alarms."),
    ("defense-matrix.png", "Heat maps of the best attack's TPR at 1% and 0.1% FPR in each cell of the defense "
                           "matrix (rows: defenses, columns: poison strategies)."),
    ("exposure.png", "Share of (canary, model) pairs at or above each exposure, raw and calibrated, one colour "
                     "per condition."),
    ("sweep-replicas.png", "TPR at 0.1% and 1% FPR, with intervals, and test accuracy against the number of "
                           "poisons per target, one line per attack."),
    ("sweep-shadow-models.png", "TPR at 0.1% and 1% FPR, with intervals, against the number of shadow models, one "
                                "line per attack, a row of panels per condition."),
)
SWEEPS = (("sweep-replicas.json", "Sweep over the poisoning budget"),
          ("sweep-shadow-models.json", "Sweep over the shadow models"))
MAX_CONFIG_CHARS = 20_000  # a config past this is cut in the page (results.json holds it whole)


@dataclass(frozen=True)
class Figure:
    name: str
    alt: str
    data_uri: str


@dataclass
class Page:
    """Everything the template shows, already in words and numbers."""

    title: str
    run_name: str
    task: str
    version: str
    written: str
    headline: Headline | None
    warnings: list[str]
    blocks: list[Block]
    figures: list[Figure]
    sweeps: list[tuple[str, list[Block]]]
    records: RecordView | None
    config_text: str
    fingerprint: str | None
    timing: list[tuple[str, str]]
    files: list[FileEntry]


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc})") from None
    return data if isinstance(data, dict) else None


def _results_file(folder: Path) -> Path | None:
    for name in ("results.json", "sweep-replicas-results.json"):
        if (folder / name).is_file():
            return folder / name
    return None


def _score_files(folder: Path, conditions: list[str]) -> dict[str, Path]:
    files = {c: folder / f"scores-{c}.npz" for c in conditions if (folder / f"scores-{c}.npz").is_file()}
    if not files and len(conditions) == 1 and (folder / "scores.npz").is_file():
        files = {conditions[0]: folder / "scores.npz"}
    return files


def _design_targets(run_dir: Path, output: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The targets' pool indices and labels, where the run wrote them."""
    targets = labels = None
    for folder in (run_dir, output):
        for name in ("design.npz", "scores.npz"):
            path = folder / name
            if targets is None and path.is_file():
                with np.load(path, allow_pickle=False) as stored:
                    if "targets" in stored.files:
                        targets = stored["targets"]
    signals = sorted(output.glob("signals-*.npz"))
    if targets is not None and signals:
        with np.load(signals[0], allow_pickle=False) as stored:
            if "labels" in stored.files and targets.size and targets.max() < stored["labels"].size:
                labels = stored["labels"][targets]
    return targets, labels


def _records(results: dict, top: Headline | None, run_dir: Path, output: Path) -> RecordView | None:
    """The per-record view of the headline's attack and conditions."""
    if top is None or top.compared is None:
        return None
    task = results.get("task", "membership")
    if task == "lm":
        return _canary_records(results, top)
    files = _score_files(output, [c for c in (top.baseline, top.compared) if c is not None])
    if top.compared not in files or (top.baseline is not None and top.baseline not in files):
        return None
    targets, labels = _design_targets(run_dir, output)
    if task == "attribute":
        return attribute_records(files, attack=top.attack, baseline=top.baseline, compared=top.compared,
                                 targets=targets)
    if task == "untargeted":  # every victim point is a target: indices into the victims
        targets, labels = None, None
    return membership_records(files, attack=top.attack, baseline=top.baseline, compared=top.compared,
                              targets=targets, labels=labels, images=target_images(run_dir, targets))


def _canary_records(results: dict, top: Headline) -> RecordView | None:
    rows = results.get("per_canary") or []
    shown = [c for c in (top.baseline, top.compared) if c is not None]
    rows = [row for row in rows if all(c in row["conditions"] for c in shown)]
    if not rows:
        return None
    leakage = {c: np.array([row["conditions"][c]["raw"] for row in rows]) for c in shown}
    calibrated = {c: np.array([row["conditions"][c]["calibrated"] for row in rows]) for c in shown}
    view = rank_records(leakage, calibrated, {c: np.full(len(rows), np.nan) for c in shown}, attack="exposure",
                        measure="mean raw exposure (bits)", baseline=top.baseline, compared=top.compared,
                        indices=np.arange(len(rows)))
    return view


def _config_text(run_dir: Path, output: Path, results: dict) -> str:
    for folder in (output, run_dir):
        path = folder / "config.yaml"
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            break
    else:
        text = json.dumps(results.get("config", {}), indent=2)
    return text if len(text) <= MAX_CONFIG_CHARS else text[:MAX_CONFIG_CHARS] + "\n... (cut; results.json holds it all)"


def _fingerprint(run_dir: Path) -> str | None:
    for name in ("pool.json", "corpus.json"):
        path = run_dir / name
        if path.is_file():
            return f"{name}: " + path.read_text(encoding="utf-8", errors="replace").strip()
    return None


def _timing(results: dict) -> list[tuple[str, str]]:
    timing = results.get("timing") or {}
    rows = [(label, f"{timing[key]:,.1f} s") for key, label in (("train_seconds", "training"),
                                                                 ("total_seconds", "whole run")) if key in timing]
    rows.append(("device", str(results.get("device", "cpu"))))
    return rows


def build_page(run_dir: Path, output: Path | None = None) -> Page:
    """Gather what the report shows from ``run_dir`` (and ``output``, where a re-report wrote
    its derived files).

    Raises:
        RunDirError: no results file in the folder, or one that cannot be read.
    """
    from truthserum import __version__
    from truthserum.report import results_blocks
    from truthserum.report.membership import sweep_blocks

    run_dir = Path(run_dir)
    output = run_dir if output is None else Path(output)
    path = _results_file(output)
    if path is None:
        raise RunDirError(f"{output}: no results.json (nor a sweep's results); run the experiment first")
    results = _read_json(path)
    if results is None or not isinstance(results.get("conditions"), dict) or not results["conditions"]:
        raise RunDirError(f"{path}: not a truthserum results file")
    task = results.get("task", "membership")
    try:
        top = headline(results)
        blocks = results_blocks(results)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RunDirError(f"{path}: not a results file this version can read ({type(exc).__name__}: {exc})") from None
    sweeps = []
    for name, title in SWEEPS:
        summary = _read_json(output / name)
        if summary is not None and summary.get("points"):
            sweeps.append((title, sweep_blocks(summary)))
    figures = [Figure(name, alt, _png_uri((output / name).read_bytes()))
               for name, alt in FIGURES if (output / name).is_file()]
    run_name = run_dir.resolve().name
    page = Page(
        title=f"truthserum report: {run_name}", run_name=run_name, task=task, version=__version__,
        written=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), headline=top,
        warnings=list(results.get("warnings") or []), blocks=blocks, figures=figures, sweeps=sweeps,
        records=_records(results, top, run_dir, output), config_text=_config_text(run_dir, output, results),
        fingerprint=_fingerprint(run_dir), timing=_timing(results),
        files=directory_files(*dict.fromkeys((run_dir, output))),
    )
    return page


def render(page: Page) -> str:
    """The page as HTML."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(loader=PackageLoader("truthserum.report", "templates"),
                              autoescape=select_autoescape(default=True, default_for_string=True),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(png_uri=_png_uri, size=human_size, json_path=lambda path: json.dumps(list(path)))
    environment.tests.update(table=lambda block: isinstance(block, Table),
                             number=lambda part: isinstance(part, Number))
    return environment.get_template("report.html.j2").render(page=page)


def write_report(run_dir: Path, *, output: Path | None = None, out_file: Path | None = None) -> tuple[Path, float]:
    """Build the report of ``run_dir`` and write it atomically to ``out_file`` (default
    ``report.html`` in ``output``, which defaults to ``run_dir``). Returns the path and the
    seconds it took.

    Raises:
        RunDirError: the folder holds no results this version can read.
    """
    started = time.perf_counter()
    html = render(build_page(run_dir, output)).encode("utf-8")
    target = Path(out_file) if out_file is not None else Path(output or run_dir) / REPORT_FILE
    atomic_write(target, lambda handle: handle.write(html))
    return target, time.perf_counter() - started


def report_run(*, run_dir: Path, out_file: Path | None = None) -> tuple[Path, float]:
    """Rebuild the report of a finished run (or sweep, or ``truthserum attack`` output) from its
    files: ``report.html`` in ``run_dir``, or ``out_file`` (a file, or a folder to hold
    ``report.html``), so a run on a read-only medium can still be reported. The run is read
    under a shared lock: never while a run writes it. Returns the path and the seconds taken.

    Raises:
        RunDirError: ``run_dir`` is not a folder with results, is being written by a run, or
            ``out_file`` cannot be written.
    """
    from truthserum.store.lock import RunLock
    from truthserum.store.user_files import refuse_special_file

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    if out_file is not None and Path(out_file).is_dir():
        out_file = Path(out_file) / REPORT_FILE
    target = Path(out_file) if out_file is not None else run_dir / REPORT_FILE
    refuse_special_file(target, str(target), RunDirError)
    if out_file is None and not _writable(run_dir):
        raise RunDirError(f"{run_dir}: cannot be written; give --out FILE to write the report elsewhere")
    if not target.parent.is_dir():
        raise RunDirError(f"{target.parent}: no such folder for the report")
    if _results_file(run_dir) is None:  # before the lock, which would leave a .lock behind
        raise RunDirError(f"{run_dir}: no results.json (nor a sweep's results); run the experiment first")
    reading = RunLock(run_dir, shared=True)
    try:
        reading.acquire()
    except OSError as exc:
        raise RunDirError(f"{run_dir}: cannot read its lock ({exc.strerror or exc})") from None
    try:
        return write_report(run_dir, out_file=target)
    finally:
        reading.release()


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)
