"""What a lineage row records: the prompt a pair was asked, the rewriter's own scores as JSON, minimality
left unmeasured for a fresh caption, and a rewrite still under the drop threshold not accepted."""

import json
import math

import pandas as pd
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.aitqe import AitqeRewriter
from curation_pipeline.rewriting.attempts import rewrite_batches
from curation_pipeline.rewriting.base import RewriteCandidate, Rewriter, hash_prompt
from curation_pipeline.rewriting.verify import AcceptanceRules
from curation_pipeline.rewriting.vlm import DEFAULT_PROMPT, NO_CAPTION_PROMPT, GeneratingRewriter, VlmRewriter


class _Fixed(Rewriter):
    name = "fixed"

    def __init__(self, candidate: RewriteCandidate):
        self.candidate = candidate

    def rewrite(self, batch):
        return [RewriteCandidate(self.candidate.caption, raw=self.candidate.raw, scores=dict(self.candidate.scores))
                for _ in batch.keys]


def _lineage(rewriter, batch, rules=AcceptanceRules(), quality=90.0, before=10.0, similarity=None):
    return rewrite_batches([batch], shard="s", rewriter=rewriter, quality_column="q",
                           rescore=lambda b: pd.DataFrame({"q": [quality] * len(b)}),
                           scores_before={k: before for k in batch.keys}, rules=rules, run_id="r",
                           similarity=similarity, prefetch_depth=0)


class _FakeGenerator:
    image_token = "<image>"

    def without_image_token(self, text):
        return text.replace(self.image_token, "")

    def generate(self, images, instructions):
        return ["A brown dog runs on the grass." for _ in instructions]


def test_each_row_hashes_the_prompt_its_pair_was_asked():
    rewriter = object.__new__(VlmRewriter)  # the prompt logic, without loading a model
    GeneratingRewriter.__init__(rewriter, DEFAULT_PROMPT, 8, "x")
    rewriter.version, rewriter.generator = "1:fake", _FakeGenerator()
    image = Image.new("RGB", (32, 32))
    batch = PairBatch(["none", "edit", "only-token", "no-image"], [None, "dog", "<image>", "cat"],
                      [image, image, image, None])
    lineage = _lineage(rewriter, batch)
    assert hash_prompt(NO_CAPTION_PROMPT) != rewriter.prompt_hash == hash_prompt(DEFAULT_PROMPT)
    assert lineage["prompt_hash"].tolist() == [hash_prompt(NO_CAPTION_PROMPT), rewriter.prompt_hash,
                                               hash_prompt(NO_CAPTION_PROMPT), rewriter.prompt_hash]


def test_rewriter_scores_are_json_with_null_for_a_missing_score():
    candidate = AitqeRewriter._candidate('{"Recaption": "A dog", "Overall Score": "N/A", "Text Quality Score": 7}')
    lineage = _lineage(_Fixed(candidate), PairBatch(["k"], ["dog"]))
    text = lineage["rewriter_scores"][0]
    assert text == '{"aitqe_overall": null, "aitqe_text_quality": 7.0}'  # keys sorted, NaN is null
    assert json.loads(text) == {"aitqe_overall": None, "aitqe_text_quality": 7.0}
    assert _lineage(_Fixed(RewriteCandidate("A dog.")), PairBatch(["k"], ["dog"]))["rewriter_scores"][0] is None


def test_a_fresh_caption_has_no_minimality_measured_and_passes_the_bounds():
    batch = PairBatch(["none", "empty", "edit"], [None, "", "red car"])
    rules = AcceptanceRules(max_edit_ratio=0.6, min_similarity=0.5)
    calls = []

    def similarity(originals, candidates):
        calls.append(list(originals))
        return [0.04] * len(originals)

    lineage = _lineage(_Fixed(RewriteCandidate("A brown dog runs across a green lawn.")), batch, rules,
                       similarity=similarity)
    assert calls == [["red car"]]  # nothing to compare a fresh caption with
    fresh = lineage.iloc[:2]
    assert fresh["edit_ratio"].map(math.isnan).all() and fresh["semantic_similarity"].map(math.isnan).all()
    assert fresh["accepted"].all() and fresh["reason"].eq("score improved 10 -> 90").all()
    edit = lineage.iloc[2]
    assert edit["edit_ratio"] == 1.0 and edit["semantic_similarity"] == 0.04 and not edit["accepted"]


def test_a_caption_of_only_the_image_placeholder_gets_a_fresh_caption_as_none_does():
    """The VLM asks NO_CAPTION_PROMPT for "<image>" as for None (its placeholder removed, nothing is left):
    the lineage and the judge take the reply as a fresh caption too, not as an edit of "<image>"."""
    rewriter = object.__new__(VlmRewriter)
    GeneratingRewriter.__init__(rewriter, DEFAULT_PROMPT, 8, "x")
    rewriter.version, rewriter.generator = "1:fake", _FakeGenerator()
    image = Image.new("RGB", (32, 32))
    batch = PairBatch(["none", "token", "tokens", "edit"], [None, "<image>", " <image><image> ", "<image> dog"],
                      [image] * 4)
    assert [rewriter.no_caption_to_edit(c) for c in batch.captions] == [True, True, True, False]
    assert [rewriter.template(c) for c in batch.captions] == [NO_CAPTION_PROMPT] * 3 + [DEFAULT_PROMPT]
    calls = []

    def similarity(originals, candidates):
        calls.append(list(originals))
        return [0.04] * len(originals)

    rules = AcceptanceRules(max_edit_ratio=0.6, max_length_ratio=2.0, min_similarity=0.5)
    lineage = _lineage(rewriter, batch, rules, similarity=similarity)
    assert calls == [["<image> dog"]]
    fresh = lineage.iloc[:3]
    for column in ("edit_ratio", "length_ratio", "semantic_similarity"):
        assert fresh[column].map(math.isnan).all(), column
    assert fresh["accepted"].all() and fresh["reason"].eq("score improved 10 -> 90").all()
    assert fresh["prompt_hash"].eq(hash_prompt(NO_CAPTION_PROMPT)).all()
    assert not lineage["accepted"][3]  # an edit of a caption with words is bound as before


def test_the_rule_based_rewriters_see_no_placeholder():
    from curation_pipeline.rewriting.base import no_caption_to_edit

    assert no_caption_to_edit(None) and no_caption_to_edit("  \n") and not no_caption_to_edit("<image>")
    assert no_caption_to_edit("<image>", "<image>") and not no_caption_to_edit("<image> dog", "<image>")
    assert _Fixed(RewriteCandidate("A dog.")).no_caption_to_edit("") and not _Fixed(
        RewriteCandidate("A dog.")).no_caption_to_edit("<image>")


def test_a_rewrite_still_under_min_quality_is_not_accepted():
    batch = PairBatch(["k"], ["dog beach pic"])
    lineage = _lineage(_Fixed(RewriteCandidate("A dog on a beach.")), batch, AcceptanceRules(min_quality=65),
                       quality=60.0, before=40.0)
    assert lineage[["accepted", "reason"]].values.tolist() == [[False, "still weak after rewriting (60 < 65)"]]
    assert _lineage(_Fixed(RewriteCandidate("A dog on a beach.")), batch, quality=60.0, before=40.0)["accepted"][0]
