"""keep_fraction is a filter whose rejects get one chance: a pair outside the global cut is published
only through an accepted rewrite, never by ``fallback: keep_original`` (else the cut changed nothing
that is published: MLM-Filter / DataComp keep the top fraction and drop the rest)."""

import numpy as np
import pandas as pd
import pytest

from curation_pipeline.decisions.outcome import resolve_outcomes
from curation_pipeline.decisions.policy import IN_CUT, DecisionPolicy, decide
from curation_pipeline.resources import DriftConfig
from curation_pipeline.rewriting.attempts import empty_lineage
from curation_pipeline.scoring.selection import global_cut
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.assets.test_global_selection import (  # noqa: F401 (scored: a fixture)
    SHARDS, copy_of, expected_top, failure_text, materialize, new_instance, scored, undecodable)


def _attempt(key, candidate, after, accepted, reason):
    return {"key": key, "attempt": 1, "candidate_caption": candidate, "quality_after": after, "accepted": accepted,
            "rewriter": "cleaner", "rewriter_version": "1", "reason": reason}


def _one_chance(scores: pd.DataFrame, policy: DecisionPolicy, mark: str, saved_after: float, cut=None) -> pd.DataFrame:
    """Five pairs, in order: kept, weak inside the filter (its rewrite rejected), and three of the filter's rejects:
    one saved by an accepted rewrite (scoring ``saved_after``), one whose rewrite is rejected, one not tried.
    Decided (``mark`` as the filter says), then resolved: the outcomes by key, checked."""
    keys = scores["key"].tolist()
    decisions = decide(scores, policy, cut=cut)
    assert decisions[mark].tolist() == [True, True, False, False, False]
    lineage = pd.DataFrame([_attempt(keys[1], None, np.nan, False, "no candidate: no change"),
                            _attempt(keys[2], "A clean caption.", saved_after, True, "improved"),
                            _attempt(keys[3], None, np.nan, False, "no candidate: no change")])
    out = resolve_outcomes(decisions, pd.Series(keys, index=keys), lineage, policy).set_index("key")
    assert out["outcome"].tolist() == ["kept", "kept", "rewritten", "dropped", "dropped"]
    return out


def test_outside_the_cut_only_an_accepted_rewrite_publishes():
    """Default policy (rewrite on, fallback keep_original): every caption below is over drop_threshold,
    so before, each rejected rewrite fell back to its original and the cut dropped nothing."""
    scores = pd.DataFrame({"shard": "s", "key": ["top", "in_weak", "out_saved", "out_rejected", "out_untried"],
                           "decode_status": "ok", "text_quality": [100.0, 90.0, 80.0, 80.0, 70.0]})
    policy = DecisionPolicy(keep_fraction=0.4)
    out = _one_chance(scores, policy, IN_CUT, saved_after=100.0, cut=global_cut(scores, 0.4, "text_quality"))
    assert out.loc["in_weak", "reason"].endswith("kept original")  # inside the cut: the fallback stands
    assert out.loc["out_rejected", "reason"] == ("low_text_quality=80.0; outside top 40% by text_quality; "
                                                 "rewrite rejected (no candidate: no change)")
    assert out.loc["out_untried", "reason"].startswith("low_text_quality=70.0; outside top 40% by text_quality")
    assert out.loc["out_rejected", "final_caption"] is None


def test_decisions_without_the_cut_mark_are_refused_when_keep_fraction_is_on():
    decisions = pd.DataFrame({"shard": "s", "key": ["a"], "action": ["rewrite"], "reason": ["weak"],
                              "quality_column": "text_quality", "quality_before": [80.0]})
    captions = pd.Series({"a": "x"})
    with pytest.raises(ValueError, match="in_keep_fraction"):
        resolve_outcomes(decisions, captions, empty_lineage(), DecisionPolicy(keep_fraction=0.3))
    assert resolve_outcomes(decisions, captions, empty_lineage(), DecisionPolicy())["outcome"].tolist() == ["kept"]


def test_a_keep_fraction_run_publishes_the_cut_and_the_accepted_rewrites_only(scored, tmp_path):
    """The sample shards end to end with keep_fraction=0.3 (the cut, then decisions, the offline
    cleaner's rewrites and the final captions per shard), every other rule relaxed (drop_threshold 0):
    published as is = the cut's decodable pairs; rewritten = the accepted rewrites; nothing else.
    The drift check is off too: under drop_threshold 0 a one-word repair is accepted ("rocket" x7 ->
    "rocket", which the default policy rejects as still weak), and that alone moves a shard's p10."""
    fraction = 0.3
    relaxed = {"keep_fraction": fraction, "drift": DriftConfig(min_rows=10**6)}  # fewer rows pass with a note
    warehouse = copy_of(scored, tmp_path)
    instance = new_instance()
    assert materialize(warehouse, instance, ["selection_cut"], keep_fraction=fraction).success
    for shard in SHARDS:
        result = materialize(warehouse, instance, ["caption_decisions", "rewritten_captions", "final_captions"],
                             shard, **relaxed)
        assert result.success, failure_text(result)
    wh = Warehouse(str(warehouse))
    final = wh.read_all("final_captions")
    lineage = wh.read_all("rewritten_captions")
    decisions = wh.read_all("caption_decisions")
    pairs = lambda frame: set(zip(frame["shard"], frame["key"]))  # noqa: E731

    top = expected_top(warehouse, fraction)
    assert pairs(decisions[decisions[IN_CUT]]) == top
    assert pairs(final[final["outcome"] == "kept"]) == top - undecodable(warehouse)
    accepted = pairs(lineage[lineage["accepted"].astype(bool)])
    assert pairs(final[final["outcome"] == "rewritten"]) == accepted and not accepted & top
    published = final[final["outcome"] != "dropped"]
    assert len(published) == len(top - undecodable(warehouse)) + len(accepted)
    # the cut's rejects whose rewrite was rejected (the cleaner changed nothing) are dropped, naming the cut
    rejected = final[(final["outcome"] == "dropped") & final["reason"].str.contains("rewrite rejected")]
    assert len(rejected) and rejected["reason"].str.contains("outside top 30% by text_quality; ").all()
    assert not pairs(rejected) & top


def test_failing_keep_expression_only_an_accepted_rewrite_publishes():
    """keep_expression is a filter too (MLM-Filter's ITM >= 66 AND ODF >= 20): a pair failing it is rewritten,
    and published only if the rewrite is accepted; the fallback to its original would publish what the filter
    rejected. A pair meeting it whose caption is weak keeps the fallback."""
    from curation_pipeline.decisions.policy import IN_EXPRESSION, caption_published

    scores = pd.DataFrame({"shard": "s", "key": ["good", "weak_in", "out_saved", "out_rejected", "out_unknown"],
                           "decode_status": "ok", "text_quality": [99.0, 70.0, 99.0, 99.0, 99.0],
                           "mlm_itm": [80.0, 80.0, 12.0, 12.0, np.nan], "mlm_odf": 50.0})
    policy = DecisionPolicy(keep_expression="mlm_itm >= 66 and mlm_odf >= 20", drop_duplicates=False)
    out = _one_chance(scores, policy, IN_EXPRESSION, saved_after=99.5)
    assert out.loc["out_rejected", "reason"] == ("fails: mlm_itm >= 66 and mlm_odf >= 20; "
                                                 "rewrite rejected (no candidate: no change)")
    # what the duplicate index counts on being published whatever the rewriter does
    assert caption_published(scores, policy).tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="passes_keep_expression"):
        resolve_outcomes(decide(scores, policy).drop(columns=[IN_EXPRESSION]), pd.Series(dtype=object),
                         empty_lineage(), policy)
