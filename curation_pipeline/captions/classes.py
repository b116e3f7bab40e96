"""Regex character classes of Unicode categories and blocks: ``re`` has no ``\\p{M}`` or ``\\p{P}``, so the caption
patterns and the length measure spell theirs out as ranges of code points."""

from __future__ import annotations

import unicodedata
from typing import Iterable


def class_body(codepoints: Iterable[int]) -> str:
    """A character class body (what goes between ``[`` and ``]``) for ``codepoints``, in any order, as ranges."""
    ranges: list[list[int]] = []
    for cp in sorted(set(codepoints)):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


def in_category(major: str, codepoints: Iterable[int]) -> list[int]:
    """Those of ``codepoints`` whose Unicode general category starts with ``major`` ("M": marks, "P": punctuation)."""
    return [cp for cp in codepoints if unicodedata.category(chr(cp))[0] == major]
