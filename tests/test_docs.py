"""The documentation: the generated configuration reference is current, the README stays a
front door, and every relative link between the README and docs/ resolves (files and #anchors)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 200

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lowercased, punctuation dropped (letters,
    digits, underscores, hyphens and spaces kept), spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, numbered as GitHub numbers repeats (-1, -2)."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = counts.get(slug, 0)
        counts[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link that is not an absolute URL."""
    links = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for match in _LINK.finditer(_INLINE_CODE.sub("", line)):
            target = match.group(1)
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http:, https:, mailto: ...
            links.append((number, target))
    return links


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if not linked.exists():
            problems.append(f"{where}: no such file")
        elif anchor and linked.suffix == ".md" and unquote(anchor).lower() not in anchors(linked):
            problems.append(f"{where}: no heading with that anchor in {linked.relative_to(ROOT)}")
    return problems


def test_configuration_reference_is_current():
    from truthserum.config.reference import configuration_reference

    page = DOCS / "configuration.md"
    current = page.read_text(encoding="utf-8") if page.exists() else ""
    assert current == configuration_reference(), (
        "docs/configuration.md is out of date with the config models; regenerate it with "
        "`python -m truthserum.config.reference > docs/configuration.md`"
    )


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it a front door of at most {MAX_README_LINES} "
        "and move detail into docs/"
    )


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert broken_links(path) == []


def test_the_link_checker_reads_links_and_anchors(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# A title: with `code`\n\n## Repeat\n\n## Repeat\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-title-with-code) [second](other.md#repeat-1) [web](https://example.com)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) `[in code](missing.md)` [self](#top)\n"
        "```\n[in a fence](missing.md)\n```\n# Top\n"
    )
    assert [problem.split(": ", 2)[1] for problem in broken_links(page)] == [
        "missing.md", "other.md#nowhere",
    ]


def test_the_readme_python_example_runs(tmp_path, capsys):
    """The front door's example, on a tiny config instead of the 2-minute demo."""
    import yaml

    text = README.read_text(encoding="utf-8")
    example = re.search(r"## From Python\n\n```python\n(.*?)```", text, re.S).group(1)
    assert 'load_config("configs/demo.yaml")' in example and '"runs/demo"' in example
    tiny = {
        "seed": 1, "data": {"source": "digits", "pool_size": 200}, "design": {"num_models": 4, "num_targets": 8},
        "poison": {"replicas": 2}, "model": {"hidden_sizes": [16]}, "train": {"epochs": 2, "shard_size": 4},
        "metrics": {"bootstrap": 20},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    example = example.replace("configs/demo.yaml", str(tmp_path / "tiny.yaml"))
    example = example.replace('"runs/demo"', repr(str(tmp_path / "run")))
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "lira-online AUC" in printed and "poisoned" in printed
    assert (tmp_path / "run" / "results.json").is_file()


def test_every_config_field_is_described():
    """Every key of every config model, sections included, has a description for the reference."""
    import typing

    from pydantic import BaseModel

    from truthserum.config import TASK_CONFIGS

    def models_in(annotation) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [model for arg in typing.get_args(annotation) for model in models_in(arg)]

    undescribed: list[str] = []
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel], path: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{path}.{name}" if path else name
            if not (field.description or "").strip():
                undescribed.append(key)
            for section in models_in(field.annotation):
                if section not in seen:
                    seen.add(section)
                    walk(section, key)

    for task, model in TASK_CONFIGS.items():
        seen.add(model)
        walk(model, task.value)
    assert seen >= set(TASK_CONFIGS.values()) and len(seen) > len(TASK_CONFIGS)
    assert undescribed == []


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_config_loads(path):
    """The configs the docs tell users to run are valid against today's schema."""
    from truthserum.config import load_config

    assert load_config(path).task is not None
