"""docs/own-model.md runs: every code block on it, in order, in a fresh directory. Python
blocks share one namespace; every line of a shell block is a ``truthserum`` command, run
in-process, and must succeed; a yaml block is the file its first line names."""

from __future__ import annotations

import re
import shlex
from pathlib import Path


from truthserum import cli

PAGE = Path(__file__).resolve().parents[1] / "docs" / "own-model.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(text: str) -> list[tuple[str, str]]:
    return [(language, body) for language, body in BLOCK.findall(text)]


def test_the_block_reader_finds_every_block():
    text = "a\n```python\nx = 1\n```\nb\n```sh\ntruthserum --version\n```\n"
    assert code_blocks(text) == [("python", "x = 1\n"), ("sh", "truthserum --version\n")]


def test_every_code_block_of_the_page_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks(PAGE.read_text(encoding="utf-8"))
    assert {language for language, _ in blocks} <= {"python", "sh", "yaml", "text"}, "a block the test cannot run"
    assert sum(language == "python" for language, _ in blocks) >= 3
    namespace: dict = {"__name__": "own_model_page"}
    checked_paths: list[str] = []
    for number, (language, body) in enumerate(blocks, start=1):
        if language == "python":
            exec(compile(body, f"{PAGE.name} block {number}", "exec"), namespace)
            # a block that says which path its models took ("# \"vectorized\"") took it
            for said in re.findall(r'details\["training"\]\["path"\]\)\s*# "([\w-]+)"', body):
                assert namespace["results"].details["training"]["path"] == said, f"block {number}"
                checked_paths.append(said)
        elif language == "yaml":  # a file the next blocks use, named on its first line
            first = body.splitlines()[0]
            assert first.startswith("# file: "), f"block {number}: a yaml block names its file"
            Path(first.removeprefix("# file: ")).write_text(body, encoding="utf-8")
        elif language == "sh":
            for line in body.strip().splitlines():
                words = shlex.split(line)
                assert words[0] == "truthserum", f"block {number}: only truthserum commands run here: {line}"
                assert cli.main(words[1:]) == 0, f"block {number}: {line} failed: {capsys.readouterr().err}"
    assert checked_paths == ["vectorized"]
    results = namespace["results"]
    assert results.details["training"]["path"] == "trainer"
    assert (tmp_path / "runs" / "own-module" / "results.json").is_file()
    planned = namespace["planned"]
    assert set(planned.conditions) == {"clean", "poisoned"}
    assert (tmp_path / "runs" / "plan" / "roc.png").is_file()


def test_the_readme_audit_example_runs(tmp_path, monkeypatch):
    """The front door's audit example, with the x, y and make_model it leaves to the reader."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler
    from torch import nn

    readme = (PAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    example = next(body for language, body in code_blocks(readme) if "audit_membership" in body)
    x, y = load_breast_cancer(return_X_y=True)
    namespace = {"x": StandardScaler().fit_transform(x).astype(np.float32), "y": y,
                 "make_model": lambda: nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 2))}
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["results"].details["training"]["path"] == "vectorized"
    assert (tmp_path / "runs" / "mine" / "roc.png").is_file()
