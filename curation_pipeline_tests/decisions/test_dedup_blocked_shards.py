"""A shard with a table that failed a blocking check (quality_scores or final_captions) has no tar written
from it: it publishes what its curated tar holds (an earlier run's), or nothing. The pool-wide dedup must
assume exactly that, or a group's kept copy sits in a shard that publishes nothing (the image is lost), or
an old tar's pair and its copy elsewhere are both published. And the index must know which shards it
assumed blocked, so a mark that appears or clears makes it stale and the settle sensor runs again."""

import pandas as pd

from curation_pipeline.assets.dedup import settle_duplicates, settle_requests
from curation_pipeline.decisions import dedup
from curation_pipeline.decisions.dedup import read_index, refresh_index
from curation_pipeline.decisions.policy import DecisionPolicy
from curation_pipeline.definitions import build_definitions
from curation_pipeline.resources import PolicyResource
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
from curation_pipeline_tests.assets.test_pruned_in_pool import curated_pool
from curation_pipeline_tests.conftest import QUIET
from curation_pipeline_tests.decisions.test_dedup_pool import _kept, _publish, _two_linked_shards


def test_a_shard_with_a_blocking_mark_publishes_its_tar_and_the_index_groups_around_it(curated, tmp_path,
                                                                                        monkeypatch):
    """pool-a/a0 and pool-b/b0 are one image; alike in all else, a0 survives by name. pool-a is a
    re-selectable shard, curated (a tar from its final_captions), then run again."""
    wh = _two_linked_shards(curated, tmp_path)
    policy = DecisionPolicy()
    a0, a1 = wh.read_table("quality_scores", "pool-a")["key"].iloc[:2]
    b0 = wh.read_table("quality_scores", "pool-b")["key"].iloc[0]
    final = wh.read_table("quality_scores", "pool-a")[["key"]].assign(outcome="kept")
    wh.write_table("caption_decisions", "pool-a", final)
    wh.write_table("final_captions", "pool-a", final)
    _publish(wh, "pool-a", [a1])  # an earlier run's tar: a0 not in it

    # settled (its tar newer than its tables): no footer of pool-a is read to find marks, only the listings
    read = []
    real = wh.table_metadata
    monkeypatch.setattr(wh, "table_metadata", lambda table, shard: read.append((table, shard)) or real(table, shard))
    assert dedup.held_identity(wh, [])[1] == {}
    assert not [found for found in read if found[1] == "pool-a"]

    # its new final_captions fail caption_length_drift: no tar is written from them, so it publishes its
    # old tar (a1 alone), not a0: b0 must be the copy kept, or the image is published nowhere
    wh.write_table("final_captions", "pool-a", final, metadata={FAILED_CHECKS_KEY: "caption_length_drift"})
    index = refresh_index(wh, policy)
    assert _kept(index)[("pool-b", b0)] and not _kept(index)[("pool-a", a0)]
    assert index.blocked == dedup.held_identity(wh, [])[1] and list(index.blocked) == ["pool-a"]
    dedup.write_index(wh, index)
    assert read_index(wh).blocked == index.blocked
    decided_b = dedup.dedup_for_shard(wh, "pool-b", wh.read_table("quality_scores", "pool-b"), policy)
    assert decided_b.source == dedup.INDEX_ASSET and decided_b.rows.loc[0, "dup_keep"]
    # pool-a deciding itself (re-selected) is not blocked: it publishes anew, and a0 survives by name
    decided_a = dedup.dedup_for_shard(wh, "pool-a", wh.read_table("quality_scores", "pool-a"), policy)
    assert decided_a.source != dedup.INDEX_ASSET and decided_a.rows.loc[0, "dup_keep"]
    wh.fs.rm(wh.curated_path("pool-a"))  # no tar at all: it publishes nothing
    assert _kept(refresh_index(wh, policy))[("pool-b", b0)]

    # run again from the same raw file, its quality_scores fail scores_complete: its tar of the earlier run
    # (a0 in it) stays published, so a0 must stay the survivor, or b0 goes out as well
    _publish(wh, "pool-a", [a0, a1])
    wh.write_table("final_captions", "pool-a", final)
    wh.update_table_metadata("quality_scores", "pool-a", {FAILED_CHECKS_KEY: "scores_complete"})
    index = refresh_index(wh, policy)
    assert _kept(index)[("pool-a", a0)] and not _kept(index)[("pool-b", b0)]
    assert index.groups.set_index(["shard", "key"]).loc[("pool-a", a0), "incumbent"]
    assert list(index.blocked) == ["pool-a"] and index.unindexed == {}
    for shard in ("pool-a", "pool-b"):  # both decided against an older index
        wh.write_table("caption_decisions", shard, pd.DataFrame({"key": ["k"]}), metadata={dedup.DIGEST_KEY: "old"})
    assert set(dedup.stale_shards(wh, index)) == {"pool-b"}  # not pool-a: re-selecting it cannot read its scores

    # its scores replaced by another raw file's, the old tar's pairs are not in the pool: said, not hidden
    scores = wh.read_table("quality_scores", "pool-a")
    wh.write_table("quality_scores", "pool-a", scores.assign(key="new" + scores["key"]),
                   metadata={FAILED_CHECKS_KEY: "scores_complete"})
    assert refresh_index(wh, policy).unindexed == {"pool-a": 2}

    # the check passes again: the mark clears, another blocked set, another index
    marked = dedup.held_identity(wh, [])[1]
    wh.write_table("quality_scores", "pool-a", scores)
    wh.write_table("final_captions", "pool-a", final)
    _publish(wh, "pool-a", [a0, a1])
    assert marked and dedup.held_identity(wh, [])[1] == {}
    assert refresh_index(wh, policy).blocked == {}


def test_the_settle_sensor_rebuilds_the_index_when_a_blocking_mark_appears_or_clears(tmp_path):
    """Two curated shards, settled. A final_captions check fails (the policy's limits were tightened and
    its checks executed again): the index assumed that shard publishes from its final_captions, so it is
    stale. Rebuilt, it is current again; the mark cleared, it is stale again."""
    raw, instance, resource = curated_pool(tmp_path)
    wh = resource.warehouse()
    current = "duplicate index current for 2 shards; no shard is stale"
    assert settle_requests(instance, resource, PolicyResource()) == current

    wh.update_table_metadata("final_captions", "sample-000000", {FAILED_CHECKS_KEY: "caption_length_drift"})
    requests = settle_requests(instance, resource, PolicyResource())
    assert not isinstance(requests, str) and [r.job_name for r in requests] == ["dedup_index_job"], requests
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "warehouse"))
    assert settle_duplicates(defs, instance, QUIET) == []
    assert list(read_index(wh).blocked) == ["sample-000000"]
    assert settle_requests(instance, resource, PolicyResource()) == current

    wh.update_table_metadata("final_captions", "sample-000000", {FAILED_CHECKS_KEY: ""})
    requests = settle_requests(instance, resource, PolicyResource())
    assert not isinstance(requests, str) and [r.job_name for r in requests] == ["dedup_index_job"], requests
