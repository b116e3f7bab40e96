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


@pytest.mark.parametrize("new_verdict", ["", "pairs_schema"], ids=["new-run-passed", "new-run-stale-verdict"])
def test_a_check_run_alone_keeps_a_table_another_run_stores_meanwhile(curated, tmp_path, monkeypatch, new_verdict):
    """Executing a check alone on a table stamped with a failed blocking check rewrites the stamp; when
    another run stores the table again between that step's read and its write, the new rows stay and the
    check answers for them (the concurrent write goes through the warehouse's writer once both reads
    are done)."""
    from curation_pipeline.checks.quality import PAIRS_CHECKS
    from curation_pipeline.storage.warehouse import Warehouse

    shard = curated["shards"][0]
    rows, metadata = Warehouse(str(curated["warehouse"])).read_table_and_metadata("pairs", shard)
    wh = Warehouse(str(tmp_path / "wh"))
    wh.write_table("pairs", shard, rows, metadata={**metadata, "failed_blocking_checks": "pairs_schema"})  # stale
    newer = rows.iloc[: len(rows) // 2]
    real_open = Warehouse.atomic_open

    def another_run_first(self, path, *args, **kwargs):
        monkeypatch.setattr(Warehouse, "atomic_open", real_open)
        wh.write_table("pairs", shard, newer, metadata={**metadata, "failed_blocking_checks": new_verdict})
        return real_open(self, path, *args, **kwargs)

    monkeypatch.setattr(Warehouse, "atomic_open", another_run_first)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [shard])
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path / "wh"))
    job = defs.resolve_job_def("curate_shards").get_subset(asset_selection=set(),
                                                            asset_check_selection={PAIRS_CHECKS[0].key})
    result = job.execute_in_process(partition_key=shard, instance=instance)
    assert Warehouse.atomic_open is real_open  # the other run did store the table mid-step
    stored, stamped = wh.read_table_and_metadata("pairs", shard)
    assert stored["key"].tolist() == newer["key"].tolist()  # the newer run's rows survive
    assert stamped["failed_blocking_checks"] == ""
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.description.startswith(f"{len(newer)} rows")  # about the new table
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("stored again by another run" in message for message in logged)
