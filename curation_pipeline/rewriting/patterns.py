"""Caption defects as regexes and small functions: the one source of truth.

``scoring.text_quality`` uses them to flag a caption and ``rewriting.cleaner`` uses
the very same ones to repair it, so a caption the cleaner fixed can no longer fire
the rule that flagged it. Everything is precompiled because the scorer must handle
tens of thousands of captions per second.
"""

from __future__ import annotations

import html
import re

_IMAGE_EXT = r"(?:jpe?g|png|gif|bmp|tiff?|webp|heic|dng|cr2|nef|mp4|mov)"

# Dotted names (example.com, my.photo.jpg) only start at a token start: starting at
# every word boundary would make a long dotted or hyphenated token cost O(n^2).
URL_RE = re.compile(
    r"(?:\b(?:https?|ftp)://|\bwww\.)\S+"
    r"|(?<![\w.-])[\w-]+(?:\.[\w-]+)*\.(?:com|net|org|info|biz|io|ly|co\.uk)\b(?:/\S*)?",
    re.IGNORECASE,
)

FILENAME_RE = re.compile(
    # Phone / desktop screenshots and messenger exports, with their timestamps.
    r"\b(?:screen[\s_-]?shot|whatsapp[\s_-]image)[\s_-]*\d{4}-?\d{2}-?\d{2}"
    r"(?:[\s_-]*(?:at)?[\s_-]*\d{1,2}[.:_-]?\d{2}(?:[.:_-]?\d{2})?(?:\s?[ap]m)?)?"
    rf"(?:\.{_IMAGE_EXT})?\b"
    # Camera file names, with or without an extension (IMG_2041, DSC00123, P1010123).
    # Case-sensitive prefixes, so "Uncle Sam_1776" or "dji" in prose stay out.
    r"|\b(?-i:IMG|img|DSC[NF]?|dsc[nf]?|DCIM|PXL|MVIMG|GOPR|DJI|CIMG|PICT|SAM)[_-]?\d{3,}(?:[_-]\d+)*"
    rf"(?:\.{_IMAGE_EXT})?\b"
    rf"|\bP\d{{7}}(?:\.{_IMAGE_EXT})?\b"
    # Anything that ends in an image or video extension (2041.jpg, my-photo.PNG).
    rf"|(?<![\w.-])[\w-]+(?:\.[\w-]+)*\.{_IMAGE_EXT}\b",
    re.IGNORECASE,
)

_NAME = r"(?-i:(?:@\w+|[A-Z][\w'’.&-]*(?:\s+[A-Z][\w'’.&-]*){0,3}))"
_MEDIA = r"(?:photos?|images?|pictures?|photography|footage|vectors?|illustrations?)"
_STOCK_SITES = (
    r"(?:shutterstock|alamy|getty\s*images|istock(?:photo)?|dreamstime|depositphotos"
    r"|123rf|adobe\s+stock|fotolia|bigstock(?:photo)?|pixabay|unsplash|pexels)(?:\.com)?"
)
BOILERPLATE_RE = re.compile(
    r"(?<!\w)(?:"
    rf"(?:(?:on|via|from|at)\s+)?{_STOCK_SITES}"
    rf"|royalty[\s-]free(?:\s+stock)?(?:\s+{_MEDIA})?(?:\s+(?:of|for))?"
    rf"|stock\s+{_MEDIA}(?:\s+(?:of|for))?"
    r"|free\s+(?:stock\s+)?(?:photos?|images?|pictures?)(?:\s+(?:of|for))?"
    r"|image\s+may\s+contain"
    r"|click\s+(?:(?:here|image|photo|picture)\s+)?(?:to|for)\s+(?:enlarge|zoom(?:\s+in)?"
    r"|view\s+(?:larger|full(?:\s+size)?)|(?:a\s+)?larger(?:\s+(?:image|view|version))?)"
    r"|(?:view|see)\s+(?:larger|full[\s-]size)(?:\s+(?:image|photo|picture|version))?"
    r"|all\s+rights\s+reserved"
    r"|(?:free\s+)?downloads?(?:\s+(?:free|now|here))?"
    r"|thumbnails?(?:\s+(?:image|photo|picture))?(?:\s+(?:of|for))?"
    rf"|(?:photo|image|picture|photograph|pic)s?\s+(?:by|courtesy(?:\s+of)?|credit)\s*:?\s*{_NAME}"
    rf"|(?:©|\(c\)|copyright)\s*(?:\d{{4}}(?:\s*-\s*\d{{4}})?\s*)?{_NAME}?"
    r")(?!\w)",
    re.IGNORECASE,
)

# A hashtag must hold a letter: "#1 fan" is a rank, and "&#39;" an entity.
_TAG = r"#\w*[^\W\d_]\w*"
HASHTAG_RE = re.compile(r"(?<![\w#&])#(\w*[^\W\d_]\w*)")
# Hashtags to drop: a run of two or more anywhere, or a single one ending the caption.
# Group 1 is the word before (to tell "on the #beach" from "sunset #nofilter"),
# group 3 the sentence mark after it, which is kept.
_DROPPED_HASHTAGS_RE = re.compile(
    rf"(?:(?<=\s)|^)([^\s#]\S*\s+)?({_TAG}(?:[\s,]+{_TAG})+|{_TAG}(?=[.!?]?\s*$))([.!?]?)"
)
# A dropped run after one of these words keeps its first word: "a walk on the #beach".
INLINE_HASHTAG_PRECEDERS = frozenset(
    "a an the my our your his her their its this that these those on in at of for with to"
    " from by and or into onto near over under".split()
)

ENTITY_RE = re.compile(r"&(?:[a-zA-Z][a-zA-Z0-9]{1,31}|#\d{1,7}|#[xX][0-9a-fA-F]{1,6});")

# Alphabetic n-grams (1-4 words) repeated back to back, case-insensitively.
# The lazy {0,3}? tries the shortest unit first, so "a a a a" is one run of "a".
REPEAT_RE = re.compile(r"\b([^\W\d_]+(?:\s+[^\W\d_]+){0,3}?)(?:\s+\1\b)+", re.IGNORECASE)
# Doubled words that are usually meant ("she had had enough", "very very tall"); a
# capitalised double is a name ("Bora Bora", "New York New York") and is kept too.
ALLOWED_DOUBLES = frozenset({"had", "that", "very", "bye", "ha", "no", "so"})

WORD_RE = re.compile(r"[^\W\d_]+")
# Scripts written without spaces between words (CJK ideographs, kana, Thai, Lao,
# Khmer, Myanmar): whitespace tokens undercount their words.
NO_SPACE_SCRIPT_RE = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1780-\u17ff\u1000-\u109f]"
)
WHITESPACE_RE = re.compile(r"\s+")

# Cheap necessary conditions, checked first so clean captions skip the full patterns.
_URL_HINT_RE = re.compile(r"://|www\.|\.(?:com|net|org|info|biz|io|ly|co\.uk)\b", re.IGNORECASE)
_FILENAME_HINT_RE = re.compile(rf"\d|\.{_IMAGE_EXT}\b", re.IGNORECASE)


def unescape_html(text: str) -> str:
    """Decode ``&amp;``-style entities until stable: scraped alt text is often escaped twice.

    Only well-formed entities with a ``;`` are decoded; html.unescape on the whole
    string would also turn "Terms &notice" into "Terms ¬ice".
    """
    while True:
        decoded = ENTITY_RE.sub(lambda m: html.unescape(m.group(0)), text)
        if decoded == text:
            return text
        text = decoded


def has_html_entity(text: str) -> bool:
    return ENTITY_RE.search(text) is not None and unescape_html(text) != text


def _collapse_one(match: re.Match) -> str:
    phrase, whole = match.group(1), match.group(0)
    copies = len(WHITESPACE_RE.split(whole)) // len(WHITESPACE_RE.split(phrase))
    if copies == 2:
        second = whole[len(phrase):].lstrip()
        if phrase.lower() in ALLOWED_DOUBLES or (phrase[0].isupper() and second[0].isupper()):
            return whole
    return phrase


def collapse_repeats(text: str) -> str:
    """Keep one copy of each back-to-back repeated word or short phrase, until none is left."""
    while True:
        collapsed = REPEAT_RE.sub(_collapse_one, text)
        if collapsed == text:
            return text
        text = collapsed


def has_repeat_run(text: str, words: list[str] | None = None) -> bool:
    """``words``: the caption's ``WORD_RE`` matches, if the caller already has them.

    Every repeat REPEAT_RE can find shows up as equal words 1-4 apart in that list,
    which is much cheaper to test than the regex itself.
    """
    low = [w.lower() for w in (WORD_RE.findall(text) if words is None else words)]
    if len(set(low)) == len(low):
        return False
    if not any(a == b for n in range(1, 5) for a, b in zip(low, low[n:])):
        return False
    return collapse_repeats(text) != text


def has_url(text: str) -> bool:
    return _URL_HINT_RE.search(text) is not None and URL_RE.search(text) is not None


def has_filename(text: str) -> bool:
    return _FILENAME_HINT_RE.search(text) is not None and FILENAME_RE.search(text) is not None


def _drop_hashtags(match: re.Match) -> str:
    before, tags, mark = match.group(1) or "", match.group(2), match.group(3)
    if before.strip().lower() in INLINE_HASHTAG_PRECEDERS:
        return before + HASHTAG_RE.search(tags).group(1) + mark
    before = before.rstrip()
    if before.endswith((".", "!", "?")):
        mark = ""
    return f"{before}{mark} "


def remove_hashtags(text: str) -> str:
    """Drop hashtag runs and trailing tags; keep the word of a tag used inside a sentence."""
    return HASHTAG_RE.sub(r"\1", _DROPPED_HASHTAGS_RE.sub(_drop_hashtags, text))


def is_all_caps(text: str) -> bool:
    """Shouting: at least 6 cased letters and none of them lower case."""
    cased = sum(1 for ch in text if ch.isupper())
    return cased >= 6 and not any(ch.islower() for ch in text)
