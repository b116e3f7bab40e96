"""The judge on scripts other than ASCII: Unicode normal form and Turkish case are no edit, a Hebrew acronym's
gershayim typed as '"' is no quote mark, words of a script without spaces are counted as the drift check counts
them, and that script's brackets, quotes and an Arabic comma are read as their ASCII forms are."""

import math
import unicodedata

import pytest

from curation_pipeline.rewriting.verify import AcceptanceRules, edit_ratio, judge, wellformedness_problems


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


@pytest.mark.parametrize("original, candidate", [
    ("İSTANBUL'DA BİR KEDİ", "İstanbul'da bir kedi"),   # str.casefold gives "bi̇r" (i + U+0307) for "BİR"
    ("İSTANBUL'DA BİR KEDİ", "i̇stanbul'da bi̇r kedi̇"),  # lowered by str.lower, combining dots kept
    ("KIRMIZI BİR ARABA", "Kırmızı bir araba"),          # Turkish lower case of I is dotless ı
    ("KIRMIZI BİR ARABA", "Kirmizi bir araba"),          # the case-folding lower case of I is i
    ("A DOG ON THE BEACH", "A dog on the beach"),
])
def test_fixing_the_case_is_no_edit_in_turkish_as_in_english(original, candidate):
    assert edit_ratio(original, candidate) == 0.0


def test_a_changed_word_is_still_an_edit():
    assert edit_ratio("A dog on the beach", "A cat on the beach") == 2 / 10
    assert edit_ratio("Bir kedi", "Bir köpek") == 2 / 4


def test_a_caption_in_nfd_and_its_rewrite_in_nfc_have_the_same_words():
    original = "Một bát phở bò nóng hổi ở Hà Nội - Ảnh: Nguyễn Văn An"
    candidate = "Một bát phở bò nóng hổi ở Hà Nội"
    both_nfc = edit_ratio(nfc(original), nfc(candidate))
    assert both_nfc < 0.3
    assert edit_ratio(nfd(original), nfc(candidate)) == both_nfc
    assert edit_ratio(nfc(original), nfd(candidate)) == both_nfc
    assert edit_ratio(nfd("Hà Nội"), nfc("Hà Nội")) == 0.0


def test_an_nfd_original_excuses_what_it_has_in_nfc():
    # the tail was there before (no fragment a removal left), and so was the leading mark of the first word
    assert wellformedness_problems("Chợ Bến Thành. Sài Gòn", nfd("Chợ Bến Thành. Sài Gòn - Ảnh: Nguyễn Văn An")) == []
    assert wellformedness_problems("…và rồi trời mưa", nfd("…và rồi trời mưa - Ảnh: AFP")) == []


def test_a_label_stub_in_nfd_is_found_as_in_nfc():
    assert "dangling 'Crédit'" in wellformedness_problems(nfd("Le marché de Noël. Crédit"))
    assert "dangling 'Crédit'" in wellformedness_problems(nfc("Le marché de Noël. Crédit"))


RULES = AcceptanceRules(max_edit_ratio=0.5, min_length_ratio=0.3)


def test_a_hebrew_acronym_is_no_unbalanced_quote():
    original = 'חיילי צה"ל בטקס בירושלים. צילום: דובר צה"ל'
    candidate = 'חיילי צה"ל בטקס בירושלים.'
    assert wellformedness_problems(candidate, original) == []
    accepted, reason = judge(80.0, 100.0, edit_ratio(original, candidate), 0.5, math.nan, RULES,
                             original=original, candidate=candidate)
    assert accepted, reason
    assert wellformedness_problems('חיילי צה"ל בטקס בירושלים') == []


@pytest.mark.parametrize("caption", ['מחיר 5 ש"ח', 'כתבה ב"הארץ" על ח"כים', 'ראיון וב"ידיעות אחרונות" בצה"ל',
                                     "ג'ירפה בגן החיות"])
def test_gershayim_and_quotes_after_a_prefix_are_told_apart(caption):
    assert wellformedness_problems(caption) == []


def test_a_quote_opened_after_a_hebrew_prefix_is_still_a_quote():
    assert "unbalanced quotes" in wellformedness_problems('תמונה ב"הארץ')
    assert "unbalanced quotes" in wellformedness_problems('say "hi')


def test_quotes_around_a_hebrew_caption_with_an_acronym_are_found():
    assert wellformedness_problems('"חיילי צה"ל בטקס"') == ["quotes around the whole caption"]


@pytest.mark.parametrize("caption", ["Tokyo Tower at night. 東京タワーの夜景", "Beijing at night. 北京天安门广场的夜景"])
def test_a_sentence_in_a_script_without_spaces_is_no_bare_word(caption):
    assert wellformedness_problems(caption) == []


def test_one_or_two_characters_after_a_sentence_are_still_a_fragment():
    assert "dangling fragment '图片'" in wellformedness_problems("A dog runs. 图片")


@pytest.mark.parametrize("caption", ["〖高清〗东京塔的夜景", "〘高清〙东京塔的夜景", "〝東京タワー〟の夜景"])
def test_cjk_brackets_and_quotes_may_open_a_caption(caption):
    assert wellformedness_problems(caption) == []


def test_an_open_cjk_lenticular_bracket_is_unbalanced():
    assert "unbalanced brackets" in wellformedness_problems("〖高清东京塔的夜景")


@pytest.mark.parametrize("mark", ["،", "؛"])
def test_an_arabic_comma_left_at_the_end_is_a_trailing_separator(mark):
    candidate = "صورة لمسجد في القاهرة" + mark
    assert f"trailing separator {mark!r}" in wellformedness_problems(candidate, candidate + " تصوير: أحمد")
