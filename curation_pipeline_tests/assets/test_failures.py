"""The report's failed shards: a shard whose last run failed or was canceled is not reported as current."""

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from curation_pipeline.assets.failures import shard_failures


def test_a_canceled_last_run_lists_the_shard_a_later_success_clears_it():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["a", "b"])
        create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.SUCCESS,
                            tags={"dagster/partition": "a"})
        create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.CANCELED,
                            tags={"dagster/partition": "a"})
        create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.SUCCESS,
                            tags={"dagster/partition": "b"})
        failures = shard_failures(instance)
        assert list(failures) == ["a"] and "canceled" in failures["a"]
        create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.SUCCESS,
                            tags={"dagster/partition": "a"})
        assert shard_failures(instance) == {}
