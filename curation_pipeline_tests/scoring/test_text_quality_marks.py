"""Combining marks (Indic vowel signs, Arabic harakat, Hebrew niqqud) are part of their letters: a clean caption in
these scripts scores as a clean English one does, not 20 points lower for "few letters"."""

import unicodedata

import pytest

from curation_pipeline.scoring.text_quality import caption_rules, caption_score

# "A little girl is playing with a red ball in the park", written with marks in each script.
MARKED = {
    "hindi": "एक छोटी लड़की पार्क में लाल गेंद के साथ खेल रही है",
    "tamil": "ஒரு சிறுமி பூங்காவில் சிவப்பு பந்துடன் விளையாடுகிறாள்",
    "bengali": "একটি ছোট মেয়ে পার্কে লাল বল নিয়ে খেলছে",
    "arabic_harakat": "فَتَاةٌ صَغِيرَةٌ تَلْعَبُ بِكُرَةٍ حَمْرَاءَ فِي الْحَدِيقَةِ",
    "hebrew_niqqud": "יַלְדָּה קְטַנָּה מְשַׂחֶקֶת בְּכַדּוּר אָדֹם בַּפַּארְק",
    "vietnamese_nfd": unicodedata.normalize("NFD", "Một cô bé đang chơi với quả bóng đỏ trong công viên"),
}


@pytest.mark.parametrize("name", sorted(MARKED))
def test_a_clean_caption_with_marks_fires_no_rule(name):
    assert any(unicodedata.category(ch).startswith("M") for ch in MARKED[name])
    assert caption_rules(MARKED[name]) == []
    assert caption_score(caption_rules(MARKED[name])) == 100.0


def test_a_long_hindi_caption_is_clean():
    """Cut at every vowel sign, a caption is a run of short, often repeated consonant "words"."""
    caption = ("एक छोटी लड़की पार्क में लाल गेंद के साथ खेल रही है और उसके पिता पास में बैठे हुए किताब पढ़ रहे हैं "
               "जबकि उसकी माँ पेड़ के नीचे खड़ी होकर उनकी तस्वीर ले रही है")
    assert caption_rules(caption) == []


def test_marks_still_need_letters():
    """A mark counts only with its letter: marks on digits or punctuation are no letters."""
    assert "low_letter_share" in caption_rules("1\u0301 2\u0301 3\u0301 4\u0301 a dog")
    assert "no_alpha" in caption_rules("1\u0301 2\u0301 3\u0301 !\u0301")


def test_repeats_of_marked_words_still_fire():
    assert "repetition" in caption_rules("एक लाल लाल लाल गेंद पार्क में है")
    assert "repetition" not in caption_rules("एक लाल लाल गेंद पार्क में है")  # bright red: reduplication
    assert caption_rules("लाल लाल लाल लाल") == ["too_short", "very_short", "repetition"]
