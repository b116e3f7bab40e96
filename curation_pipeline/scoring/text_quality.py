"""A transparent, model-free caption quality score: 100 minus the penalty of each rule fired.

The fired rules are stored beside the score, so a low score is explainable and a selection can
ignore a rule. The patterns (``captions.patterns``) are shared with the cleaner that repairs them.
"""

from __future__ import annotations

import unicodedata

import pandas as pd

from curation_pipeline.captions.patterns import (HASHTAG_RE, MARKED_WORD_RE, NO_SPACE_SCRIPT_RE, WORD_RE,
                                                 filename_cuts, has_ad, has_bad_encoding, has_boilerplate,
                                                 has_control_chars, has_credit, has_droppable_hashtags, has_filename,
                                                 has_html_entity, has_irregular_whitespace, has_repeat_run, has_url,
                                                 is_all_caps, is_wrapped_in_quotes, noise_free_words)
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import Scorer
from curation_pipeline.scoring.columns import ScoreColumn

# Rule id -> points subtracted from 100. The order is the order of ``text_quality_rules``.
PENALTIES: dict[str, float] = {
    "empty": 100.0,  # None, "" or whitespace only: nothing to score
    "no_alpha": 60.0,  # not a single letter ("12345", "!!!")
    "control_chars": 20.0,  # control characters (NUL too), ANSI escapes, bidi overrides, zero-width characters
    # U+FFFD where the bytes were not UTF-8 ("caf\ufffd"), or mojibake ftfy recognises ("cafÃ©"): not the text as
    # written. The cleaner repairs mojibake (fix_encoding); U+FFFD's bytes are lost. Alone it falls under the
    # default drop_threshold: only a rewrite publishes the pair, never the garbled original as a fallback
    "bad_encoding": 40.0,
    "filename": 40.0,  # a camera/file name: IMG_2041.JPG, DSC00123, 2041.jpg, Screenshot_2020-...
    "url": 30.0,  # http(s)://, www., bare domains such as example.com
    # stock-site / UI text as a label, as the cleaner cuts it: "stock photo", "click to enlarge", "| Pinterest",
    # "HD wallpaper 4k", "Image not found", "[caption ...]", a keyword list ("wedding, bride, groom, ...")
    "boilerplate": 30.0,
    "advertising": 30.0,  # ads and calls to action: "buy now", "50% off", "free shipping", "click here to ..."
    "credit": 30.0,  # credits, sources, copyright as a label, as the cleaner cuts them: "Photo: Jane Doe", "(via AP)"
    "hashtag_spam": 25.0,  # >= 3 hashtags, hashtags > 30% of tokens, a run of 2+ tags, or a tag ending the caption
    "too_short": 25.0,  # <= 2 words, not counting hashtags, URLs, file names, boilerplate, ads, credits (*); one
    # word repeated (MIN_COPIES_ONE_WORD+ times, nothing else: "coffee coffee coffee coffee") counts as one word, so
    # the junk scores no better than what collapse_repeats leaves of it and is never kept as a fallback
    "very_short": 15.0,  # <= 1 such word (also fires too_short: 40 in all)
    "repetition": 20.0,  # a word/phrase repeated back to back, or < 50% unique words
    "low_letter_share": 20.0,  # letters < 60% of non-space characters
    "html_entity": 10.0,  # undecoded &amp; &#39; &quot; ...
    "wrapped_quotes": 10.0,  # the whole caption inside a quote pair ("A dog runs"), as &quot;...&quot; leaves it
    "whitespace": 10.0,  # tabs, line breaks, runs of spaces, odd Unicode spaces, spaces at either end
    "all_caps": 10.0,  # >= 6 cased letters, none lower case
    "too_long": 10.0,  # > 77 words (*): past CLIP's 77-token context even at one token per word
}
# (*) Words are whitespace tokens, plus one per two characters of a script written
# without spaces (Chinese, Japanese, Thai, ...), so such captions are not "too short"; a combining mark is no character.

MAX_WORDS = 77
MIN_LETTER_SHARE = 0.6
MIN_UNIQUE_RATIO = 0.5
MIN_WORDS_FOR_UNIQUE_RATIO = 6
MIN_COPIES_ONE_WORD = 4  # "Talk talk talk" (a title, perhaps) is only repetition
MIN_HASHTAGS = 3
MAX_HASHTAG_SHARE = 0.3


def _one_token(tokens: list[str]) -> bool:
    """Whether the whitespace tokens are copies of one word, but for case and the punctuation at their edges
    ("coffee, Coffee coffee!"): a letter word repeated among numbers or codes ("word0 word1 ...") is not."""
    return len({"".join(ch for ch in t if not unicodedata.category(ch).startswith(("P", "S"))).casefold()
                for t in tokens} - {""}) == 1


def caption_rules(caption: str | None) -> list[str]:
    """Rule ids fired by one caption, in ``PENALTIES`` order."""
    if caption is None or not caption.strip():
        return ["empty"]
    tokens = caption.split()
    n_tokens = len(tokens)
    words = WORD_RE.findall(caption)  # as the ad and credit tests take them
    # letters, variety and the repeat prefilter count whole words, marks included: vowel signs were non-letters (a
    # clean Hindi caption fired low_letter_share) and the fragments between them repeated words ("बाल लाल": "ल", "ल").
    # REPEAT_RE, which confirms a repeat, reads the same whole words (patterns.MARKED_WORD_RE).
    marked = MARKED_WORD_RE.findall(caption) if not caption.isascii() else words
    letters = sum(map(len, marked))
    non_space = sum(map(len, tokens))
    hashtags = len(HASHTAG_RE.findall(caption)) if "#" in caption else 0
    # only a file name the cleaner would cut: one used in a sentence is the caption's own, and a pair penalised for it
    # was dropped with "no change" from its rewrite (a link in a sentence is read as one still: "Buy mugs at
    # mugshop.com now" is its page's)
    filename = has_filename(caption) and bool(filename_cuts(caption))
    url = has_url(caption)
    boilerplate = has_boilerplate(caption)
    advertising = has_ad(caption, words)
    credit = has_credit(caption, words)
    n_words = n_tokens
    if filename or url or hashtags or boilerplate or advertising or credit:
        # words that carry content: boilerplate, ads, credits, links, file names and tags say nothing about the image
        n_words = len(noise_free_words(caption))
    if not caption.isascii():  # a mark (Thai vowel sign, tone mark) is part of its character, no character itself
        n_words += sum(1 for ch in NO_SPACE_SCRIPT_RE.findall(caption) if unicodedata.category(ch)[0] != "M") // 2
    unique_words = len({w.lower() for w in marked})
    if unique_words == 1 and len(marked) >= MIN_COPIES_ONE_WORD and n_words > 1 and _one_token(tokens):
        n_words = 1  # "Day 1 Day 2 Day 3 Day 4" has one letter word too, but is no word repeated
    low_variety = len(marked) >= MIN_WORDS_FOR_UNIQUE_RATIO and unique_words < MIN_UNIQUE_RATIO * len(marked)

    fired = {
        "no_alpha": letters == 0,
        "filename": filename,
        "url": url,
        "control_chars": has_control_chars(caption),
        "bad_encoding": has_bad_encoding(caption),
        "boilerplate": boilerplate,
        "advertising": advertising,
        "credit": credit,
        "hashtag_spam": (hashtags >= MIN_HASHTAGS or hashtags > MAX_HASHTAG_SHARE * n_tokens
                         or (hashtags > 0 and has_droppable_hashtags(caption))),
        "too_short": n_words <= 2,
        "very_short": n_words <= 1,
        "repetition": low_variety or (unique_words < len(marked) and has_repeat_run(caption, marked)),
        "low_letter_share": letters < MIN_LETTER_SHARE * non_space,
        "html_entity": has_html_entity(caption),
        "wrapped_quotes": is_wrapped_in_quotes(caption),
        "whitespace": has_irregular_whitespace(caption),
        "all_caps": is_all_caps(caption),
        "too_long": n_words > MAX_WORDS,
    }
    return [rule for rule in PENALTIES if fired.get(rule)]


def caption_score(rules: list[str]) -> float:
    return max(0.0, min(100.0, 100.0 - sum(PENALTIES[r] for r in rules)))


class CaptionTextQuality(Scorer):
    """Heuristic 0-100 caption score plus the rules that explain it."""

    name = "text_quality"
    # 3: prose words are no boilerplate or credit, sign text no ad; markup tags fire html_entity
    # 4: boilerplate and credits only where the cleaner cuts them: a label at a clause edge, not text shown in the
    #    image ("a shirt reading Photo by John Smith" is fine); a bare bracketed link "{www.x.com}" is a credit too
    # 5: bad_encoding (U+FFFD, mojibake) fires; a stock label's ID is boilerplate too ("A barn, Shutterstock ID
    #    123456": 70 -> 45, its ID no longer counts as a word; patterns._STOCK_ID, commit 23f8ebb)
    # 6: weak ad phrases ("learn more", "only $5", "call me") only with no description in their clause; a
    #    capitalised site name inside a clause ("a sign for Hotels.com in Times Square") is no link; "photo © 2019"
    #    and "uploading stock photos" read as the cleaner 7 reads them; one word repeated 4+ times is very_short
    # 7: boilerplate as the cleaner 9 cuts it: site-name suffixes, keyword lists, placeholders, shortcodes, wallpaper
    #    and vector labels, an "Image may contain:" list with its label (nothing left: very_short); lower-case credits
    # 8: credit and advertising as the cleaner 11 reads them: credit labels in other languages ("Bild: Hans Müller",
    #    "Quelle: dpa", "Crédit photo : ..."), hashtags in a weak ad's clause ("Red dress. New arrivals #fun")
    # 9: credit and advertising as the cleaner 12 reads them: names starting with a capital beyond ASCII, bylines in
    #    other languages ("Photo par Jean Dupont", "Foto von Hans Müller/dpa"), repeated credits; a weak ad after boilerplate ("Royalty Free Stock
    #    Image Shop the look!"); "Blondie performing Call Me" is no ad, "Call us today for a quote" is one
    # 10: a combining mark counts with its letter (Indic vowel signs, harakat, niqqud): clean Hindi, Tamil, Bengali
    #    and vocalised Arabic/Hebrew captions no longer fire low_letter_share (100, was 80); word variety and repeats
    #    count whole words, not the fragments between marks ("उस लड़की के बाल लाल रंग के हैं", that girl's hair is red,
    #    fired repetition); one word twice is no repetition outside English ("अलग अलग", "renk renk", "Anak anak": 100,
    #    was 80); Latin acronyms in a script without case, and Cherokee, are no all_caps; a Catalan "l·l", "la fuente -"
    #    (a fountain) and a zero-width space between Thai, Lao, Myanmar or Khmer words fire nothing (were boilerplate,
    #    credit, control_chars); a hashtag takes its marks; a Thai mark is no character of the length
    # 11: an ad trigger inside quotes of any language ('50% off', ‘Free shipping’, «Sale», 「大特価」) is sign text, as
    #    inside double quotes; one letter word among numbers ("Day 1 Day 2 Day 3 Day 4", "word0 ... word99") is no
    #    word repeated: no longer very_short (or only too_long where it is)
    # 12: credit and boilerplate as the cleaner 16 reads them: a stock site as the subject ("Getty Images
    #    headquarters") is none, nor a place before "| AFP"; "| AFP", "REUTERS/Jane Doe", "EPA-EFE/..." are credits;
    #    a sale's words before a graphic's noun are no ad ("Summer Sale banner with palm trees": 100, was 70)
    # 13: as the cleaner 18 reads them: an offer after a verb of what is shown ("displaying", "offering") is described,
    #    no ad; a name-first credit after "vs" is its agency alone; a doubled English word ("mahi mahi") is
    #    no repeat
    # 14: credits and ads as the cleaner 19 reads them (a name-first credit's noun of the sentence, a media label in
    #    the plural inside a clause, "source -" inside a clause, a placed graphic's sale words are none); a file name
    #    the cleaner keeps (used in a sentence) fires no filename rule
    version = "14"
    needs_images = False
    outputs = (
        ScoreColumn("text_quality", "Caption text quality, 0-100 (rule-based: noise, length, casing, ...).",
                    range=(0, 100)),
        ScoreColumn("text_quality_rules", "The text rules that fired, comma-separated (empty: none).", "str"),
    )

    def score(self, batch: PairBatch) -> pd.DataFrame:
        scores, rules = [], []
        for caption in batch.captions:
            fired = caption_rules(caption)
            scores.append(caption_score(fired))
            rules.append(",".join(fired))
        return pd.DataFrame({"text_quality": pd.Series(scores, dtype="float64"),
                             "text_quality_rules": pd.Series(rules, dtype="object")}, columns=list(self.columns))
