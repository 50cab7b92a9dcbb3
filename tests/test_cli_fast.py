"""A fast command: --help and --version import nothing heavy; the choices the parser lists
without importing their enums agree with them; a missing extra is one line naming it."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from truthserum import cli

HEAVY = ("torch", "numpy", "pydantic", "yaml", "transformers", "scipy", "pandas", "matplotlib", "sklearn", "ray")


def test_help_and_version_import_nothing_heavy():
    """A regression test for the lazy imports (it times nothing): the parser, --help and
    --version run in a fresh interpreter that then holds none of the heavy modules."""
    code = f"""
import contextlib, io, sys
import truthserum.cli as cli
cli._build_parser()
for argv in (["--help"], ["--version"], ["run", "--help"], ["demo", "--help"], ["sweep", "--help"],
             ["plan", "--help"], ["attack", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main(argv)
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == "truthserum 0.1.0\n"
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    import truthserum

    assert truthserum.__version__ == pyproject["project"]["version"]


def test_the_parser_choices_mirror_their_enums():
    from truthserum.attacks import TUNE, AttackName, RmiaOptions
    from truthserum.config import Task
    from truthserum.train.executors import DEFAULT_CONNECT_TIMEOUT, DEVICES, BackendName

    assert cli.TASKS == tuple(task.value for task in Task)
    assert set(cli.DEMO_CONFIGS) == set(cli.TASKS)
    assert cli.BACKENDS == tuple(name.value for name in BackendName)
    assert cli.DEVICES == DEVICES
    assert cli.DEFAULT_CONNECT_TIMEOUT == DEFAULT_CONNECT_TIMEOUT
    assert cli.ATTACKS == tuple(name.value for name in AttackName)
    from truthserum.attacks.inputs import LogitsKind
    from truthserum.tasks.attacking import ALL

    assert cli.LOGITS_KINDS == tuple(kind.value for kind in LogitsKind)
    assert cli.ALL_ATTACKS == ALL
    assert cli.TUNE == TUNE
    defaults = RmiaOptions()
    assert (cli.DEFAULT_RMIA_GAMMA, cli.DEFAULT_RMIA_OFFLINE_A) == (defaults.gamma, defaults.offline_a)


def test_unknown_attack_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["attack", "--signals", "s.npz", "--attack", "lira"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'lira'" in err and "'lira-online'" in err and "'global-threshold'" in err


def test_the_package_exports_resolve_on_first_use():
    import truthserum

    for name in truthserum.__all__:
        value = getattr(truthserum, name)
        assert value is getattr(sys.modules[truthserum._EXPORTS[name]], name), name
    assert set(truthserum.__all__) <= set(dir(truthserum))
    with pytest.raises(AttributeError):
        truthserum.no_such_name  # noqa: B018


def test_hf_model_without_transformers_names_the_extra(monkeypatch, tmp_path):
    import torch

    from truthserum.config.lm import LmConfig
    from truthserum.errors import ConfigError
    from truthserum.tasks.lm import make_model_backend

    config = LmConfig.model_validate({"model": {"kind": "hf", "path": str(tmp_path)}})
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "truthserum.train.lm.hf", raising=False)
    with pytest.raises(ConfigError, match=r"lm\.model\.kind 'hf' needs .*pip install 'truthserum\[hf\]'"):
        make_model_backend(config, None, torch.device("cpu"))


def test_cps_without_causaldata_names_the_extra(monkeypatch):
    from truthserum.data.tables import load_cps
    from truthserum.errors import DataError

    monkeypatch.setitem(sys.modules, "causaldata", None)  # as if it were not installed
    with pytest.raises(DataError, match=r"data\.source 'cps' needs .*pip install 'truthserum\[tables\]'"):
        load_cps()
