"""The HTML report: written by every task, self-contained, its summary equal to results.json,
its per-record view bounded and right by its definition, and `truthserum report` rebuilding
it without touching the run. (The same pages in a real browser: tests/test_report_browser.py.)"""

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_CONFIG, run_main
from truthserum.report.headline import headline, lookup
from truthserum.report.records import (
    RECORD_ROWS, per_target_auc, per_target_guess_accuracy, rank_records, thumbnail_png,
)

TASKS = ("membership", "attribute", "untargeted", "lm", "defenses", "attack")


class _Page(HTMLParser):
    """What the tests read from a report: the summary's numbers, the images, every tag and
    attribute that could fetch something, and the rows of the per-record tables."""

    def __init__(self):
        super().__init__()
        self.numbers, self.images, self.tags, self.record_rows = [], [], [], 0
        self._number, self._records = None, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "data-path" in attrs:
            self._number = {**attrs, "text": ""}
        if tag == "img":
            self.images.append(attrs)
        if tag == "table" and "records" in (attrs.get("class") or ""):
            self._records += 1
        if tag == "tr" and self._records:
            self.record_rows += 1

    def handle_endtag(self, tag):
        if tag == "span" and self._number is not None:
            self.numbers.append(self._number)
            self._number = None
        if tag == "table" and self._records:
            self._records -= 1

    def handle_data(self, data):
        if self._number is not None:
            self._number["text"] += data


def _read(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _formatted(value, kind):
    return {"percent": f"{100 * value:.1f}%", "fixed3": f"{value:.3f}", "fixed2": f"{value:.2f}",
            "count": f"{value:,.0f}"}[kind]


@pytest.mark.parametrize("task", TASKS)
def test_every_task_writes_a_self_contained_report(task_runs, task):
    report = task_runs[task] / "report.html"
    page = _read(report)
    results = json.loads((task_runs[task] / "results.json").read_text())
    # the summary: every number is the one at its path in results.json, written as its kind says
    assert len(page.numbers) >= 8
    for number in page.numbers:
        value = lookup(results, tuple(json.loads(number["data-path"])))
        assert float(number["data-value"]) == pytest.approx(value, rel=1e-12, abs=1e-15)
        assert number["text"] == _formatted(value, number["data-kind"])
    # nothing to fetch: no scripts, stylesheets, frames or remote images
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed"), tag
        for name in ("src", "href"):
            assert not (attrs.get(name) or "").startswith(("http:", "https:", "//", "file:")), attrs
    text = report.read_text(encoding="utf-8")
    assert "url(" not in text and "@import" not in text
    # every image is an inline PNG that decodes, with a text alternative
    assert page.images
    for image in page.images:
        assert image["alt"].strip()
        assert image["src"].startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1]))).verify()
    # real table markup: every table has a caption and header cells
    assert text.count("<table") == text.count("<caption>") and "<th scope=" in text


def test_membership_report_shows_the_sweep_records_and_files(task_runs):
    run = task_runs["membership"]
    text = (run / "report.html").read_text(encoding="utf-8")
    assert 'id="sweeps"' in text and "Sweep over the poisoning budget" in text
    assert "sweep-replicas.png" in text and "roc.png" in text
    page = _read(run / "report.html")
    # a thumbnail per record (digits are images), and both ends of the ranking
    targets = TINY_CONFIG["design"]["num_targets"]  # fewer than both ends of the ranking: all shown once
    assert targets < 2 * RECORD_ROWS
    thumbnails = {int(image["alt"].split()[1].rstrip(",")): image["src"] for image in page.images
                  if image["alt"].startswith("record ")}
    assert page.record_rows == targets + 1  # one table: its header and every target
    # each picture is its own record's: the pool point at that index, as the run's poisons hold it
    with np.load(run / "poisons.npz") as poisons, np.load(run / "design.npz") as design:
        assert sorted(thumbnails) == sorted(design["targets"].tolist())
        for index, src in thumbnails.items():
            expected = thumbnail_png(poisons["x"][poisons["source"].tolist().index(index)])
            assert base64.b64decode(src.split(",", 1)[1]) == expected
    # the headline is the attack with the highest TPR at 1% FPR when poisoned, found here on its own
    results = json.loads((run / "results.json").read_text())
    attacks = results["conditions"]["poisoned"]["attacks"]
    best = max(attacks, key=lambda name: (attacks[name]["tpr_at_fpr"]["0.01"], attacks[name]["auc"]))
    paths = {tuple(json.loads(number["data-path"])[2:4]) for number in page.numbers}
    assert {attack for kind, attack in paths if kind == "attacks"} == {best}
    for name in ("design.npz", "poisons.npz", "shards/", "results.json", "report.html"):
        assert f"<code>{name}</code>" in text
    top = headline(json.loads((run / "results.json").read_text()))
    assert (top.baseline, top.compared) == ("clean", "poisoned")


def test_per_target_auc_is_the_pairwise_definition():
    """Each target's AUC equals the share of (member, non-member) model pairs ordered right,
    ties counting one half, computed pair by pair."""
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(9, 5)).astype(float)  # many ties
    members = rng.random((9, 5)) < 0.5
    members[0, :], members[1, :] = True, False
    members[:, 4] = True  # no non-member: undefined
    auc = per_target_auc(scores, members)
    for t in range(4):
        ins, outs = scores[members[:, t], t], scores[~members[:, t], t]
        pairs = [(a > b) + 0.5 * (a == b) for a in ins for b in outs]
        assert auc[t] == pytest.approx(np.mean(pairs))
    assert np.isnan(auc[4])


def test_guess_accuracy_and_the_ranking_stay_bounded():
    scores = np.zeros((3, 2, 2))
    scores[:, 0, 1] = 1.0  # every model guesses value 1 for target 0
    truth, keep = np.array([1, 0]), np.array([[1, 1], [1, 0], [0, 1]], dtype=bool)
    assert per_target_guess_accuracy(scores, truth, keep).tolist() == [1.0, 1.0]  # argmax of a tie: value 0
    count = 50_000
    rng = np.random.default_rng(1)
    leakage = {"clean": rng.random(count), "poisoned": rng.random(count)}
    view = rank_records(leakage, leakage, leakage, attack="a", measure="m", baseline="clean", compared="poisoned",
                        indices=np.arange(count), index_kind="target")
    change = leakage["poisoned"] - leakage["clean"]
    assert len(view.top) == len(view.bottom) == RECORD_ROWS and view.records == count
    assert [row.index for row in view.top] == np.argsort(-change)[:RECORD_ROWS].tolist()
    assert [row.index for row in view.bottom] == np.argsort(change)[:RECORD_ROWS].tolist()


def test_report_command_rebuilds_without_touching_the_run(task_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(task_runs["attribute"], run)
    before = {path: path.stat().st_mtime_ns for path in run.rglob("*") if path.name != "report.html"}
    (run / "report.html").unlink()
    done = run_main(capsys, "report", str(run))
    assert done.returncode == 0 and "report.html" in done.stdout
    assert (run / "report.html").is_file()
    elsewhere = run_main(capsys, "report", str(run), "--out", str(tmp_path / "copy.html"))
    assert elsewhere.returncode == 0 and (tmp_path / "copy.html").is_file()
    assert {path: path.stat().st_mtime_ns for path in run.rglob("*") if path.name != "report.html"} == before


def test_report_command_on_a_read_only_run_names_out(task_runs, tmp_path, capsys):
    """On a file system mounted read-only (file modes do not stop root, who runs CI): the
    report in place is refused naming --out, and --out elsewhere works."""
    medium = tmp_path / "medium"
    medium.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(medium)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN")
    try:
        shutil.copytree(task_runs["lm"], medium / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(medium)], check=True)
        done = run_main(capsys, "report", str(medium / "run"))
        assert done.returncode == 2 and "cannot be written; give --out FILE" in done.stderr
        assert run_main(capsys, "report", str(medium / "run"), "--out", str(tmp_path / "r.html")).returncode == 0
        assert "Exposure per condition" in (tmp_path / "r.html").read_text()
    finally:
        subprocess.run(["umount", str(medium)], check=True)


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "no such run directory"),
    (lambda root: root.mkdir(), "no results.json"),
    (lambda root: (root.mkdir(), (root / "results.json").write_text("[1]")), "not a truthserum results file"),
    (lambda root: (root.mkdir(), (root / "results.json").write_text('{"conditions": {"a": {}}}')),
     "not a results file this version can read"),
    (lambda root: (root.mkdir(), (root / "results.json").write_text('{"conditions": {"a": "b"}}')),
     "not a results file this version can read (its entries have another shape)"),
    (lambda root: root.write_text("a file"), "not a directory"),
])
def test_report_command_bad_folders_are_one_line(tmp_path, capsys, setup, message):
    root = tmp_path / "run"
    setup(root)
    done = run_main(capsys, "report", str(root))
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1
    assert "Error" not in done.stderr and "object" not in done.stderr  # no Python internals
    assert not (root / "report.html").exists()


def test_report_command_refuses_empty_paths(task_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an empty --out would otherwise write
    for arguments in (["report", ""], ["report", str(task_runs["lm"]), "--out", ""]):
        with pytest.raises(SystemExit) as stopped:  # argparse's own exit, after its usage line
            run_main(capsys, *arguments)
        assert stopped.value.code == 2 and "an empty path" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_run_report_is_refused_while_a_run_holds_the_directory(tmp_path, capsys):
    from truthserum.store.lock import RunLock

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"task": "membership", "conditions": {}}))
    holder = RunLock(run).acquire()
    try:
        done = run_main(capsys, "report", str(run))
    finally:
        holder.release()
    assert done.returncode == 2 and "another truthserum run is using it" in done.stderr


def _roc_results(task, conditions):
    """A results.json of a membership-style task: condition -> attack -> (TPR at 1% FPR, AUC)."""
    def attack(tpr, auc):
        return {"tpr_at_fpr": {"0.001": tpr, "0.01": tpr, "0.1": tpr}, "auc": auc, "members": 10, "nonmembers": 10}
    return {"task": task, "config": {}, "conditions": {
        name: {"accuracy": {"train": 1.0, "test": 0.9},
               "attacks": {a: attack(*values) for a, values in attacks.items()}}
        for name, attacks in conditions.items()}}


def test_the_headline_says_which_way_the_rate_moved_and_skips_nan():
    lowered = headline(_roc_results("untargeted", {
        "clean-share": {"lira": (0.9, 0.99)}, "dirty-label": {"lira": (0.04, 0.6)}}))
    assert "From clean-share to dirty-label, the strongest attack's TPR at 1% FPR fell from 90.0% to 4.0%" in \
        lowered.verdict
    assert "times" not in lowered.verdict
    raised = headline(_roc_results("membership", {"clean": {"lira": (0.1, 0.7)}, "poisoned": {"lira": (0.4, 0.9)}}))
    assert "TPR at 1% FPR rose from 10.0% to 40.0%, 4.0 times as many (lira)." in raised.verdict
    with_nan = headline(_roc_results("membership", {
        "clean": {"a": (0.1, 0.6), "b": (0.1, 0.6)}, "poisoned": {"a": (float("nan"), 0.5), "b": (0.3, 0.8)}}))
    assert with_nan.attack == "b" and "nan" not in with_nan.verdict


def test_the_defense_matrix_headline_compares_undefended_cells_and_adds_a_poisoned_defended_one():
    top = headline(_roc_results("defenses", {
        "none.clean": {"lira": (0.1, 0.6)}, "none.exact": {"lira": (0.6, 0.9)},
        "dedup-exact.clean": {"lira": (0.99, 0.99)}, "dedup-exact.exact": {"lira": (0.2, 0.7)},
    }))
    assert top.columns == ["none.clean", "none.exact", "dedup-exact.exact"]
    assert "Behind a defense the attack does best in dedup-exact.exact: 20.0%" in top.verdict


def test_a_damaged_score_file_loses_its_section_not_the_page(task_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(task_runs["membership"], run)
    (run / "scores-poisoned.npz").write_bytes(b"not a zip file")
    (run / "sweep-replicas.json").write_text('{"points": [{"oops": 1}]}')
    roc = (run / "roc.png").read_bytes()
    (run / "roc.png").write_bytes(roc[: len(roc) // 2])  # a figure cut short while copying
    done = run_main(capsys, "report", str(run), "--no-thumbnails")
    assert done.returncode == 0, done.stderr
    text = (run / "report.html").read_text()
    assert "roc.png left out: a file it reads is damaged or of another version (ValueError)" in text
    assert "(<code>roc.png</code>)</figcaption>" not in text  # not embedded broken
    assert "Left out of this page" in text and "the per-record view left out: a file it reads is damaged" in text
    assert "sweep-replicas.json left out: a file it reads is damaged or of another version (KeyError)" in text
    assert 'id="summary"' in text and "pickle" not in text


def test_a_report_that_fails_is_a_warning_and_the_run_stands(tmp_path, monkeypatch):
    import truthserum.report.html as report_html
    from truthserum.config import parse_config
    from truthserum.tasks import run_task

    def broken(page):
        raise RuntimeError("a bug in the template")

    monkeypatch.setattr(report_html, "render", broken)
    messages = []
    results = run_task(parse_config(TINY_CONFIG), tmp_path / "run", progress=False, log=messages.append)
    assert results.conditions and (tmp_path / "run" / "results.json").is_file()
    assert not (tmp_path / "run" / "report.html").exists()
    assert any(m.startswith("warning: report.html not written (RuntimeError: a bug in the template); run "
                            "truthserum report") for m in messages)


def test_no_thumbnails_leaves_the_pictures_out(task_runs, tmp_path, capsys):
    done = run_main(capsys, "report", str(task_runs["membership"]), "--out", str(tmp_path), "--no-thumbnails")
    assert done.returncode == 0
    page = _read(tmp_path / "report.html")
    assert page.images and not any(image["alt"].startswith("record ") for image in page.images)


def test_report_never_overwrites_a_file_that_is_not_a_report(task_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(task_runs["lm"], run)
    results = (run / "results.json").read_bytes()
    done = run_main(capsys, "report", str(run), "--out", str(run / "results.json"))
    assert done.returncode == 2 and "exists and is not a truthserum report" in done.stderr
    assert (run / "results.json").read_bytes() == results
    # an earlier report is replaced
    assert run_main(capsys, "report", str(run), "--out", str(tmp_path / "r.html")).returncode == 0
    assert run_main(capsys, "report", str(run), "--out", str(tmp_path / "r.html")).returncode == 0


def test_attack_families_group_the_variants_of_a_name():
    from truthserum.report.plots import attack_families

    attacks = ["lira-online", "lira-offline", "lira-online-fixed", "rmia-online", "rmia-offline", "label-only",
               "global-threshold", "mean-phi"]
    assert attack_families(attacks) == {
        "lira": ["lira-online", "lira-offline", "lira-online-fixed"], "rmia": ["rmia-online", "rmia-offline"],
        "label-only": ["label-only"], "global-threshold": ["global-threshold"], "mean-phi": ["mean-phi"]}
