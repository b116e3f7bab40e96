"""fastText sees the caption as DataComp's ``get_fasttext_language`` gives it (``text.replace("\\n", " ")``),
Unicode spaces at either end included: stripping them changes the language of some captions."""

import math

import pytest
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.datacomp import DataCompBasicRules


@pytest.fixture(scope="module")
def scorer() -> DataCompBasicRules:
    return DataCompBasicRules()


def datacomp_language(scorer: DataCompBasicRules, caption: str) -> str:
    """DataComp's own call, on the same (lite) model."""
    model = scorer._detector._get_model(low_memory=True)
    return model.predict(caption.replace("\n", " "))[0][0].replace("__label__", "")


@pytest.mark.parametrize("caption", [
    "An abstract texture of soft, blurry green and yellow blobs.\u3000",  # DataComp: zh (stripped: en)
    "Royalty free stock image\xa0",  # DataComp: fr (stripped: en)
    "\u2028A dog\non the beach\x85",
    "A dog on the beach ",
])
def test_the_language_is_datacomps(scorer, caption):
    row = scorer.score(PairBatch(["k"], [caption], [Image.new("RGB", (300, 300))])).iloc[0]
    expected = datacomp_language(scorer, caption)
    assert row["datacomp_lang"] == expected
    assert bool(row["datacomp_english"]) is (expected == "en") and bool(row["datacomp_pass"]) is (expected == "en")


def test_the_unicode_space_cases_are_not_english(scorer):
    """The two cases above really differ from their stripped captions (else the test would prove nothing)."""
    for caption in ["An abstract texture of soft, blurry green and yellow blobs.\u3000", "Royalty free stock image\xa0"]:
        assert datacomp_language(scorer, caption) != "en" and datacomp_language(scorer, caption.strip()) == "en"


@pytest.mark.parametrize("caption", ["", " \n ", "\u3000", "\xa0\u2028"])
def test_a_blank_caption_has_no_language(scorer, caption):
    lang, score = scorer.detect_language(caption)
    assert lang is None and math.isnan(score)
