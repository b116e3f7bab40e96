"""The sensor registers new shards as partitions; the schedule requests missing and stale ones."""

import os
import shutil
import time

import dagster as dg

from curation_pipeline.automation import fill_missing_shards, new_shards_sensor
from curation_pipeline.resources import ScoringResource, WarehouseResource
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline


def _raw(tmp_path, names):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in names:
        shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / name)
    return raw


def test_sensor_adds_new_shards_and_requests_their_runs(tmp_path):
    raw = _raw(tmp_path, ["a-1.tar", "b_2.tar", "bad name.tar"])
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", ["a-1"])
    with dg.build_sensor_context(instance=instance, resources={
            "warehouse": WarehouseResource(raw_root=str(raw), root=str(tmp_path / "wh"))}) as context:
        first_tick = new_shards_sensor(context)  # a new file waits one tick: it may still be being copied
        assert not first_tick.run_requests and "b_2" in first_tick.skip_reason.skip_message
        result = new_shards_sensor(context)
        assert [r.partition_key for r in result.run_requests] == ["b_2"]
        (request,) = result.dynamic_partitions_requests
        assert list(request.partition_keys) == ["b_2"]
        assert request.partitions_def_name == "shards"
        # pruned (its file deleted), then a new file of that name: a new run key, so Dagster runs it again
        first = result.run_requests[0].run_key
        (raw / "b_2.tar").unlink()
        shutil.copy(RAW_SAMPLES / "sample-000001.tar", raw / "b_2.tar")
        new_shards_sensor(context)
        again = new_shards_sensor(context)
        assert [r.partition_key for r in again.run_requests] == ["b_2"] and again.run_requests[0].run_key != first


def test_sensor_waits_for_a_file_still_being_copied(tmp_path):
    """A half-copied tar reads as a truncated shard: registered then, its run would publish part of it."""
    raw = _raw(tmp_path, [])
    source = (RAW_SAMPLES / "sample-000000.tar").read_bytes()
    (raw / "c-1.tar").write_bytes(source[: len(source) // 2])
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={
            "warehouse": WarehouseResource(raw_root=str(raw), root=str(tmp_path / "wh"))}) as context:
        assert not new_shards_sensor(context).run_requests
        (raw / "c-1.tar").write_bytes(source)  # the copy went on between the ticks
        assert not new_shards_sensor(context).run_requests
        (request,) = new_shards_sensor(context).run_requests  # unchanged for a tick: complete
        assert request.partition_key == "c-1" and request.run_key.startswith(f"shard:c-1:{len(source)}:")


def test_prune_removes_nothing_when_the_raw_location_is_missing(tmp_path):
    from curation_pipeline.automation import prune_shards

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", ["a-1", "b-2"])
    warehouse = WarehouseResource(raw_root=str(tmp_path / "unmounted"), root=str(tmp_path / "wh"))
    result = prune_shards.execute_in_process(instance=instance, resources={"warehouse": warehouse},
                                             raise_on_error=False)
    assert not result.success
    assert sorted(instance.get_dynamic_partitions("shards")) == ["a-1", "b-2"]
    raw = _raw(tmp_path, ["a-1.tar"])
    instance.add_dynamic_partitions("shards", ["linked-3"])
    (raw / "linked-3.tar").symlink_to(raw / "a-1.tar")  # a shard kept elsewhere, linked in: still there
    warehouse = WarehouseResource(raw_root=str(raw), root=str(tmp_path / "wh"))
    assert sorted(warehouse.list_raw()[0]) == ["a-1", "linked-3"]
    assert prune_shards.execute_in_process(instance=instance, resources={"warehouse": warehouse}).success
    assert sorted(instance.get_dynamic_partitions("shards")) == ["a-1", "linked-3"]


def test_sensor_skips_when_raw_location_is_missing(tmp_path):
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources={
            "warehouse": WarehouseResource(raw_root=str(tmp_path / "nowhere"), root=str(tmp_path / "wh"))}) as context:
        result = new_shards_sensor(context)
    assert not result.run_requests and "does not exist" in result.skip_reason.skip_message


def test_schedule_requests_missing_then_stale_partitions_by_dagster_data_versions(tmp_path):
    from curation_pipeline.definitions import build_definitions

    raw = _raw(tmp_path, ["sample-000000.tar", "sample-000001.tar"])
    warehouse = tmp_path / "wh"
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse), scoring=ScoringResource(profile="text"))
    with dg.instance_for_test() as instance, dg.build_schedule_context(
            instance=instance, repository_def=defs.get_repository_def(),
            resources={"warehouse": defs.resources["warehouse"]}) as context:
        instance.add_dynamic_partitions("shards", ["sample-000000", "sample-000001"])

        def requested():  # as the daemon evaluates a tick (several requests need run keys)
            result = defs.resolve_schedule_def("fill_missing_shards").evaluate_tick(context)
            return {r.partition_key: r.tags["curation/reason"] for r in result.run_requests or []}

        def observe():
            assert defs.resolve_job_def("observe_raw_shards").execute_in_process(instance=instance).success

        assert requested() == {"sample-000000": "missing", "sample-000001": "missing"}
        from dagster._core.test_utils import create_run_for_test

        for status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING):  # the sensor's run, waiting
            waiting = create_run_for_test(instance, job_name="curate_shards", status=status,
                                          tags={"dagster/partition": "sample-000001"})
            assert requested() == {"sample-000000": "missing"}
            instance.delete_run(waiting.run_id)
        # a STARTED run may be one whose process was killed (it stays STARTED): asked again, so it resumes
        started = create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.STARTED,
                                      tags={"dagster/partition": "sample-000001"})
        assert requested() == {"sample-000000": "missing", "sample-000001": "missing"}
        instance.delete_run(started.run_id)
        run_pipeline(raw, warehouse, ["sample-000000"], instance=instance, report=False,
                     scoring=ScoringResource(profile="text"))
        observe()  # pairs recorded what it read as the observed version: the curated shard is fresh
        assert requested() == {"sample-000001": "missing"}
        later = time.time() + 60
        os.utime(raw / "sample-000000.tar", (later, later))  # a touch changes no byte: still fresh
        observe()
        assert requested() == {"sample-000001": "missing"}
        data = bytearray((raw / "sample-000000.tar").read_bytes())
        data[-1] ^= 1  # new content (in the end-of-archive padding): a new data version
        (raw / "sample-000000.tar").write_bytes(bytes(data))
        assert requested() == {"sample-000001": "missing"}  # not observed yet
        observe()
        todo = requested()
        assert todo["sample-000001"] == "missing"
        assert todo["sample-000000"].startswith("stale:") and "raw_shards" in todo["sample-000000"]


def test_a_changed_code_version_marks_curated_partitions_stale(tmp_path):
    from curation_pipeline.automation import shards_to_refresh
    from curation_pipeline.definitions import ASSETS, build_definitions

    raw = _raw(tmp_path, ["sample-000000.tar"])
    warehouse = tmp_path / "wh"
    with dg.instance_for_test() as instance:
        run_pipeline(raw, warehouse, ["sample-000000"], instance=instance, report=False,
                     scoring=ScoringResource(profile="text"))
        defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse))
        resource = defs.resources["warehouse"]
        assert shards_to_refresh(instance, resource, defs.get_repository_def()) == {}
        bumped = [a.map_asset_specs(lambda spec: spec.replace_attributes(code_version="2"))
                  if a.key == dg.AssetKey("caption_decisions") else a for a in ASSETS]
        changed = dg.Definitions(assets=bumped, resources=defs.resources)
        todo = shards_to_refresh(instance, resource, changed.get_repository_def())
        assert list(todo) == ["sample-000000"] and "caption_decisions" in todo["sample-000000"]
        assert "code version" in todo["sample-000000"]


def test_one_executor_for_asset_backfills_and_the_job_path():
    from curation_pipeline.definitions import defs

    asset_job = defs.resolve_implicit_global_asset_job_def()
    assert asset_job.executor_def is defs.resolve_job_def("curate_shards").executor_def
    assert asset_job.executor_def.name == "in_process"


def test_register_shards_fills_a_fresh_instance_without_running_anything(tmp_path):
    from curation_pipeline.definitions import build_definitions

    raw = _raw(tmp_path, ["sample-000000.tar", "sample-000001.tar", "bad name.tar"])
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"))
    with dg.instance_for_test() as instance:
        assert instance.get_dynamic_partitions("shards") == []
        result = defs.resolve_job_def("register_shards").execute_in_process(instance=instance)
        assert result.success
        assert sorted(instance.get_dynamic_partitions("shards")) == ["sample-000000", "sample-000001"]
        assert instance.get_runs_count() == 1 and not (tmp_path / "wh").exists()


def test_missing_raw_file_is_skipped_by_the_schedule_and_pruned(tmp_path):
    from curation_pipeline.definitions import build_definitions

    raw = _raw(tmp_path, ["sample-000000.tar"])
    resources = {"warehouse": WarehouseResource(raw_root=str(raw), root=str(tmp_path / "wh"))}
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["sample-000000", "sampel-000000"])  # a typo
        with dg.build_schedule_context(instance=instance, resources=resources,
                                       repository_def=defs.get_repository_def()) as context:
            result = fill_missing_shards(context)
        assert [r.partition_key for r in result] == ["sample-000000"]
        assert defs.resolve_job_def("prune_shards").execute_in_process(instance=instance).success
        assert instance.get_dynamic_partitions("shards") == ["sample-000000"]


def test_report_refreshes_by_declarative_automation_only_when_automation_is_on():
    from curation_pipeline.automation import report_automation
    from curation_pipeline.definitions import defs

    report = defs.resolve_assets_def("quality_report")
    assert report.automation_conditions_by_key[dg.AssetKey("quality_report")] is not None
    expected = (dg.DefaultSensorStatus.RUNNING if os.environ.get("CURATION_AUTOMATION") == "on"
                else dg.DefaultSensorStatus.STOPPED)
    assert report_automation.default_status == expected


def test_a_partition_without_its_raw_file_fails_naming_the_file_and_the_shards(tmp_path):
    from curation_pipeline.definitions import build_definitions

    raw = _raw(tmp_path, ["sample-000000.tar"])
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"),
                             scoring=ScoringResource(profile="text"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["sampel-000000"])
        result = defs.resolve_job_def("curate_shards").execute_in_process(
            partition_key="sampel-000000", instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message + (failure.step_failure_data.user_failure_data.description
                                                         if failure.step_failure_data.user_failure_data else "")
    assert "sampel-000000.tar does not exist" in message and "sample-000000" in message.replace("sampel", "")
