import math

import pytest
from PIL import Image

from curation_pipeline.models.loading import ModelUnavailableError
from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.aitqe import DEFAULT_INSTRUCTION, AitqeRewriter, parse_aitqe_output
from curation_pipeline_tests import tiny_models

NAN = math.nan
# The reference inference script's example reply with --output_all (abridged explanations).
FULL = (
    '{"Recaption": "A man stands in front of a checklist of customer service questions, including '
    "'Do you take each customer seriously?' and 'Do you qualify customers properly?'\", "
    '"Overall Score": "2<Overall>", "Overall Explanation": "The caption is vague, and unrelated.", '
    '"Text Quality Score": 3, "Text Quality Explanation": "Grammatical but vague.", '
    '"Image-Text Matching Score": 2, "Image-Text Matching Explanation": "Unrelated.", '
    '"Object Detail Score": 2, "Semantic Understanding Score": 2, '
    '"Text/Chart Description Score": 2, "Text/Chart Description Explanation": "No text described."}'
)
SUBSCORES = {"text_quality": 3.0, "image_text_matching": 2.0, "object_detail": 2.0,
             "semantic_understanding": 2.0, "text_chart_description": 2.0}

# reply -> (recaption, overall, subscores, error substring or None)
CASES = {
    "full JSON": (FULL, FULL[len('{"Recaption": "'):FULL.index('", "Overall')], 2.0, SUBSCORES, None),
    # Default generation stops at the <Overall> marker: cut off mid-value, no closing brace.
    "stopped at marker": ('{"Recaption": "A brown dog runs on the beach.", "Overall Score": "3<Overall>',
                          "A brown dog runs on the beach.", 3.0, {}, None),
    "reference post-processing": ('{"Recaption": "A brown dog runs on the beach.", "Overall Score": "3<Overall}',
                                  "A brown dog runs on the beach.", 3.0, {}, None),
    # the reply ends inside the score, no <Overall> after it: "1" may be the first digit of "10" (Qwen2 writes
    # one digit a token), so no score; the recaption before it closed, so it stands
    "cut off mid-score": ('{"Recaption": "A man riding a bike.", "Overall Score": "1', "A man riding a bike.", NAN, {},
                          "overall score cut off"),
    "cut off mid-score, unquoted": ('{"Recaption": "A red bus.", "Overall Score": 1', "A red bus.", NAN, {},
                                    "overall score cut off"),
    "cut off in a sub-score": ('{"Recaption": "A red bus.", "Overall Score": "7<Overall>", "Text Quality Score": "1',
                               "A red bus.", 7.0, {"text_quality": NAN}, "text_quality score cut off"),
    # plain text may end at EOS (whole) or at the token budget: the parser cannot tell, so it is taken as whole;
    # in a {...} never closed, the end of the reply is a cut
    "unquoted recaption at the end": ("Recaption: A red bus on a city", "A red bus on a city", NAN, {},
                                      "no overall score"),
    "unquoted recaption cut off in braces": ("{Recaption: A red bus on a city", None, NAN, {}, "recaption cut off"),
    "cut off after a comma": ('{"Recaption": "A red bus.", "Overall Score": 7, "Text Qual',
                              "A red bus.", 7.0, {}, None),
    "python dict": ("{'Recaption': 'A dog\\'s ball on the grass', 'Overall Score': 8, 'Text Quality Score': '8/10'}",
                    "A dog's ball on the grass", 8.0, {"text_quality": 8.0}, None),
    "single quotes, apostrophe unescaped": ("{'recaption': 'A dog's ball', 'overall score': '6'",
                                            "A dog's ball", 6.0, {}, None),
    "unquoted keys": ('{Recaption: "Two kids, one in red, play in the sand", Overall Score: 7.5}',
                      "Two kids, one in red, play in the sand", 7.5, {}, None),
    "unquoted everything": ("Recaption: A red bus on a city street, at night\nOverall Score: 4/10\n"
                            "Overall Explanation: clear", "A red bus on a city street, at night", 4.0, {}, None),
    "unquoted, ending in the score": ("Recaption: A red bus on a city street, at night\nOverall Score: 4/10",
                                      "A red bus on a city street, at night", 4.0, {}, None),
    "prose and code fence": ('Sure! Here is my evaluation:\n```json\n{"recaption": "A cat on a mat.", '
                             '"overall": "6/10"}\n```\nHope it helps.', "A cat on a mat.", 6.0, {}, None),
    "key variant, inner quotes": ('{"Rewritten caption": "A girl sings "Happy Birthday" to her dad", '
                                  '"Overall Score": 9}', 'A girl sings "Happy Birthday" to her dad', 9.0, {}, None),
    # an inner quote before a comma is no end of the value: only one before the next key, "}" or the end is
    "inner quote and comma, single": ("{'Recaption': 'A sign reading 'OPEN', hanging on a wooden door', "
                                      "'Overall Score': '2<Overall>", "A sign reading 'OPEN', hanging on a wooden door",
                                      2.0, {}, None),
    "inner quote and comma, double": ('{"Recaption": "A sign reading "OPEN", hanging on a door", "Overall Score": 2}',
                                      'A sign reading "OPEN", hanging on a door', 2.0, {}, None),
    "inner quote, comma inside": ("{'Recaption': 'A sign reading 'OPEN, GO IN', hanging on a door', "
                                  "'Overall Score': 2}",
                                  "A sign reading 'OPEN, GO IN', hanging on a door", 2.0, {}, None),
    "cut off after the recaption": ('{"Recaption": "A red bus.", "Overa', "A red bus.", NAN, {}, "no overall score"),
    # "Hours:" reads like a key: the value's end cannot be told, and a truncated caption is worse than none
    "ambiguous end": ("{'Recaption': 'A sign reading 'OPEN', Hours: 9-5', 'Overall Score': 3}", None, 3.0, {},
                      "recaption end ambiguous"),
    "escaped quotes": ('{"Recaption": "A sign reads \\"Open\\"", "Overall Score": "8.5"}',
                       'A sign reads "Open"', 8.5, {}, None),
    # Cut at the default <Overall> stop, so no strict parse: escaped inner quotes are no end, hence unambiguous.
    "escaped quotes, stopped at marker": (r'{"Recaption": "A poster of the film \"Jaws\" on a wall.", '
                                          r'"Overall Score": "2<Overall>', 'A poster of the film "Jaws" on a wall.',
                                          2.0, {}, None),
    "escaped apostrophe, stopped at marker": (r"{'Recaption': 'A dog\'s toy on a rug.', 'Overall Score': '2<Overall>",
                                              "A dog's toy on a rug.", 2.0, {}, None),
    "escaped quote never closed": (r'{"Recaption": "A sign reading \"OPEN, on a door", "Overall Score": "2<Overall>',
                                   'A sign reading "OPEN, on a door', 2.0, {}, None),
    "escaped backslash before the end": (r'{"Recaption": "A path C:\\", "Overall Score": "2<Overall>',
                                         "A path C:\\", 2.0, {}, None),
    "escaped and unescaped, ambiguous end": (r'{"Recaption": "A sign \"OPEN\" then "CLOSED", Hours: 9-5", '
                                             r'"Overall Score": 3}', None, 3.0, {}, "recaption end ambiguous"),
    "out of range": ('{"Recaption": "A dog", "Overall Score": 12, "Text Quality Score": 0}', "A dog", NAN,
                     {"text_quality": NAN}, "overall score out of range 1-10: 12"),
    "wrong scale": ('{"Recaption": "A dog", "Overall Score": "85/100"}', "A dog", NAN, {}, "not on the 1-10 scale"),
    "not a number": ('{"Recaption": "A dog", "Overall Score": "eight"}', "A dog", NAN, {}, "not a number"),
    # the whole value must be the number (ASCII digits): no prefix of it is taken
    "number then words": ('{"Recaption": "A dog", "Overall Score": "8 dogs<Overall>', "A dog", NAN, {},
                          "not a number: '8 dogs'"),
    "exponent": ('{"Recaption": "A dog", "Overall Score": "3.7e1"}', "A dog", NAN, {}, "not a number"),
    "trailing point": ('{"Recaption": "A dog", "Overall Score": "3."}', "A dog", NAN, {}, "not a number"),
    "full-width digit": ('{"Recaption": "A dog", "Overall Score": "２"}', "A dog", NAN, {}, "not a number"),
    "quoted, spaced, out of 10": ("{'Recaption': 'A dog', 'Overall Score': ' 8 out of 10 '}", "A dog", 8.0, {}, None),
    "recaption not text": ('{"Recaption": ["A dog", "a ball"], "Overall Score": 7}', None, 7.0, {},
                           "recaption is not text but list"),
    "recaption cut off": ('{"Recaption": "A man climbs a rock wall while a wo', None, NAN, {}, "recaption cut off"),
    "empty recaption": ('{"Recaption": "", "Overall Score": 9}', None, 9.0, {}, "empty recaption"),
    # null as strict JSON reads it, in a reply cut at <Overall> too (the tolerant scan), or Python's None: no caption
    "null recaption": ('{"Recaption": null, "Overall Score": 9}', None, 9.0, {}, "empty recaption"),
    "null recaption, cut": ('{"Recaption": null, "Overall Score": "9<Overall>', None, 9.0, {}, "empty recaption"),
    "None recaption, cut": ("{'Recaption': None, 'Overall Score': '9<Overall>", None, 9.0, {}, "empty recaption"),
    "NULL recaption, cut": ('{"Recaption": NULL, "Overall Score": "9<Overall>', None, 9.0, {}, "empty recaption"),
    "the word null, quoted": ('{"Recaption": "null", "Overall Score": "9<Overall>', "null", 9.0, {}, None),
    "no recaption": ('{"Overall Score": 9, "Text Quality Score": 9}', None, 9.0, {"text_quality": 9.0},
                     "no recaption"),
    "gibberish": ("M\x13 near D rD rD}{", None, NAN, {}, "no recaption; no overall score"),
    "empty": ("   ", None, NAN, {}, "empty output"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_parser(name):
    reply, recaption, overall, subscores, error = CASES[name]
    parsed = parse_aitqe_output(reply)
    assert parsed.recaption == recaption
    assert parsed.overall == pytest.approx(overall, nan_ok=True)
    assert parsed.subscores == pytest.approx(subscores, nan_ok=True)
    if error is None:
        assert parsed.error is None
    else:
        assert error in parsed.error


def test_instruction_needs_the_caption_placeholder():
    with pytest.raises(ValueError, match=r"\{caption\}"):
        AitqeRewriter("HymanH/AITQE", instruction="Evaluate.")


@pytest.fixture(scope="module")
def images(flickr_dir):
    return [Image.open(p).convert("RGB") for p in sorted((flickr_dir / "images").glob("*.jpg"))[:2]]


def test_chat_backend_random_output_is_recorded_not_raised(tmp_path, images):
    path = tiny_models.make_tiny_llava(tmp_path / "llava")
    rewriter = AitqeRewriter(path, max_new_tokens=12, batch_size=1)
    assert rewriter.generator.stop_strings == ["<Overall>"] and rewriter.prompt == DEFAULT_INSTRUCTION
    candidates = rewriter.rewrite(PairBatch(["a", "b", "c"], ["A dog.", None, "x"], [images[0], images[1], None]))
    # 12 random tokens never make a {"Recaption": ..., "Overall Score": ...} reply: no candidate, no score,
    # the parse error says why, and the reply itself is kept for the lineage
    for cand in candidates[:2]:
        assert cand.caption is None and cand.error == "no recaption; no overall score", (cand.raw, cand.error)
        assert isinstance(cand.raw, str) and cand.raw.strip() and "Recaption" not in cand.raw
        assert list(cand.scores) == ["aitqe_overall"] and math.isnan(cand.scores["aitqe_overall"])
    assert (candidates[2].caption, candidates[2].error) == (None, "no image")


def test_neither_backend_loads(tmp_path):
    with pytest.raises(ModelUnavailableError, match="could not be loaded"):
        AitqeRewriter(str(tmp_path))


def test_escaped_quotes_reach_the_rewrite_candidate():
    # the released checkpoint's usual reply: cut at <Overall>, the film title's quotes JSON-escaped
    cand = AitqeRewriter._candidate(r'{"Recaption": "A poster of the film \"Jaws\" on a wall.", '
                                    r'"Overall Score": "2<Overall>')
    assert cand.caption == 'A poster of the film "Jaws" on a wall.'
    assert cand.error is None and cand.scores["aitqe_overall"] == 2.0
