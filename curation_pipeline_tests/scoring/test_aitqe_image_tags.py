"""AITQE's reference processor rewrites the whole prompt, caption included, around ``<img_start>``/``<img_end>``
(spaces after ``<img_end>`` dropped and a newline forced there; a tagged span that is not JSON removed; one that
is, loaded as a second image from a local path). A caption holding either is refused, as a pad-token caption is:
no score and no rewrite, with that reason, the model never asked, the rest of the batch run as before."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from curation_pipeline.pairs import ContractError, PairBatch
from curation_pipeline.rewriting.aitqe import DEFAULT_INSTRUCTION, AitqeRewriter
from curation_pipeline.rewriting.attempts import rewrite_batches
from curation_pipeline.rewriting.verify import AcceptanceRules
from curation_pipeline.scoring.aitqe import AitqeScorer
from curation_pipeline.scoring.base import NO_INPUT
from curation_pipeline.scoring.run import raised_on
from curation_pipeline.scoring.text_quality import CaptionTextQuality
from curation_pipeline_tests.scoring import test_aitqe_pad_token as pad_token
from curation_pipeline_tests.tiny_models import RELEASED

MODEL, TOWER = str(RELEASED / "aitqe-tiny"), str(RELEASED / "siglip-tiny-patch8-32")
REFUSED = "caption holds <img_start>/<img_end>, which the reference processor rewrites or loads as an image"
TAGGED = ["a <img_end> tag",  # the reference tokenizes "\ntag" where the caption says " tag"
          "x <img_start>foo<img_end> y",  # the reference drops "<img_start>foo<img_end>"
          '<img_start>{"path": "images/wide_48x32.png"}<img_end> a cat',  # the reference loads this file
          "an <img_start> alone"]
CAPTIONS = ["a red bicycle leaning on a wall", *TAGGED, "a cat"]
image, _spy = pad_token.image, pad_token._spy  # the same image fixture and model spy as the pad-token tests




def test_a_tagged_caption_is_refused_and_never_tokenized():
    rewriter = AitqeRewriter(MODEL, max_new_tokens=8, device="cpu", vision_tower=TOWER)
    generator = rewriter.generator
    for caption in TAGGED:
        instruction = rewriter.instruction(caption)
        assert generator.refusal(instruction) == REFUSED, caption
        with pytest.raises(ContractError, match="image tag"):  # not ids other than the reference's
            generator.token_ids(instruction)
    for caption in ("a <img> tag", "img_end", "<img_start", "a cat <|endoftext|>"):  # the tags only
        assert generator.refusal(rewriter.instruction(caption)) != REFUSED
    assert int(rewriter.version.split(":")[0]) >= 8  # lineage written before 8 may hold such rewrites


def test_scorer_refuses_the_pairs_and_scores_the_rest(image):
    scorer = AitqeScorer(MODEL, max_new_tokens=8, batch_size=2, device="cpu", vision_tower=TOWER)
    seen = _spy(scorer.generator)
    batch = PairBatch([f"k{i}" for i in range(len(CAPTIONS))], CAPTIONS, [image] * len(CAPTIONS))
    frame = scorer.score(batch)
    assert len(seen) == 2 and not any("<img_" in text for text in seen)
    tagged = list(range(1, 1 + len(TAGGED)))
    assert frame.loc[tagged, "aitqe_error"].tolist() == [REFUSED] * len(TAGGED)
    assert frame.loc[tagged, "aitqe_overall"].map(math.isnan).all()
    assert frame.loc[tagged, "aitqe_recaption"].isna().all() and frame.loc[tagged, "aitqe_reply"].isna().all()
    # The other pairs get what a batch without the refused ones gets.
    alone = scorer.score(PairBatch(["k0", "k5"], [CAPTIONS[0], CAPTIONS[-1]], [image, image]))
    for column in ("aitqe_recaption", "aitqe_reply", "aitqe_error"):
        assert frame.loc[[0, len(CAPTIONS) - 1], column].tolist() == alone[column].tolist()
    # A model's rejection of the pair, as the pad-token refusal: attempted (not "no input"), not a failed shard.
    assert REFUSED not in NO_INPUT
    counted = raised_on(frame, [scorer])["aitqe"]
    assert counted.pairs == 0 and counted.attempted == len(CAPTIONS)
    assert int(scorer.version.split(":")[0]) >= 8  # scores stored before 8 may rate such captions


def test_rewriter_leaves_the_pairs_with_the_reason_in_its_lineage(image):
    rewriter = AitqeRewriter(MODEL, max_new_tokens=8, batch_size=2, device="cpu", vision_tower=TOWER)
    seen = _spy(rewriter.generator)
    batch = PairBatch([f"k{i}" for i in range(len(CAPTIONS))], CAPTIONS, [image] * len(CAPTIONS))
    quality = CaptionTextQuality()
    before = dict(zip(batch.keys, quality.score(batch)["text_quality"]))
    lineage = rewrite_batches(batch.chunks(3), shard="s-000", rewriter=rewriter, rescore=quality.score,
                              quality_column="text_quality", scores_before=before,
                              rules=AcceptanceRules(min_improvement=-100.0, check_wellformed=False), run_id="r1")
    assert len(seen) == 2 and not any("<img_" in text for text in seen)
    rows = lineage.set_index("key")
    for key in (f"k{i}" for i in range(1, 1 + len(TAGGED))):
        row = rows.loc[key]
        assert row["reason"] == f"no candidate: {REFUSED}" and not row["accepted"]
        assert pd.isna(row["candidate_caption"]) and pd.isna(row["rewriter_output"])  # the model was not asked
    assert not any(REFUSED in rows.loc[key, "reason"] for key in ("k0", f"k{len(CAPTIONS) - 1}"))


def test_an_instruction_holding_a_tag_is_refused_up_front():
    with pytest.raises(ValueError, match="<img_start>/<img_end>"):
        AitqeRewriter(MODEL, instruction="<img_end> " + DEFAULT_INSTRUCTION, device="cpu", vision_tower=TOWER)
