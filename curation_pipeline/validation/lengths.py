"""Caption lengths, and their distribution as exact counts per length.

A length is a whole number of words or characters, so a distribution of any size is a short table of
(length, count): exact, a few hundred numbers for a pool of billions, and summed shard by shard. Every
statistic the drift check reads from its reference side (mean, ``nearest`` quantiles, the KL partition's
weights) comes out of the counts equal to what it gives over the lengths themselves.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from curation_pipeline.captions.classes import class_body, in_category

UNITS = ("words", "chars")


def _span(a: int, b: int) -> set[int]:
    return set(range(a, b + 1))


# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, kana full- and half-width, Han
# ideographs of every extension, the ideographic iteration marks and numerals): each character counts as a
# word, or a Chinese caption three times as long would still be "one word". Their punctuation is no word.
_NO_SPACE_BLOCKS = (_span(0x0E00, 0x0EFF) | _span(0x1000, 0x109F) | _span(0x1780, 0x17FF)
                    | _span(0x3005, 0x3007) | _span(0x3021, 0x3029) | _span(0x3031, 0x3035) | _span(0x3038, 0x303C)
                    | _span(0x3040, 0x30FF) | _span(0xFF66, 0xFF9F)
                    | _span(0x3400, 0x4DBF) | _span(0x4E00, 0x9FFF) | _span(0xF900, 0xFAFF) | _span(0x20000, 0x323AF))
# Punctuation: Unicode's (category P, of the basic plane: "。", "、", "「", "，", ASCII ",", "“", Khmer "។") and
# the ideographic and full-width symbols set with it ("〒", "＋", "～"). Written against a character of a script
# without spaces it belongs to that character's word, as "dog." is one word: "我爱你，中国。" is 5 words, not 7.
_PUNCTUATION = (set(in_category("P", range(0x10000)))
                | {0x3004, 0x3012, 0x3013, 0x3020, 0x3036, 0x3037, 0x303E, 0x303F, 0x309B, 0x309C}
                | _span(0xFF01, 0xFF0F) | _span(0xFF1A, 0xFF20) | _span(0xFF3B, 0xFF40) | _span(0xFF5B, 0xFF65))
# Marks belong to the character before them: kana voiced sound marks, combining and half-width ("ｶﾞ" is one
# character as "ガ" is), and the combining vowel signs, tone marks and viramas of Thai, Lao, Myanmar and Khmer
# ("เด็ก", child, is 3 characters, not 4; "ខ្មែរ", Khmer, 3, not 5).
_MARKS = ({0x3099, 0x309A, 0xFF9E, 0xFF9F}
          | set(in_category("M", (cp for cp in _NO_SPACE_BLOCKS if cp < 0x3400))))
# (Han, from U+3400 on, holds no mark: its 200,000 code points are not looked at on every import)
_NO_SPACES = class_body(_NO_SPACE_BLOCKS - _PUNCTUATION)
_P, _M = class_body(_PUNCTUATION), class_body(_MARKS)
# a character of a script without spaces with its marks and the punctuation against it; else a whitespace token
# (a mark or punctuation set apart by spaces is still a word, as " - " is)
_WORD = f"[{_P}]*[{_NO_SPACES}][{_M}]*[{_P}]*|[^\\s{_NO_SPACES}]+"
_WORDS = re.compile(_WORD)


def words(text: str | None) -> list[str]:
    """A caption's words as every length figure counts them (the drift check, the report, a rewrite's
    edit and length ratios)."""
    return _WORDS.findall(text or "")


def caption_lengths(captions: pd.Series, unit: str = "words") -> np.ndarray:
    """Word counts (whitespace tokens, a character of a script without spaces each, the punctuation
    against it included) or character counts; None/NaN/empty are 0 (a missing caption is as short as a
    caption gets)."""
    text = pd.Series(captions, dtype=object).where(pd.notna(captions), "").astype(str)
    counts = text.str.count(_WORD) if unit == "words" else text.str.len()
    return counts.to_numpy(dtype=float)


@dataclass(frozen=True)
class LengthCounts:
    """How many captions have each length (``lengths`` ascending and distinct, ``counts`` > 0)."""

    unit: str
    lengths: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"length unit must be one of {UNITS}, not {self.unit!r}")
        if len(self.lengths) != len(self.counts):
            raise ValueError(f"{len(self.lengths)} lengths for {len(self.counts)} counts")
        if len(self.lengths) and (np.any(np.diff(self.lengths) <= 0) or np.any(self.counts <= 0)
                                  or np.any(self.lengths < 0)):
            raise ValueError("lengths must be distinct, ascending and >= 0, and every count > 0")

    @classmethod
    def of(cls, lengths: np.ndarray, unit: str = "words") -> LengthCounts:
        values = np.asarray(lengths, dtype=float)
        if np.any(~np.isfinite(values)) or np.any(values != np.floor(values)):
            raise ValueError("caption lengths are whole numbers of words or characters")
        distinct, counts = np.unique(values.astype(np.int64), return_counts=True)
        return cls(unit, distinct, counts.astype(np.int64))

    @classmethod
    def of_captions(cls, captions: pd.Series, unit: str = "words") -> LengthCounts:
        return cls.of(caption_lengths(captions, unit), unit)

    @classmethod
    def total(cls, parts: list[LengthCounts], unit: str) -> LengthCounts:
        """The counts of all ``parts`` together (all in ``unit``)."""
        other = sorted({p.unit for p in parts} - {unit})
        if other:
            raise ValueError(f"cannot add caption lengths in {', '.join(other)} to lengths in {unit}")
        if not parts:
            return cls(unit, np.zeros(0, np.int64), np.zeros(0, np.int64))
        lengths = np.concatenate([p.lengths for p in parts])
        counts = np.concatenate([p.counts for p in parts])
        distinct, where = np.unique(lengths, return_inverse=True)
        summed = np.zeros(len(distinct), np.int64)
        np.add.at(summed, where, counts)
        return cls(unit, distinct, summed)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def mean(self) -> float:
        return float(np.dot(self.lengths, self.counts) / self.n) if self.n else math.nan

    def quantiles(self, levels: tuple[float, ...] | list[float]) -> dict[float, float]:
        """What ``pd.Series(lengths).quantile(levels, interpolation="nearest")`` gives: numpy's order
        statistic at ``round((n - 1) * q)`` (half to even), with q passed through a percentage as pandas does."""
        if not self.n:
            return {float(q): math.nan for q in levels}
        q = np.true_divide(np.asarray(levels, dtype=float) * 100, 100)
        ranks = np.around((self.n - 1) * q).astype(np.int64)
        at = np.searchsorted(np.cumsum(self.counts), ranks, side="right")
        return {float(level): float(self.lengths[i]) for level, i in zip(levels, at)}

    def histogram(self, bins: list[float]) -> np.ndarray:
        return np.histogram(self.lengths, bins, weights=self.counts.astype(float))[0]

    def to_dict(self) -> dict:
        return {"unit": self.unit, "lengths": [int(v) for v in self.lengths], "counts": [int(c) for c in self.counts]}

    @classmethod
    def from_dict(cls, value: dict) -> LengthCounts:
        return cls(value["unit"], np.asarray(value["lengths"], dtype=np.int64),
                   np.asarray(value["counts"], dtype=np.int64))
