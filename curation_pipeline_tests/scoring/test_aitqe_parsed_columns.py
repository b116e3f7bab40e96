"""What AITQE's reply says reaches the output: the scorer's columns and the rewriter's candidate and lineage. The
random tiny checkpoint never writes a parseable reply, so the generator here is a stub answering as the released
model does (cut at ``<Overall>``)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.aitqe import AitqeRewriter
from curation_pipeline.rewriting.attempts import rewrite_batches
from curation_pipeline.rewriting.verify import AcceptanceRules
from curation_pipeline.scoring.aitqe import AitqeScorer
from curation_pipeline_tests.tiny_models import RELEASED

REPLIES = {
    "a dog": '{"Recaption": "A brown dog runs on the beach.", "Overall Score": "3<Overall>',
    "a bus": '{"Recaption": "A red bus on a street.", "Overall Score": "12<Overall>',
    "a cat": '{"Recaption": "A cat on a mat.", "Overall Score": "1',  # cut off inside the score
}


class StubGenerator:
    def __init__(self):
        self.asked = []

    def generate(self, images, instructions):
        self.asked.extend(instructions)
        return [REPLIES[text.partition("Evaluate the caption: ")[2].partition("\n")[0]] for text in instructions]


@pytest.fixture(scope="module")
def image():
    return Image.open(RELEASED / "images" / "wide_48x32.png").convert("RGB")


def test_the_scorer_writes_the_parsed_rating_and_recaption(image):
    scorer = AitqeScorer.__new__(AitqeScorer)
    scorer.__dict__.update(batch_size=2, generator=StubGenerator(), version="test")
    frame = scorer.score(PairBatch(["a", "b", "c", "d"], ["a dog", "a bus", "a cat", "a dog"],
                                   [image, image, image, None]))
    assert len(scorer.generator.asked) == 3
    assert frame.loc[0, "aitqe_overall"] == 3.0
    assert frame.loc[0, "aitqe_recaption"] == "A brown dog runs on the beach."
    assert frame.loc[0, "aitqe_error"] is None and frame.loc[0, "aitqe_reply"] == REPLIES["a dog"]
    # a score out of range, or one the reply ends inside: no rating, the recaption before it stands
    assert math.isnan(frame.loc[1, "aitqe_overall"]) and frame.loc[1, "aitqe_recaption"] == "A red bus on a street."
    assert frame.loc[1, "aitqe_error"] == "overall score out of range 1-10: 12"
    assert math.isnan(frame.loc[2, "aitqe_overall"]) and frame.loc[2, "aitqe_recaption"] == "A cat on a mat."
    assert frame.loc[2, "aitqe_error"].startswith("overall score cut off")
    assert math.isnan(frame.loc[3, "aitqe_overall"]) and frame.loc[3, "aitqe_error"] == "no image"


def test_the_rewriter_candidate_and_lineage_hold_the_rating_and_the_parse_error(image):
    rewriter = AitqeRewriter(str(RELEASED / "aitqe-tiny"), batch_size=2, device="cpu", load_model=False)
    rewriter.generator = StubGenerator()
    batch = PairBatch(["a", "b", "c"], ["a dog", "a bus", "a cat"], [image] * 3)
    candidates = rewriter.rewrite(batch)
    assert [c.caption for c in candidates] == ["A brown dog runs on the beach.", "A red bus on a street.",
                                               "A cat on a mat."]
    assert candidates[0].scores == {"aitqe_overall": 3.0} and candidates[0].error is None
    assert math.isnan(candidates[1].scores["aitqe_overall"])
    assert candidates[1].error == "overall score out of range 1-10: 12"  # kept although a recaption came

    lineage = rewrite_batches([batch], shard="s", rewriter=rewriter,
                              rescore=lambda b: pd.DataFrame({"q": [90.0] * len(b)}), quality_column="q",
                              scores_before={"a": 10.0, "b": 10.0, "c": 10.0},
                              rules=AcceptanceRules(min_improvement=0.0, check_wellformed=False), run_id="r")
    assert json.loads(lineage.loc[0, "rewriter_scores"]) == {"aitqe_overall": 3.0}
    assert json.loads(lineage.loc[1, "rewriter_scores"]) == {"aitqe_overall": None}
    assert lineage.loc[0, "candidate_caption"] == "A brown dog runs on the beach."
    assert "reply:" not in lineage.loc[0, "reason"]
    assert lineage.loc[1, "reason"].endswith("; reply: overall score out of range 1-10: 12")
    assert "; reply: overall score cut off" in lineage.loc[2, "reason"]
