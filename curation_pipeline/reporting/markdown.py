"""Markdown pipe tables, for Dagster's UI, the CLI and check metadata."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd


def cell(value: Any) -> str:
    """A value as one table cell: a line break (an error's text has them) or a ``|`` would end the row."""
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """``| a | b |`` lines under a ``|---|---|`` rule; each cell as ``str`` gives it, on one line."""
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def counts_markdown(counts: pd.Series, title: str, unit: str = "pairs") -> str:
    """A titled table of value counts (``unit`` per value: pairs, or what else was counted)."""
    if counts.empty:
        return f"**{title}**: none"
    return f"**{title}**\n\n" + markdown_table(["value", unit], [(k, int(v)) for k, v in counts.items()])
