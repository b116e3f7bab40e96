"""A reply cut off at AITQE's ``<Overall>`` stop is read key by key, not by ``json.loads``: its escapes must decode
as the complete reply's do, ``\\uXXXX`` (and surrogate pairs) included, or the recaption keeps them as text."""

import json

import pytest

from curation_pipeline.rewriting.aitqe import parse_aitqe_output

RECAPTIONS = [
    r"A caf\u00e9 in Paris",
    r"A dog \ud83d\ude00 in Z\u00fcrich",
    r"\u00c9t\u00e9 \u00e0 Istanbul: \u0130stiklal Caddesi",
    r"A sign reading \"OPEN\" \u2014 caf\u00c9",
    r"A path \\u00e9 of backslashes",  # an escaped backslash, then the letters: no escape
]


@pytest.mark.parametrize("recaption", RECAPTIONS)
def test_a_cut_off_reply_decodes_escapes_as_a_complete_one(recaption):
    complete = '{"Recaption": "' + recaption + '", "Overall Score": "3"}'
    cut_off = '{"Recaption": "' + recaption + '", "Overall Score": "3<Overall>'
    expected = json.loads(complete)["Recaption"]
    assert parse_aitqe_output(complete).recaption == expected
    assert parse_aitqe_output(cut_off).recaption == expected
    assert parse_aitqe_output(cut_off).overall == 3.0


def test_a_lone_surrogate_half_becomes_a_replacement_character():
    """json.loads would keep a lone half, which no UTF-8 text (a Parquet string, a tar's caption) can hold."""
    parsed = parse_aitqe_output(r'{"Recaption": "A dog \ud83d on grass", "Overall Score": "3<Overall>')
    assert parsed.recaption == "A dog \ufffd on grass"
    parsed.recaption.encode("utf-8")
