"""The sensor registers new shards as partitions; the schedule requests missing and stale ones."""

import hashlib
import os
import shutil
import time

import dagster as dg

from curation_pipeline.automation import DECIDE_KEYS, fill_missing_shards, new_shards_sensor
from curation_pipeline.resources import ScoringResource, WarehouseResource
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES, run_pipeline


def _raw(tmp_path, names):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in names:
        shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / name)
    return raw


def _text_definitions(tmp_path, names):
    """``_raw``'s folder and the definitions of a text-profile pipeline over it, into ``tmp_path / "wh"``."""
    from curation_pipeline.definitions import build_definitions

    raw = _raw(tmp_path, names)
    return raw, build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"),
                                  scoring=ScoringResource(profile="text"))


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
    # nor is a location that lists no shard at all (an unmounted disk's empty mount point) unless asked
    (tmp_path / "empty").mkdir()
    empty = {"warehouse": WarehouseResource(raw_root=str(tmp_path / "empty"), root=str(tmp_path / "wh"))}
    refused = prune_shards.execute_in_process(instance=instance, resources=empty, raise_on_error=False)
    assert not refused.success and sorted(instance.get_dynamic_partitions("shards")) == ["a-1", "linked-3"]
    failure = refused.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "lists no shard at all, and 2 partition(s) are registered: no partition removed" in failure.description
    assert prune_shards.execute_in_process(instance=instance, resources=empty, run_config={
        "ops": {"remove_stale_partitions": {"config": {"remove_all": True}}}}).success
    assert instance.get_dynamic_partitions("shards") == []


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

        # the sensor's run, waiting or going: in flight, not asked again (test_automation_inflight.py)
        for status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED):
            waiting = create_run_for_test(instance, job_name="curate_shards", status=status,
                                          tags={"dagster/partition": "sample-000001"})
            assert requested() == {"sample-000000": "missing"}
            instance.delete_run(waiting.run_id)
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
    from curation_pipeline.automation import DECIDE_KEYS, SCORES_CURRENT, curate_shards_job, shards_to_refresh
    from curation_pipeline.definitions import build_definitions, versioned_assets

    raw = _raw(tmp_path, ["sample-000000.tar"])
    warehouse = tmp_path / "wh"
    with dg.instance_for_test() as instance:
        run_pipeline(raw, warehouse, ["sample-000000"], instance=instance, report=False,
                     scoring=ScoringResource(profile="text"))
        defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse),
                                 scoring=ScoringResource(profile="text"))
        resource = defs.resources["warehouse"]
        assert shards_to_refresh(instance, resource, defs.get_repository_def()) == {}
        bumped = [a.map_asset_specs(lambda spec: spec.replace_attributes(code_version="changed"))
                  if a.key == dg.AssetKey("caption_decisions") else a for a in versioned_assets(defs.resources)]
        changed = dg.Definitions(assets=bumped, resources=defs.resources, jobs=[curate_shards_job],
                                 schedules=[fill_missing_shards])
        todo = shards_to_refresh(instance, resource, changed.get_repository_def())
        # a table after the scores: its scores stand, and the schedule asks for the shard's decide half alone
        assert todo == {
            "sample-000000": SCORES_CURRENT + "caption_decisions has a new code version (code 7 -> changed)"}
        # another profile: the reason names the scorers each made it with, not only "a new code version"
        offline = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse))
        why = shards_to_refresh(instance, resource, offline.get_repository_def())["sample-000000"]
        assert ("quality_scores has a new code version (scorers datacomp, text_quality -> datacomp, text_quality, "
                "nsfw, ocr, image_quality, dup: another profile or rewriter?)") in why, why
        assert list(_tick(changed, instance)["sample-000000"].asset_selection) == DECIDE_KEYS
        bumped = [a.map_asset_specs(lambda spec: spec.replace_attributes(code_version="changed"))
                  if a.key == dg.AssetKey("quality_scores") else a for a in versioned_assets(defs.resources)]
        changed = dg.Definitions(assets=bumped, resources=defs.resources, jobs=[curate_shards_job],
                                 schedules=[fill_missing_shards])
        assert _tick(changed, instance)["sample-000000"].asset_selection is None  # the scores: the whole shard


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
        assert instance.get_runs_count() == 1 and not (tmp_path / "wh" / "pairs").exists()
        observed = {e.event_specific_data.asset_observation.partition:
                    e.event_specific_data.asset_observation.tags["dagster/data_version"]
                    for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"}
        assert observed == {key: hashlib.sha256((raw / f"{key}.tar").read_bytes()).hexdigest()
                            for key in ("sample-000000", "sample-000001")}
        # the stats hashed are recorded as an observation's are: the next one reads no file again
        observe = defs.resolve_job_def("observe_raw_shards").execute_in_process(instance=instance)
        assert observe.success
        logs = [e.user_message for e in instance.all_logs(observe.run_id) if "raw shard(s)" in e.user_message]
        assert any("observed 2 raw shard(s); read 0 whose stat was new" in m for m in logs), logs


def test_register_shards_needs_only_the_raw_folder(tmp_path, monkeypatch):
    """The warehouse's stat record is a cache: with its store down, registering still observes each new file, and
    one raw file gone since the listing loses only its own observation, said in the log."""
    from botocore.exceptions import EndpointConnectionError

    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.storage.warehouse import Warehouse

    raw = _raw(tmp_path, ["sample-000000.tar", "sample-000001.tar", "sample-000002.tar"])
    listed = WarehouseResource.list_raw_stats

    def list_then_delete(self):  # listed, then deleted before it is read
        found = listed(self)
        (raw / "sample-000001.tar").unlink()
        return found

    def down(self, path):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    monkeypatch.setattr(WarehouseResource, "list_raw_stats", list_then_delete)
    monkeypatch.setattr(Warehouse, "read_json", down)
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("register_shards").execute_in_process(instance=instance, raise_on_error=False)
        assert result.success
        assert sorted(instance.get_dynamic_partitions("shards")) == [f"sample-00000{i}" for i in range(3)]
        observed = sorted(e.event_specific_data.asset_observation.partition for e in result.all_events
                          if e.event_type_value == "ASSET_OBSERVATION")
        assert observed == ["sample-000000", "sample-000002"]
        logs = " | ".join(e.user_message for e in instance.all_logs(result.run_id))
        assert "sample-000001: raw file" in logs and "cannot be observed (FileNotFoundError" in logs
        assert "sample-000000: hashed, its stat not recorded (EndpointConnectionError" in logs


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
    raw, defs = _text_definitions(tmp_path, ["sample-000000.tar"])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["sampel-000000"])
        result = defs.resolve_job_def("curate_shards").execute_in_process(
            partition_key="sampel-000000", instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message + (failure.step_failure_data.user_failure_data.description
                                                         if failure.step_failure_data.user_failure_data else "")
    assert "sampel-000000.tar does not exist" in message and "sample-000000" in message.replace("sampel", "")


def _tick(defs, instance):
    """The schedule's tick as the daemon evaluates it: partition -> its request, or the skip message."""
    with dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                   resources={"warehouse": defs.resources["warehouse"]}) as context:
        result = defs.resolve_schedule_def("fill_missing_shards").evaluate_tick(context)
    if result.run_requests:
        return {r.partition_key: r for r in result.run_requests}
    return result.skip_message


def test_a_shard_that_failed_in_a_step_is_retried_once_then_held_until_its_raw_file_code_or_settings_change(
        tmp_path):
    """One step failure may be an outage or a killed worker: asked once more. Two in a row would fail again
    the same way: re-running it every night would re-score the whole shard only to fail at the same step."""
    from dagster._core.test_utils import create_run_for_test

    from curation_pipeline.automation import shards_to_refresh
    from curation_pipeline.definitions import build_definitions, versioned_assets
    from curation_pipeline.resources import DriftConfig, PolicyResource

    raw = _raw(tmp_path, ["sample-000000.tar"])
    # a drift limit no shard meets: the blocking check on final_captions fails every time
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"),
                             scoring=ScoringResource(profile="text"),
                             policy=PolicyResource(rewrite=False, drift=DriftConfig(mean_ratio_min=1.2, min_rows=1)))
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    def run(request):  # the run the schedule asked for
        result = defs.resolve_job_def("curate_shards").execute_in_process(
            partition_key="sample-000000", instance=instance, raise_on_error=False, run_config=quiet,
            tags=request.tags)
        assert not result.success
        return result.run_id

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["sample-000000"])
        # a run whose process died has no failed step: asked again, so it resumes
        create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.FAILURE,
                            tags={"dagster/partition": "sample-000000"})
        (request,) = _tick(defs, instance).values()
        assert request.tags["curation/reason"] == "missing"
        first = run(request)
        (request,) = _tick(defs, instance).values()  # one failure in a step: retried on the next tick
        # its scores made, its tar held back by the check: the decide half alone
        assert request.tags["curation/reason"] == "stale, its scores current: missing (curated_shards never made)"
        assert list(request.asset_selection) == DECIDE_KEYS
        second = run(request)
        skipped = _tick(defs, instance)  # two in a row, same code and raw version: held, naming both runs
        assert isinstance(skipped, str) and "sample-000000: failed in 2 runs in a row" in skipped
        assert first in skipped and second in skipped and "(step final_captions)" in skipped
        assert "fix and re-run it, or materialize it by hand" in skipped
        # observed again with the same content: still held
        assert defs.resolve_job_def("observe_raw_shards").execute_in_process(instance=instance).success
        assert isinstance(_tick(defs, instance), str)
        # a code change since the failed runs: asked again
        bumped = [a.map_asset_specs(lambda spec: spec.replace_attributes(code_version=f"{spec.code_version}-next"))
                  if a.key == dg.AssetKey("curated_shards") else a for a in versioned_assets(defs.resources)]
        changed = dg.Definitions(assets=bumped, resources=defs.resources)
        assert list(shards_to_refresh(instance, defs.resources["warehouse"], changed.get_repository_def())) == [
            "sample-000000"]
        # so is a change of the code location's settings (the drift limit that failed it, fixed)
        fixed = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"),
                                  scoring=ScoringResource(profile="text"),
                                  policy=PolicyResource(rewrite=False, drift=DriftConfig(min_rows=1)))
        assert list(_tick(fixed, instance)) == ["sample-000000"]
        assert isinstance(_tick(defs, instance), str)  # the same settings again: still held
        # a new raw version observed since the failed runs: asked again
        data = bytearray((raw / "sample-000000.tar").read_bytes())
        data[-1] ^= 1
        (raw / "sample-000000.tar").write_bytes(bytes(data))
        assert isinstance(_tick(defs, instance), str)  # not observed yet
        assert defs.resolve_job_def("observe_raw_shards").execute_in_process(instance=instance).success
        assert list(_tick(defs, instance)) == ["sample-000000"]


def test_runs_stopped_by_a_signal_hold_back_nothing(tmp_path):
    """A `curate run` stopped twice (Ctrl-C, SIGTERM) fails its step as interrupted both times: that says nothing
    of whether the shard fails again, so it is asked again; two failures of its code hold it, as before."""
    from dagster._core.events import DagsterEvent, StepFailureData
    from dagster._core.execution.plan.objects import ErrorSource
    from dagster._core.test_utils import create_run_for_test
    from dagster._utils.error import SerializableErrorInfo

    from curation_pipeline.automation import failed_the_same_way

    def failed_twice(instance, shard, source):
        for _ in range(2):
            run = create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.FAILURE,
                                      tags={"dagster/partition": shard})
            instance.report_dagster_event(DagsterEvent(
                event_type_value=dg.DagsterEventType.STEP_FAILURE.value, job_name="curate_shards",
                step_key="quality_scores", event_specific_data=StepFailureData(
                    error=SerializableErrorInfo("stopped", [], "DagsterExecutionInterruptedError"),
                    user_failure_data=None, error_source=source)), run_id=run.run_id)

    with dg.instance_for_test() as instance:
        failed_twice(instance, "sample-000000", ErrorSource.INTERRUPT)
        failed_twice(instance, "sample-000001", ErrorSource.USER_CODE_ERROR)
        assert failed_the_same_way(instance, "sample-000000", None) is None
        held = failed_the_same_way(instance, "sample-000001", None)
        assert held is not None and held.startswith("sample-000001: failed in 2 runs in a row")


def test_failures_in_another_warehouse_hold_back_nothing_here(tmp_path):
    """Every --warehouse shares the Dagster home: two failed ``curate run --warehouse other`` runs of a shard
    (tagged with their warehouse) are no reason to hold back the code location's own run of it."""
    from curation_pipeline.assets.failures import WAREHOUSE_TAG
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.resources import DriftConfig, PolicyResource

    raw = _raw(tmp_path, ["sample-000000.tar"])
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"),
                             scoring=ScoringResource(profile="text"),
                             policy=PolicyResource(rewrite=False, drift=DriftConfig(mean_ratio_min=1.2, min_rows=1)))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["sample-000000"])
        for _ in range(2):  # failed in a step, in another warehouse
            result = defs.resolve_job_def("curate_shards").execute_in_process(
                partition_key="sample-000000", instance=instance, raise_on_error=False,
                run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
                tags={WAREHOUSE_TAG: str(tmp_path / "other-wh")})
            assert not result.success
        assert list(_tick(defs, instance)) == ["sample-000000"]  # asked: its own warehouse never failed


def test_a_touched_raw_shard_is_read_once_not_on_every_observation(tmp_path, monkeypatch):
    """A touch, or a copy restored from backup, changes the stat and no byte: the nightly observation
    hashes it once and records that stat's SHA-256 in the warehouse, so later observations, from any
    process or instance, read nothing; a real change of content is still seen."""
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.shards import fingerprint

    raw = _raw(tmp_path, ["sample-000000.tar"])
    resources = {"scoring": ScoringResource(profile="text")}
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"), **resources)
    reads = []
    original = fingerprint.hash_file
    monkeypatch.setattr(fingerprint, "hash_file", lambda url: reads.append(url) or original(url))

    def observed(instance):  # how many times the observation read the raw file
        reads.clear()
        assert defs.resolve_job_def("observe_raw_shards").execute_in_process(instance=instance).success
        return len(reads)

    with dg.instance_for_test() as instance:
        run_pipeline(raw, tmp_path / "wh", ["sample-000000"], instance=instance, report=False, **resources)
        assert observed(instance) == 0  # the stat pairs read
        later = time.time() + 60
        os.utime(raw / "sample-000000.tar", (later, later))
        assert observed(instance) == 1  # a new stat: hashed once
        assert observed(instance) == 0 and observed(instance) == 0
        other = dg.DagsterInstance.ephemeral()  # another process's instance (curate's, say) sees the record too
        other.add_dynamic_partitions("shards", ["sample-000000"])
        assert observed(other) == 0
        assert _tick(defs, instance) == "every registered shard is curated and fresh"
        shutil.copy2(raw / "sample-000000.tar", tmp_path / "backup.tar")  # restored: another inode, same bytes
        os.replace(tmp_path / "backup.tar", raw / "sample-000000.tar")
        assert observed(instance) == 1 and observed(instance) == 0
        data = bytearray((raw / "sample-000000.tar").read_bytes())
        data[-1] ^= 1  # new content (in the end-of-archive padding)
        (raw / "sample-000000.tar").write_bytes(bytes(data))
        assert observed(instance) == 1 and observed(instance) == 0
        (request,) = _tick(defs, instance).values()
        assert request.tags["curation/reason"].startswith("stale:") and "raw_shards" in request.tags["curation/reason"]


def test_a_curated_shard_whose_warehouse_files_are_gone_is_filled_again(tmp_path, monkeypatch):
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.resources import PolicyResource
    from curation_pipeline.storage.warehouse import Warehouse

    raw = _raw(tmp_path, ["sample-000000.tar", "sample-000001.tar"])
    warehouse = tmp_path / "wh"
    resources = {"scoring": ScoringResource(profile="text"), "policy": PolicyResource(rewrite=False)}
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse), **resources)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["sample-000001"])  # registered, never run
        run_pipeline(raw, warehouse, ["sample-000000"], instance=instance, report=False, **resources)
        assert defs.resolve_job_def("observe_raw_shards").execute_in_process(instance=instance).success
        listed = []
        original = Warehouse.shard_files
        monkeypatch.setattr(Warehouse, "shard_files", lambda self, table: listed.append(table) or original(self, table))
        assert {k: r.tags["curation/reason"] for k, r in _tick(defs, instance).items()} == {"sample-000001": "missing"}
        assert sorted(listed) == sorted(["pairs", "quality_scores", "caption_decisions", "rewritten_captions",
                                         "final_captions"])  # once per table and tick, not per shard
        (warehouse / "curated" / "sample-000000.tar").unlink()
        request = _tick(defs, instance)["sample-000000"]  # only a decide-half file: that half, from the scores
        assert request.tags["curation/reason"] == "stale, its scores current: missing (no curated_shards file)"
        assert list(request.asset_selection) == DECIDE_KEYS
        (warehouse / "pairs" / "sample-000000.parquet").unlink()
        request = _tick(defs, instance)["sample-000000"]
        assert request.tags["curation/reason"] == "missing (no pairs, curated_shards files)"
        assert request.asset_selection is None
        # the warehouse root changed (CURATION_WAREHOUSE edited, moved to object storage): all of it is gone
        moved = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh-new"), **resources)
        reasons = {k: r.tags["curation/reason"] for k, r in _tick(moved, instance).items()}
        assert reasons["sample-000000"].startswith("missing (no pairs, quality_scores,")


def test_a_shard_left_half_made_is_asked_again(tmp_path, monkeypatch):
    """A run that stopped after scoring (new pairs and scores, old decisions and captions) leaves every table
    fresh to Dagster, whose staleness looks only at a table's own inputs' versions: the tick asks for it."""
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.resources import PolicyResource

    raw = _raw(tmp_path, ["sample-000000.tar"])
    warehouse = tmp_path / "wh"
    resources = {"scoring": ScoringResource(profile="text"), "policy": PolicyResource(rewrite=False)}
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse), **resources)
    with dg.instance_for_test() as instance:
        run_pipeline(raw, warehouse, ["sample-000000"], instance=instance, report=False, **resources)
        assert defs.resolve_job_def("observe_raw_shards").execute_in_process(instance=instance).success
        assert _tick(defs, instance) == "every registered shard is curated and fresh"
        scored = defs.resolve_job_def("curate_shards").execute_in_process(
            instance=instance, partition_key="sample-000000",
            asset_selection=[dg.AssetKey("pairs"), dg.AssetKey("quality_scores")])
        assert scored.success
        # its scores made in order, its decide half behind them: that half alone, from the stored scores
        (request,) = _tick(defs, instance).values()
        assert request.tags["curation/reason"] == (
            "stale, its scores current: incomplete: caption_decisions is older than its input quality_scores (a run "
            "stopped between them, or a blocking check held the later one)")
        assert list(request.asset_selection) == DECIDE_KEYS, request
        # a new rewriter too: its stale tables all come after the scores, which are in order: still that half
        from curation_pipeline.rewriting import base as rewriter_base

        was = rewriter_base.CODE_VERSIONS["cleaner"]
        monkeypatch.setitem(rewriter_base.CODE_VERSIONS, "cleaner", "99")
        defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse), **resources)
        (request,) = _tick(defs, instance).values()
        assert list(request.asset_selection) == DECIDE_KEYS, request
        assert request.tags["curation/reason"].startswith(
            f"stale, its scores current: rewritten_captions has a new code version (cleaner {was} -> 99); incomplete: "
            "caption_decisions "
            "is older than"), request
        # the score half out of order (pairs made again, its scores not): the decide half would refuse those
        # scores, so the whole shard runs (a decide half alone is only for scores made in order)
        assert defs.resolve_job_def("curate_shards").execute_in_process(
            instance=instance, partition_key="sample-000000", asset_selection=[dg.AssetKey("pairs")]).success
        (request,) = _tick(defs, instance).values()
        assert request.asset_selection is None, request
        assert request.tags["curation/reason"].startswith(
            f"stale: rewritten_captions has a new code version (cleaner {was} -> 99); incomplete: quality_scores is "
            "older than its input pairs")


def test_a_first_run_stopped_after_scoring_gets_its_decide_half_alone(tmp_path):
    """A shard's first run that stopped (or was held by a blocking check) after its scores: its decide tables were
    never made, so Dagster calls them MISSING, which asked for the whole shard, its models again (GPU hours a
    shard with a model profile). Its scores are current and made here in order: the decide half alone."""
    raw, defs = _text_definitions(tmp_path, ["sample-000000.tar"])
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["sample-000000"])
        scored = defs.resolve_job_def("curate_shards").execute_in_process(
            instance=instance, partition_key="sample-000000", run_config=QUIET,
            asset_selection=[dg.AssetKey("raw_shards"), dg.AssetKey("pairs"), dg.AssetKey("quality_scores")])
        assert scored.success
        (request,) = _tick(defs, instance).values()
        assert request.tags["curation/reason"] == "stale, its scores current: missing (caption_decisions never made)"
        assert list(request.asset_selection) == DECIDE_KEYS, request
        # its scores file gone meanwhile: the whole shard (a decide half would fail on it, run after run)
        scores = tmp_path / "wh" / "quality_scores" / "sample-000000.parquet"
        kept = scores.read_bytes()
        scores.unlink()
        (request,) = _tick(defs, instance).values()
        assert request.tags["curation/reason"] == "missing" and request.asset_selection is None, request
        scores.write_bytes(kept)
        (request,) = _tick(defs, instance).values()
        assert defs.resolve_job_def("curate_shards").execute_in_process(  # what the run asked for does the rest
            instance=instance, partition_key="sample-000000", run_config=QUIET,
            asset_selection=request.asset_selection).success
        assert _tick(defs, instance) == "every registered shard is curated and fresh"
        # the scores out of order (pairs made again, its scores not): the whole shard, as before
        assert defs.resolve_job_def("curate_shards").execute_in_process(
            instance=instance, partition_key="sample-000000", run_config=QUIET,
            asset_selection=[dg.AssetKey("pairs")]).success
        (request,) = _tick(defs, instance).values()
        assert request.asset_selection is None, request

def test_the_sensor_names_raw_files_it_passes_over(tmp_path):
    """An upper-case .TAR, or shards one folder down (raw/part-00/000000.tar), are said, not ignored."""
    raw = _raw(tmp_path, ["a-1.tar", "SHARD-1.TAR"])
    (raw / "part-00").mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000001.tar", raw / "part-00" / "000000.tar")
    (raw / "part-00" / "index.json").write_text("{}")  # not a shard: not reported
    (raw / "notes.txt").write_text("")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", ["a-1"])
    warehouse = WarehouseResource(raw_root=str(raw), root=str(tmp_path / "wh"))
    found, rejected = warehouse.list_raw()
    assert list(found) == ["a-1"] and len(rejected) == 2
    with dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse}) as context:
        message = new_shards_sensor(context).skip_reason.skip_message
    assert "1 in the raw location, 1 registered, 2 rejected names" in message
    assert "'SHARD-1.TAR'" in message and "rename to .tar" in message
    assert "'part-00/000000.tar' is in a subfolder: raw_root must be the folder holding the shards" in message


def test_every_sensor_tick_names_the_raw_files_it_passes_over(tmp_path, capfd):
    """A tick that waits for new files names the rejected ones too; one that requests runs can carry no message
    (Dagster takes a skip reason or run requests), so its log names them."""
    raw = _raw(tmp_path, ["a-1.tar", "bad name.tar"])
    warehouse = WarehouseResource(raw_root=str(raw), root=str(tmp_path / "wh"))
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(),
                                 resources={"warehouse": warehouse}) as context:
        waiting = new_shards_sensor(context).skip_reason.skip_message
        assert waiting.startswith("1 new shard(s) wait a tick for their files to stop changing: a-1")
        assert "1 rejected names: shard file name 'bad name.tar'" in waiting
        capfd.readouterr()
        requesting = new_shards_sensor(context)
    assert [r.partition_key for r in requesting.run_requests] == ["a-1"] and requesting.skip_reason is None
    assert "WARNING - shard file name 'bad name.tar'" in capfd.readouterr().err  # the tick's log


def test_the_schedule_names_a_missing_raw_location_and_the_shards_whose_raw_file_is_gone(tmp_path, monkeypatch):
    """An unmounted raw disk is not "every shard curated and fresh"; the raw location is listed once a tick,
    never a request per shard (on S3 one per shard)."""
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.resources import PolicyResource

    raw = _raw(tmp_path, [])
    for shard in ("sample-000000", "sample-000001"):
        shutil.copy(RAW_SAMPLES / f"{shard}.tar", raw / f"{shard}.tar")
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"),
                             scoring=ScoringResource(profile="text"), policy=PolicyResource(rewrite=False))
    calls = []  # the raw location's listings and per-shard requests, in one tick
    list_raw, raw_exists = WarehouseResource.list_raw, WarehouseResource.raw_exists
    monkeypatch.setattr(WarehouseResource, "list_raw", lambda self: calls.append("list") or list_raw(self))
    monkeypatch.setattr(WarehouseResource, "raw_exists", lambda self, key: calls.append(key) or raw_exists(self, key))

    def tick():
        calls.clear()
        result = _tick(defs, instance)
        assert calls == ["list"]
        return result

    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("register_shards").execute_in_process(instance=instance).success
        assert {k: r.tags["curation/reason"] for k, r in tick().items()} == {
            "sample-000000": "missing", "sample-000001": "missing"}
        raw.rename(tmp_path / "unmounted")  # registered, never run, and the raw disk unmounted
        assert tick() == f"raw shard location {str(raw)!r} does not exist; no shard requested"
        (tmp_path / "unmounted").rename(raw)
        (raw / "sample-000001.tar").unlink()  # one raw file deleted: passed over, and said
        (request,) = tick().values()
        assert request.partition_key == "sample-000000"
        assert defs.resolve_job_def("curate_shards").execute_in_process(
            partition_key="sample-000000", instance=instance, tags=request.tags,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}}).success
        assert tick() == ("nothing to run. 1 registered shard(s) passed over, their raw file gone: sample-000001 "
                          "(prune_shards removes their partitions; a curated tar such a shard made stays published, "
                          "its pairs each duplicate group's survivor: delete curated/<shard>.tar to withdraw it)")


def test_the_settings_digest_follows_the_compute_variables_a_deployment_sets(monkeypatch):
    """A deployment (the chart too) gives compute settings as environment variables, read where a run starts:
    fixing a wrong Ray address there asks a held shard again, as a change in code does. The digest is the same
    in every process for the same settings."""
    import subprocess
    import sys

    from curation_pipeline.automation import location_settings
    from curation_pipeline.definitions import build_definitions

    def digest() -> str:
        return location_settings(build_definitions(raw_root="/r", warehouse_root="/w").get_repository_def())

    monkeypatch.delenv("CURATION_RAY_ADDRESS", raising=False)
    before = digest()
    monkeypatch.setenv("CURATION_RAY_ADDRESS", "ray://head:10001")
    assert digest() != before
    code = ("from curation_pipeline.automation import location_settings\n"
            "from curation_pipeline.definitions import build_definitions\n"
            "print(location_settings(build_definitions(raw_root='/r', warehouse_root='/w').get_repository_def()))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert other.stdout.strip() == digest(), other.stderr[-2000:]


def test_a_shard_another_process_registers_meanwhile_is_no_failure(tmp_path):
    """Dagster's add_dynamic_partitions checks, then inserts: a `curate run` and the UI's register_shards adding one
    key at once fail the slower insert on the unique key (SQLite IntegrityError). The keys are looked up again."""
    from sqlalchemy.exc import IntegrityError

    from curation_pipeline.partitions import add_shards

    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    insert, raced = instance.add_dynamic_partitions, []

    def racing(name, keys):
        if not raced:  # the other process's insert lands between this one's check and its insert
            raced.append(keys)
            insert(name, keys[:1])
            raise IntegrityError("INSERT INTO dynamic_partitions", {}, Exception("UNIQUE constraint failed"))
        return insert(name, keys)

    instance.add_dynamic_partitions = racing
    assert add_shards(instance, ["s-000001", "s-000002"]) == ["s-000002"]
    assert raced == [["s-000001", "s-000002"]]
    assert instance.get_dynamic_partitions("shards") == ["s-000001", "s-000002"]


def test_the_report_refreshes_after_shards_change_though_one_registered_shard_is_not_curated(tmp_path):
    """quality_report's condition was Dagster's eager(), whose ~any_deps_missing() held every refresh once one
    registered shard had no curated tar (new and waiting for its run, held, or failing: the report is where failed
    shards are listed). It is asked after curated shards change, whatever the others' state; never while a run
    of theirs is in progress, nor before any shard is curated."""
    raw, defs = _text_definitions(tmp_path, ["sample-000000.tar", "sample-000001.tar"])
    report = dg.AssetSelection.assets("quality_report")
    with dg.instance_for_test() as instance:
        cursor = None

        def asked() -> bool:  # one tick of report_automation; what it asks for is run
            nonlocal cursor
            result = dg.evaluate_automation_conditions(defs=defs, asset_selection=report, instance=instance,
                                                       cursor=cursor)
            cursor = result.cursor
            wanted = any(r.true_subset.size for r in result.results)
            if wanted:
                assert defs.resolve_job_def("quality_report_job").execute_in_process(
                    instance=instance, run_config=QUIET).success
            return wanted

        def curate(shard, run_config=QUIET) -> bool:
            return defs.resolve_job_def("curate_shards").execute_in_process(
                instance=instance, partition_key=shard, run_config=run_config, raise_on_error=False).success

        instance.add_dynamic_partitions("shards", ["sample-000000", "sample-000001"])
        assert not asked()  # nothing curated: nothing to report
        assert curate("sample-000000") and curate("sample-000001")
        assert asked() and not asked()  # once, then nothing changed
        instance.add_dynamic_partitions("shards", ["missing-000009"])  # registered, its raw file gone: it fails
        assert not curate("missing-000009")
        assert curate("sample-000001")
        assert asked()  # eager() asked nothing here, nor at any later tick
        assert not asked()
        # a re-run whose final_captions fails its blocking drift check publishes no tar: the report (where such a
        # shard reads blocked) was not asked, and went on calling it ok
        strict = {**QUIET, "resources": {"policy": {"config": {"drift": {"max_kl": 0.0}}}}}
        assert not curate("sample-000000", strict)
        assert asked() and not asked()
