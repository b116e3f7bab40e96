"""keep_fraction is a filter whose rejects get one chance: a pair outside the global cut is published
only through an accepted rewrite, never by ``fallback: keep_original`` (else the cut changed nothing
that is published: MLM-Filter / DataComp keep the top fraction and drop the rest)."""

import json

import numpy as np
import pandas as pd
import pytest

from curation_pipeline.decisions.outcome import resolve_outcomes
from curation_pipeline.decisions.policy import IN_CUT, REWRITE_NEEDS, DecisionPolicy, decide
from curation_pipeline.resources import DriftConfig
from curation_pipeline.rewriting.attempts import empty_lineage
from curation_pipeline.scoring.selection import GlobalCut, global_cut, in_cut
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
    # a rewrite publishes a pair outside the cut only where its score puts it inside (its tie place too): one that
    # lifts it too little (to 90 under a cut of 100) is rejected so, not accepted and then dropped
    judged = lineage.merge(decisions[["shard", "key", REWRITE_NEEDS]])
    accepted = pairs(judged[judged["accepted"].astype(bool)])
    short = judged[judged["reason"].str.startswith("short of what its filter needs")]
    assert accepted and len(short)
    assert (short["quality_after"] < short[REWRITE_NEEDS]).all()
    assert pairs(final[final["outcome"] == "rewritten"]) == accepted and not accepted & top
    cut = GlobalCut.from_dict(json.loads((warehouse / "selection" / "keep_fraction_cut.json").read_text()))
    saved = judged[judged["accepted"].astype(bool)]
    assert in_cut(saved.assign(text_quality=saved["quality_after"]), cut).all()
    assert not in_cut(short.assign(text_quality=short["quality_after"]), cut).any()
    assert final.set_index(["shard", "key"]).loc[sorted(pairs(short)), "reason"].str.contains(
        "rewrite rejected (short of what its filter needs", regex=False).all()
    published = final[final["outcome"] != "dropped"]
    assert len(published) == len(top - undecodable(warehouse)) + len(accepted)
    # a pair tied at the cut score that lost the draw: no rewrite can put it inside, so none is tried
    lost = decisions[decisions["reason"].str.contains("not drawn")]
    assert len(lost) and lost["action"].eq("drop").all() and lost[REWRITE_NEEDS].gt(100).all()
    assert lost["reason"].str.contains(f"tied at the cut score 100, not drawn: {cut.ties_kept} of {cut.ties_at_cut} "
                                       "ties kept); not rewritten: it would need text_quality above 100 (at 100 its "
                                       "tie-break place is outside the keep_fraction cut), past the top of its scale",
                                       regex=False).all()
    # the cut's rejects whose rewrite was rejected (the cleaner changed nothing) are dropped, naming the cut
    rejected = final[(final["outcome"] == "dropped") & final["reason"].str.contains("rewrite rejected")]
    assert len(rejected) and rejected["reason"].str.contains("outside top 30% by text_quality; ").all()
    assert not pairs(rejected) & top


def test_failing_keep_expression_only_a_rewrite_meeting_it_publishes():
    """keep_expression is a filter too: a pair failing it is published only through an accepted rewrite whose score
    meets it, the pair's other scores as stored (a rewrite re-scores the quality column alone); the fallback to its
    original would publish what the filter rejected. A pair failing a term no rewrite changes (its image) is dropped
    unrewritten. A pair meeting it whose caption is weak keeps the fallback."""
    from curation_pipeline.decisions.policy import IN_EXPRESSION, caption_published

    keys = ["good", "weak_in", "low_saved", "low_short", "narrow"]
    scores = pd.DataFrame({"shard": "s", "key": keys, "decode_status": "ok",
                           "text_quality": [99.0, 92.0, 80.0, 80.0, 99.0], "width": [500, 500, 500, 500, 50]})
    policy = DecisionPolicy(keep_expression="text_quality >= 90 and width >= 256", drop_duplicates=False)
    decisions = decide(scores, policy)
    assert decisions[IN_EXPRESSION].tolist() == [True, True, False, False, False]
    assert decisions["action"].tolist() == ["keep", "rewrite", "rewrite", "rewrite", "drop"]
    np.testing.assert_array_equal(decisions[REWRITE_NEEDS], [65.0, 65.0, 90.0, 90.0, np.nan])
    assert decisions["reason"][4] == ("fails: text_quality >= 90 and width >= 256; not rewritten: no text_quality "
                                      "score would publish it (keep_expression fails on its other scores as stored)")
    lineage = pd.DataFrame([_attempt("weak_in", None, np.nan, False, "no candidate: no change"),
                            _attempt("low_saved", "A clean caption.", 90.0, True, "improved"),
                            _attempt("low_short", "A cleaner caption.", 85.0, True, "improved")])
    out = resolve_outcomes(decisions, pd.Series(keys, index=keys), lineage, policy).set_index("key")
    assert out["outcome"].tolist() == ["kept", "kept", "rewritten", "dropped", "dropped"]
    assert out.loc["weak_in", "reason"].endswith("kept original")  # meets the expression: the fallback stands
    assert out.loc["low_short", "reason"] == ("low_text_quality=80.0; fails: text_quality >= 90 and width >= 256; "
                                              "rewrite short of what that filter needs (85 < 90)")
    # what the duplicate index counts on being published whatever the rewriter does
    assert caption_published(scores, policy).tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="passes_keep_expression"):
        resolve_outcomes(decisions.drop(columns=[IN_EXPRESSION]), pd.Series(dtype=object), empty_lineage(), policy)


def test_a_score_no_rewrite_changes_fails_the_expression_for_good():
    """MLM-Filter's ITM >= 66 judged by text_quality: the rewrite re-scores text_quality alone, so the stored ITM
    stands and the pair is dropped unrewritten; judged by the metric itself, a rewrite must reach 66."""
    scores = pd.DataFrame({"shard": "s", "key": ["a", "b"], "decode_status": "ok", "text_quality": [99.0, 70.0],
                           "mlm_itm": [12.0, 12.0], "mlm_odf": 50.0})
    expression = "mlm_itm >= 66 and mlm_odf >= 20"
    by_text = decide(scores, DecisionPolicy(keep_expression=expression, drop_duplicates=False))
    assert by_text["action"].tolist() == ["drop", "drop"] and by_text[REWRITE_NEEDS].isna().all()
    by_itm = decide(scores, DecisionPolicy(quality_column="mlm_itm", keep_threshold=66, drop_threshold=50,
                                           keep_expression=expression, drop_duplicates=False))
    assert by_itm["action"].tolist() == ["rewrite", "rewrite"] and by_itm[REWRITE_NEEDS].tolist() == [66.0, 66.0]


def test_the_least_passing_score_follows_any_expression():
    from curation_pipeline.scoring.selection import least_passing

    frame = pd.DataFrame({"q": [10.0, 10.0, 10.0, 10.0], "other": [1.0, 50.0, np.nan, 1.0]})
    # inclusive and strict bounds, a chain, an or with another term, a comparison with another column
    assert least_passing(frame, "q >= 40", "q", 0, 100).tolist() == [40.0] * 4
    assert least_passing(frame, "q > 40", "q", 0, 100).tolist() == [np.nextafter(40.0, np.inf)] * 4
    assert least_passing(frame, "q >= other", "q", 0, 100).tolist()[:2] == [1.0, 50.0]
    assert np.isnan(least_passing(frame, "q >= other", "q", 0, 100)[2])  # unknown: never passes
    # passing only inside a band: what holds up to the top of the scale counts, nothing lower
    assert np.isnan(least_passing(frame, "20 <= q <= 30", "q", 0, 100)).all()
    assert least_passing(frame, "q < 20 or q >= 60", "q", 0, 100).tolist() == [60.0] * 4
    assert least_passing(frame, "q >= 60 or other >= 10", "q", 0, 100).tolist() == [60.0, 0.0, 60.0, 60.0]
    assert np.isnan(least_passing(frame, "other >= 10", "q", 0, 100)[0])  # not a term of q: a rewrite changes nothing
