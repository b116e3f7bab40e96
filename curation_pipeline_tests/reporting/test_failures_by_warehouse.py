"""Every --warehouse shares one Dagster home: a shard's failed run in one warehouse says nothing of another,
so the report of a warehouse lists a shard as failed only after that warehouse's own last run of it failed."""

import shutil

import dagster as dg
from click.testing import CliRunner
from dagster._core.test_utils import create_run_for_test

from curation_pipeline.assets.failures import WAREHOUSE_TAG, shard_failures
from curation_pipeline.cli import main
from curation_pipeline_tests.conftest import RAW_SAMPLES

SHARD = "sample-000001"


def _run(instance, status, shard, tags=None, run_config=None):
    create_run_for_test(instance, job_name="curate_shards", status=status, run_config=run_config,
                        tags={"dagster/partition": shard, **(tags or {})})


def _in(root: str) -> dict:
    return {"resources": {"warehouse": {"config": {"raw_root": "raw", "root": root}}}}


def test_only_runs_of_the_warehouse_count_by_tag_run_config_or_default(tmp_path, monkeypatch):
    here, there = tmp_path / "here", tmp_path / "there"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CURATION_WAREHOUSE", str(tmp_path / "default"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["a", "b", "c", "never"])
        _run(instance, dg.DagsterRunStatus.SUCCESS, "a", {WAREHOUSE_TAG: str(here)})
        _run(instance, dg.DagsterRunStatus.FAILURE, "a", {WAREHOUSE_TAG: str(there)})  # later, elsewhere
        _run(instance, dg.DagsterRunStatus.FAILURE, "b", run_config=_in("here"))  # relative: the same folder
        _run(instance, dg.DagsterRunStatus.SUCCESS, "b", run_config=_in(str(there)))
        _run(instance, dg.DagsterRunStatus.CANCELED, "c")  # the UI, no run config: the default warehouse
        _run(instance, dg.DagsterRunStatus.FAILURE, "never", {WAREHOUSE_TAG: str(there)})
        assert sorted(shard_failures(instance, "here")) == ["b"]
        assert sorted(shard_failures(instance, f"{there}/")) == ["a", "never"]
        assert sorted(shard_failures(instance, str(tmp_path / "default"))) == ["c"]
        assert shard_failures(instance) == shard_failures(instance, str(tmp_path / "default"))
        # definitions built with their own warehouse (a script, a test): their untagged runs wrote there
        assert sorted(shard_failures(instance, "here", location_root=str(here))) == ["b", "c"]
        _run(instance, dg.DagsterRunStatus.FAILURE, "a", {WAREHOUSE_TAG: str(here)})  # now here's last run failed
        assert sorted(shard_failures(instance, str(here))) == ["a", "b"]


def test_a_failed_run_in_another_warehouse_leaves_the_shard_ok_in_this_report(tmp_path, monkeypatch):
    """`curate run` tags every run (and records its warehouse in the run config); a later failure of the
    shard in another warehouse of the same home does not make this warehouse's report call it failed."""
    import duckdb

    from curation_pipeline.definitions import build_definitions

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / f"{SHARD}.tar", raw)
    result = CliRunner().invoke(main, ["run", "--raw", "raw", "--warehouse", "wh", "--profile", "offline"])
    assert result.exit_code == 0, result.output
    ours = str(tmp_path / "wh")
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert runs and {r.tags.get(WAREHOUSE_TAG) for r in runs} == {ours}
        assert {r.run_config["resources"]["warehouse"]["config"]["root"] for r in runs} == {ours}
        _run(instance, dg.DagsterRunStatus.FAILURE, SHARD, {WAREHOUSE_TAG: str(tmp_path / "other")})
        # the report rebuilt as the UI would (no run config): of this warehouse's runs only
        report = build_definitions(raw_root="raw", warehouse_root="wh").resolve_job_def("quality_report_job")
        assert report.execute_in_process(instance=instance, raise_on_error=False).success
    with duckdb.connect(str(tmp_path / "wh" / "quality.duckdb"), read_only=True) as con:
        status = con.execute("SELECT status, error, kept FROM shard_summary WHERE shard = ?", [SHARD]).fetchone()
    assert status[:2] == ("ok", None) and status[2] > 0, status
