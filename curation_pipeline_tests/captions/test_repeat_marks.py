"""A repeated word is a whole word with its combining marks (Indic vowel signs, nukta and virama, Thai vowels,
harakat, niqqud): ``\\b`` stops at a mark, and the fragments between marks looked like repeats, so the cleaner glued
different words ("बाल लाल", hair red, became "बालाल") and left genuine repeats ("लड़की लड़की लड़की") alone."""

import pytest

from curation_pipeline.captions import patterns as P
from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.cleaner import CaptionCleaner, clean_caption
from curation_pipeline.scoring.text_quality import caption_rules

# Different words that share the letters between their marks: nothing repeats.
NO_REPEAT = [
    "उस लड़की के बाल लाल रंग के हैं",  # that girl's hair is red: "बाल लाल" ends in the same "ल"
    "बाल लाल",
    "एक छोटी लड़की पार्क में लाल गेंद के साथ खेल रही है और उसके पिता पास में बैठे हुए किताब पढ़ रहे हैं",
    "গতকাল লাল বল কিনেছি",  # Bengali, I bought a red ball yesterday: "গতকাল লাল" ends and starts in "ল"
    "x\u0301y y",  # a letter after a mark continues its word: "y" is not the word before it
]

# Genuine repeats, collapsed as an English one is ("a cat cat cat" -> "a cat"). Three copies: two of one word are
# reduplication outside English ("लाल लाल", bright red; test_scripts_multilingual.py).
REPEATS = {
    "लाल लाल लाल": "लाल",
    "लाल लाल लाल लाल": "लाल",
    "एक लाल लाल लाल गेंद पार्क में है": "एक लाल गेंद पार्क में है",
    "लड़की लड़की लड़की खेल रही है": "लड़की खेल रही है",
    "लाल गेंद लाल गेंद पार्क में": "लाल गेंद पार्क में",
    "मकान कान कान कान": "मकान कान",  # house ear ear ear: only the whole word "कान" repeats
    "கடல் கடல் கடல் அலை": "கடல் அலை",  # Tamil, ending in a virama
    "สีแดง สีแดง สีแดง": "สีแดง",  # Thai
    "كُرَةٌ كُرَةٌ كُرَةٌ حَمْرَاءُ": "كُرَةٌ حَمْرَاءُ",  # vowelled Arabic
    "כַּדּוּר כַּדּוּר כַּדּוּר אָדֹם": "כַּדּוּר אָדֹם",  # vowelled Hebrew
    "A cafe\u0301 cafe\u0301 in Paris": "A cafe\u0301 in Paris",  # decomposed Latin reads as composed Latin does
}


@pytest.mark.parametrize("caption", NO_REPEAT)
def test_words_sharing_letters_between_marks_are_no_repeat(caption):
    assert P.collapse_repeats(caption) == caption
    assert not P.has_repeat_run(caption)
    assert clean_caption(caption) == (caption, [])
    assert "repetition" not in caption_rules(caption)


def test_a_clean_hindi_caption_is_left_alone():
    candidate, = CaptionCleaner().rewrite(PairBatch(["a"], [NO_REPEAT[0]]))
    assert (candidate.caption, candidate.error) == (None, "no change")
    assert caption_rules(NO_REPEAT[0]) == []


@pytest.mark.parametrize("caption", sorted(REPEATS))
def test_genuine_repeats_in_marked_scripts_collapse(caption):
    assert P.collapse_repeats(caption) == REPEATS[caption]
    assert P.has_repeat_run(caption)
    assert clean_caption(caption) == (REPEATS[caption], ["collapse_repeats"])
    assert "repetition" in caption_rules(caption)


def test_a_capitalised_marked_double_is_a_name_as_in_english():
    assert P.collapse_repeats("Cafe\u0301 Cafe\u0301 on a corner") == "Cafe\u0301 Cafe\u0301 on a corner"
    assert P.collapse_repeats("Bora Bora beach") == "Bora Bora beach"


def test_the_repeat_prefilter_reads_whole_words():
    """A phrase of four marked words is eight fragments long: the prefilter, told no words, must still see it."""
    caption = "छोटी लड़की पीली गेंद छोटी लड़की पीली गेंद"
    assert len(P.WORD_RE.findall("छोटी लड़की पीली गेंद")) == 8
    assert P.collapse_repeats(caption) == "छोटी लड़की पीली गेंद"
    assert P.has_repeat_run(caption)
    for text in NO_REPEAT + sorted(REPEATS) + [caption]:
        assert P.has_repeat_run(text) == (P.collapse_repeats(text) != text)
        assert P.has_repeat_run(text, P.MARKED_WORD_RE.findall(text)) == P.has_repeat_run(text)


def test_the_cleaner_version_says_its_output_changed():
    assert int(CaptionCleaner().version) >= 13  # 13: repeats of whole words with their marks
