"""A rewrite is a claim; it is accepted only when re-scoring, minimality and an independent
well-formedness check back it up.

AITQE rewrites "minimally" but never measures it: here every candidate gets an edit ratio, a length
ratio and (with an embedder) a semantic similarity, and must improve its score by a margin, stay
inside the configured bounds and be well formed. ``wellformedness_problems`` shares no pattern with
``captions.patterns`` (which the scorer and the cleaner both use) on purpose: a re-score with the
cleaner's own patterns cannot see what the cleaner missed, so this check looks at the candidate's
shape instead (balanced brackets and quotes, no label stub, model lead-in, refusal or commentary, link debris,
markup or ID left after a separator, no stray punctuation, invisible characters or irregular whitespace).
"""

from __future__ import annotations

import difflib
import html
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from curation_pipeline.rewriting.base import no_caption_to_edit
from curation_pipeline.validation.lengths import words

# Column name -> what it measures; the README and the lineage table use the same words.
MINIMALITY_COLUMNS = {
    "edit_ratio": "1 - 2*M/T over words (the drift check's: whitespace-separated, a character in scripts without "
                  "spaces, whose punctuation (\"。\", \"，\", \"「\") is no word here, as \"dog.\" is one word), "
                  "where M = words matched in order "
                  "(difflib, no autojunk) and T = words in both captions: 0.0 = same words, 1.0 = no word in "
                  "common (a full rewrite, or one side empty); words are compared in NFC, case-folded "
                  "(Turkish \"İ\" and \"ı\" as \"i\"), without the punctuation at their edges (\"Dog.\" is \"dog\"); "
                  "the lineage has NaN (not measured) when there is no caption to edit (no words, or only the "
                  "model's image placeholder)",
    "length_ratio": "words in the candidate / words in the original (NaN when there is no caption to edit)",
    "semantic_similarity": "cosine of the all-MiniLM-L6-v2 embeddings of original and candidate (1.0 = same meaning; "
                           "NaN when not measured: no embedder, or no original caption)",
}


_words = words  # the drift check's words: a length_ratio bound means what the check measures


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def _caseless(text: str) -> str:
    """``text`` as a caseless match compares it: in one normal form (a caption in NFD and its rewrite in NFC,
    as models write, have the same words), case-folded, and with Turkish and Azerbaijani dotted and dotless i
    as plain "i": "BİR" folds to "bi̇r" (i + U+0307) and "KIRMIZI" lowers to "kırmızı" in Turkish, and neither
    is an edit of "bir" or "kirmizi"."""
    folded = unicodedata.normalize("NFD", unicodedata.normalize("NFD", text).casefold())
    return unicodedata.normalize("NFC", folded.replace("\u0131", "i").replace("i\u0307", "i"))


def _comparable(word: str) -> str:
    """A word as the edit ratio compares it: case-folded (``_caseless``), without punctuation at its edges
    ('"Two' is 'two', 'Dog.' is 'dog'); a word of punctuation only stays itself (removing a " - " is an edit)."""
    word = unicodedata.normalize("NFC", word)
    start, end = 0, len(word)
    while start < end and _is_punct(word[start]):
        start += 1
    while end > start and _is_punct(word[end - 1]):
        end -= 1
    return _caseless(word[start:end]) or word


def _edit_words(text: str | None) -> list[str]:
    """The drift check's words as the edit ratio compares them (``_comparable``), less punctuation-only words
    written against another word with no space between: in scripts without spaces each character is a word,
    so "跑。" is two where "runs." is one, and "。" is the edge punctuation of its neighbour. A mark set apart by
    spaces (" - ", "跑 。") stays a word: removing it is an edit."""
    text = text or ""
    found, pos = [], 0
    for word in _words(text):
        start = text.index(word, pos)
        found.append((word, start, start + len(word)))
        pos = start + len(word)
    kept = []
    for i, (word, start, end) in enumerate(found):
        glued = (i > 0 and found[i - 1][2] == start) or (i + 1 < len(found) and found[i + 1][1] == end)
        if not (glued and all(_is_punct(ch) for ch in word)):
            kept.append(_comparable(word))
    return kept


def edit_ratio(original: str | None, candidate: str | None) -> float:
    """Share of the word sequence changed (``MINIMALITY_COLUMNS["edit_ratio"]``); whitespace, case and
    punctuation at a word's edges are no edit ("dog" vs "Dog." are the same word, and so are "跑。" and "跑"),
    nor is the Unicode normal form (a word in NFD is the same word in NFC), so fixing the case or removing
    wrapping quotes is minimal; a changed, added or removed word is an edit.
    Computed as one division of whole numbers, (T - 2M) / T, so an exact fraction (6/20) compares exactly
    with a bound (0.3): ``1 - 2M/T`` rounds twice and can land above it."""
    a, b = _edit_words(original), _edit_words(candidate)
    total = len(a) + len(b)
    if not total:
        return 0.0
    matched = sum(block.size for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks())
    return (total - 2 * matched) / total


def length_ratio(original: str | None, candidate: str | None) -> float:
    """Candidate words per original word; NaN when the original had no words."""
    a = len(_words(original))
    return len(_words(candidate)) / a if a else math.nan


# The margin a rewrite must gain when none is set: this share of the quality column's declared range width,
# so the default means the same on every score (1 point on the 0-100 text_quality and MLM-Filter scales,
# 0.025 on CLIPScore's 0-2.5). The policy resolves it on its quality column (DecisionPolicy.min_improvement).
MIN_IMPROVEMENT_SHARE = 0.01


def default_min_improvement(scale: tuple[float, float]) -> float:
    """The default margin on a score declared over ``scale`` (low, high)."""
    return MIN_IMPROVEMENT_SHARE * (scale[1] - scale[0])


@dataclass(frozen=True)
class AcceptanceRules:
    """Margins and minimality bounds; None disables a bound. ``min_improvement`` is in points on the
    quality column's scale: the pipeline passes the policy's; standalone, the default is a 0-100 score's."""

    min_improvement: float = default_min_improvement((0.0, 100.0))
    max_edit_ratio: float | None = None
    min_length_ratio: float | None = None
    max_length_ratio: float | None = None
    min_similarity: float | None = None
    check_wellformed: bool = True
    # A rewrite must score at least this, or the pair is dropped anyway; the pipeline passes policy.drop_threshold.
    min_quality: float | None = None
    # No number added, no negation dropped (``changed_facts``): on where a model rewrites and only text scores
    # judge (``targets.judged_blind``): they cannot tell a corrected count from a made-up one, or "not smiling"
    # from "smiling"
    keep_facts: bool = False
    # The decision's weak-caption bounds (``decisions.policy.StillWeak``: the columns it reads, and per row of a
    # candidate's scores the bounds still hit): under fallback: drop a candidate still not English is no fix.
    still_weak: Any = field(default=None, compare=False)


# --- the independent check ------------------------------------------------------------
# Written from what a broken leftover looks like, not from what the cleaner removes; it must
# not import curation_pipeline.captions (a test holds it to that).
_BRACKETS = {"(": ")", "[": "]", "{": "}", "【": "】", "《": "》", "〈": "〉", "〔": "〕", "〖": "〗", "〘": "〙"}
# Full-width forms read as their ASCII ones: "（摄影）" is "(摄影)", and "（摄影)" a pair as a reader sees it.
_FULL_WIDTH = str.maketrans("（）［］｛｝", "()[]{}")
# Words of a credit or media label, case-folded, beyond English in the languages captions most often come in: a
# stub left of "Crédit photo : Jean Dupont", "Foto: dpa", "Bild: Getty Images" or "Fuente: EFE" is one as much as
# "Credit" is.
_CREDIT_WORDS = ("source", "sources", "credit", "credits", "copyright", "courtesy",
                 "crédit", "crédits", "crédito", "créditos", "credito", "crediti", "kredit", "quelle", "quellen",
                 "fuente", "fuentes", "fonte", "bron", "źródło", "источник", "πηγή", "bildnachweis", "fotonachweis")
_AUTHOR_WORDS = ("caption", "photographer", "author", "autor", "auteur", "autore", "photographe", "fotógrafo",
                 "fotografo", "fotograf")
_MEDIA_WORDS = ("photo", "photos", "photograph", "photographs", "image", "images", "picture", "pictures", "pic",
                "pics", "foto", "fotos", "fotografía", "fotografia", "fotografie", "photographie", "bild", "bilder",
                "imagen", "imagem", "immagine", "afbeelding", "zdjęcie", "фото", "φωτογραφία", "fotoğraf")
# What ties a name to a media word: "Photo by", "Foto von", "Photo de", "Foto di", "Foto por".
_BYLINE_WORDS = ("by", "via", "von", "par", "de", "di", "por")
_LABEL_WORDS = frozenset(_CREDIT_WORDS + _AUTHOR_WORDS + _MEDIA_WORDS + _BYLINE_WORDS)


def _alternation(words: tuple[str, ...]) -> str:
    return "|".join(map(re.escape, sorted(words, key=len, reverse=True)))


_CREDIT, _MEDIA, _BYLINE = (_alternation(_CREDIT_WORDS), _alternation(_MEDIA_WORDS),
                             _alternation(_BYLINE_WORDS))
_LABEL_STUB = re.compile(r"\b(?:" + _alternation(_CREDIT_WORDS + _AUTHOR_WORDS + _MEDIA_WORDS)
                         + r"|alt(?:\s+text)?|via|by)\s*[:：]", re.IGNORECASE)
_BRACKET_STUB = re.compile(r"[(\[{（［｛【〔]\s*(?:" + _CREDIT + r"|via|photo|image|foto)\b", re.IGNORECASE)
# "via" and "courtesy of" dangle at the end whatever precedes them, and so does a media word's byline ("Photo by",
# "Foto von"); a credit word ("credits", "copyright", "Crédit", "Quelle") only alone or after a media word
# ("A dog. Credit", "A dog photo credit"), never as a noun ("the film's end credits", "una fuente").
_END_STUB = re.compile(r"\b(?:(?P<prep>via|courtesy\s+of|(?:" + _MEDIA + r")\s+(?:" + _BYLINE + "))"
                       r"|(?P<media>(?:" + _MEDIA + r")\s+)?(?:" + _CREDIT + r"))\s*[.!?]?\s*$", re.IGNORECASE)
_LINK_DEBRIS = re.compile(r"://|\bwww\.|\bhttps?(?=[:/])", re.IGNORECASE)
# An HTML/XML tag ("<br>", "</b>", "<img src=...>"): markup, not caption text ("a < b" and "<3" are no tags).
_MARKUP = re.compile(r"<[a-zA-Z/][^<>]*>")
# A period after a title, a common abbreviation or an initial ends no sentence: "Dr. Smith", "Mt. Fuji", "J. Doe".
_ABBREVIATION_DOT = re.compile(r"\b(?:(?i:dr|drs|mr|mrs|ms|mx|prof|sr|jr|st|ste|mt|mts|ft|gen|col|capt|lt|sgt|cpl|adm"
                               r"|gov|sen|rep|pres|rev|hon|fr|vs|ave|blvd|rd|hwy|no|nos|vol|vols|fig|figs|pp|approx|ca"
                               r"|etc|inc|ltd|co|corp|dept|est)|[A-Z])\.(?=\s)")
# A code after the last separator ("A barn - 16086", "A barn, ID 123456", "A barn - ABC123"): the ID a removed
# stock or file label leaves. A bare one needs five characters and three digits, so a year ("iPhone 12 - 2020"),
# a model or road number ("Boeing - 747", "Route 66") is none.
_ID_TAIL = re.compile(r"(?:\s[-–—|•·/｜／]|[,;:，；：、])\s+(?P<label>(?i:id|no\.|nr\.|ref\.?)\s*:?\s*|#\s*)?"
                      r"(?P<code>[A-Z\d]+(?:[-_][A-Z\d]+)*)\s*\.?$")
# A chat model's announcement kept with its answer: "The edited caption is: ...", "Revised caption - ...",
# "Sure, here is the new caption ...".
_LEAD_IN = re.compile(
    r"\b(?:(?:edited|revised|new|rewritten|improved|corrected|updated|final)\s+caption(?:\s*\([^()]{0,40}\))?"
    r"(?:\s+is)?|caption\s+is)"
    r"\s*(?::|[-–—](?=\s))|^\W*(?:the\s+)?caption\s*(?::|[-–—](?=\s))"
    r"|\bhere(?:\s+is|'s|’s)\s+(?:the|an?|my|your)\s+(?:\w+\s+)?caption\b"
    r"|^\W*(?:answer|output|response|edited|revised|rewritten|corrected)\s*:", re.IGNORECASE)
# A model declining the task ("I'm sorry, but I can't ...", "As an AI ...") or reporting its edit ("A cat on a mat.
# (I removed the credit line.)", "Note: ..."): talk about the caption, not a caption.
_VERBS_DECLINED = ("help|assist|provide|identify|determine|see|describe|view|access|tell|answer|comply|fulfil|fulfill|"
                   "do|generate|create|make|process|analy[sz]e|recogni[sz]e|caption|edit|rewrite|complete")
_REFUSAL = re.compile(
    r"^\W*(?:(?:I['’]m|I\s+am)\s+(?:sorry|afraid)\b[^.!?]*?\b(?:I|but|cannot|can['’]?t|unable)\b"
    r"|(?:I['’]m|I\s+am)\s+(?:unable|not\s+able)\s+to\b|sorry,?\s+(?:but\s+)?I\b|I\s+apologi[sz]e\b"
    rf"|I\s+(?:cannot|can['’]?t|could\s*n['’]?t|won['’]?t)\s+(?:{_VERBS_DECLINED})\b"
    r"|as\s+an\s+(?:AI|language\s+model)\b|unfortunately,?\s+I\b"
    # a model that saw no image, or judged the caption instead of editing it
    r"|I\s+(?:don['’]?t|do\s+not)\s+(?:see|have)\b"
    r"|(?:there\s+(?:is|was)\s+)?no\s+image\s+(?:is\s+|was\s+)?(?:provided|attached|given|shown|included)\b"
    r"|there\s+(?:is|was)\s+no\s+image\W*$"
    r"|no\s+(?:edits?|changes?|corrections?)\s+(?:are\s+|is\s+|were\s+)?(?:needed|necessary|required|made)\b"
    r"|the\s+(?:original\s+|given\s+)?caption\s+(?:is|seems|looks|appears)\s+(?:already\s+|to\s+be\s+)*"
    r"(?:accurate|correct|fine|good|appropriate|clean)\b"
    r"|the\s+(?:original\s+|given\s+)?caption\s+(?:does\s+not|doesn['’]t)\s+(?:match|describe|fit)\b)",
    re.IGNORECASE)
# an edit reported in the first person, or a note starting the caption or one of its sentences
_EDIT_VERBS = r"removed|deleted|dropped|changed|edited|corrected|rewrote|rewritten|fixed|replaced|updated"
_EDIT_REPORT = re.compile(rf"\bI(?:['’]ve|\s+have)?\s+(?:{_EDIT_VERBS})\b|(?:^|[.!?(]\s*)note\s*:"
                          rf"|\(\s*(?:{_EDIT_VERBS}|removing|deleting|dropping)\b", re.IGNORECASE)
_BIDI_MARKS = "\u200e\u200f\u061c"  # LRM, RLM, ALM: needed in right-to-left text, so kept if the original had them
# What a leftover after a sentence starts with ("A dog runs . | Jane Doe"), full-width forms included.
_SEPARATOR_START = "|-–—•·/,;:｜／，；：、،؛"  # Arabic comma and semicolon too
_SEPARATOR_END = tuple(",;:|/\\-–—•·+&([{、：，；｜／（［｛【《〈〔〖〘،؛")
# opening quotes and brackets as each language writes them, and signs
_OPENING_OK = "\"'“”‘«„‚»「『〝¿¡([{（［｛【《〈〔〖〘#@$€£"


def _is_punct_token(token: str) -> bool:
    return all(unicodedata.category(ch).startswith("P") or ch in "|+&~•·｜＋＆～" for ch in token)


def _lone_punctuation_runs(text: str) -> int:
    """Punctuation-only tokens that follow another punctuation-only token: ". ." ", -" "- |"."""
    tokens = text.split()
    return sum(1 for a, b in zip(tokens, tokens[1:]) if _is_punct_token(a) and _is_punct_token(b))


def _hebrew_letter(ch: str) -> bool:
    """A Hebrew letter or the point or accent on one (U+0591-05F2, less the punctuation among them)."""
    return "\u0591" <= ch <= "\u05f2" and unicodedata.category(ch)[0] in "LM"


_HEBREW_PREFIXES = "ובכלמשה"  # the letters written against a word: and, in, as, to, from, that, the


def _geresh(text: str, i: int) -> bool:
    """Whether the '"' or "'" at ``text[i]`` is a gershayim or geresh: between Hebrew letters ('צה"ל', 'ש"ח',
    'ח"כים', "ג'ירפה"), unless it follows only one or two prefix letters and a word follows it: that is a quote
    opened after a prefix ('ו"הארץ"', 'וב"הארץ"')."""
    if not (0 < i < len(text) - 1 and _hebrew_letter(text[i - 1]) and _hebrew_letter(text[i + 1])):
        return False
    start, end = i, i + 1
    while start > 0 and _hebrew_letter(text[start - 1]):
        start -= 1
    while end < len(text) and _hebrew_letter(text[end]):
        end += 1
    before = [ch for ch in text[start:i] if unicodedata.category(ch)[0] == "L"]
    after = [ch for ch in text[i + 1:end] if unicodedata.category(ch)[0] == "L"]
    return not (len(before) <= 2 and all(ch in _HEBREW_PREFIXES for ch in before) and len(after) >= 2)


def _quote_marks(text: str) -> str:
    """``text`` with each '"' or "'" that is a gershayim or geresh (``_geresh``) written as one (U+05F4,
    U+05F3): no quote mark, but the acronym in 'חיילי צה"ל' typed on a keyboard without the Hebrew marks.
    One character for one, so positions stay the text's."""
    if '"' not in text and "'" not in text:
        return text
    return "".join(("\u05f4" if ch == '"' else "\u05f3") if ch in "\"'" and _geresh(text, i) else ch
                   for i, ch in enumerate(text))


def _unbalanced(text: str) -> list[str]:
    text = _quote_marks(text)
    stack: list[str] = []
    broken = False
    for ch in text.translate(_FULL_WIDTH):
        if ch in _BRACKETS:
            stack.append(ch)
        elif ch in _BRACKETS.values() and (not stack or _BRACKETS[stack.pop()] != ch):
            broken = True
    found = ["unbalanced brackets"] if broken or stack else []
    if text.count('"') % 2 or _curly_quotes_unbalanced(text):
        found.append("unbalanced quotes")
    return found


# Which open curly quote each closing one may close: quotes pair by language, “…” (English), „…“ (German), „…”
# (Polish), ”…” (Swedish), «…» (French), »…« (German, Danish), 「…」 and 『…』. A quote that closes none opens one
# (“ in English, » in German), but 」 and 』 only close. Single quotes (‚…‘, ‘…’) are not checked: ’ is the apostrophe.
_CLOSES = {"“": "„", "”": "“„”", "»": "«", "«": "»", "」": "「", "』": "『"}
_OPENS_ONLY = "„「『"


def _curly_quotes_unbalanced(text: str) -> bool:
    """Whether a curly quote is left open or closes none (``_CLOSES``), each kind on its own: double quotes,
    guillemets, corner brackets."""
    open_quotes: dict[str, list[str]] = {"double": [], "guillemet": [], "corner": []}
    for ch in text:
        if ch not in _CLOSES and ch not in _OPENS_ONLY:
            continue
        stack = open_quotes["double" if ch in "“”„" else "guillemet" if ch in "«»" else "corner"]
        if ch in _CLOSES and stack and stack[-1] in _CLOSES[ch]:
            stack.pop()
        elif ch in "」』":
            return True
        else:
            stack.append(ch)
    return any(open_quotes.values())


def _empty_pairs(text: str) -> bool:
    return bool(re.search(r"\(\s*\)|\[\s*\]|\{\s*\}|【\s*】|《\s*》|〈\s*〉|〔\s*〕|\"\s*\"|“\s*”|„\s*[“”]",
                          _quote_marks(text).translate(_FULL_WIDTH)))


def _tail_fragment(text: str) -> str | None:
    """What follows the last sentence end, if it is one or two bare words ("A dog runs . Image") or
    starts with a separator ("A dog runs . | Jane Doe"): the stub a half-done removal leaves. The
    period of "Dr. Smith" is no sentence end."""
    masked = _ABBREVIATION_DOT.sub(lambda m: m.group(0)[:-1] + "\x00", text)  # same length, no end mark
    match = re.search(r"[.!?]\s+(\S[^.!?]*?)\s*$", masked)
    if not match:
        return None
    tail = text[match.start(1):match.end(1)]
    if tail[0] in _SEPARATOR_START:
        return tail
    words = _words(tail)  # as the drift check counts them: "東京タワーの夜景" is 8, no bare word or two
    return tail if len(words) <= 2 and not tail.endswith(('"', "”", ")")) else None


def _cut_tail(tail: str, original: str) -> bool:
    """Whether a bare-word tail is where the rewrite cut the original: the original has a sentence that
    starts with the same words (compared as the edit ratio compares them) and goes on with what was
    removed ("Lunch in Rome. Pasta time IMG_2041.JPG" -> "Lunch in Rome. Pasta time"). A rewrite that
    stops in the middle of text of its own has no such sentence in the original, a tail that starts
    with a separator is a leftover whatever the original had, and so is one that was a label there
    (``_label_there``: "A dog runs . Image: Jane Doe" -> "A dog runs . Image")."""
    if tail[0] in _SEPARATOR_START:
        return False
    want = [_comparable(w) for w in tail.split()]
    masked = _ABBREVIATION_DOT.sub(lambda m: m.group(0)[:-1] + "\x00", original).split()  # same tokens as split()
    raw = original.split()
    tokens = [_comparable(w) for w in raw]
    return any(masked[j - 1].endswith((".", "!", "?")) and tokens[j:j + len(want)] == want
               and not _label_there(raw, j, len(want))
               for j in range(1, len(tokens) - len(want) + 1))


def _label_there(raw: list[str], start: int, count: int) -> bool:
    """Whether the original's words ``raw[start:start + count]`` (a tail the rewrite kept) begin a label there:
    they are label words only ("Photo", "Photo credit", "Crédit", "Foto"), end on a byline ("Photo by"), or a
    colon follows them, maybe after further label words ("Image: Jane Doe", "Crédit photo : Jean Dupont",
    "Vintage photo: Jane Doe"). What a removal of the label's name leaves is its stub, no sentence."""
    kept = [_comparable(w) for w in raw[start:start + count]]
    if all(w in _LABEL_WORDS for w in kept) or kept[-1] in _BYLINE_WORDS:
        return True
    colon = (":", "：")
    if raw[start + count - 1].endswith(colon):
        return True
    for token in raw[start + count:]:
        if token.startswith(colon):
            return True
        if _comparable(token) not in _LABEL_WORDS:
            return False
        if token.endswith(colon):
            return True
    return False


_BLACK_FLAG = "\U0001F3F4"


def _in_flag_tag(text: str, i: int) -> bool:
    """Whether ``text[i]`` is a tag character (U+E0020-E007F) of a subdivision flag: a run of them after the
    black flag U+1F3F4 ("🏴" + "gbeng" + cancel tag is England's flag)."""
    if not "\U000E0020" <= text[i] <= "\U000E007F":
        return False
    j = i
    while j > 0 and "\U000E0020" <= text[j - 1] <= "\U000E007F":
        j -= 1
    return j > 0 and text[j - 1] == _BLACK_FLAG


def _invisible(text: str, allowed: str = "") -> bool:
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat == "Cc":
            return True
        if cat == "Cf" and ch not in allowed and not _in_flag_tag(text, i):
            if ch in "\u200c\u200d" and 0 < i < len(text) - 1 and not text[i - 1].isascii() \
                    and not text[i + 1].isascii():
                continue  # a joiner inside an emoji sequence or a script that needs it
            return True
    return False


def _irregular_space(text: str) -> bool:
    return text != text.strip() or "  " in text or any(ch.isspace() and ch not in " \u3000" for ch in text)


def _wrapped(text: str) -> bool:
    t = _quote_marks(text.strip().rstrip(".!?"))
    if len(t) < 3:
        return False
    pairs = {'"': '"', "“": "”", "«": "»", "„": "“", "「": "」"}
    return pairs.get(t[0]) == t[-1] and t[0] not in t[1:-1] and t[-1] not in t[1:-1]


def _clause_start(text: str, pos: int) -> bool:
    before = text[:pos].rstrip()
    return not before or not before[-1].isalnum()


def _own_words(candidate: str, match: re.Match, original: str | None) -> bool:
    """A stub inside a clause that the original has with the same word on either side (or ending it
    the same way): the caption's own words ("Power source: Solar panels"), not a removal's leftover."""
    if original is None or _clause_start(candidate, match.start()):
        return False
    before = re.search(r"\S+\s*$", candidate[:match.start()]).group(0)
    after = re.match(r"\s*\S+", candidate[match.end():])
    tokens = (before + match.group(0) + (after.group(0) if after else "")).split()
    pattern = r"(?<!\S)" + r"\s+".join(map(re.escape, tokens)) + (r"(?!\S)" if after else r"\s*$")
    return re.search(pattern, original) is not None


def _stub(candidate: str, original: str | None) -> str | None:
    """The first label, bracket or end stub a removal left. A label inside a clause followed by a
    lower-case word is prose ("Power source: solar panels"); at a clause start, at the end or before a
    name it is a label ("A dog . Credit: Jane Doe", "A dog Photo:")."""
    for m in _LABEL_STUB.finditer(candidate):
        after = candidate[m.end():].lstrip()
        labels = (_clause_start(candidate, m.start()) or not any(ch.isalnum() for ch in after)
                  or after[0].isupper() or after[0].isdigit() or after[0] in "@©")
        if labels and not _own_words(candidate, m, original):
            return m.group(0).strip()
    bracket = _BRACKET_STUB.search(candidate)
    if bracket:
        return bracket.group(0).strip()
    end = _END_STUB.search(candidate)
    if end and (end.group("prep") or end.group("media") or _clause_start(candidate, end.start())) \
            and not _own_words(candidate, end, original):
        return end.group(0).strip()
    return None


# Words a finished caption does not end on: an article, a possessive, a preposition that is no particle ("looks on",
# "stands by" end captions), a conjunction, a copula, or a verb that needs its object. Lower case only: "Vitamin A",
# "Gate A", "Portland, OR" end on names.
_DANGLING_END = re.compile(
    r"(?<![\w'’-])(a|an|the|of|at|to|for|with|from|into|onto|and|or|but|nor|than"
    r"|is|are|was|were|not|cost|costs|my|your|his|their|our|its|vs|versus"
    # a verb that needs its object: what it displays or offers was cut ("Shop window displaying", "a store offering";
    # not "features", "shows": a caption ends on those nouns)
    r"|displaying|showing|offering|advertising|announcing|promoting|featuring)\s*$")


def _dangling_end(candidate: str, original: str | None) -> str | None:
    """The function word the candidate stops on where a removal cut the original in mid-clause: the original goes on
    after it with a further word, no separator between ("Container ships wait in an international shipping lane" ->
    "... wait in an"). A cut at a separator, tag or bracket leaves a whole clause ("Der Zug kommt am Bahnhof an -
    Foto: Jane Doe" -> "... am Bahnhof an"; "an" is a German particle, "but" French for goal), and a fresh caption
    (no original) cut nothing."""
    match = _DANGLING_END.search(candidate)
    if match is None or original is None:
        return None
    last = candidate[:match.end()].split()[-3:]  # the cut's last words, to find it in the original
    cut = r"(?<!\S)" + r"\s+".join(map(re.escape, last)) + r"\s+[\"'“‘«„‚「『]?[\w$€£¥]"  # a quoted word goes on too
    return match.group(1) if re.search(cut, html.unescape(original), re.IGNORECASE) else None


def _in_original(text: str, original: str) -> bool:
    """Whether the original has ``text`` (case-folded, any whitespace) as words of its own."""
    words = r"\s*".join(map(re.escape, text.split()))
    edges = (r"(?<!\w)" if text[:1].isalnum() else "") + words + (r"(?!\w)" if text[-1:].isalnum() else "")
    return re.search(edges, original, re.IGNORECASE) is not None


def _id_tail(candidate: str, original: str | None) -> str | None:
    """The separator and code ending the candidate, if they look like an ID a removal left: the original had
    the code, but not after that separator ("- royalty free image 16086" -> "- 16086"). With no original
    (a fresh caption) nothing was removed, so nothing was left."""
    match = _ID_TAIL.search(candidate)
    if match is None or original is None:
        return None
    code = match.group("code")
    if sum(ch.isdigit() for ch in code) < 3 or (not match.group("label") and len(code) < 5):
        return None
    tail = match.group(0).strip().rstrip(".")
    return tail if _in_original(code, original) and not _in_original(tail, original) else None


def _lead_in(candidate: str, original: str | None) -> str | None:
    """A model's "The edited caption is:" the original did not have (a caption may be about a caption)."""
    match = _LEAD_IN.search(candidate)
    if match is None or (original is not None and _in_original(match.group(0), original)):
        return None
    return match.group(0).strip()


def _model_talk(candidate: str, original: str | None) -> str | None:
    """A refusal or a report of the edit the original did not have (a caption may quote one: "Sorry" the film),
    apostrophes compared as one (the cleaner repairs "Iâ€™m" to "I’m")."""
    def apostrophes(text: str) -> str:
        return text.replace("â€™", "'").replace("’", "'")

    for kind, pattern in (("model refusal", _REFUSAL), ("model commentary", _EDIT_REPORT)):
        match = pattern.search(candidate)
        said = match.group(0).strip(" \t\n\"'“‘([.!?") if match else ""
        if match and not (original is not None and _in_original(apostrophes(said), apostrophes(original))):
            return f"{kind} {match.group(0).strip(' .!?(')!r}"
    return None


# A quote mark that only opens: where it ends a caption, what it quoted was cut away.
_CLOSES_EARLIER = {"“": "„", "«": "»", "‘": "‚"}  # German „…“, Danish »…«, German ‚…‘: these close a quote too
# An apostrophe that starts a word it shortens ('90s, '19, 'til, 'em, rock 'n' roll): no quote opens there. Written
# here, not taken from captions.patterns: this check shares no pattern with the cleaner's.
_ELISION = re.compile(r"(?:til|tis|twas|em|cause|n|\d\ds)\b|\d\d\b(?!\s*(?:%|¢|€|\$|£|cents?\b|percent\b|pence\b"
                      r"|off\b))", re.IGNORECASE)


def _dangling_quote(text: str) -> bool:
    """The caption ends on a quote mark alone after a space that opens a quote rather than closing one: a '"' is the
    odd one of its kind (tokenised captions space closing quotes: 'says " active . "' is finished); a "'" opens where
    no quote is open, read past apostrophes and elisions ("kids'", "'90s"); a curly one opens unless it closes an
    open quote of another language's ("„Sale“")."""
    if len(text) < 2 or not text[-2].isspace() or text[-1] not in "\"'“‘«„‚「『":
        return False
    mark, body = text[-1], text[:-1]
    if mark == '"':  # never an apostrophe: the odd one opens
        return body.count('"') % 2 == 0
    if mark == "'":  # an apostrophe inside or ending a word ("dog's", "kids'") closes only a quote that is open
        quoting = False
        for i, ch in enumerate(body):
            if ch != "'":
                continue
            before = body[i - 1] if i else " "
            after = body[i + 1] if i + 1 < len(body) else " "
            if before.isspace() and after.isspace():  # tokenised: "says ' open '" opens, then closes
                quoting = not quoting
            elif not quoting and not before.isalnum() and not after.isspace() \
                    and not _ELISION.match(body, i + 1):  # '90s, 'til: no quote
                quoting = True
            elif quoting and not before.isspace() and not after.isalnum():
                quoting = False
        return not quoting
    # a mark that also closes another language's quote does so only where one of those is open
    return not (mark in _CLOSES_EARLIER and body.count(_CLOSES_EARLIER[mark]) > body.count(mark))


# Words a stock or credit label is made of: a last segment of only these is what is left of one ("- Free Stock" of
# "- Free Stock Photo by Pixabay").
_STUB_WORDS = _LABEL_WORDS | frozenset(("free", "stock", "royalty", "royalty-free", "hd", "vector"))
_LAST_SEGMENT = re.compile(r"\s[-–—|•·｜]\s+([^-–—|•·｜]+?)\s*$")


def _label_tail(candidate: str, original: str | None) -> str | None:
    """The separator and last segment ending the candidate, where that segment is only label words and the original
    went on after it in the same segment: the stub a cut in the middle of a label left. A whole segment the original
    had ("Tibet - Free", "Tibet - Free #travel"), or a fresh caption, is no leftover."""
    match = _LAST_SEGMENT.search(candidate)
    if match is None or original is None:
        return None
    words = [_comparable(w) for w in match.group(1).split()]
    if not words or not all(w in _STUB_WORDS for w in words):
        return None
    segment = r"\s+".join(map(re.escape, match.group(1).split()))
    # whole where the original's segment ended there: at its end, a separator, an end mark or a tag ("#travel")
    whole = re.search(r"(?:^|[-–—|•·｜]\s*)" + segment + r"(?:\s*(?:$|[-–—|•·｜.!?,;])|\s+[#@])", original,
                      re.IGNORECASE)
    return None if whole else match.group(0).strip()


def _starts_with_punctuation(candidate: str, original: str | None) -> bool:
    """A leading mark that is not part of the first word: "-5 degrees" and ".5 mm" start with a number,
    and ".NET" is a word when the original started with it too."""
    first = candidate.split()[0]
    if not _is_punct_token(first[0]) or first[0] in _OPENING_OK:
        return False
    if first[0] in "-." and first[1:2].isdigit():
        return False
    return not (any(ch.isalnum() for ch in first) and original is not None and original.split()[:1] == [first])


def _link_debris(candidate: str, original: str | None) -> bool:
    """A piece of a link the original did not hold whole: one kept as it was (a sign reading "www.shop.com")
    is the caption's own text, not what a removal left."""
    pieces = [t.strip(".,;:!?\"'()[]") for t in candidate.split() if _LINK_DEBRIS.search(t)]
    whole = {t.strip(".,;:!?\"'()[]") for t in (original or "").split()}
    return any(piece not in whole for piece in pieces)


def wellformedness_problems(candidate: str, original: str | None = None) -> list[str]:
    """What is broken about a rewrite, in words; empty when it looks like a finished caption. Defects
    the original already had (unbalanced brackets or quotes, empty pairs, lone punctuation, a short last
    sentence the rewrite cut the noise after, markup present as it came) do not count against the rewrite;
    leftovers (label stubs, model lead-ins, link debris, markup that unescaping made, separators, IDs cut from
    their label, invisible characters) do."""
    problems = []
    # one normal form: a caption in NFD and its rewrite in NFC (as models write) compare as the same text
    candidate = unicodedata.normalize("NFC", candidate)
    original = unicodedata.normalize("NFC", original) if original is not None else None
    # markup the original had as it came (not only once unescaped: "&lt;br&gt;" turned into "<br>" is new markup)
    raw_tags = set(_MARKUP.findall(original)) if original is not None else set()
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
    stub = _stub(candidate, original)
    if stub:
        problems.append(f"dangling {stub!r}")
    lead_in = _lead_in(candidate, original)
    if lead_in:
        problems.append(f"model lead-in {lead_in!r}")
    talk = _model_talk(candidate, original)
    if talk:
        problems.append(talk)
    if _link_debris(candidate, original):
        problems.append("link debris")
    tags = [t for t in _MARKUP.findall(candidate) if t not in raw_tags]
    if tags:
        problems.append(f"markup {tags[0]!r}")
    stripped = candidate.strip()
    if stripped.endswith(_SEPARATOR_END):
        problems.append(f"trailing separator {stripped[-1]!r}")
    elif _dangling_quote(stripped):  # "A store window with a '": the quote's text was cut away
        problems.append(f"dangling quote {stripped[-1]!r}")
    if stripped and _starts_with_punctuation(stripped, original):
        problems.append(f"starts with {stripped[0]!r}")
    id_tail = _id_tail(stripped, original)
    if id_tail:
        problems.append(f"dangling ID {id_tail!r}")
    dangling = _dangling_end(stripped, original)
    if dangling:
        problems.append(f"ends on {dangling!r}")
    tail = _tail_fragment(candidate)
    if tail is not None and (original is None or (_tail_fragment(original) != tail and not _cut_tail(tail, original))):
        problems.append(f"dangling fragment {tail!r}")
    elif (label := _label_tail(stripped, original)) is not None:
        problems.append(f"dangling label {label!r}")
    if _lone_punctuation_runs(candidate) > (_lone_punctuation_runs(original) if original is not None else 0):
        problems.append("lone punctuation")
    if _invisible(candidate, "".join(ch for ch in _BIDI_MARKS if original is not None and ch in original)):
        problems.append("invisible or control characters")
    if _irregular_space(candidate):
        problems.append("irregular whitespace")
    if _wrapped(candidate):
        problems.append("quotes around the whole caption")
    return problems


_NUMBER_RE = re.compile(r"\d+(?:[.,:]\d+)*")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # "1,000" is 1000
# number words a rewrite may write for a figure ("three dogs" -> "3 dogs", "twenty-three" -> "23", "a hundred" ->
# "100"); "one" alone is no figure, as it is as often "a", nor "a" (or "one") but before a scale word
_UNITS = {word: n for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {word: 10 * n for n, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(),
                                                start=2)}
_SCALES = {"dozen": 12, "hundred": 100, "thousand": 1000, "million": 10 ** 6, "billion": 10 ** 9}
_NUMBER_PARTS = {**_UNITS, **_TENS, **_SCALES}
_NEGATIONS = frozenset({"not", "no", "never", "without", "nothing", "nobody", "none", "neither", "nor", "cannot"})
_LINKING = frozenset({"a", "an", "the", "be", "been", "being", "to", "any", "very", "so", "yet", "even"})  # "not a cat"


def _negation(word: str) -> bool:
    return word in _NEGATIONS or word.endswith(("n't", "n’t"))


# the numerals of Chinese and Japanese that stand for one digit each ("三只猫": three cats); a run of them (二十三) is
# read as written
_CJK_NUMERALS = "〇零一二三四五六七八九十百千万"
_CJK_NUMERAL_RE = re.compile(f"[{_CJK_NUMERALS}]+")
_CJK_DIGITS = frozenset("〇零二三四五六七八九")


def _ascii_digits(text: str) -> str:
    """Every decimal digit as its ASCII one: "٣ قطط" states the 3 of "3 قطط"."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() and not ch.isascii() else ch for ch in text)


def _numbers(text: str) -> dict[tuple[str, ...], str]:
    """The figures a caption states, each as its digit runs ("10.30" and "10:30" alike, "1,000" as 1000, "three"
    as 3, "٣" as 3, "三" as 3) -> as written."""
    text = _ascii_digits(text)
    found = {tuple(re.split(r"[.,:]", n)): n for n in _NUMBER_RE.findall(_THOUSANDS_RE.sub("", text))}
    for value, written in _number_words(_edit_words(text)):
        found.setdefault((str(value),), written)
    for run in _CJK_NUMERAL_RE.findall(text):
        if _CJK_DIGITS.isdisjoint(run):  # 一 alone is as often "a" (一只猫) or a word's (一起, 千葉): no figure
            continue
        found.setdefault((str(int(unicodedata.numeric(run))),) if len(run) == 1 else (run,), run)
    return found


def _figures_with_words(text: str) -> list[tuple[tuple[str, ...], str]]:
    """Each figure in digits or English words with the word after it ("3 dogs": ("3",), "dogs"; a unit as its
    canonical spelling), in order: what a count or a measure is of. A figure followed by a joining word ("10 and
    7") is of nothing told."""
    words = _edit_words(_ascii_digits(_THOUSANDS_RE.sub("", text)))
    ends, pos = {}, 0  # the index of each figure-in-words' last word -> its value
    for value, written in _number_words(words):
        parts = written.split()
        for j in range(pos, len(words) - len(parts) + 1):
            if words[j:j + len(parts)] == parts:
                ends[j + len(parts) - 1], pos = str(value), j + len(parts)
                break
    out = []
    for i, word in enumerate(words[:-1]):
        figure = tuple(re.split(r"[.,:]", word)) if _NUMBER_RE.fullmatch(word) else (
            (ends[i],) if i in ends else None)
        if figure is not None and words[i + 1] not in _JOINING_WORDS:
            out.append((figure, _UNIT_SPELLINGS.get(words[i + 1], words[i + 1])))
    return out


_JOINING_WORDS = frozenset("and or & to of by x - – the a an".split())


def _figure_moved(original: str, candidate: str) -> str | None:
    """A figure the rewrite put on another word: one the original gave to a different figure ("Three dogs and two
    cats" -> "Two dogs and three cats"), or a unit for another ("5 kg" -> "5 lb")."""
    had = _figures_with_words(original)
    for figure, word in _figures_with_words(candidate):
        if (figure, word) in had:
            continue
        # it was on another word, and this word on another figure ("Players 10 and 7" tell no word of 10: a
        # reordered list moves nothing)
        others = [f for f, w in had if w == word and f != figure]
        if others and any(f == figure and w != word for f, w in had):
            return f"{' '.join(figure)} {word} (the original: {' '.join(others[0])} {word})"
        was = [w for f, w in had if f == figure and w in _UNITS_OF_MEASURE]
        if word in _UNITS_OF_MEASURE and was and word not in was:
            return f"{' '.join(figure)} {word} (the original: {' '.join(figure)} {was[0]})"
    return None


# each unit's spellings -> one: "5 lb" and "5 pounds" are the same measure
_UNIT_SPELLINGS = {spelling: unit for unit, spellings in {
    "mm": "mm millimetre millimetres millimeter millimeters", "cm": "cm centimetre centimetres centimeter centimeters",
    "m": "m metre metres meter meters", "km": "km kilometre kilometres kilometer kilometers",
    "in": "in inch inches", "ft": "ft foot feet", "yd": "yd yard yards", "mi": "mi mile miles",
    "mg": "mg milligram milligrams", "g": "g gram grams", "kg": "kg kilo kilos kilogram kilograms",
    "lb": "lb lbs pound pounds", "oz": "oz ounce ounces", "ml": "ml millilitre millilitres milliliter milliliters",
    "l": "l litre litres liter liters", "gal": "gal gallon gallons", "mph": "mph", "kmh": "kph kmh km/h",
    "°c": "°c celsius", "°f": "°f fahrenheit", "%": "% percent", "s": "s sec secs second seconds",
    "min": "min mins minute minutes", "h": "h hr hrs hour hours", "day": "day days", "week": "week weeks",
    "month": "month months", "yr": "yr yrs year years", "w": "w watt watts", "v": "v volt volts",
    "gb": "gb", "mb": "mb", "tb": "tb", "mp": "mp megapixel megapixels", "px": "px pixel pixels",
}.items() for spelling in spellings.split()}
_UNITS_OF_MEASURE = frozenset(_UNIT_SPELLINGS.values())


def _number_words(words: list[str]) -> list[tuple[int, str]]:
    """Each figure written in English words, as its value and its words: "twenty-three" and "twenty three" 23,
    "a hundred" 100, "two hundred and five" 205, "a dozen" 12, "seven-year-old" 7. "one" alone is no figure;
    words that do not make one number ("five six", "three and two") are figures each, and so is the number a
    hyphenated modifier starts ("forty five-star hotels": 40 and 5)."""
    pieces = [(i, piece) for i, word in enumerate(words) for piece in word.split("-")]
    # the pieces that start a word that is not all number words: those never continue an earlier word's number
    modifiers = {k for k, (i, piece) in enumerate(pieces) if (k == 0 or pieces[k - 1][0] != i)
                 and not all(p in _NUMBER_PARTS for p in words[i].split("-"))}
    out: list[tuple[int, str]] = []
    k = 0
    while k < len(pieces):
        first, total, current, parts, last = pieces[k][0], 0, 0, [], None
        if pieces[k][1] in ("a", "one") and k + 1 < len(pieces) and pieces[k + 1][1] in _SCALES:
            current, last, k = 1, "unit", k + 1  # "a hundred": one hundred
        while k < len(pieces):
            piece = pieces[k][1]
            if piece == "and" and last == "scale" and k + 1 < len(pieces) and pieces[k + 1][1] in _NUMBER_PARTS:
                k += 1  # "two hundred and five"
                continue
            if parts and k in modifiers:
                break
            kind = ("scale" if piece in _SCALES else "tens" if piece in _TENS else
                    "unit" if piece in _UNITS and _UNITS[piece] < 10 else "teen" if piece in _UNITS else None)
            if kind is None or not (last is None or (last == "tens" and kind == "unit" and _UNITS[piece] > 0)
                                    or (last == "scale" and kind != "scale") or (last != "scale" and kind == "scale")
                                    or (kind == last == "scale" and _SCALES[piece] > _SCALES[parts[-1]])):
                break  # "two hundred thousand" is one number; "five six" two
            if kind == "scale":
                current = max(current, 1) * _SCALES[piece]
                if _SCALES[piece] >= 1000:  # "two thousand three hundred": the thousands are done
                    total, current = total + current, 0
            else:
                current += _NUMBER_PARTS[piece]
            parts.append(piece)
            last, end, k = kind, pieces[k][0], k + 1
        if parts and parts != ["one"]:
            out.append((total + current, " ".join(words[first:end + 1])))
        elif not parts:
            k += 1
    return out


def _negation_gone(before: list[str], after: list[str]) -> str | None:
    """A negation of ``before`` whose word ``after`` keeps with none before it: "'not' before 'smiling'"."""
    for i, word in enumerate(before):
        negated = next((w for w in before[i + 1:i + 4] if w not in _LINKING), None) if _negation(word) else None
        if negated is None or (word == "no" and negated.isdigit()):  # "No. 10 Downing Street": a number's sign
            continue
        kept = [j for j, w in enumerate(after) if w == negated]
        if kept and not any(_negation(w) for j in kept for w in after[max(0, j - 3):j]):
            return f"{word!r} before {negated!r}"
    return None


def changed_facts(original: str, candidate: str) -> str | None:
    """What a rewrite changed that its words' scores cannot see, in words, or None: a figure the original does
    not state ("Built in 1850" -> "Built in 1950"; "three" -> "3" and "1,000" -> "1000" are the same), or an
    English negation gone from before a word the rewrite keeps ("a man who is not smiling" -> "a man who is
    smiling"), or put before one ("smiling" -> "not smiling"). Removing noise adds no figure and keeps its words'
    negations. Negations of other languages are not read."""
    had = _numbers(original)
    new = [written for figure, written in _numbers(candidate).items() if figure not in had]
    if new:
        return f"a number the original does not have ({new[0]})"
    if moved := _figure_moved(original, candidate):
        return f"a number on another word ({moved})"
    before, after = _edit_words(original), _edit_words(candidate)
    if gone := _negation_gone(before, after):
        return f"a negation dropped ({gone})"
    if added := _negation_gone(after, before):
        return f"a negation added ({added})"
    return None


def judge(quality_before: float, quality_after: float, edit: float, length: float, similarity: float,
          rules: AcceptanceRules, *, original: str | None = None,
          candidate: str | None = None, fresh: bool | None = None, weak: str | None = None,
          needs: float | None = None) -> tuple[bool, str]:
    """Accepted or not, and the first reason that decided it. ``needs``: the least score that publishes the pair
    (its decision's ``rewrite_needs``, above ``rules.min_quality`` outside the keep_fraction cut or failing
    keep_expression); a rewrite under it is rejected, not accepted and then dropped. With ``candidate`` given and
    ``rules.check_wellformed`` on, the well-formedness check must pass too, whatever the score says.
    A fresh caption (``fresh``; when None: ``candidate`` given and no caption to edit in ``original``,
    ``base.no_caption_to_edit``) is not an edit: the edit-ratio, length and similarity bounds do not
    apply, and the original (no caption, or only an image placeholder) excuses nothing in its shape."""
    if math.isnan(quality_after):
        return False, "rewrite could not be scored"
    if fresh is None:
        fresh = candidate is not None and no_caption_to_edit(original)
    if candidate is not None and rules.check_wellformed:
        problems = wellformedness_problems(candidate, None if fresh else original)
        if problems:
            return False, "malformed rewrite: " + "; ".join(problems)
    if not fresh and candidate is not None and original is not None and candidate == original:
        # the original again is no rewrite: accepted, it would publish a pair its decision filtered out (a fix of
        # whitespace, case or quotes alone is a change)
        return False, "no change: the candidate is the original"
    if rules.keep_facts and not fresh and candidate is not None and original is not None:
        fact = changed_facts(original, candidate)
        if fact:
            return False, f"changes what a text-only judge cannot check: {fact}"
    if weak:  # the candidate's own scores hit a bound that makes a caption weak (``AcceptanceRules.still_weak``)
        return False, f"still {weak} after rewriting (fallback: drop publishes no caption failing a caption rule)"
    # an unknown score before (NaN) is no score to beat but the margin over 0; the reason says unknown, never 0
    before = 0.0 if math.isnan(quality_before) else quality_before
    shown, after_shown = _shown(before, quality_after)
    shown = "unknown" if math.isnan(quality_before) else shown
    if not _improved(before, quality_after, rules.min_improvement):
        return False, f"score did not improve enough ({shown} -> {after_shown}, need +{rules.min_improvement:g})"
    if rules.min_quality is not None and quality_after < rules.min_quality:
        floor_shown, after_shown = _shown(rules.min_quality, quality_after)
        return False, f"still weak after rewriting ({after_shown} < {floor_shown})"
    if needs is not None and not math.isnan(needs) and quality_after < needs:
        return False, f"short of what its filter needs ({needs_shown(quality_after, needs)})"
    if fresh:
        edit = length = similarity = math.nan
    if rules.max_edit_ratio is not None and not math.isnan(edit) and edit > rules.max_edit_ratio:
        return False, f"edit ratio {edit:.2f} > {rules.max_edit_ratio:g} (not minimal)"
    if rules.min_length_ratio is not None and not math.isnan(length) and length < rules.min_length_ratio:
        return False, f"length ratio {length:.2f} < {rules.min_length_ratio:g}"
    if rules.max_length_ratio is not None and not math.isnan(length) and length > rules.max_length_ratio:
        return False, f"length ratio {length:.2f} > {rules.max_length_ratio:g}"
    if rules.min_similarity is not None and not math.isnan(similarity) and similarity < rules.min_similarity:
        return False, f"semantic similarity {similarity:.2f} < {rules.min_similarity:g} (meaning changed)"
    return True, f"score improved {shown} -> {after_shown}"


def _improved(before: float, after: float, margin: float) -> bool:
    """A gain of at least ``margin`` (a gain equal to it passes, though 0.3 - 0.2 is 0.0999... in binary); a margin
    of 0 asks for a gain at all ("accepted only if it scores better": a tie is no improvement). Only a negative
    margin, which code may set (the settings may not), lets a rewrite score lower."""
    gain = after - before
    tolerance = 1e-9 * max(1.0, abs(before), abs(after))
    return gain > tolerance if margin == 0 else gain >= margin - tolerance


def _just_above(needs: float) -> float | None:
    """The plain number ``needs`` is the float just above (a tie at the keep_fraction cut whose tie-break place is
    out must score above the cut score), else None."""
    below = math.nextafter(needs, -math.inf)
    return below if float(f"{below:.12g}") == below and float(f"{needs:.12g}") != needs else None


def need_text(needs: float) -> str:
    """The least score that publishes a pair, as a reason says it: ``at least 95``, or ``above 100 (...)``."""
    below = _just_above(needs)
    if below is not None:
        return f"above {below:g} (at {below:g} its tie-break place is outside the keep_fraction cut)"
    return f"at least {needs:g}"


def needs_shown(score: float, needs: float) -> str:
    """``score`` against the least score that publishes a pair, as a reason prints them: ``90 < 95``, or ``90, not
    above 90``."""
    below = _just_above(needs)
    if below is not None:
        shown, cut = _shown(score, below)
        return f"{shown}, not above {cut}"
    shown, need = _shown(score, needs)
    return f"{shown} < {need}"


def _shown(a: float, b: float) -> tuple[str, str]:
    """Two scores as a reason prints them: 3 significant digits, more where those would make different
    scores look equal ("59.99 < 60", not "60 < 60")."""
    for digits in (3, 4, 6, 10, 17):
        shown = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if shown[0] != shown[1] or a == b:
            return shown
    return shown

