"""Markdown pipe tables, for Dagster's UI, the CLI and check metadata."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """``| a | b |`` lines under a ``|---|---|`` rule; each cell as ``str`` gives it."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def counts_markdown(counts: pd.Series, title: str) -> str:
    """A titled table of value counts (pairs per value)."""
    if counts.empty:
        return f"**{title}**: none"
    return f"**{title}**\n\n" + markdown_table(["value", "pairs"], [(k, int(v)) for k, v in counts.items()])
