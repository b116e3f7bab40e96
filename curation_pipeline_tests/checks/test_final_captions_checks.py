"""The final captions' three checks share one step and one read of the table, yet each runs alone."""

import dagster as dg
import pytest

from curation_pipeline.checks.quality import FINAL_CAPTION_CHECKS
from curation_pipeline.definitions import build_definitions
from curation_pipeline_tests.conftest import RAW_SAMPLES


@pytest.mark.parametrize("name", [spec.name for spec in FINAL_CAPTION_CHECKS])
def test_each_final_captions_check_runs_alone(curated, name):
    """As the UI's "Execute" on one check: only that check's result, and the asset is not run again."""
    shard = curated["shards"][0]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [shard])
    key = dg.AssetCheckKey(dg.AssetKey("final_captions"), name)
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(curated["warehouse"]))
    job = defs.resolve_job_def("curate_shards").get_subset(asset_selection=set(), asset_check_selection={key})
    result = job.execute_in_process(partition_key=shard, instance=instance)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert [(e.check_name, e.passed, e.partition) for e in evaluations] == [(name, True, shard)]
    assert not result.get_asset_materialization_events()
