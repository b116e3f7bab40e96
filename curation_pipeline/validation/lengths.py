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

UNITS = ("words", "chars")
# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, kana, Han): each character
# counts as a word, or a Chinese caption three times as long would still be "one word".
_NO_SPACES = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = f"[{_NO_SPACES}]|[^\\s{_NO_SPACES}]+"
_WORDS = re.compile(_WORD)


def words(text: str | None) -> list[str]:
    """A caption's words as every length figure counts them (the drift check, the report, a rewrite's
    edit and length ratios)."""
    return _WORDS.findall(text or "")


def caption_lengths(captions: pd.Series, unit: str = "words") -> np.ndarray:
    """Word counts (whitespace tokens, a character of a script without spaces each) or character
    counts; None/NaN/empty are 0 (a missing caption is as short as a caption gets)."""
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
