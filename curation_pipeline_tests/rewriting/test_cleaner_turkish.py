"""Sentence-casing an all-caps Turkish caption: "İ" lowers to "i", not "i" plus a combining dot (U+0307), which
``str.lower`` gives and a reader sees as a doubled dot ("bi̇r")."""

import pytest

from curation_pipeline.rewriting.cleaner import CaptionCleaner, clean_caption

CAPS = {
    "İSTANBUL'DA BİR KEDİ SOKAKTA UYUYOR": "İstanbul'da bir kedi sokakta uyuyor",
    "BİR KEDİ UYUYOR. İKİ KÖPEK OYNUYOR": "Bir kedi uyuyor. İki köpek oynuyor",
    "A DOG. A CAT. BOTH ASLEEP": "A dog. A cat. Both asleep",
}


@pytest.mark.parametrize("caption", list(CAPS))
def test_all_caps_lowers_without_a_combining_dot(caption):
    cleaned, applied = clean_caption(caption)
    assert cleaned == CAPS[caption] and applied == ["sentence_case"]
    assert "\u0307" not in cleaned


def test_the_cleaner_publishes_the_turkish_caption_as_written():
    candidate = CaptionCleaner._rewrite_one("İSTANBUL'DA BİR KEDİ SOKAKTA UYUYOR")
    assert candidate.caption == "İstanbul'da bir kedi sokakta uyuyor"
    assert len(candidate.caption) == len("İSTANBUL'DA BİR KEDİ SOKAKTA UYUYOR")
