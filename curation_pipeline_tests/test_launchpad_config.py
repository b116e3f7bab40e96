"""Run config given where the UI's launchpad gives it: the code location's definitions (roots from the
environment), a real run on a sample shard, resources configured for that run only."""

import dagster as dg
import pytest

from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES

SHARD = "sample-000000"


def _run(run_config: dict, *assets: str):
    """A run of ``assets`` on SHARD with the launchpad's ``resources`` config, as the UI launches one."""
    from curation_pipeline.definitions import build_definitions

    defs = build_definitions()  # reads CURATION_RAW / CURATION_WAREHOUSE now, as the code location does
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [SHARD])
    return defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key=SHARD, instance=instance, raise_on_error=False, run_config={**QUIET, **run_config},
        asset_selection=[dg.AssetKey(a) for a in assets])


def _tables(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet")) if root.exists() else []


@pytest.fixture
def default_warehouse(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATION_RAW", str(RAW_SAMPLES))
    monkeypatch.setenv("CURATION_WAREHOUSE", str(tmp_path / "default"))
    return tmp_path / "default"


def test_a_launchpad_warehouse_root_gets_every_table_of_the_run(default_warehouse, tmp_path):
    other = tmp_path / "other"
    config = {"raw_root": str(RAW_SAMPLES), "root": str(other)}
    result = _run({"resources": {"warehouse": {"config": config}}}, "pairs", "quality_scores")

    assert result.success
    assert {"pairs/sample-000000.parquet", "quality_scores/sample-000000.parquet"} <= set(_tables(other))
    assert _tables(default_warehouse) == []  # the default warehouse is not touched


@pytest.mark.parametrize("policy, message", [
    ({"keep_threshold": 950}, "keep_threshold=950 is outside text_quality's declared range 0..100"),
    ({"keep_expression": "mlm_itm >>> 3"}, "cannot parse selection 'mlm_itm >>> 3'"),
])
def test_a_bad_launchpad_policy_fails_the_run_before_any_step(default_warehouse, policy, message):
    result = _run({"resources": {"policy": {"config": policy}}}, "pairs", "quality_scores", "caption_decisions")

    assert not result.success
    assert not [e for e in result.all_events if e.is_step_event]  # no step started, let alone did work
    failure = next(e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE")
    assert message in str(failure.event_specific_data.error)
    assert _tables(default_warehouse) == []


def test_a_partial_launchpad_warehouse_config_keeps_the_default_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATION_RAW", str(RAW_SAMPLES))
    monkeypatch.delenv("CURATION_WAREHOUSE", raising=False)
    monkeypatch.chdir(tmp_path)  # the unset root's default, data/warehouse, is relative to where the run runs

    result = _run({"resources": {"warehouse": {"config": {"batch_size": 8}}}}, "pairs")

    assert result.success
    assert "pairs/sample-000000.parquet" in _tables(tmp_path / "data" / "warehouse")
