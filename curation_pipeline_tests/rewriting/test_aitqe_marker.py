"""The ``<Overall>`` marker is where AITQE itself says its overall score ended: the overall is the value just before
it, never an "Overall Score" written inside a recaption whose end the key-by-key scan cannot tell. An unquoted
recaption followed by another key than the overall has no sure end either, and is not cut silently."""

import math

import pytest

from curation_pipeline.rewriting.aitqe import AitqeRewriter, parse_aitqe_output


@pytest.mark.parametrize("reply", [
    # an ambiguous recaption holding a fake key; the scan would read "9" as the overall
    '{"Recaption": "A poster: "Recaption", "Overall Score": "9"", "Overall Score": "3<Overall>',
    '{"Recaption": "A poster: "Recaption", "Overall Score": "9"", "Overall Score": "3<Overall}',  # reference's "}"
])
def test_the_overall_is_the_value_before_the_marker(reply):
    parsed = parse_aitqe_output(reply)
    assert parsed.overall == 3.0
    assert parsed.recaption is None and "recaption end ambiguous" in parsed.error
    # the rewriter's candidate, and the scorer's aitqe_overall, come from the same parse
    candidate = AitqeRewriter._candidate(reply)
    assert candidate.scores["aitqe_overall"] == 3.0 and candidate.caption is None


def test_keys_after_an_ambiguous_recaption_give_no_scores():
    """Without the marker the overall is the last overall key, and only keys after it give sub-scores."""
    parsed = parse_aitqe_output('{"Recaption": "A poster: "Recaption", "Text Quality Score": "9"", '
                                '"Overall Score": 3, "Text Quality Score": 4}')
    assert parsed.overall == 3.0 and parsed.subscores == {"text_quality": 4.0}
    marked = parse_aitqe_output('{"Recaption": "A poster: "Recaption", "Text Quality Score": "9"", '
                                '"Overall Score": "3<Overall>", "Object Detail Score": 2}')
    assert marked.overall == 3.0 and marked.subscores == {"object_detail": 2.0}


@pytest.mark.parametrize("reply, after", [
    ("{Recaption: A menu, Price list: 5 dollars, Overall Score: 3<Overall>", "price_list"),
    ("{Recaption: A dog, score: 9, Overall Score: 3<Overall>", "score"),
    ("{Recaption: A menu, Price list: 5 dollars, Overall Score: 3}", "price_list"),
])
def test_an_unquoted_recaption_followed_by_another_key_is_ambiguous(reply, after):
    parsed = parse_aitqe_output(reply)
    assert parsed.recaption is None and parsed.overall == 3.0
    assert f"recaption end ambiguous (unquoted, followed by {after!r}" in parsed.error


@pytest.mark.parametrize("reply, recaption, overall", [
    ("{Recaption: A dog, a cat, Overall Score: 3<Overall>", "A dog, a cat", 3.0),
    ('{"Recaption": "A dog", "Overall Score": 9, "Overall Score": "3<Overall>', "A dog", 3.0),
    ('{"Recaption": "A dog", "Overall Score": "7.5 out of 10<Overall>', "A dog", 7.5),
    ('{"Recaption": "A dog", "Overall Score": "NaN<Overall>', "A dog", math.nan),
])
def test_a_well_formed_reply_reads_as_before(reply, recaption, overall):
    parsed = parse_aitqe_output(reply)
    assert parsed.recaption == recaption and parsed.overall == pytest.approx(overall, nan_ok=True)


@pytest.mark.parametrize("reply, overall", [
    # the marker inside a recaption cut off: no overall key was written, so none is scored
    ('{"Recaption": "A scoreboard reading Home: 7<Overall>', math.nan),
    # the marker after another key's text: the overall key's own value stands
    ('{"Recaption": "A dog", "Overall Score": "2", "Overall Explanation": "Low quality: 8<Overall>', 2.0),
])
def test_a_marker_that_ends_no_overall_key_gives_no_score(reply, overall):
    parsed = parse_aitqe_output(reply)
    assert parsed.overall == overall or (math.isnan(overall) and math.isnan(parsed.overall))
