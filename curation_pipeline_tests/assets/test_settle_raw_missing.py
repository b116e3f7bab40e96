"""A raw location that cannot be listed (an unmounted disk) says nothing about which shards can be
re-selected: the settle sensor waits, instead of rebuilding the dedup index with every shard frozen
(and rebuilding it again once the disk is back)."""

import shutil

from curation_pipeline.assets.dedup import settle_requests
from curation_pipeline.resources import PolicyResource, WarehouseResource
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline


def test_a_missing_raw_location_freezes_nothing(tmp_path):
    raw, warehouse = tmp_path / "raw", tmp_path / "warehouse"
    raw.mkdir()
    for name in ("sample-000000", "sample-000001"):
        shutil.copy(RAW_SAMPLES / f"{name}.tar", raw / f"{name}.tar")
    instance, results = run_pipeline(raw, warehouse, ["sample-000000", "sample-000001"], report=False)
    assert all(r.success for r in results.values())
    resource = WarehouseResource(raw_root=str(raw), root=str(warehouse))
    current = "duplicate index current for 2 shards; no shard is stale"
    assert settle_requests(instance, resource, PolicyResource()) == current

    raw.rename(tmp_path / "unmounted")
    waiting = settle_requests(instance, resource, PolicyResource())
    assert isinstance(waiting, str) and waiting.startswith("the raw location cannot be listed"), waiting

    (tmp_path / "unmounted").rename(raw)
    assert settle_requests(instance, resource, PolicyResource()) == current  # the index still holds: no rebuild
