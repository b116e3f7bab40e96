"""A shard whose raw file is gone (or whose partition was pruned) keeps its tables in the pool, and may
turn stale when a new shard duplicates it. Re-selecting it cannot work; it must not fail other shards'
runs, `curate run` or the settle sensor, over and over."""

import shutil

import pytest

from curation_pipeline.assets.dedup import settle_requests
from curation_pipeline.decisions.dedup import stale_shards
from curation_pipeline.resources import PolicyResource, WarehouseResource
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline


def test_a_stale_shard_without_its_raw_file_is_passed_over(tmp_path):
    raw, warehouse = tmp_path / "raw", tmp_path / "warehouse"
    raw.mkdir()
    for name in ("sample-000000", "sample-000001"):
        shutil.copy(RAW_SAMPLES / f"{name}.tar", raw / f"{name}.tar")
    instance, results = run_pipeline(raw, warehouse, ["sample-000000", "sample-000001"], report=False)
    assert all(r.success for r in results.values())

    (raw / "sample-000000.tar").unlink()  # curated and deleted to save space: its tables stay
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "copy-000000.tar")  # its every pair again
    with pytest.warns(UserWarning, match="not re-selected .*: sample-000000"):
        _, results = run_pipeline(raw, warehouse, ["copy-000000"], instance=instance, report=False)
    assert "reselect:sample-000000" not in results
    assert all(r.success for r in results.values()), [k for k, r in results.items() if not r.success]
    resource = WarehouseResource(raw_root=str(raw), root=str(warehouse))
    assert "sample-000000" in stale_shards(resource.warehouse())  # its copy now survives in its place

    instance.delete_dynamic_partition("shards", "sample-000000")  # pruned
    assert settle_requests(instance, resource, PolicyResource()) == (
        "stale, but cannot be re-selected (no registered partition or no raw file; their stored tables stay in "
        "the pool): sample-000000")
