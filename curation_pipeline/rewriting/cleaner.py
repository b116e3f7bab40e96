"""The offline, rule-based minimal rewriter.

It repairs only what ``rewriting.patterns`` recognises (the same patterns the
``text_quality`` scorer penalises) and leaves every other character alone: names,
numbers, language and wording are preserved, so its output is a safe baseline and
a fallback when no rewriting model is available.

``RewriteCandidate.raw`` holds the comma-separated operations that changed the
caption, in the order applied (see ``OPERATIONS``), e.g.
``"unescape_html,remove_boilerplate"``; it is None when nothing changed.
"""

from __future__ import annotations

import re
from typing import Callable

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.base import RewriteCandidate, Rewriter
from curation_pipeline.rewriting.patterns import (
    BOILERPLATE_RE,
    FILENAME_RE,
    URL_RE,
    WHITESPACE_RE,
    collapse_repeats,
    is_all_caps,
    remove_hashtags,
    unescape_html,
)

_LEADING_JUNK_RE = re.compile(r"^[\s.,;:!?|•·–—/\\-]+")
_TRAILING_JUNK_RE = re.compile(r"[\s,;:|•·–—/\\-]+$")
_EMPTY_BRACKETS_RE = re.compile(r"\(\s*\)|\[\s*\]|\{\s*\}")
_SPACE_BEFORE_COMMA_RE = re.compile(r"\s+([,;:])(?=\s|$)")
# A punctuation mark followed by more standalone marks, as left behind by a removal:
# "A dog. ." / "Beach - - sunset" / "A dog, , on".
_PUNCT_RUN_RE = re.compile(r"[,.;:!?|•·–—-](?:\s+[,.;:!?|•·–—-](?=\s|$))+")
_SENTENCE_START_RE = re.compile(r"(^|[.!?]\s+)([^\W\d_])")
_ALNUM_RE = re.compile(r"[^\W_]")


def _keep_strongest(match: re.Match) -> str:
    marks = match.group(0).split()
    return next((m for m in marks if m in ".!?"), marks[0])


def _tidy(text: str) -> str:
    """Close the gaps a removal leaves: empty brackets, orphaned separators, spaces."""
    text = _EMPTY_BRACKETS_RE.sub(" ", text)
    text = WHITESPACE_RE.sub(" ", text).strip()
    text = _PUNCT_RUN_RE.sub(_keep_strongest, text)
    text = _SPACE_BEFORE_COMMA_RE.sub(r"\1", text)
    text = _LEADING_JUNK_RE.sub("", text)
    return _TRAILING_JUNK_RE.sub("", text)


def _remover(pattern: re.Pattern) -> Callable[[str], str]:
    def remove(text: str) -> str:
        cleaned = pattern.sub(" ", text)
        while pattern.search(cleaned):  # a removal can join two halves of a new match
            cleaned = pattern.sub(" ", cleaned)
        return _tidy(cleaned) if cleaned != text else text

    return remove


def _remove_hashtags(text: str) -> str:
    cleaned = remove_hashtags(text)
    return _tidy(cleaned) if cleaned != text else text


def _fix_whitespace(text: str) -> str:
    return WHITESPACE_RE.sub(" ", text).strip()


def _strip_punctuation(text: str) -> str:
    return _TRAILING_JUNK_RE.sub("", _LEADING_JUNK_RE.sub("", text))


def _sentence_case(text: str) -> str:
    """ALL CAPS -> Sentence case. Acronyms are lowered too: the price of undoing shouting."""
    if not is_all_caps(text):
        return text
    return _SENTENCE_START_RE.sub(lambda m: m.group(1) + m.group(2).upper(), text.lower())


def _capitalize(text: str) -> str:
    """Upper-case the first letter unless the first word is mixed case (iPhone, eBay)."""
    first_word = text.split(" ", 1)[0]
    if text[:1].islower() and first_word == first_word.lower():
        return text[0].upper() + text[1:]
    return text


OPERATIONS: dict[str, Callable[[str], str]] = {
    "unescape_html": unescape_html,
    "fix_whitespace": _fix_whitespace,
    "strip_punctuation": _strip_punctuation,
    "remove_urls": _remover(URL_RE),
    "remove_filenames": _remover(FILENAME_RE),
    "remove_boilerplate": _remover(BOILERPLATE_RE),
    "remove_hashtags": _remove_hashtags,
    "sentence_case": _sentence_case,
    "collapse_repeats": collapse_repeats,
    "capitalize": _capitalize,
}


def clean_caption(caption: str) -> tuple[str, list[str]]:
    """The cleaned caption and the operations that changed it."""
    applied = []
    for op_name, op in OPERATIONS.items():
        cleaned = op(caption)
        if cleaned != caption:
            applied.append(op_name)
            caption = cleaned
    return caption, applied


class CaptionCleaner(Rewriter):
    """Rule-based minimal caption repair; no model, no images."""

    name = "cleaner"
    version = "1"
    needs_images = False
    prompt = None

    def rewrite(self, batch: PairBatch) -> list[RewriteCandidate]:
        return [self._rewrite_one(caption) for caption in batch.captions]

    @staticmethod
    def _rewrite_one(caption: str | None) -> RewriteCandidate:
        if caption is None or not caption.strip():
            return RewriteCandidate(caption=None, error="no caption")
        cleaned, applied = clean_caption(caption)
        if not applied:
            return RewriteCandidate(caption=None, error="no change")
        raw = ",".join(applied)
        if not _ALNUM_RE.search(cleaned):
            return RewriteCandidate(caption=None, error="nothing left after cleaning", raw=raw)
        return RewriteCandidate(caption=cleaned, raw=raw)
