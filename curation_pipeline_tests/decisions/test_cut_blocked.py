"""The keep_fraction cut is computed over the shards whose quality_scores passed their blocking checks:
a shard that failed one (e.g. out-of-range scores) is read by no step and publishes nothing new, so its
scores must not move the cut every other shard is decided by. Real materializations on the sample shards."""

import pandas as pd

from curation_pipeline.assets.selection import cut_request, cut_stale
from curation_pipeline.decisions.cut_store import read_cut_record
from curation_pipeline.decisions.dedup import pool_identity
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.assets.test_global_selection import (SHARDS, copy_of, decisions_of, failure_text,
                                                                  kept_as_is, materialize, new_instance, scored,
                                                                  undecodable)

__all__ = ["scored"]  # the module fixture: two sample shards' stored scores
FRACTION = 0.3
GOOD, BAD = SHARDS


def top_of(scores: pd.DataFrame, fraction: float) -> set[tuple[str, str]]:
    """The top fraction of these scores alone (ties broken as the cut does)."""
    from curation_pipeline.scoring.selection import global_cut, in_cut

    cut = global_cut(scores[["shard", "key", "text_quality"]], fraction, "text_quality")
    kept = scores[in_cut(scores, cut)]
    return set(zip(kept["shard"], kept["key"]))


def test_scores_that_failed_a_blocking_check_are_left_out_of_the_cut_and_named(scored, tmp_path):
    warehouse, instance = copy_of(scored, tmp_path), new_instance()
    wh = Warehouse(str(warehouse))
    good = wh.read_table("quality_scores", GOOD)
    original_bad = wh.read_table("quality_scores", BAD)
    # BAD's scoring went wrong (every score far out of range) and its blocking range check failed
    wh.write_table("quality_scores", BAD, original_bad.assign(text_quality=1000.0),
                   metadata={FAILED_CHECKS_KEY: "scores_in_range"})

    result = materialize(warehouse, instance, ["selection_cut"], keep_fraction=FRACTION)
    assert result.success, failure_text(result)
    record = read_cut_record(wh)
    n_good = int(good["text_quality"].notna().sum())
    assert set(record["shards"]) == {GOOD} and record["scored"] == n_good
    assert record["kept"] == int(n_good * 3) // 10 and record["cut_score"] <= 100
    assert record["blocked"] == {BAD: "scores_in_range"}
    assert set(record["identity"]) == {GOOD, BAD}  # its file still counts for the cut's staleness
    meta = result.asset_materializations_for_node("selection_cut")[0].metadata
    assert meta["blocked_shards"].value == 1 and meta["shards"].value == 1
    assert [r.data for r in meta["blocked"].value.records] == [{"shard": BAD, "failed_blocking_checks": "scores_in_range"}]

    # the blocked shard makes no decisions (its scores are refused); the other is decided by the cut
    # over its own scores alone, not pushed out by the blocked shard's
    refused = materialize(warehouse, instance, ["caption_decisions"], BAD, keep_fraction=FRACTION)
    assert not refused.success and "failed its blocking check(s) scores_in_range" in failure_text(refused)
    assert not wh.has_table("caption_decisions", BAD)
    decided = materialize(warehouse, instance, ["caption_decisions"], GOOD, keep_fraction=FRACTION)
    assert decided.success, failure_text(decided)
    assert kept_as_is(decisions_of(warehouse)) == top_of(good, FRACTION) - undecodable(warehouse)
    # nothing to settle: the blocked shard is not "undecided" (re-selecting it would fail every time)
    assert cut_request(wh, FRACTION, "text_quality", pool_identity(wh)) is None
    assert cut_stale(wh)[0] == []

    # a re-run of BAD that passes its checks: the settle sensor asks for the cut again, which now counts it
    wh.write_table("quality_scores", BAD, original_bad, metadata={FAILED_CHECKS_KEY: ""})
    assert cut_request(wh, FRACTION, "text_quality", pool_identity(wh)) is not None
    assert materialize(warehouse, instance, ["selection_cut"], keep_fraction=FRACTION).success
    record = read_cut_record(wh)
    assert set(record["shards"]) == {GOOD, BAD} and record["blocked"] == {}
    assert record["scored"] == n_good + int(original_bad["text_quality"].notna().sum())
    assert cut_request(wh, FRACTION, "text_quality", pool_identity(wh)) is None

    # a check run alone that fails it again (the file's mark rewritten): the cut is stale once more
    wh.update_table_metadata("quality_scores", BAD, {FAILED_CHECKS_KEY: "scores_complete"})
    assert cut_request(wh, FRACTION, "text_quality", pool_identity(wh)) is not None
    assert materialize(warehouse, instance, ["selection_cut"], keep_fraction=FRACTION).success
    assert read_cut_record(wh)["blocked"] == {BAD: "scores_complete"} and set(read_cut_record(wh)["shards"]) == {GOOD}
    # a decision of the shard after its mark is cleared says why the cut does not cover it
    wh.update_table_metadata("quality_scores", BAD, {FAILED_CHECKS_KEY: ""})
    result = materialize(warehouse, instance, ["caption_decisions"], BAD, keep_fraction=FRACTION)
    assert not result.success and "so the cut left them out" in failure_text(result)
