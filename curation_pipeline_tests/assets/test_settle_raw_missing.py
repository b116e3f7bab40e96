"""A raw location that cannot be listed (an unmounted disk) says nothing about which shards can be
re-selected: the settle sensor waits, instead of rebuilding the dedup index with every shard frozen
(and rebuilding it again once the disk is back)."""

from curation_pipeline.assets.dedup import settle_requests
from curation_pipeline.resources import PolicyResource
from curation_pipeline_tests.assets.test_pruned_in_pool import curated_pool


def test_a_missing_raw_location_freezes_nothing(tmp_path):
    raw, instance, resource = curated_pool(tmp_path)
    current = "duplicate index current for 2 shards; no shard is stale"
    assert settle_requests(instance, resource, PolicyResource()) == current

    raw.rename(tmp_path / "unmounted")
    waiting = settle_requests(instance, resource, PolicyResource())
    assert isinstance(waiting, str) and waiting.startswith("the raw location cannot be listed"), waiting

    (tmp_path / "unmounted").rename(raw)
    assert settle_requests(instance, resource, PolicyResource()) == current  # the index still holds: no rebuild
