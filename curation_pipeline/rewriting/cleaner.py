"""The offline, rule-based minimal rewriter.

It repairs only what ``captions.patterns`` recognises (what the ``text_quality`` scorer penalises)
and leaves every other character alone (names, numbers, language, case, the caption's own
punctuation style), so its output is a safe baseline and a fallback when no model is available.
A removal takes its glue with it and nothing else: the separator that tied it in, its own end mark,
and brackets left empty. The first letter is upper-cased only when a removed prefix ran straight
into it ("Stock photo of a dog" -> "A dog"). ``RewriteCandidate.raw`` lists the ``OPERATIONS`` that
changed the caption, in order (e.g. ``"unescape_html,remove_credits"``).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable

from curation_pipeline.captions.patterns import (
    CLAUSE_SEPARATORS,
    SENTENCE_ENDS,
    WHITESPACE_RE,
    ad_spans,
    boilerplate_spans,
    bracket_note_spans,
    collapse_repeats,
    credit_spans,
    filename_cuts,
    has_bad_encoding,
    is_all_caps,
    is_shown_text,
    normalize_whitespace,
    remove_control_chars,
    remove_hashtags,
    remove_html_tags,
    unescape_html,
    unwrap_quotes,
    url_cuts,
)
from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.base import CODE_VERSIONS, RewriteCandidate, Rewriter

# Leading junk, but a sign or dot that starts the first word stays: "-5 degrees", ".NET developer".
_LEADING_JUNK_RE = re.compile(r"^[\s.,;:!?|•·–—/\\-]*?(?=(?<!\S)[.-][^\W_]|[^\s.,;:!?|•·–—/\\-]|$)")
# A run of junk is read from its start only: tried from each of its characters, a long run that does not end the
# caption ("a, , , ... , b") would cost O(n^2).
_TRAILING_JUNK_RE = re.compile(r"(?<![\s,;:|•·–—/\\-])[\s,;:|•·–—/\\-]+$")
# Chinese, Japanese and Arabic commas and colons a hashtag removal left ending the caption ("البحر، #سفر" -> "البحر").
# Only then: a caption written ending in one is left as written.
_TIGHT_TRAILING_JUNK_RE = re.compile(r"(?<![\s，、；：،؛])[\s，、；：،؛]+$")
_EMPTY_BRACKETS_RE = re.compile(r"\(\s*\)|\[\s*\]|\{\s*\}")
# A punctuation mark followed by more standalone marks, as left behind by a removal:
# "A dog. ." / "Beach - - sunset" / "A dog, , on".
_PUNCT_RUN_RE = re.compile(r"[,.;:!?|•·–—-](?:\s+[,.;:!?|•·–—-](?=\s|$))+")
_SENTENCE_START_RE = re.compile(r"(^|[.!?]\s+)([^\W\d_])")
_ALNUM_RE = re.compile(r"[^\W_]")

# What may tie a removed piece to its neighbours, and what ends a sentence.
_SEPS = CLAUSE_SEPARATORS
_TERMS = SENTENCE_ENDS
_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_TIGHT_AFTER = ".,;:!?…)]}"

# Capitals only Turkish and Azeri write (Azeri's schwa too): where they show, a dotless "I" is "ı" in lower case.
_TURKIC_CAPITALS_RE = re.compile("[İŞĞƏ]")

# Stray bidi marks: LRM, RLM, ALM do nothing in a caption without right-to-left letters.
_BIDI_MARK_RE = re.compile("[\u200e\u200f\u061c]")


def _lstrip_glue(text: str, chars: str) -> str:
    """``text`` without leading ``chars``, but a sign or dot that starts a word ("-5", ".NET") stays."""
    i = 0
    while i < len(text) and text[i] in chars:
        if text[i] in ".-" and (i == 0 or text[i - 1].isspace()) and text[i + 1:i + 2].isalnum():
            break
        i += 1
    return text[i:]


def _keep_strongest(match: re.Match) -> str:
    marks = match.group(0).split()
    return next((m for m in marks if m in ".!?"), marks[0])


def _strip_punctuation(text: str) -> str:
    return _TRAILING_JUNK_RE.sub("", _LEADING_JUNK_RE.sub("", text, count=1))  # it may match empty: once


def _tidy(text: str) -> str:
    """Close the gaps a hashtag removal leaves: empty brackets, orphaned separators, spaces."""
    text = WHITESPACE_RE.sub(" ", _EMPTY_BRACKETS_RE.sub(" ", text)).strip()
    return _strip_punctuation(_PUNCT_RUN_RE.sub(_keep_strongest, text))


def cut_span(text: str, start: int, end: int) -> str:
    """``text`` without ``text[start:end]`` and the glue that tied it in, joined with one space."""
    before, after = text[:start], text[end:]
    b, a = before.rstrip(), after.lstrip()
    while b and a and b[-1] in _CLOSERS and a[0] == _CLOSERS[b[-1]]:  # the brackets held only the removed piece
        b, a = b[:-1].rstrip(), a[1:].lstrip()
    if not b.strip(_SEPS + _TERMS + " "):  # a prefix went
        rest = _lstrip_glue(a, _SEPS + _TERMS + " ")
        first_word = rest.split(" ", 1)[0]
        # a word-final prefix with nothing but spaces after it: "Stock photo of a dog", "DSC00123 red car"
        ran_into = rest == a and not b.strip() and text[end - 1:end].isalnum()
        if (ran_into and rest[:1].islower() and first_word == first_word.lower()
                and next((ch for ch in text[:end] if ch.isalpha()), "").isupper()):
            rest = rest[0].upper() + rest[1:]
        return rest
    if not a.strip(_SEPS + _TERMS + " "):  # a suffix went: keep the caption's own end mark
        return b.rstrip(_SEPS + " ")
    if b[-1] in _SEPS and a[0] in _SEPS:  # "A, X, B" -> "A, B"
        a = a[1:].lstrip()
    elif b[-1] in _TERMS and a[0] in _TERMS + _SEPS:  # "A. X. B" -> "A. B"
        a = _lstrip_glue(a, _SEPS + _TERMS + " ")
    elif b[-1] in _SEPS and a[0] in _TERMS:  # "A | X. B" -> "A | B": the mark ended the removed piece
        a = _lstrip_glue(a, _TERMS + " ")
    if not a:
        return b.rstrip(_SEPS + " ")
    return b + a if a[0] in _TIGHT_AFTER else f"{b} {a}"


def _cutter(find: Callable[[str], list[tuple[int, int]]]) -> Callable[[str], str]:
    """An operation that cuts every span ``find`` reports (right to left), until none is left."""

    def remove(text: str) -> str:
        for _ in range(32):  # a cut can join the halves of a new match; 32 rounds end any real caption
            spans = find(text)
            if not spans:
                break
            for start, end in sorted(spans, reverse=True):
                text = cut_span(text, start, end)
        return text

    return remove


def _not_shown_text(find: Callable[[str], list[tuple[int, int]]]) -> Callable[[str], list[tuple[int, int]]]:
    """``find``'s spans, less those that are text shown in the image ("a shirt reading Order online")."""
    return lambda text: [(s, e) for s, e in find(text) if not is_shown_text(text, s)]


def _remove_control_chars(text: str) -> str:
    """``remove_control_chars``, and bidi marks when no right-to-left letter needs them."""
    text = remove_control_chars(text)
    if _BIDI_MARK_RE.search(text) and not any(unicodedata.bidirectional(ch) in ("R", "AL")
                                              for ch in _BIDI_MARK_RE.sub("", text)):  # RLM is class R itself
        text = _BIDI_MARK_RE.sub("", text)
    return text


def _fix_encoding(text: str) -> str:
    """Mojibake undone ("cafÃ©" -> "café", "donâ€™t" -> "don’t"): ftfy's ``fix_encoding``, the encoding steps
    only, never ``fix_text``'s other normalisations (straight quotes, full-width, ligatures), which would change
    text as written. Only where ``has_bad_encoding`` fires, so ASCII and clean non-Latin text skip ftfy (imported
    on first need). U+FFFD stays: its bytes are lost, and the ``bad_encoding`` rule keeps firing on it."""
    if not has_bad_encoding(text):
        return text
    from ftfy import fix_encoding

    return fix_encoding(text)


def _remove_hashtags(text: str) -> str:
    cleaned = remove_hashtags(text)
    if cleaned == text:
        return text
    cleaned = _tidy(cleaned)
    return _tidy(_TIGHT_TRAILING_JUNK_RE.sub("", cleaned)) if not text.isascii() else cleaned


def _sentence_case(text: str) -> str:
    """ALL CAPS -> Sentence case. Acronyms are lowered too: the price of undoing shouting. Turkish dotted "İ"
    lowers to "i" (``str.lower`` gives "i" + a combining dot, U+0307) and stays "İ" starting a sentence. Where the
    caption shows Turkish or Azeri letters (``_TURKIC_CAPITALS_RE``), dotless "I" lowers to "ı": "KIRMIZI" is
    "kırmızı", never "kirmizi"."""
    if not is_all_caps(text):
        return text
    lowered = text.replace("İ", "i")  # one character for one: the positions stay the text's
    if _TURKIC_CAPITALS_RE.search(text):
        lowered = lowered.replace("I", "ı")  # and "ı".upper() is "I" again starting a sentence
    lowered = lowered.lower()
    return _SENTENCE_START_RE.sub(
        lambda m: m.group(1) + ("İ" if text[m.start(2)] == "İ" else m.group(2).upper()), lowered)


OPERATIONS: dict[str, Callable[[str], str]] = {
    "fix_encoding": _fix_encoding,  # first: the other repairs then read the text as it was written ("Photo Â© Jane Doe")
    "unescape_html": unescape_html,
    "remove_html_tags": remove_html_tags,  # after unescaping: "&lt;br&gt;" is a tag only once decoded
    "remove_control_chars": _remove_control_chars,
    "fix_whitespace": normalize_whitespace,
    "strip_punctuation": _strip_punctuation,
    "remove_bracket_notes": _cutter(bracket_note_spans),
    "remove_ads": _cutter(_not_shown_text(ad_spans)),
    # a site named as a name stays ("a sign for Hotels.com"); a link or file name inside a sentence is part of what
    # it says ("A website https://x.com is shown on a laptop"): cut, it left a hole ("A is shown on a laptop")
    "remove_urls": _cutter(url_cuts),
    "remove_filenames": _cutter(filename_cuts),
    # the very spans the scorer's "credit" and "boilerplate" rules see
    "remove_credits": _cutter(credit_spans),
    "remove_boilerplate": _cutter(boilerplate_spans),
    "remove_hashtags": _remove_hashtags,
    "unwrap_quotes": unwrap_quotes,
    "sentence_case": _sentence_case,
    "collapse_repeats": collapse_repeats,
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
    # 3: signs, quoted signage and mid-clause credits are kept; stray bidi marks removed
    # 4: boilerplate only as a label, prose words ("downloads", "Via Appia", "Copyright law") kept; tags removed
    # 5: a stock label's ID goes with it ("royalty free image 16086", "Shutterstock ID 123456")
    # 6: mojibake repaired ("cafÃ©" -> "café", ftfy.fix_encoding), what text_quality 5's bad_encoding flags
    # 7: ads need ad context (no cut of "Students learn more about robots"); site names in a clause, generic stock
    #    labels used as objects ("uploading stock photos") and a verb's capitalised trailing tag ("supporting
    #    #BlackLivesMatter" -> "supporting BlackLivesMatter") kept; "photo © 2019" cut whole
    # 8: a trailing capitalised tag keeps its word only after a verb that takes it as object (celebrating,
    #    supporting...; "A puppy sleeping #Cute" -> "A puppy sleeping"); a capital letter or abbreviation is no article
    #    ("Gate A #airport" -> "Gate A")
    # 9: more boilerplate cut: a site name ending the title ("A red barn | Pinterest", "- YouTube"), keyword lists
    #    ("wedding, bride, groom, ..."), placeholders ("Image not found", "Lorem ipsum ..."), WordPress shortcodes (the
    #    text they wrap stays), wallpaper and vector labels ("1920x1080 HD wallpaper", "Vector illustration. EPS 10"),
    #    and the whole "Image may contain: coffee, indoor" list (nothing is left); lower-case credits ("photo by jsmith")
    # 10: Turkish all caps lowered without a combining dot ("İSTANBUL'DA BİR KEDİ" -> "İstanbul'da bir kedi")
    # 11: credit labels in other languages cut whole ("Crédit photo : Jean Dupont", "Bild: Hans Müller", "Quelle:
    #     dpa", "Fuente: EFE", "Fotografía: ..."; "Crédit" was left behind); an ad clause takes the hashtags in it,
    #     which are fillers to a weak ad ("A girl on a beach. Shop our collection #summer" -> "A girl on a beach.")
    # 12: a name may start with a capital beyond ASCII ("Photo: Émile Zola", "Foto: Łukasz Nowak"); bylines in other
    #     languages at a clause's start ("A lake. Photo par Jean Dupont"; with "von", "de", "di", which say "of" as
    #     often, only before an agency: "Foto von Hans Müller/dpa", never "Foto de Machu Picchu"); a repeated credit
    #     cut whole ("Source: Reuters Source: Reuters"); a weak ad judged once the boilerplate and credits before it
    #     are cut ("Royalty Free Stock Image Shop the look!"); "Call Me" after a description only with an ad's words
    #     ("Blondie performing Call Me #music" keeps its title); an ad never starts or ends inside a label cut after
    #     it ("Floral pattern, EPS 10 only $5" left "EPS", "New arrivals Photo: Jane Doe" left "Jane Doe")
    # 13: a repeat is of whole words with their combining marks (Indic vowel signs, nukta, virama; Thai vowels,
    #     harakat, niqqud): "बाल लाल" (hair red) is no repeat (it became "बालाल"), "लड़की लड़की लड़की" (girl girl
    #     girl) is one (it was kept); and beyond Latin: a hashtag or file name goes whole with its marks ("#เที่ยวไทย"
    #     left "ี่ยวไทย", "ताजमहल.jpg" left "ता"), with the Chinese or Arabic comma before it; a Catalan "l·l" is no tag
    #     separator; "la fuente -" is a fountain, no credit; Latin acronyms in Chinese or Arabic and Cherokee are no
    #     shouting; Turkish and Azeri "KIRMIZI" lowers to "kırmızı"; one word twice is reduplication, kept, outside
    #     English ("अलग अलग", "renk renk"); a zero-width space between Thai, Lao, Myanmar or Khmer words stays
    # 14: a link or a file name inside a sentence (a word before it, words describing after it in its clause) is what
    #     the sentence says, kept ("A website https://x.com is shown on a laptop" was left "A is shown on a laptop"),
    #     as is one that is text shown in the image; a file name in a kept link's path is the link's
    # 15: an ad trigger inside quotes of any language ('50% off', ‘Free shipping’, «Sale») is sign text and stays,
    #     as inside double quotes ("A store window with a '50% off' sign" was cut to "A store window with a '")
    # 16: a stock site's name inside its clause, or starting one as the company ("Getty Images headquarters in
    #     Seattle", "Adobe Stock logo"), stays (was cut to "Headquarters in Seattle"); a name-first credit after a
    #     place's word (in, at, of, the, ...) is its agency's alone ("Protesters march in Paris | AFP" was cut to
    #     "Protesters march in"); a news agency alone ending a title ("| AFP", "- NASA"), REUTERS/..., EPA-EFE/...
    #     and ".../dpa-tmn" after a name go whole; a credit's media word ends it ("| AFP Photo by John Roe");
    #     a sale's words before a graphic's noun name what it shows and stay ("Summer Sale banner with palm trees",
    #     "50% off sale tag", "Free shipping badge icon set" were cut whole)
    # 18: an offer after a verb of what is shown stays ("Shop window displaying 50% off signs" was cut to "Shop
    #     window displaying"); a name-first credit after "vs" or "versus" is its agency's alone ("USA vs
    #     Netherlands | AP Photo" was cut to "USA vs"); a doubled English word stays ("Mahi mahi fillet" lost a "mahi")
    # 19: a name-first credit's "name" that goes on the caption's sentence is its own: one capitalised word after a
    #     lower-case one, before a bar or a spaced slash ("A man holding a red Frisbee | Shutterstock" was cut to "A man
    #     holding a red"); before "by" or "©" a media label inside a clause is a credit's only as one image's ("old
    #     photos © 2019 Jane Doe" kept its photos, "framed pictures by Vivian Maier" stays); "source -"
    #     inside a clause is a noun ("as the water source - Alamy"); a sale's words naming a graphic that does
    #     something or is somewhere are no ad ("A huge 50% off banner hangs over the entrance" was cut to "A huge");
    #     stock sites' title templates go whole ("- Download Image Now - iStock", "Stock Photos and Images - Alamy",
    #     "Free Photo | Freepik", "| Background Image |")
    version = CODE_VERSIONS["cleaner"]
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
