"""The normalised caption keeps combining marks: in Indic and Thai scripts a vowel sign tells two words apart, so
turning it into a space gave different captions one hash."""

import pytest

from curation_pipeline.scoring.signals.duplicates import caption_norm_sha, normalise_caption


@pytest.mark.parametrize("a, b", [
    ("लाल बाल वाली लड़की", "लाल बिल वाली लड़की"),  # Hindi: girl with red hair / with a red bill
    ("เด็กลูกแมว", "เด็กลึกแมว"),  # Thai: only the vowel marks differ
    ("ஒரு சிறிய பந்து", "ஒரு சிறிய பந்தை"),  # Tamil: a small ball / the small ball (object)
])
def test_captions_that_differ_in_a_mark_hash_apart(a, b):
    assert caption_norm_sha(a) != caption_norm_sha(b)


def test_marks_are_kept_and_punctuation_still_goes():
    assert normalise_caption("लाल बाल, वाली लड़की!") == "लाल बाल वाली लड़की"
    assert caption_norm_sha("लाल  बाल — वाली लड़की।") == caption_norm_sha("लाल बाल वाली लड़की")
    assert normalise_caption("A_Dog\u200b on the № 5 bus ©") == "a dog on the no 5 bus"


def test_marks_alone_are_no_words():
    assert normalise_caption("!\u0336 \u0301") == "" and caption_norm_sha("!\u0336 \u0301") is None


def test_a_mark_on_punctuation_or_a_symbol_goes_with_it():
    """A combining mark after no letter or number (a strike-through on "!", an enclosing circle after a space)
    is no part of a word: the caption still matches its plain twin, as before marks were kept."""
    from curation_pipeline.scoring.signals.duplicates import caption_norm_sha, normalise_caption

    assert normalise_caption("A red car!\u0336") == normalise_caption("A red car \u20dd") == "a red car"
    assert caption_norm_sha("A red car!\u0336") == caption_norm_sha("A red car!")
    assert normalise_caption("!\u0336") == "" and caption_norm_sha("!\u0336") is None
