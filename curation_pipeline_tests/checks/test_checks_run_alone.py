"""Checks run in their asset's step over the table it just made, yet each one still runs alone."""

import dagster as dg
import pytest

from curation_pipeline.checks.quality import ALL_CHECK_SPECS
from curation_pipeline.definitions import build_definitions
from curation_pipeline_tests.conftest import RAW_SAMPLES


@pytest.mark.parametrize("spec", ALL_CHECK_SPECS, ids=lambda spec: spec.name)
def test_each_check_runs_alone_over_the_stored_table(curated, spec):
    """As the UI's "Execute" on one check: only that check's result, and its asset is not made again
    (``quality_scores``' check runs no model)."""
    shard = curated["shards"][0]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [shard])
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(curated["warehouse"]))
    job = defs.resolve_job_def("curate_shards").get_subset(asset_selection=set(), asset_check_selection={spec.key})
    result = job.execute_in_process(partition_key=shard, instance=instance)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert [(e.check_name, e.passed, e.partition) for e in evaluations] == [(spec.name, True, shard)]
    assert not result.get_asset_materialization_events()


def test_the_checks_run_in_their_assets_steps(curated):
    """No step of its own: a shard's run has one step per asset, and every check's result."""
    result = curated["results"][curated["shards"][0]]
    steps = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert steps == {"raw_shards", "pairs", "quality_scores", "caption_decisions", "rewritten_captions",
                     "final_captions", "curated_shards"}
    assert {e.check_name for e in result.get_asset_check_evaluations()} == {s.name for s in ALL_CHECK_SPECS}
