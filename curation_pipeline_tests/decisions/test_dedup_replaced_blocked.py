"""A held shard (blocked or frozen) whose raw file was replaced: its stored scores are the new file's, but it
publishes what its curated tar holds, an earlier file's pairs. Their copies in other shards must be found
from what the tar says of them (the fingerprints in its sidecars), or they are published twice."""

import pandas as pd

from curation_pipeline.decisions import dedup
from curation_pipeline.decisions.dedup import refresh_index
from curation_pipeline.decisions.policy import DecisionPolicy
from curation_pipeline.scoring.registry import score_columns
from curation_pipeline.shards.writer import write_curated
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
from curation_pipeline_tests.decisions.test_dedup_pool import _fresh_hashes, _kept, _two_linked_shards


def _publish_scored(wh, shard: str, scores: pd.DataFrame) -> None:
    """A curated tar of ``scores``' pairs with the sidecars curated_shards writes (their declared scores)."""
    declared = score_columns()
    columns = [c for c in scores.columns if c in declared and declared[c].sidecar]
    with wh.atomic_open(wh.curated_path(shard)) as handle:
        write_curated(handle, [(row["key"], "jpg", b"jpeg bytes",
                                {"key": row["key"], "caption": "a caption", "original_caption": row.get("caption"),
                                 "scores": {c: row[c] for c in columns}})
                               for row in scores.to_dict("records")])


def test_a_held_shards_old_tar_pairs_are_matched_from_its_sidecars_after_its_raw_file_was_replaced(curated,
                                                                                                   tmp_path):
    """pool-a/a0 and pool-b/b0 are one image; pool-a's tar (a0, a1) was made from its first raw file. The file
    is replaced: its new scores fail scores_complete, so pool-a publishes that old tar. a0 goes out, so b0 must
    be dropped, whether the new file's keys are new or the old ones (with other content)."""
    wh = _two_linked_shards(curated, tmp_path)
    policy = DecisionPolicy()
    old = wh.read_table("quality_scores", "pool-a")
    a0, a1 = old["key"].iloc[:2]
    b0 = wh.read_table("quality_scores", "pool-b")["key"].iloc[0]
    _publish_scored(wh, "pool-a", old.iloc[:2])
    wh.write_table("final_captions", "pool-a", old[["key"]].assign(outcome="kept"))

    import numpy as np
    new = _fresh_hashes(old, np.random.default_rng(11))
    for keys in ("new", "same"):  # the new file's keys: other ones, or the old ones with other content
        replaced = new.assign(key="new" + new["key"]) if keys == "new" else new
        wh.write_table("quality_scores", "pool-a", replaced, metadata={FAILED_CHECKS_KEY: "scores_complete"})
        index = refresh_index(wh, policy)
        assert list(index.blocked) == ["pool-a"]
        kept = _kept(index)
        assert kept[("pool-a", a0)] and not kept[("pool-b", b0)], keys
        assert index.unindexed == {}, keys
        assert index.from_tar == {"pool-a": 2}, keys
        rows = index.groups.set_index(["shard", "key"])
        assert rows.loc[("pool-a", a0), "incumbent"] and rows.loc[("pool-b", b0), "survivor_shard"] == "pool-a"
        dedup.write_index(wh, index)
        assert dedup.read_index(wh).from_tar == {"pool-a": 2}
        # b0's decision reads the stored index: dropped, as a copy of the pair pool-a's tar publishes
        decided = dedup.dedup_for_shard(wh, "pool-b", wh.read_table("quality_scores", "pool-b"), policy)
        assert decided.source == dedup.INDEX_ASSET and not decided.rows.loc[0, "dup_keep"]
        # pool-a re-selected decides from its new tables (it publishes anew): none of them is b0's copy
        mine = dedup.dedup_for_shard(wh, "pool-a", replaced, policy)
        assert mine.rows["dup_group"].isna().all(), keys
        # a tar that said nothing of fingerprints (written before sidecars stored scores): counted, not guessed
        _publish_scored(wh, "pool-a", old.iloc[:2][["key"]])
        wh.write_table("quality_scores", "pool-a", replaced, metadata={FAILED_CHECKS_KEY: "scores_complete"})
        blind = refresh_index(wh, policy)
        assert blind.from_tar == {} and blind.unindexed == ({"pool-a": 2} if keys == "new" else {})
        _publish_scored(wh, "pool-a", old.iloc[:2])
        wh.fs.rm(dedup.index_paths(wh)["manifest"])


def test_an_index_reused_after_the_tar_stops_speaking_for_the_shard_groups_as_a_rebuild(curated, tmp_path):
    """The index links pool-a's old-tar pairs from their sidecars. Its quality_scores unchanged (the mark is on
    final_captions), the tar then removed: the shard publishes nothing and its rows are its tables' again. An
    index refreshed from the earlier one must not keep the links of the tar's fingerprints."""
    wh = _two_linked_shards(curated, tmp_path)
    policy = DecisionPolicy()
    old = wh.read_table("quality_scores", "pool-a")
    a0 = old["key"].iloc[0]
    b0 = wh.read_table("quality_scores", "pool-b")["key"].iloc[0]
    _publish_scored(wh, "pool-a", old.iloc[:2])

    import numpy as np
    wh.write_table("quality_scores", "pool-a", _fresh_hashes(old, np.random.default_rng(11)))
    final = old[["key"]].assign(outcome="kept")
    wh.write_table("final_captions", "pool-a", final, metadata={FAILED_CHECKS_KEY: "caption_length_drift"})
    with_tar = refresh_index(wh, policy)
    assert not _kept(with_tar)[("pool-b", b0)] and with_tar.from_tar == {"pool-a": 2}

    wh.fs.rm(wh.curated_path("pool-a"))
    reused = refresh_index(wh, policy, previous=with_tar)
    rebuilt = refresh_index(wh, policy, previous=None)
    assert reused.from_tar == {} and ("pool-a", a0) not in _kept(reused) and ("pool-b", b0) not in _kept(reused)
    pd.testing.assert_frame_equal(reused.groups, rebuilt.groups)
