"""Generation -> re-scoring -> acceptance on real photos with tiny random-weight VLMs.

Random models write random captions; what is tested is that every one of them is
accepted or rejected exactly as the rules say, and that the lineage row records the
numbers the decision was made on.
"""

import math

import pandas as pd
import pytest
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.aitqe import AitqeRewriter
from curation_pipeline.rewriting.attempts import LINEAGE_COLUMNS, rewrite_batches
from curation_pipeline.rewriting.base import hash_prompt
from curation_pipeline.rewriting.verify import AcceptanceRules, edit_ratio, judge, length_ratio
from curation_pipeline.rewriting.vlm import NO_CAPTION_PROMPT, VlmRewriter
from curation_pipeline.scoring.signals.embedding import caption_similarity
from curation_pipeline.scoring.text_quality import CaptionTextQuality
from curation_pipeline_tests import tiny_models

WEAK_CAPTIONS = [
    "IMG_2041.JPG", "dog", "A DOG RUNNING ON THE GRASS", "click to enlarge stock photo of kids",
    None, "girl girl girl girl girl girl", "www.example.com", "A man climbs a rock wall.",
]
# Random text shares no word with the original (edit ratio 1), so the edit bound rejects
# every improved rewrite; the similarity and length bounds are set to split them. Random text
# is also malformed (stray brackets, lone marks): the independent well-formedness check is off
# here so the minimality bounds are what decides (it is tested in test_acceptance_check.py).
MINIMAL = AcceptanceRules(min_improvement=1.0, max_edit_ratio=0.95, min_length_ratio=0.3, check_wellformed=False)
MEANING = AcceptanceRules(min_improvement=1.0, max_length_ratio=4.0, min_similarity=0.05, check_wellformed=False)
LOOSE = AcceptanceRules(min_improvement=-100.0, check_wellformed=False)


@pytest.fixture(scope="module")
def pairs(flickr_dir):
    paths = sorted((flickr_dir / "images").glob("*.jpg"))[:len(WEAK_CAPTIONS)]
    images = [Image.open(p).convert("RGB") for p in paths]
    return PairBatch([p.stem for p in paths], list(WEAK_CAPTIONS), images)


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return tiny_models.make_tiny_llava(tmp_path_factory.mktemp("llava"))


def _run(rewriter, pairs, rules) -> pd.DataFrame:
    scorer = CaptionTextQuality()
    before = dict(zip(pairs.keys, scorer.score(pairs)["text_quality"]))
    return rewrite_batches(pairs.chunks(4), shard="s-000", rewriter=rewriter, rescore=scorer.score,
                           quality_column="text_quality", scores_before=before, rules=rules, run_id="r1",
                           similarity=caption_similarity)


def _assert_rows_follow_rules(lineage: pd.DataFrame, pairs: PairBatch, rules: AcceptanceRules) -> None:
    assert list(lineage.columns) == LINEAGE_COLUMNS and lineage["key"].tolist() == pairs.keys
    for row in lineage.itertuples():
        if row.candidate_caption is None:
            assert not row.accepted and row.reason.startswith("no candidate: ")
            continue
        assert row.quality_after == CaptionTextQuality().score(PairBatch(["k"], [row.candidate_caption]))[
            "text_quality"][0]
        assert row.length_ratio == pytest.approx(length_ratio(row.original_caption, row.candidate_caption),
                                                 nan_ok=True)
        if row.original_caption:
            assert row.edit_ratio == edit_ratio(row.original_caption, row.candidate_caption)
            expected_sim = caption_similarity([row.original_caption], [row.candidate_caption])[0]
            assert row.semantic_similarity == pytest.approx(expected_sim, abs=1e-4)
        else:  # a fresh caption, not an edit: not measured
            assert math.isnan(row.edit_ratio) and math.isnan(row.semantic_similarity)
        assert (row.accepted, row.reason) == judge(row.quality_before, row.quality_after, row.edit_ratio,
                                                   row.length_ratio, row.semantic_similarity, rules,
                                                   original=row.original_caption, candidate=row.candidate_caption)


def finished(generate):
    """The generator's replies taken as finished: a random tiny model uses its whole budget, and a reply
    cut off there is no candidate (``test_vlm``); these tests judge what the rules make of the replies.
    ``generate`` bound to a generator, or the class's, for every generator a pipeline builds."""
    def wrapped(*args):
        replies = generate(*args)
        for reply in replies:
            reply.cut_off = False
        return replies
    return wrapped


def test_vlm_rewrites_are_judged_exactly_by_the_rules(llava, pairs, monkeypatch):
    rewriter = VlmRewriter(llava, max_new_tokens=10, batch_size=4)
    monkeypatch.setattr(rewriter.generator, "generate", finished(rewriter.generator.generate))
    runs = {rules: _run(rewriter, pairs, rules) for rules in (MINIMAL, MEANING, LOOSE)}
    for rules, lineage in runs.items():
        _assert_rows_follow_rules(lineage, pairs, rules)
        assert lineage["candidate_caption"].tolist() == runs[LOOSE]["candidate_caption"].tolist()  # greedy
    minimal, meaning, loose = runs.values()
    # each row records the prompt it was asked with: the pair without a caption was asked to caption its image
    no_caption = minimal["original_caption"].isna()
    assert (minimal.loc[~no_caption, "prompt_hash"] == rewriter.prompt_hash).all() and no_caption.sum() == 1
    assert minimal.loc[no_caption, "prompt_hash"].tolist() == [hash_prompt(NO_CAPTION_PROMPT)]
    assert (minimal["rewriter"] == "vlm").all()
    usable = loose["candidate_caption"].notna()
    assert usable.sum() >= len(pairs) // 2 and loose.loc[usable, "accepted"].all()
    assert minimal["reason"].str.startswith("edit ratio").any() and not minimal.loc[~no_caption, "accepted"].any()
    # a fresh caption for a pair without one is no edit: the edit bound does not apply to it
    assert not minimal.loc[no_caption, "reason"].str.startswith("edit ratio").any()
    assert meaning["accepted"].any() and meaning["reason"].str.startswith("semantic similarity").any()


def test_rewriter_without_output_gives_rejected_rows(llava, pairs, monkeypatch):
    rewriter = VlmRewriter(llava, max_new_tokens=2)
    monkeypatch.setattr(rewriter.generator, "generate", lambda images, texts: ["\n"] * len(images))
    lineage = _run(rewriter, pairs, LOOSE)
    assert not lineage["accepted"].any()
    assert set(lineage["reason"]) == {"no candidate: empty output"}
    assert lineage["rewriter_output"].eq("\n").all() and lineage["quality_after"].map(math.isnan).all()


def test_aitqe_random_output_is_rejected_with_its_parse_error(llava, pairs):
    rewriter = AitqeRewriter(llava, max_new_tokens=8)
    lineage = _run(rewriter, pairs, LOOSE)
    _assert_rows_follow_rules(lineage, pairs, LOOSE)
    assert lineage["rewriter"].eq("aitqe").all() and lineage["rewriter_scores"].str.contains("aitqe_overall").all()
    unparsed = lineage["candidate_caption"].isna()
    assert unparsed.any()  # 8 random tokens never make a {"Recaption": ...} reply
    assert lineage.loc[unparsed, "reason"].str.contains("no recaption").all()


def test_aitqe_replies_become_candidates_or_parse_errors(llava, pairs, monkeypatch):
    """The same path with replies that are known: a well-formed reply's recaption is the candidate and is
    judged like any other; a reply without a recaption is a rejected attempt that says so."""
    rewriter = AitqeRewriter(llava, max_new_tokens=8)
    good = '{"Recaption": "A little girl climbs the stairs of a wooden playhouse.", "Overall Score": "3<Overall>'
    monkeypatch.setattr(rewriter.generator, "generate",
                        lambda images, texts: [good if i % 2 == 0 else "Overall: fine" for i in range(len(images))])
    lineage = _run(rewriter, pairs, LOOSE)
    _assert_rows_follow_rules(lineage, pairs, LOOSE)
    assert lineage["candidate_caption"].tolist() == [
        "A little girl climbs the stairs of a wooden playhouse." if i % 4 % 2 == 0 else None for i in range(len(pairs))]
    assert lineage.loc[lineage["candidate_caption"].isna(), "reason"].str.contains("no recaption").all()
    assert lineage.loc[lineage["candidate_caption"].notna(), "accepted"].all()  # LOOSE accepts any candidate
