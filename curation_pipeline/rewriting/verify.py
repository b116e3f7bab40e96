"""A rewrite is a claim; it is accepted only when re-scoring, minimality and an independent
well-formedness check back it up.

AITQE rewrites "minimally" but never measures it: here every candidate gets an edit ratio, a length
ratio and (with an embedder) a semantic similarity, and must improve its score by a margin, stay
inside the configured bounds and be well formed. ``wellformedness_problems`` shares no pattern with
``captions.patterns`` (which the scorer and the cleaner both use) on purpose: a re-score with the
cleaner's own patterns cannot see what the cleaner missed, so this check looks at the candidate's
shape instead (balanced brackets and quotes, no label stub or link debris, no stray punctuation,
invisible characters or irregular whitespace).
"""

from __future__ import annotations

import difflib
import html
import math
import re
import unicodedata
from dataclasses import dataclass

# Column name -> what it measures; the README and the lineage table use the same words.
MINIMALITY_COLUMNS = {
    "edit_ratio": "1 - 2*M/T over whitespace-separated words, where M = words matched in order "
                  "(difflib, no autojunk) and T = words in both captions: 0.0 = same words, 1.0 = no word in "
                  "common (a full rewrite, or one side empty); case and punctuation attached to a word count",
    "length_ratio": "words in the candidate / words in the original (NaN when the original has no words)",
    "semantic_similarity": "cosine of the all-MiniLM-L6-v2 embeddings of original and candidate (1.0 = same meaning)",
}


def _words(text: str | None) -> list[str]:
    return (text or "").split()


def edit_ratio(original: str | None, candidate: str | None) -> float:
    """Share of the word sequence changed (``MINIMALITY_COLUMNS["edit_ratio"]``); whitespace is not an
    edit, case and attached punctuation are ("dog" vs "Dog." differ)."""
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
    check_wellformed: bool = True


# --- the independent check ------------------------------------------------------------
# Written from what a broken leftover looks like, not from what the cleaner removes; it must
# not import curation_pipeline.captions (a test holds it to that).
_BRACKETS = {"(": ")", "[": "]", "{": "}"}
_CURLY_QUOTES = (("“", "”"), ("«", "»"), ("「", "」"))
_LABEL_STUB = re.compile(
    r"\b(?:sources?|credits?|photo(?:graph)?s?|images?|pictures?|pic|via|courtesy|copyright|caption|alt(?:\s+text)?"
    r"|photographer|author|by)\s*:", re.IGNORECASE)
_BRACKET_STUB = re.compile(r"[(\[{]\s*(?:sources?|credits?|via|photo|image|courtesy|copyright)\b", re.IGNORECASE)
_END_STUB = re.compile(r"\b(?:credits?|via|courtesy\s+of|copyright)\s*[.!?]?\s*$", re.IGNORECASE)
_LINK_DEBRIS = re.compile(r"://|\bwww\.|\bhttps?\b", re.IGNORECASE)
_SEPARATOR_END = tuple(",;:|/\\-–—•·+&([{")
_OPENING_OK = "\"'“‘«„¿¡([{#@$€£"


def _is_punct_token(token: str) -> bool:
    return all(unicodedata.category(ch).startswith("P") or ch in "|+&~•·" for ch in token)


def _lone_punctuation_runs(text: str) -> int:
    """Punctuation-only tokens that follow another punctuation-only token: ". ." ", -" "- |"."""
    tokens = text.split()
    return sum(1 for a, b in zip(tokens, tokens[1:]) if _is_punct_token(a) and _is_punct_token(b))


def _unbalanced(text: str) -> list[str]:
    stack: list[str] = []
    broken = False
    for ch in text:
        if ch in _BRACKETS:
            stack.append(ch)
        elif ch in _BRACKETS.values() and (not stack or _BRACKETS[stack.pop()] != ch):
            broken = True
    found = ["unbalanced brackets"] if broken or stack else []
    if text.count('"') % 2 or any(text.count(o) != text.count(c) for o, c in _CURLY_QUOTES):
        found.append("unbalanced quotes")
    return found


def _empty_pairs(text: str) -> bool:
    return bool(re.search(r"\(\s*\)|\[\s*\]|\{\s*\}|\"\s*\"|“\s*”", text))


def _tail_fragment(text: str) -> str | None:
    """What follows the last sentence end, if it is one or two bare words ("A dog runs . Image") or
    starts with a separator ("A dog runs . | Jane Doe"): the stub a half-done removal leaves."""
    match = re.search(r"[.!?]\s+(\S[^.!?]*?)\s*$", text)
    if not match:
        return None
    tail = match.group(1)
    if tail[0] in "|-–—•·/,;:":
        return tail
    words = tail.split()
    return tail if len(words) <= 2 and not tail.endswith(('"', "”", ")")) else None


def _invisible(text: str) -> bool:
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat == "Cc":
            return True
        if cat == "Cf":
            if ch in "\u200c\u200d" and 0 < i < len(text) - 1 and not text[i - 1].isascii() \
                    and not text[i + 1].isascii():
                continue  # a joiner inside an emoji sequence or a script that needs it
            return True
    return False


def _irregular_space(text: str) -> bool:
    return text != text.strip() or "  " in text or any(ch.isspace() and ch not in " \u3000" for ch in text)


def _wrapped(text: str) -> bool:
    t = text.strip().rstrip(".!?")
    if len(t) < 3:
        return False
    pairs = {'"': '"', "“": "”", "«": "»", "„": "“", "「": "」"}
    return pairs.get(t[0]) == t[-1] and t[0] not in t[1:-1] and t[-1] not in t[1:-1]


def wellformedness_problems(candidate: str, original: str | None = None) -> list[str]:
    """What is broken about a rewrite, in words; empty when it looks like a finished caption. Defects
    the original already had (unbalanced brackets or quotes, empty pairs, lone punctuation) do not count
    against the rewrite; leftovers (label stubs, link debris, separators, invisible characters) do."""
    problems = []
    if original is not None:  # compare shapes as a reader sees them (&quot; is a quote), even escaped twice
        for _ in range(3):
            original, previous = html.unescape(original), original
            if original == previous:
                break
    if not any(ch.isalpha() for ch in candidate):
        problems.append("no letters")
    before = set(_unbalanced(original)) if original is not None else set()
    problems += [p for p in _unbalanced(candidate) if p not in before]
    if _empty_pairs(candidate) and not (original is not None and _empty_pairs(original)):
        problems.append("empty brackets or quotes")
    stub = _LABEL_STUB.search(candidate) or _BRACKET_STUB.search(candidate) or _END_STUB.search(candidate)
    if stub:
        problems.append(f"dangling {stub.group(0).strip()!r}")
    if _LINK_DEBRIS.search(candidate):
        problems.append("link debris")
    stripped = candidate.strip()
    if stripped.endswith(_SEPARATOR_END):
        problems.append(f"trailing separator {stripped[-1]!r}")
    if stripped and _is_punct_token(stripped[0]) and stripped[0] not in _OPENING_OK:
        problems.append(f"starts with {stripped[0]!r}")
    tail = _tail_fragment(candidate)
    if tail is not None and (original is None or _tail_fragment(original) != tail):
        problems.append(f"dangling fragment {tail!r}")
    if _lone_punctuation_runs(candidate) > (_lone_punctuation_runs(original) if original is not None else 0):
        problems.append("lone punctuation")
    if _invisible(candidate):
        problems.append("invisible or control characters")
    if _irregular_space(candidate):
        problems.append("irregular whitespace")
    if _wrapped(candidate):
        problems.append("quotes around the whole caption")
    return problems


def judge(quality_before: float, quality_after: float, edit: float, length: float, similarity: float,
          rules: AcceptanceRules, *, original: str | None = None,
          candidate: str | None = None) -> tuple[bool, str]:
    """Accepted or not, and the first reason that decided it. With ``candidate`` given and
    ``rules.check_wellformed`` on, the well-formedness check must pass too, whatever the score says."""
    if math.isnan(quality_after):
        return False, "rewrite could not be scored"
    if candidate is not None and rules.check_wellformed:
        problems = wellformedness_problems(candidate, original)
        if problems:
            return False, "malformed rewrite: " + "; ".join(problems)
    before = 0.0 if math.isnan(quality_before) else quality_before
    if quality_after < before + rules.min_improvement:
        return False, f"score did not improve enough ({before:.3g} -> {quality_after:.3g}, need +{rules.min_improvement:g})"
    if rules.max_edit_ratio is not None and edit > rules.max_edit_ratio:
        return False, f"edit ratio {edit:.2f} > {rules.max_edit_ratio:g} (not minimal)"
    if rules.min_length_ratio is not None and not math.isnan(length) and length < rules.min_length_ratio:
        return False, f"length ratio {length:.2f} < {rules.min_length_ratio:g}"
    if rules.max_length_ratio is not None and not math.isnan(length) and length > rules.max_length_ratio:
        return False, f"length ratio {length:.2f} > {rules.max_length_ratio:g}"
    if rules.min_similarity is not None and not math.isnan(similarity) and similarity < rules.min_similarity:
        return False, f"semantic similarity {similarity:.2f} < {rules.min_similarity:g} (meaning changed)"
    return True, f"score improved {before:.3g} -> {quality_after:.3g}"
