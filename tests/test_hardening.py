"""One run per directory (the lock), portable and read-only run directories, and a run killed
at every stage resuming to the same numbers."""

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

from conftest import SMALL_CONFIG, TINY_CONFIG, run_main
from truthserum.config import parse_config
from truthserum.errors import RunDirError
from truthserum.store.lock import LOCK_FILE, RunLock
from truthserum.store.rundir import RunDirectory
from truthserum.tasks.membership import run_experiment

LOCKED = "another truthserum run is using it"


def quiet(_):
    return None


def metrics_of(results):
    return {name: entry for name, entry in results["conditions"].items()}


def snapshot(root):
    """Every file under ``root`` with its bytes' digest and modification time (not the lock
    file: it names the latest process that held the directory)."""
    return {
        path.relative_to(root): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*")) if path.is_file() and path.name != LOCK_FILE
    }


def cli(*args):
    return [sys.executable, "-m", "truthserum.cli", *map(str, args)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    results = run_experiment(parse_config(TINY_CONFIG), out, progress=False, log=quiet).to_json()
    return out, json.loads(json.dumps(results))


# --- the lock -----------------------------------------------------------------------------

def test_a_second_open_is_refused_until_the_first_closes(tmp_path):
    config = parse_config(TINY_CONFIG)
    first = RunDirectory.open(tmp_path / "run", config)
    with pytest.raises(RunDirError, match=rf"{LOCKED} \(last recorded holder: pid {os.getpid()} "):
        RunDirectory.open(tmp_path / "run", config)
    first.close()
    with RunDirectory.open(tmp_path / "run", config):
        pass


def test_a_run_is_refused_while_another_process_holds_the_directory(tiny_run, tmp_path, capsys):
    out = shutil.copytree(tiny_run[0], tmp_path / "run")
    (out / ".tmp-signals-clean-logits.npy").write_bytes(b"a live run's temporary")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from truthserum.store.lock import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire(); lock.announce(); print('held', flush=True); time.sleep(120)",
         str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        config_file = tmp_path / "tiny.yaml"
        config_file.write_text(yaml.safe_dump(TINY_CONFIG))
        done = run_main(capsys, "run", str(config_file), "--out", str(out), "--quiet")
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and LOCKED in lines[0] and f"pid {holder.pid} " in lines[0], done.stderr
        assert snapshot(out) == before  # its temporary file was not deleted
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the killed holder's lock: the lock file left behind blocks nothing
    assert (out / LOCK_FILE).exists()
    with RunLock(out):
        pass


def test_two_runs_on_one_directory(tmp_path, capsys):
    """Started together, and the second while the first trains: one finishes, the other refuses
    in one line, and the results are those of an uninterrupted run."""
    config_file = tmp_path / "small.yaml"
    config_file.write_text(yaml.safe_dump(SMALL_CONFIG | {"design": {"num_models": 8, "num_targets": 16}}))
    alone = run_experiment(parse_config(yaml.safe_load(config_file.read_text())), tmp_path / "alone",
                           progress=False, log=quiet).to_json()
    # together: both started at once
    out = tmp_path / "together"
    runs = [subprocess.Popen(cli("run", config_file, "--out", out, "--quiet"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    ended = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in ended)
    refusals = [err for code, err in ended if code == 2]
    # the second may start after the first finished; it then resumes the finished run
    assert codes in ([0, 2], [0, 0]), ended
    for err in refusals:
        assert err.strip().count("\n") == 0 and LOCKED in err, err
    assert metrics_of(json.loads((out / "results.json").read_text())) == metrics_of(json.loads(json.dumps(alone)))
    # the second started while the first holds the directory
    out = tmp_path / "later"
    first = subprocess.Popen(cli("run", config_file, "--out", out, "--quiet"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "shards").is_dir() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # paused while it holds the directory, so the second surely meets it
    try:
        assert first.poll() is None, "the first run ended before the second started"
        second = run_main(capsys, "run", str(config_file), "--out", str(out), "--quiet")
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=600) == 0
    assert second.returncode == 2 and LOCKED in second.stderr and f"pid {first.pid} " in second.stderr
    assert metrics_of(json.loads((out / "results.json").read_text())) == metrics_of(json.loads(json.dumps(alone)))


# --- killed at every stage ----------------------------------------------------------------

STAGE_FILES = ["design.npz", "poisons.npz", "shards/clean/models-0000-0001.npz",
               "shards/poisoned/models-0000-0001.npz", "signals-clean-logits.npy", "scores-poisoned.npz"]


def test_killed_at_every_stage_in_turn_then_resumed(tiny_run, tmp_path, capsys):
    """SIGKILL the command as each stage's file appears, six times in a row on one directory,
    then let it finish: the metrics equal those of the uninterrupted run, and no temporary
    file is left."""
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(TINY_CONFIG))
    out = tmp_path / "killed"
    killed_at = []
    for name in STAGE_FILES:
        if (out / "results.json").exists():
            break
        child = subprocess.Popen(cli("run", config_file, "--out", out, "--quiet"), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not (out / name).exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.returncode == -signal.SIGKILL:
            killed_at.append(name)
    assert len(killed_at) >= 4, killed_at  # a fast stage may end before its kill lands
    resumed = run_main(capsys, "run", str(config_file), "--out", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.rglob(".tmp-*"))
    results = json.loads((out / "results.json").read_text())
    assert metrics_of(results) == metrics_of(tiny_run[1])


# --- portable and read-only run directories -----------------------------------------------

def _digits_npz(path):
    digits = load_digits()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=digits.data[:400].astype(np.float32), y=digits.target[:400])
    return path


def _config_file(folder, data_path):
    config = TINY_CONFIG | {"data": {"source": "npz", "path": str(data_path), "pool_size": 300}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_moved_half_finished_run_resumes_without_retraining(tmp_path, capsys):
    here = tmp_path / "here"
    data = _digits_npz(here / "data" / "digits.npz")
    finished = run_main(capsys, "run", str(_config_file(here, data)), "--out", str(here / "run"), "--quiet")
    assert finished.returncode == 0, finished.stderr
    expected = json.loads((here / "run" / "results.json").read_text())
    # half-finished: the last shard of the poisoned condition and everything after it removed
    for name in ["shards/poisoned/models-0002-0003.npz", "results.json", "roc.png"]:
        (here / "run" / name).unlink()
    there = tmp_path / "elsewhere"
    shutil.move(here, there)  # the run directory and its data, moved together
    kept = {path: path.stat().st_mtime_ns for path in (there / "run").glob("shards/*/*.npz")}
    resumed = run_main(capsys, "run", str(_config_file(there, there / "data" / "digits.npz")),
                       "--out", str(there / "run"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert "poisoned: reused 1 of 2 finished shards" in resumed.stderr
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    results = json.loads((there / "run" / "results.json").read_text())
    assert metrics_of(results) == metrics_of(expected)
    assert results["config"]["data"]["path"] == str(there / "data" / "digits.npz")


def test_other_data_at_the_moved_path_are_still_refused(tmp_path, capsys):
    here = tmp_path / "here"
    data = _digits_npz(here / "digits.npz")
    assert run_main(capsys, "run", str(_config_file(here, data)), "--out", str(here / "run"), "--quiet").returncode == 0
    other = tmp_path / "other.npz"
    digits = load_digits()
    np.savez(other, x=digits.data[400:800].astype(np.float32), y=digits.target[400:800])
    before = snapshot(here / "run")
    done = run_main(capsys, "run", str(_config_file(tmp_path, other)), "--out", str(here / "run"), "--quiet")
    assert done.returncode == 2 and "the data differ from those this run was started on" in done.stderr
    assert snapshot(here / "run") == before


def _read_only(root):
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_a_copied_read_only_finished_run_reports_again(tiny_run, tmp_path, capsys):
    copy = shutil.copytree(tiny_run[0], tmp_path / "medium" / "run")
    _read_only(copy)
    before = snapshot(copy)
    listing = sorted(copy.rglob("*"))
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(TINY_CONFIG))
    report = tmp_path / "report"
    try:
        done = run_main(capsys, "run", str(config_file), "--out", str(copy), "--report-to", str(report), "--quiet")
        assert done.returncode == 0, done.stderr
        assert snapshot(copy) == before and sorted(copy.rglob("*")) == listing  # nothing written there
        assert "trained models" not in done.stderr
        assert {"results.json", "roc.png", "config.yaml", "signals-clean.npz", "scores-poisoned.npz",
                "report.html"} <= {path.name for path in report.iterdir()}
        assert "pool.json: {" in (report / "report.html").read_text()  # the stage files read from the run
        assert metrics_of(json.loads((report / "results.json").read_text())) == metrics_of(tiny_run[1])
        assert str(report / "results.json") in done.stdout
        # an unfinished run is refused for reporting, naming why
        (tmp_path / "empty").mkdir()
        refused = run_main(capsys, "run", str(config_file), "--out", str(tmp_path / "empty"), "--report-to",
                           str(tmp_path / "r2"), "--quiet")
        assert refused.returncode == 2 and "not a finished run (no results.json)" in refused.stderr
        assert "--report-to" in refused.stderr
    finally:
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


# --- hangs, full disks, infeasible designs --------------------------------------------------

def test_a_ray_address_where_nothing_listens_is_one_line(tmp_path, capsys, tiny_config_file):
    import socket

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = run_main(capsys, "run", str(tiny_config_file), "--out", str(tmp_path / "run"), "--quiet",
                    "--backend", "ray", "--address", f"127.0.0.1:{port}", "--connect-timeout", "5")
    assert time.monotonic() - started < 60
    assert done.returncode == 2
    assert done.stderr.strip() == (f"truthserum: error: no Ray cluster answers at 127.0.0.1:{port} (Connection "
                                   "refused); start one with `ray start --head`, or check the address")
    assert not (tmp_path / "run").exists()
    refused = run_main(capsys, "run", str(tiny_config_file), "--out", str(tmp_path / "run"), "--connect-timeout", "5")
    assert refused.returncode == 2 and "--connect-timeout is for --backend ray --address" in refused.stderr


def test_a_full_disk_names_the_file_and_the_run_resumes(tiny_run, tmp_path, capsys, tiny_config_file, monkeypatch):
    import errno

    import truthserum.store.rundir as rundir

    real_savez = np.savez

    def full_after_design(handle, **arrays):
        if "logits" in arrays:  # the first shard: the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(handle, **arrays)

    monkeypatch.setattr(rundir.np, "savez", full_after_design)
    out = tmp_path / "run"
    done = run_main(capsys, "run", str(tiny_config_file), "--out", str(out), "--quiet")
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line == (f"truthserum: error: {out}/shards/clean/models-0000-0001.npz: No space left on device; free "
                    "some space, then run the same command again: what is finished is kept")
    assert (out / "design.npz").exists() and not list(out.rglob(".tmp-*"))
    monkeypatch.setattr(rundir.np, "savez", real_savez)
    resumed = run_main(capsys, "run", str(tiny_config_file), "--out", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert metrics_of(json.loads((out / "results.json").read_text())) == metrics_of(tiny_run[1])


def test_a_design_the_attacks_cannot_score_is_refused_before_anything_is_written(tmp_path, capsys):
    config = TINY_CONFIG | {"data": {"source": "digits", "pool_size": 4}, "design": {"num_models": 4, "num_targets": 2}}
    config_file = tmp_path / "four.yaml"
    config_file.write_text(yaml.safe_dump(config))
    done = run_main(capsys, "run", str(config_file), "--out", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "cannot be attacked, found before training (4 models, 4 points, 2 targets): rmia-offline: cannot " \
           "tune a" in done.stderr
    assert not (tmp_path / "run").exists()
    # the same design with a fixed offline a, and without the attack, runs
    fixed = config | {"rmia": {"offline_a": 0.5}}
    config_file.write_text(yaml.safe_dump(fixed))
    assert run_main(capsys, "run", str(config_file), "--out", str(tmp_path / "run"), "--quiet").returncode == 0
    # the untargeted task: victims too few for the models, found before its split is written
    untargeted = {"task": "untargeted", "seed": 0, "data": {"source": "cps", "pool_size": 8},
                  "design": {"num_models": 4}, "untargeted": {"strategies": ["dirty-label"]},
                  "model": {"architecture": "mlp", "hidden_sizes": [8]}, "train": {"epochs": 1, "shard_size": 2}}
    config_file.write_text(yaml.safe_dump(untargeted))
    done = run_main(capsys, "run", str(config_file), "--out", str(tmp_path / "untargeted"), "--quiet")
    assert done.returncode == 2 and "the victims hold 4 points, too few for 4 models" in done.stderr
    assert not (tmp_path / "untargeted").exists()


def test_a_run_on_a_read_only_mount_reports_again(tiny_run, tmp_path, capsys, tiny_config_file):
    """The same on a file system mounted read-only, where a write fails whoever runs it (the
    test above runs as root on CI machines, where file modes do not stop writes)."""
    medium = tmp_path / "medium"
    medium.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(medium)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN")
    try:
        shutil.copytree(tiny_run[0], medium / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(medium)], check=True)
        done = run_main(capsys, "run", str(tiny_config_file), "--out", str(medium / "run"), "--quiet")
        assert done.returncode == 2 and done.stderr.strip() == (
            f"truthserum: error: {medium / 'run'}: cannot write (Read-only file system); --report-to re-reports "
            "a finished run without writing into it")
        report = tmp_path / "report"
        done = run_main(capsys, "run", str(tiny_config_file), "--out", str(medium / "run"), "--report-to",
                        str(report), "--quiet")
        assert done.returncode == 0, done.stderr
        assert metrics_of(json.loads((report / "results.json").read_text())) == metrics_of(tiny_run[1])
    finally:
        subprocess.run(["umount", str(medium)], check=True)


def test_a_report_never_writes_into_the_run_directory(tiny_run, tmp_path, capsys, tiny_config_file):
    copy = shutil.copytree(tiny_run[0], tmp_path / "run")
    (copy / "shards" / "poisoned" / "models-0002-0003.npz").unlink()  # as if damaged and removed
    before = snapshot(copy)
    done = run_main(capsys, "run", str(tiny_config_file), "--out", str(copy), "--report-to", str(tmp_path / "r"),
                    "--quiet")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"truthserum: error: {copy.resolve()}: not a finished run (shards/poisoned/models-0002-0003.npz is missing "
        "or damaged), so re-reporting it would write into it; resume it without --report-to first")
    assert snapshot(copy) == before and not list(copy.rglob(".tmp-*"))
    # a report inside the run directory, or around it, is refused
    for inside in (copy / "report", tmp_path):
        refused = run_main(capsys, "run", str(tiny_config_file), "--out", str(copy), "--report-to", str(inside))
        assert refused.returncode == 2 and "must lie outside the run directory" in refused.stderr
    assert snapshot(copy) == before and not (copy / "report").exists()


def test_a_run_is_refused_while_the_directory_is_being_re_reported(tiny_run, tmp_path, capsys, tiny_config_file):
    copy = shutil.copytree(tiny_run[0], tmp_path / "run")
    reader = RunLock(copy, shared=True).acquire()
    try:
        done = run_main(capsys, "run", str(tiny_config_file), "--out", str(copy), "--quiet")
        assert done.returncode == 2 and "another truthserum process is re-reporting it" in done.stderr
        with RunLock(copy, shared=True):  # reports share it
            pass
    finally:
        reader.release()


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_lock_file_that_is_a_link_or_a_pipe_is_refused(tmp_path, kind):
    root = tmp_path / "run"
    root.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    if kind == "symlink":
        (root / LOCK_FILE).symlink_to(victim)
    else:
        os.mkfifo(root / LOCK_FILE)
    for shared in (False, True):
        with pytest.raises(RunDirError, match="not a lock file; remove it"):
            RunLock(root, shared=shared).acquire()
    assert victim.read_text() == "mine"
