"""Stage 8, report: ``report.html``, one self-contained page per run directory, made from the
files alone (``results.json``, the score files, the figures, the config), so that
``truthserum report DIR`` rebuilds it at any time and a copied run directory carries it.

The page has no scripts, fonts or links to fetch: figures and thumbnails are inline PNGs. It is
rendered by Jinja2 with autoescaping, so nothing in a config or a file name becomes markup.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from truthserum.errors import RunDirError, TruthserumError
from truthserum.report.blocks import Block, Table
from truthserum.report.files import FileEntry, describe, directory_files, human_size
from truthserum.report.headline import Headline, Number, headline
from truthserum.report.records import RecordView, attribute_records, membership_records, rank_records, target_images
from truthserum.store.rundir import REPORT_FILE, atomic_write

# The figures a run may hold, in the order shown: file, caption, and what it shows in words
# (the text alternative, for a reader who cannot see it).
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("roc.png", "ROC curves of every attack",
     "Log-log ROC curves, a panel per attack family; one colour per condition, one line style per attack. A curve "
     "higher up at the left finds more members at few false alarms."),
    ("defense-matrix.png", "The defense matrix",
     "Heat maps of the best attack's TPR at 1% and 0.1% FPR in each cell of the defense matrix (rows: defenses, "
     "columns: poison strategies)."),
    ("exposure.png", "Exposure of the canaries",
     "Share of (canary, model) pairs at or above each exposure, raw and calibrated, one colour per condition."),
    ("sweep-replicas.png", "Sweep over the poisoning budget",
     "TPR at 0.1% and 1% FPR, with intervals, and test accuracy against the number of poisons per target, one line "
     "per attack."),
    ("sweep-shadow-models.png", "Sweep over the shadow models",
     "TPR at 0.1% and 1% FPR, with intervals, against the number of shadow models, one line per attack, a row of "
     "panels per condition."),
)
SWEEPS = (("sweep-replicas.json", "Sweep over the poisoning budget"),
          ("sweep-shadow-models.json", "Sweep over the shadow models"))
MAX_CONFIG_CHARS = 20_000  # a config past this is cut in the page (results.json holds it whole)


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
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
    notes: list[str]  # sections left out, and why


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


def _regular(path: Path) -> bool:
    """A file the report may read: a regular file, not a link (a link could put any file of
    this machine into a page meant to be shared)."""
    return path.is_file() and not path.is_symlink()


def _checked_png(path: Path) -> bytes:
    """A figure's bytes, once Pillow has read them as a whole PNG (a truncated or damaged figure
    is left out with a note, never embedded as a broken image).

    Raises:
        ValueError: the file is not a readable PNG.
    """
    from PIL import Image, UnidentifiedImageError

    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise ValueError(f"{path.name}: not a PNG")
            image.load()  # decodes every row: verify() alone passes some truncated files
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path.name}: damaged") from exc
    return data


def _score_files(folder: Path, conditions: list[str]) -> dict[str, Path]:
    files = {c: folder / f"scores-{c}.npz" for c in conditions if _regular(folder / f"scores-{c}.npz")}
    if not files and len(conditions) == 1 and _regular(folder / "scores.npz"):
        files = {conditions[0]: folder / "scores.npz"}
    return files


def _design_targets(run_dir: Path) -> np.ndarray | None:
    """The run's targets (pool indices), from its design."""
    path = run_dir / "design.npz"
    if not _regular(path):
        return None
    with np.load(path, allow_pickle=False) as stored:
        return stored["targets"] if "targets" in stored.files else None


def _pool_labels(output: Path) -> np.ndarray | None:
    """Every pool point's label, from a signals file of the run."""
    for path in sorted(output.glob("signals-*.npz")):
        if _regular(path):
            with np.load(path, allow_pickle=False) as stored:
                if "labels" in stored.files:
                    return stored["labels"]
    return None


def _records(results: dict, top: Headline | None, run_dir: Path, output: Path, thumbnails: bool) -> RecordView | None:
    """The per-record view of the headline's attack and conditions."""
    if top is None or top.compared is None:
        return None
    task = results.get("task", "membership")
    if task == "lm":
        return _canary_records(results, top)
    files = _score_files(output, [c for c in (top.baseline, top.compared) if c is not None])
    if top.compared not in files or (top.baseline is not None and top.baseline not in files):
        return None
    targets = _design_targets(run_dir)
    if task == "attribute":
        return attribute_records(files, attack=top.attack, baseline=top.baseline, compared=top.compared,
                                 targets=targets)
    if task == "untargeted":  # every victim point is a target: the records are the victims, in order
        return membership_records(files, attack=top.attack, baseline=top.baseline, compared=top.compared,
                                  targets=None, labels=None, images={}, index_kind="victim")
    return membership_records(files, attack=top.attack, baseline=top.baseline, compared=top.compared,
                              targets=targets, labels=_pool_labels(output), index_kind="pool index",
                              images=target_images(run_dir, targets) if thumbnails else {})


def _canary_records(results: dict, top: Headline) -> RecordView | None:
    rows = results.get("per_canary") or []
    shown = [c for c in (top.baseline, top.compared) if c is not None]
    rows = [row for row in rows if all(c in row["conditions"] for c in shown)]
    if not rows:
        return None
    leakage = {c: np.array([row["conditions"][c]["raw"] for row in rows], dtype=float) for c in shown}
    calibrated = {c: np.array([row["conditions"][c]["calibrated"] for row in rows], dtype=float) for c in shown}
    return rank_records(leakage, calibrated, {c: np.full(len(rows), np.nan) for c in shown}, attack="exposure",
                        measure="mean raw exposure (bits)", baseline=top.baseline, compared=top.compared,
                        indices=np.arange(len(rows)), index_kind="canary",
                        names=[f"{row['name']} (r{row['replicate']})" for row in rows])


def _config_text(run_dir: Path, output: Path, results: dict) -> str:
    for folder in (output, run_dir):
        path = folder / "config.yaml"
        if _regular(path):
            text = path.read_text(encoding="utf-8", errors="replace")
            break
    else:  # truthserum attack's output has no experiment config: what it attacked, and how
        text = json.dumps(results.get("config") or results.get("attacked") or {}, indent=2)
    return text if len(text) <= MAX_CONFIG_CHARS else text[:MAX_CONFIG_CHARS] + "\n... (cut; results.json holds it all)"


def _fingerprint(run_dir: Path) -> str | None:
    for name in ("pool.json", "corpus.json"):
        path = run_dir / name
        if _regular(path):
            return f"{name}: " + path.read_text(encoding="utf-8", errors="replace").strip()[:MAX_CONFIG_CHARS]
    return None


def _timing(results: dict) -> list[tuple[str, str]]:
    timing = results.get("timing") or {}
    rows = [(label, f"{timing[key]:,.1f} s") for key, label in (("train_seconds", "training"),
                                                                 ("total_seconds", "whole run"))
            if isinstance(timing.get(key), int | float)]
    rows.append(("device", str(results.get("device", "cpu"))))
    ensemble = results.get("ensemble")
    conv_path = ensemble.get("conv_path") if isinstance(ensemble, dict) else None
    if conv_path:
        rows.append(("convolutions", f"{conv_path} path (benchmarks/README.md)"))
    return rows


def _optional(notes: list[str], what: str, make):
    """``make()``, or None with a note when a file it reads is damaged or of another version:
    one section of the page is lost, not the page."""
    try:
        return make()
    except (TruthserumError, OSError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile) as exc:
        # the type, not the message: numpy's for a damaged .npz advises loading it unpickled
        notes.append(f"{what} left out: a file it reads is damaged or of another version ({type(exc).__name__})")
        return None


def _sweep(output: Path, name: str) -> list[Block] | None:
    from truthserum.report.membership import sweep_blocks

    if not _regular(output / name):
        return None
    summary = _read_json(output / name)
    return sweep_blocks(summary) if summary is not None and summary.get("points") else None


def build_page(run_dir: Path, output: Path | None = None, *, thumbnails: bool = True) -> Page:
    """Gather what the report shows from ``run_dir`` (and ``output``, where a re-report wrote
    its derived files). ``thumbnails`` False leaves the records' pictures out (a page to share
    beyond those who may see the training data).

    Raises:
        RunDirError: no results file in the folder, or one that cannot be read.
    """
    from truthserum import __version__
    from truthserum.report import results_blocks

    run_dir = Path(run_dir)
    output = run_dir if output is None else Path(output)
    path = _results_file(output)
    if path is None:
        raise RunDirError(f"{output}: no results.json (nor a sweep's results); run the experiment first")
    results = _read_json(path)
    if results is None or not isinstance(results.get("conditions"), dict) or not results["conditions"]:
        raise RunDirError(f"{path}: not a truthserum results file")
    try:
        top = headline(results)
        blocks = results_blocks(results)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        # the missing key, when there is one, says what is wrong; a type error's text is Python's
        missing = f": no {exc.args[0]!r} where this version expects one" if isinstance(exc, KeyError) else ""
        raise RunDirError(f"{path}: not a results file this version can read (its entries have another "
                          f"shape{missing})") from None
    notes: list[str] = []
    sweeps = []
    for name, title in SWEEPS:
        blocks_of_sweep = _optional(notes, f"{name}", lambda name=name: _sweep(output, name))
        if blocks_of_sweep:
            sweeps.append((title, blocks_of_sweep))
    figures = []
    for name, title, alt in FIGURES:
        if _regular(output / name):
            data = _optional(notes, name, lambda name=name: _checked_png(output / name))
            if data is not None:
                figures.append(Figure(name, title, alt, _png_uri(data)))
    records = _optional(notes, "the per-record view", lambda: _records(results, top, run_dir, output, thumbnails))
    run_name = run_dir.resolve().name
    files = directory_files(*dict.fromkeys((output, run_dir)))  # a re-report's own files first
    if REPORT_FILE not in {entry.name for entry in files}:  # this page, being written
        files.append(FileEntry(REPORT_FILE, 0, 1, describe(REPORT_FILE)))
    return Page(
        title=f"truthserum report: {run_name}", run_name=run_name, task=results.get("task", "membership"),
        version=__version__, written=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), headline=top,
        warnings=[str(warning) for warning in results.get("warnings") or []], blocks=blocks, figures=figures,
        sweeps=sweeps, records=records, config_text=_config_text(run_dir, output, results),
        fingerprint=_fingerprint(run_dir), timing=_timing(results), files=sorted(files, key=lambda e: e.name),
        notes=notes,
    )


def _score_text(value: float) -> str:
    """A mean score in a column of like numbers: three decimals, or three digits past 1,000."""
    return "n/a" if not np.isfinite(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"


def render(page: Page) -> str:
    """The page as HTML."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(loader=PackageLoader("truthserum.report", "templates"),
                              autoescape=select_autoescape(default=True, default_for_string=True),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(png_uri=_png_uri, score=_score_text, size=human_size, json_path=lambda path: json.dumps(list(path)))
    environment.tests.update(table=lambda block: isinstance(block, Table),
                             number=lambda part: isinstance(part, Number))
    return environment.get_template("report.html.j2").render(page=page)


def write_report(run_dir: Path, *, output: Path | None = None, out_file: Path | None = None,
                 thumbnails: bool = True) -> tuple[Path, float]:
    """Build the report of ``run_dir`` and write it atomically to ``out_file`` (default
    ``report.html`` in ``output``, which defaults to ``run_dir``). Returns the path and the
    seconds it took.

    Raises:
        RunDirError: the folder holds no results this version can read.
    """
    started = time.perf_counter()
    html = render(build_page(run_dir, output, thumbnails=thumbnails)).encode("utf-8")
    target = Path(out_file) if out_file is not None else Path(output or run_dir) / REPORT_FILE
    atomic_write(target, lambda handle: handle.write(html))
    return target, time.perf_counter() - started


def report_or_warning(run_dir: Path, *, output: Path | None = None, log: Callable[[str], None]) -> Path | None:
    """Write the report at the end of a run, sweep or attack. Its results are written already,
    so a report that cannot be made (a damaged file, a bug) is a warning naming the error, not
    a failed run; ``truthserum report DIR`` tries again. Returns the report's path, or None."""
    try:
        path, seconds = write_report(run_dir, output=output)
    except Exception as exc:  # noqa: BLE001  (see above: never lose a finished run to its report)
        log(f"warning: report.html not written ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"run truthserum report {output or run_dir} to try again")
        return None
    log(f"report: {path} ({path.stat().st_size / 1024:,.0f} KB, {seconds:.1f} s)")
    return path


def report_run(*, run_dir: Path, out_file: Path | None = None, thumbnails: bool = True) -> tuple[Path, float]:
    """Rebuild the report of a finished run (or sweep, or ``truthserum attack`` output) from its
    files: ``report.html`` in ``run_dir``, or ``out_file`` (a file, or a folder to hold
    ``report.html``), so a run on a read-only medium can still be reported. ``thumbnails``
    False leaves out the pictures of training records. The run is read under a shared lock,
    never while a run writes it; as with ``--report-to``, that lock file is the one thing this
    may create in ``run_dir`` when it writes elsewhere. Returns the path and the seconds taken.

    Raises:
        RunDirError: ``run_dir`` is not a folder with results, is being written by a run, or
            ``out_file`` cannot be written.
    """
    from truthserum.store.lock import RunLock
    from truthserum.store.user_files import refuse_special_file

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a directory; give the run directory that holds results.json")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    if out_file is not None and Path(out_file).is_dir():
        out_file = Path(out_file) / REPORT_FILE
    target = Path(out_file) if out_file is not None else run_dir / REPORT_FILE
    refuse_special_file(target, str(target), RunDirError)
    if target.exists() and not _is_report(target):
        raise RunDirError(f"{target}: exists and is not a truthserum report, so it is left as it is; "
                          "choose another --out")
    if out_file is None and not os.access(run_dir, os.W_OK):
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
        return write_report(run_dir, out_file=target, thumbnails=thumbnails)
    finally:
        reading.release()


GENERATOR_MARK = b'<meta name="generator" content="truthserum'  # in every report's head (the template)


def _is_report(path: Path) -> bool:
    """Whether ``path`` holds a report this tool wrote (which a rebuild may replace)."""
    try:
        with open(path, "rb") as handle:
            return GENERATOR_MARK in handle.read(2048)
    except OSError:
        return False
