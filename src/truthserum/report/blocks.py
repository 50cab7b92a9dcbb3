"""Stage 8, report: what a task's report is made of, so that the terminal and the HTML page
show the same tables: a list of blocks, each a line of text or a :class:`Table`."""

from __future__ import annotations

from dataclasses import dataclass

from truthserum.report.text import table_lines


@dataclass(frozen=True)
class Table:
    """A table: ``header`` then ``rows`` of already formatted cells (the first column names
    the row); ``title``, when given, is printed above it; ``caption`` names it in the HTML
    report (where the title does when there is no caption)."""

    header: list[str]
    rows: list[list[str]]
    title: str | None = None
    caption: str | None = None

    @property
    def label(self) -> str:
        return self.caption or (self.title or "").rstrip(":") or "Results"


Block = str | Table


def render_text(blocks: list[Block]) -> str:
    """The blocks as the terminal shows them: a table's columns aligned, its title above it."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Table):
            if block.title is not None:
                lines.append(block.title)
            lines.extend(table_lines(block.header, block.rows))
        else:
            lines.append(block)
    return "\n".join(lines)
