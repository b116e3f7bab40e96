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


def test_the_shards_of_a_backfill_still_launching_its_runs_are_not_asked_again(tmp_path):
    """The daemon launches a backfill's runs a chunk at a time (minutes for thousands of shards); the nightly
    tick (and `curate run --only-missing`, and the settle sensor) saw only runs, so it asked again for every
    shard the backfill had not launched yet: two runs of each. A job backfill's and an asset backfill's."""
    import time

    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill

    from curation_pipeline.assets.dedup import settle_requests
    from curation_pipeline.automation import in_flight_note, runs_in_flight
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.resources import PolicyResource, ScoringResource

    raw = tmp_path / "raw"
    raw.mkdir()
    shards = ["sample-000000", "sample-000001", "sample-000002"]
    for shard in shards:
        shutil.copy(RAW_SAMPLES / f"{shard}.tar", raw / f"{shard}.tar")
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"),
                             scoring=ScoringResource(profile="text"), policy=PolicyResource(rewrite=False))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", shards)
        assert set(_tick(defs, instance)) == set(shards)
        job = PartitionBackfill(backfill_id="jobfill", status=BulkActionStatus.REQUESTED, from_failure=False,
                                tags={}, backfill_timestamp=time.time(), partition_names=shards,
                                last_submitted_partition_name="sample-000000")
        instance.add_backfill(job)
        # sample-000000 launched (its run ended, say), the other two not yet
        assert list(_tick(defs, instance)) == ["sample-000000"]
        assert sorted(runs_in_flight(instance)) == shards[1:]
        warehouse, policy = defs.resources["warehouse"], defs.resources["policy"]
        assert "a backfill in progress has yet to launch the runs of 2 shard(s)" in settle_requests(
            instance, warehouse, policy)
        instance.update_backfill(job.with_status(BulkActionStatus.CANCELED))
        assert set(_tick(defs, instance)) == set(shards)

        assets = PartitionBackfill.from_asset_partitions(
            backfill_id="assetfill", asset_graph=defs.resolve_asset_graph(), partition_names=shards[:2],
            asset_selection=[dg.AssetKey("pairs")], backfill_timestamp=time.time(), tags={},
            dynamic_partitions_store=instance, all_partitions=False, title=None, description=None, run_config=None)
        instance.add_backfill(assets)
        asked = _tick(defs, instance)
        assert list(asked) == ["sample-000002"], asked
        flight = runs_in_flight(instance)
        assert sorted(flight) == shards[:2]
        assert in_flight_note(flight, shards[:2]).startswith(
            "2 shard(s) of a backfill in progress, their runs not launched yet")
