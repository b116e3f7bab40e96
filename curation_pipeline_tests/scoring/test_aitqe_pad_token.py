"""AITQE's reference refuses a prompt holding its pad token (``MMDataCollector`` asserts it is not in the
input ids): a caption with ``<|endoftext|>`` gets no score and no rewrite here, with that reason, and the
model never sees it; the rest of the batch runs as before."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.aitqe import DEFAULT_INSTRUCTION, AitqeRewriter
from curation_pipeline.scoring.aitqe import AitqeScorer
from curation_pipeline.scoring.base import NO_INPUT
from curation_pipeline.scoring.run import raised_on
from curation_pipeline_tests.tiny_models import RELEASED

MODEL, TOWER = str(RELEASED / "aitqe-tiny"), str(RELEASED / "siglip-tiny-patch8-32")
REFUSED = "caption holds the pad token <|endoftext|>, which the reference refuses"
CAPTIONS = ["a red bicycle leaning on a wall", "a red bicycle <|endoftext|> leaning on a wall", "a cat"]


@pytest.fixture(scope="module")
def image():
    return Image.open(RELEASED / "images" / "wide_48x32.png").convert("RGB")


def _spy(generator):
    """The instructions the model is asked."""
    seen = []
    generate = generator.generate
    generator.generate = lambda images, texts: seen.extend(texts) or generate(images, texts)
    return seen


def test_the_caption_maps_to_the_checkpoints_pad_id(image):
    scorer = AitqeScorer(MODEL, max_new_tokens=8, batch_size=1, device="cpu", vision_tower=TOWER)
    generator = scorer.generator
    assert generator.pad_token_id == generator.released.config["pad_token_index"] == 600
    assert 600 in generator.token_ids(CAPTIONS[1])  # what the model was fed before


def test_scorer_refuses_the_pair_and_scores_the_rest(image):
    scorer = AitqeScorer(MODEL, max_new_tokens=8, batch_size=2, device="cpu", vision_tower=TOWER)
    seen = _spy(scorer.generator)
    batch = PairBatch(["a", "b", "c", "d"], [*CAPTIONS, "no image here"], [image, image, image, None])
    frame = scorer.score(batch)
    assert not any("<|endoftext|>" in text for text in seen) and len(seen) == 2
    assert math.isnan(frame.loc[1, "aitqe_overall"]) and frame.loc[1, "aitqe_recaption"] is None
    assert frame.loc[1, "aitqe_error"] == REFUSED
    assert frame.loc[3, "aitqe_error"] == "no image"
    for row in (0, 2):
        assert frame.loc[row, "aitqe_error"] != REFUSED
    # The other pairs get what a batch without the refused one gets.
    alone = scorer.score(PairBatch(["a", "c"], [CAPTIONS[0], CAPTIONS[2]], [image, image]))
    for column in ("aitqe_recaption", "aitqe_error"):
        assert frame.loc[[0, 2], column].tolist() == alone[column].tolist()
    # As MLM-Filter's refusal of a caption holding <image>: attempted (not "no input"), not raised.
    assert REFUSED not in NO_INPUT
    counted = raised_on(frame, [scorer])["aitqe"]
    assert counted.pairs == 0 and counted.attempted == 3
    assert int(scorer.version.split(":")[0]) >= 3  # scores stored before 3 are other scores


def test_rewriter_makes_no_attempt_and_says_why(image):
    rewriter = AitqeRewriter(MODEL, max_new_tokens=8, batch_size=2, device="cpu", vision_tower=TOWER)
    seen = _spy(rewriter.generator)
    candidates = rewriter.rewrite(PairBatch(["a", "b", "c"], CAPTIONS, [image] * 3))
    assert len(seen) == 2 and not any("<|endoftext|>" in text for text in seen)
    refused = candidates[1]
    assert refused.caption is None and refused.raw is None and refused.error == REFUSED
    assert refused.prompt_hash is None  # never asked
    assert all(c.prompt_hash is not None for c in (candidates[0], candidates[2]))
    assert int(rewriter.version.split(":")[0]) >= 4


def test_an_instruction_holding_the_pad_token_is_refused_up_front():
    with pytest.raises(ValueError, match="pad token"):
        AitqeRewriter(MODEL, instruction="<|endoftext|>" + DEFAULT_INSTRUCTION, device="cpu", vision_tower=TOWER)
