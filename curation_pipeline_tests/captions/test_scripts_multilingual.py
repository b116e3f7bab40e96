"""Captions beyond English: the cleaner and ``text_quality`` read marks, middle dots, reduplication, scripts without
case, Turkish dotless "ı", zero-width spaces and tight punctuation as the language writes them, not as noise."""

import pytest

from curation_pipeline.captions import patterns as P
from curation_pipeline.rewriting.cleaner import clean_caption
from curation_pipeline.scoring.text_quality import caption_rules

# Hashtags and file names take their combining marks (and a Persian tag its ZWNJ): a ``\w`` run stopped at the
# first mark, and the rest of the word stayed ("A beach in Phuket ี่ยวไทย", "आगरा ता").
WHOLE_TAGS_AND_NAMES = {
    "A beach in Phuket #travel #เที่ยวไทย #sea": "A beach in Phuket",
    "Sunset over the sea #travel #سَفَر": "Sunset over the sea",
    "Taj Mahal at dawn #travel #ताजमहल": "Taj Mahal at dawn",
    "Books on a shelf #کتاب\u200cها #library": "Books on a shelf",
    "ताज महल, आगरा ताजमहल.jpg": "ताज महल, आगरा",
    "Grand Palace Bangkok - วัดพระแก้ว.JPG": "Grand Palace Bangkok",
    # punctuation written without a space before the tags goes with them
    "غروب الشمس فوق البحر، #سفر #بحر": "غروب الشمس فوق البحر",
    "海边的日落，#旅行 #大海": "海边的日落",
}


@pytest.mark.parametrize("caption", sorted(WHOLE_TAGS_AND_NAMES))
def test_tags_and_file_names_go_whole_with_their_marks(caption):
    cleaned, _ = clean_caption(caption)
    assert cleaned == WHOLE_TAGS_AND_NAMES[caption]
    assert caption_rules(cleaned) == []


def test_a_tag_inside_a_sentence_keeps_its_whole_word():
    assert P.remove_hashtags("Sunrise over the #ताजमहल today") == "Sunrise over the ताजमहल today"
    assert P.HASHTAG_RE.findall("#เที่ยวไทย") == ["เที่ยวไทย"]


@pytest.mark.parametrize("caption", ["Una col·lecció d'il·lustracions al col·legi",
                                     "Exposició col·lectiva d'il·lustració al col·legi d'arquitectes"])
def test_a_catalan_middle_dot_is_part_of_its_word(caption):
    assert P.tag_list_spans(caption) == []
    assert caption_rules(caption) == []
    assert clean_caption(caption) == (caption, [])


def test_a_spaced_middle_dot_still_separates_tags():
    caption = "A dog on a beach · dog · beach · sand · sea · sun · summer"
    assert P.tag_list_spans(caption)


@pytest.mark.parametrize("caption", ["Niños jugando junto a la fuente - Plaza Mayor",
                                     "Turisti davanti alla fonte - Piazza Navona",
                                     "El agua de la fuente: Plaza de España"])
def test_a_fountain_is_no_source_credit(caption):
    assert P.credit_spans(caption) == []
    assert clean_caption(caption) == (caption, [])


@pytest.mark.parametrize("caption", ["A crowd in a square. Fuente: EFE", "A square. Fonte: Maria Silva",
                                     "Fuente: EFE"])
def test_fuente_starting_its_clause_is_still_a_credit(caption):
    assert "credit" in caption_rules(caption)


@pytest.mark.parametrize("caption", ["IKEA 客厅里的 LED 台灯", "سيارة BMW وسيارة AUDI في المعرض", "ᏣᎳᎩ ᎠᏕᎶᏆᏍᏗ ᎦᏬᏂᎯᏍᏗ"])
def test_acronyms_in_a_script_without_case_are_no_shouting(caption):
    assert not P.is_all_caps(caption)
    assert "all_caps" not in caption_rules(caption)
    assert clean_caption(caption) == (caption, [])


def test_latin_shouting_beside_a_few_ideographs_is_still_shouting():
    assert clean_caption("BEAUTIFUL SUNSET AT THE BEACH 日落")[0] == "Beautiful sunset at the beach 日落"
    assert P.is_all_caps("ΚΑΛΗΜΕΡΑ ΑΘΗΝΑ") and P.is_all_caps("A DOG ON THE BEACH")


@pytest.mark.parametrize("caption, expected", [
    ("İSTANBUL'DA KIRMIZI BİR ARABA", "İstanbul'da kırmızı bir araba"),
    ("BAKI ŞƏHƏRİNDƏ QIŞ GÜNÜ", "Bakı şəhərində qış günü"),
    ("A DOG IN THE PARK", "A dog in the park"),  # no Turkish letter: an English "I" stays "i"
])
def test_turkish_and_azeri_dotless_i_lowers_to_dotless_i(caption, expected):
    assert clean_caption(caption) == (expected, ["sentence_case"])


# One word twice is reduplication in these languages (various, colourful, children, bright red...), not noise.
REDUPLICATION = ["बगीचे में अलग अलग रंगों के फूल", "Gökyüzünde renk renk balonlar uçuyor",
                 "Anak anak bermain bola di pantai", "एक लाल लाल गेंद पार्क में है", "Девочка еле еле идёт"]


@pytest.mark.parametrize("caption", REDUPLICATION)
def test_reduplication_is_kept_and_not_penalised(caption):
    assert P.collapse_repeats(caption) == caption
    assert not P.has_repeat_run(caption)
    assert "repetition" not in caption_rules(caption)
    assert clean_caption(caption) == (caption, [])


@pytest.mark.parametrize("caption, expected", [
    ("A dog dog on the grass", "A dog on the grass"),  # English: a doubled word is a slip
    ("A cafe\u0301 cafe\u0301 in Paris", "A cafe\u0301 in Paris"),
    ("लाल लाल लाल बड़ी गेंद", "लाल बड़ी गेंद"),  # three copies are a repeat in any language
    ("renk renk renk balonlar", "renk balonlar"),
    ("लाल गेंद लाल गेंद पार्क में", "लाल गेंद पार्क में"),  # so is a doubled phrase
])
def test_english_doubles_and_longer_repeats_still_collapse(caption, expected):
    assert P.collapse_repeats(caption) == expected
    assert "repetition" in caption_rules(caption)


def test_a_zero_width_space_between_khmer_or_thai_words_is_their_separator():
    khmer = "ឆ្នេរ\u200bសមុទ្រ\u200bនៅ\u200bពេល\u200bល្ងាច"
    thai = "ทะเล\u200bยาม\u200bเย็น\u200bที่\u200bภูเก็ต"
    for caption in (khmer, thai):
        assert "control_chars" not in caption_rules(caption)
        assert clean_caption(caption) == (caption, [])
    # elsewhere it is still an invisible stray
    assert clean_caption("A dog\u200b on the beach") == ("A dog on the beach", ["remove_control_chars"])
    assert "control_chars" in caption_rules("ทะเล\u200b beach")


def test_thai_marks_are_no_characters_of_their_own_in_the_length():
    """A Thai caption of 150 base characters (plus 75 marks) is 75 words, not 112: it is not too long."""
    caption = "เด็ก" * 50  # child: SARA E, DO DEK with its mark, KO KAI: three characters and a mark
    assert "too_long" not in caption_rules(caption)
    assert "too_long" in caption_rules("เดก" * 60)  # 180 characters: 90 words
