"""Stage 8, report: what each file of a run directory is, one line each, for the report's table
of files (docs/run-directory.md says the same at length)."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

# (pattern, what the file is); the first pattern that matches a name describes it.
FILE_DESCRIPTIONS: tuple[tuple[str, str], ...] = (
    ("config.yaml", "the resolved config the run was made with"),
    ("pool.json", "fingerprint of the data pool: a resume on other data is refused"),
    ("corpus.json", "fingerprints of the text (and model folder): a resume on other inputs is refused"),
    ("design.npz", "the keep matrix (which model trains on which point) and the targets"),
    ("poisons.npz", "the adversary's poisons: features, labels, the target each replicates"),
    ("poisons-*.npz", "one condition's poisons under its strategy"),
    ("adaptive-budgets.npz", "adaptive poisoning: each target's replica count, chosen on the calibration models"),
    ("preprocessing.json", "how the table was encoded"),
    ("signals-*-logits.npy", "every model's logits on every point (memory-mapped)"),
    ("signals-*.npz", "labels, keep matrix and targets: with the logits, the input of truthserum attack"),
    ("scores-*.npz", "each attack's score of every (model, target) pair, and who was a member"),
    ("scores.npz", "each attack's score of every (model, target) pair, and who was a member"),
    ("completions-*.npz", "logits on every candidate value of the sensitive attribute"),
    ("results.json", "every measurement of the run, with intervals and counts"),
    ("sweep-*-results.json", "the sweep's full results, one condition per budget"),
    ("sweep-*.json", "the sweep's summary: the plotted rates per budget or shadow count"),
    ("roc.png", "log-log ROC curves, a panel per attack family"),
    ("exposure.png", "distribution of the canaries' exposure"),
    ("defense-matrix.png", "the best attack's TPR in each cell of the defense matrix"),
    ("sweep-*.png", "the sweep's rates against the swept quantity"),
    ("report.html", "this report"),
    ("model.json", "what your own model is (a resume with another model is refused)"),
    ("training.json", "how your nn.Module was trained (vectorized or one by one)"),
    ("plan.json", "a plan for training elsewhere"),
    (".lock", "the lock one run at a time holds; left behind, it blocks nothing"),
    (".truthserum-report", "marks a folder written by a re-report (--report-to)"),
    ("shards", "trained models' logits, one file per shard of models, by condition (and calibration)"),
    ("lm", "language-model replicates: canaries, poisons, models and measurements"),
)


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    files: int  # 1 for a file, the count inside for a folder
    description: str
    folder: bool = False


def describe(name: str) -> str:
    for pattern, description in FILE_DESCRIPTIONS:
        if fnmatchcase(name, pattern):
            return description
    return ""


def _folder_size(folder: Path) -> tuple[int, int]:
    size = files = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            size += path.stat().st_size
            files += 1
    return size, files


def directory_files(*folders: Path) -> list[FileEntry]:
    """The entries of ``folders`` (a run and, for a re-report, its output), one line each; a
    sub-folder is one line with its file count and total size. Links are not followed."""
    entries: dict[str, FileEntry] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name in entries or path.is_symlink():
                continue
            if path.is_dir():
                size, files = _folder_size(path)
            elif path.is_file():
                size, files = path.stat().st_size, 1
            else:
                continue
            entries[path.name] = FileEntry(path.name, size, files, describe(path.name), folder=path.is_dir())
    return list(entries.values())


def human_size(size: int) -> str:
    """1,234 bytes, 12.1 KB, 3.4 MB, 1.2 GB (powers of 1,024)."""
    if size < 1024:
        return f"{size:,} bytes"
    value, unit = float(size), "bytes"
    for unit in ("KB", "MB", "GB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:,.1f} {unit}"
