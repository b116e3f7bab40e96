"""The shared caption patterns: the keyword pre-filters never change an answer, spans are sane."""

import random

import pytest

from curation_pipeline.captions import patterns as P
from curation_pipeline.evaluation.noise import ad_text, credit_text, inject, NOISE_KINDS
from curation_pipeline.evaluation.shipped_captions import CAPTIONS


def _texts():
    rng = random.Random(5)
    texts = list(CAPTIONS)
    for caption in CAPTIONS:
        texts.append(inject(caption, rng.sample(list(NOISE_KINDS), 2), rng))
    texts += [ad_text(rng) for _ in range(300)] + [credit_text(rng) for _ in range(300)]
    texts += ["Sale 30% off today", "e-mail us", "Pre-order now", "(c) Jane Doe 2019", "Jane Doe | AFP",
              "AP Photo/Jane Doe", "SHOP NOW", "Only €9.99", "BOGO deals"]
    return texts


@pytest.mark.parametrize("text", _texts())
def test_prefilters_do_not_change_answers(text):
    assert P.has_ad(text) == bool(P.ad_triggers(text))
    assert P.has_credit(text) == (P.CREDIT_RE.search(text) is not None or bool(P.bracket_note_spans(text)))


def test_ad_spans_cover_whole_clauses():
    text = "A red dress on a hanger . Buy now and save 20%! | Free shipping"
    spans = P.ad_spans(text)
    assert [text[s:e] for s, e in spans] == ["Buy now and save 20%!", "Free shipping"]
    tail = "Red dress with free shipping"
    assert [tail[s:e] for s, e in P.ad_spans(tail)] == [" with free shipping"]
    assert P.ad_spans('A sign reading " 50% off " in a window') == []


def test_bracket_notes():
    text = "A dog (left) runs (source: http://x.com/a/b) on grass [via Reuters] (2019) (Photo: Jane Doe/AP)"
    assert [text[s:e] for s, e in P.bracket_note_spans(text)] == [
        "(source: http://x.com/a/b)", "[via Reuters]", "(Photo: Jane Doe/AP)"]


def test_names_stop_where_the_caption_starts():
    assert P.CREDIT_RE.search("Photo: Jane Doe A dog runs").group(0) == "Photo: Jane Doe"
    assert P.CREDIT_RE.search("Photo: Man stands on a cliff") is None
    assert P.CREDIT_RE.search("Picture by Sarah Patel | Black and white dog").group(0) == "Picture by Sarah Patel"
    assert P.CREDIT_RE.search("Photograph: J. R. Smith for The New York Times").group(0).endswith("Times")


def test_control_and_whitespace():
    assert P.remove_control_chars("A\x00 d\u200bog \x1b[1;31mruns\x1b[0m\u202e") == "A dog runs"
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    assert P.remove_control_chars(f"A {family}\u200d") == f"A {family}"
    assert P.normalize_whitespace(" A\tdog \n runs\u00a0 ") == "A dog runs"
    assert P.normalize_whitespace("猫\u3000犬") == "猫\u3000犬"
