"""The nightly schedule and a shard whose run is going: asked again only once that run has ended."""

import shutil

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from curation_pipeline_tests.conftest import RAW_SAMPLES

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _tick(defs, instance):
    """The schedule's tick as the daemon evaluates it: partition -> its request, or the skip message."""
    with dg.build_schedule_context(instance=instance, repository_def=defs.get_repository_def(),
                                   resources={"warehouse": defs.resources["warehouse"]}) as context:
        result = defs.resolve_schedule_def("fill_missing_shards").evaluate_tick(context)
    return {r.partition_key: r for r in result.run_requests} if result.run_requests else result.skip_message


def test_a_shard_whose_run_has_started_is_not_asked_again_until_that_run_ends(tmp_path):
    """A second run of a shard beside a live one would score it twice and race it on the same files. A run
    whose process died stays STARTED until run monitoring (Kubernetes) marks it failed or it is terminated:
    the tick names it with its run id, so a stuck one is seen."""
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.resources import PolicyResource, ScoringResource

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "sample-000000.tar")
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"),
                             scoring=ScoringResource(profile="text"), policy=PolicyResource(rewrite=False))
    sensor = defs.resolve_sensor_def("new_shards_sensor")
    with dg.instance_for_test() as instance:
        cursor = None
        for _ in range(2):  # a new file waits one tick
            with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                         repository_def=defs.get_repository_def(),
                                         resources=defs.resources) as context, \
                    dg.partition_loading_context(dynamic_partitions_store=instance):  # as the daemon: its partition
                result = sensor.evaluate_tick(context)
            cursor = result.cursor
        instance.add_dynamic_partitions("shards", ["sample-000000"])
        (request,) = result.run_requests
        # the sensor's run, launched and going when the nightly tick comes
        run = create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.STARTED,
                                  tags={**request.tags, "dagster/run_key": request.run_key})
        skipped = _tick(defs, instance)
        assert isinstance(skipped, str) and skipped.startswith("nothing to run. 1 shard(s) wait on a started run: "
                                                               f"sample-000000 (run {run.run_id}")
        assert "terminated in the UI" in skipped
        # its process died, and run monitoring marked it failed (no step failed): asked again, and run
        instance.report_run_failed(run, "the run worker is gone")
        (again,) = _tick(defs, instance).values()
        assert again.partition_key == "sample-000000" and again.tags["curation/reason"] == "missing"
        assert defs.resolve_job_def("curate_shards").execute_in_process(
            partition_key="sample-000000", instance=instance, tags=again.tags, run_config=QUIET).success
        assert _tick(defs, instance) == "every registered shard is curated and fresh"
