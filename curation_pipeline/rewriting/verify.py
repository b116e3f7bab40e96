"""A rewrite is a claim; it is accepted only when re-scoring and minimality back it up.

AITQE rewrites "minimally" but never measures it. Here every candidate gets an edit
ratio, a length ratio and (where an embedder is available) a semantic similarity to
the original, and is accepted only if its score improves by a margin and it stays
inside the configured bounds. Rejections keep their reason in the lineage.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass


def _words(text: str | None) -> list[str]:
    return (text or "").split()


def edit_ratio(original: str | None, candidate: str | None) -> float:
    """Share of the word sequence changed (0 = identical, 1 = nothing shared)."""
    a, b = _words(original), _words(candidate)
    if not a and not b:
        return 0.0
    return 1.0 - difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()


def length_ratio(original: str | None, candidate: str | None) -> float:
    """Candidate words per original word; NaN when the original had no words."""
    a = len(_words(original))
    return len(_words(candidate)) / a if a else math.nan


@dataclass(frozen=True)
class AcceptanceRules:
    """Margins and minimality bounds; None disables a bound."""

    min_improvement: float = 1.0
    max_edit_ratio: float | None = None
    min_length_ratio: float | None = None
    max_length_ratio: float | None = None
    min_similarity: float | None = None


def judge(score_before: float, score_after: float, edit: float, length: float, similarity: float,
          rules: AcceptanceRules) -> tuple[bool, str]:
    """Accepted or not, and the first reason that decided it."""
    if math.isnan(score_after):
        return False, "rewrite could not be scored"
    before = 0.0 if math.isnan(score_before) else score_before
    if score_after < before + rules.min_improvement:
        return False, f"score did not improve enough ({before:.3g} -> {score_after:.3g}, need +{rules.min_improvement:g})"
    if rules.max_edit_ratio is not None and edit > rules.max_edit_ratio:
        return False, f"edit ratio {edit:.2f} > {rules.max_edit_ratio:g} (not minimal)"
    if rules.min_length_ratio is not None and not math.isnan(length) and length < rules.min_length_ratio:
        return False, f"length ratio {length:.2f} < {rules.min_length_ratio:g}"
    if rules.max_length_ratio is not None and not math.isnan(length) and length > rules.max_length_ratio:
        return False, f"length ratio {length:.2f} > {rules.max_length_ratio:g}"
    if rules.min_similarity is not None and not math.isnan(similarity) and similarity < rules.min_similarity:
        return False, f"semantic similarity {similarity:.2f} < {rules.min_similarity:g} (meaning changed)"
    return True, f"score improved {before:.3g} -> {score_after:.3g}"
