"""A blocking check's verdict is the table's, however the check ran: alone (the UI's Execute on it) it
stamps a failure as it clears one, so no later curated_shards publishes the shard; and `curate run`
rebuilds the report even when every shard it ran failed, so no old report calls them ok."""

import shutil

import dagster as dg
from click.testing import CliRunner

from curation_pipeline.checks.quality import FINAL_CAPTION_CHECKS, caption_length_drift
from curation_pipeline.cli import main
from curation_pipeline.definitions import build_definitions
from curation_pipeline.reporting.report import open_report
from curation_pipeline.resources import DriftConfig, PolicyResource
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES
from curation_pipeline_tests.test_cli import env  # noqa: F401 (a fixture)

DRIFT = next(spec for spec in FINAL_CAPTION_CHECKS if spec.name == "caption_length_drift")


def just_failing_drift(final) -> dict[str, float]:
    """policy.drift limits that these final captions fail: the mean ratio they have, just out of range."""
    ratio = caption_length_drift(final, PolicyResource()).metadata["drift_mean_ratio"].value
    return {"mean_ratio_min": round(ratio + 0.02, 3)} if ratio <= 1 else {"mean_ratio_max": round(ratio - 0.02, 3)}


def test_a_blocking_check_that_fails_when_run_alone_stops_curated_shards(curated, tmp_path):
    shard = curated["shards"][1]
    shutil.copytree(curated["warehouse"], tmp_path / "wh")
    wh = Warehouse(str(tmp_path / "wh"))
    wh.fs.rm(wh.curated_path(shard))
    assert wh.table_metadata("final_captions", shard)["failed_blocking_checks"] == ""  # passed when made
    rows = wh.read_table("final_captions", shard)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [shard])

    def check_alone_then_publish(policy: PolicyResource):
        defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(wh.root), policy=policy)
        job = defs.resolve_job_def("curate_shards")
        check = job.get_subset(asset_selection=set(), asset_check_selection={DRIFT.key}).execute_in_process(
            partition_key=shard, instance=instance, raise_on_error=False, run_config=QUIET)
        [evaluation] = check.get_asset_check_evaluations()
        publish = job.execute_in_process(partition_key=shard, instance=instance, raise_on_error=False,
                                         run_config=QUIET, asset_selection=[dg.AssetKey("curated_shards")])
        return evaluation, publish

    strict = PolicyResource(drift=DriftConfig(**just_failing_drift(rows)))
    evaluation, publish = check_alone_then_publish(strict)
    assert not evaluation.passed and "mean caption length" in evaluation.description
    assert wh.table_metadata("final_captions", shard)["failed_blocking_checks"] == "caption_length_drift"
    assert wh.read_table("final_captions", shard).equals(rows)  # only the verdict changed
    assert not publish.success and not wh.fs.exists(wh.curated_path(shard))
    failure = next(e for e in publish.all_events if e.event_type_value == "STEP_FAILURE")
    assert "failed its blocking check(s) caption_length_drift" in failure.event_specific_data.user_failure_data.description

    # and back: under the default limits the check run alone passes, clears the stamp, and the shard publishes
    evaluation, publish = check_alone_then_publish(PolicyResource())
    assert evaluation.passed
    assert wh.table_metadata("final_captions", shard)["failed_blocking_checks"] == ""
    assert publish.success and wh.fs.exists(wh.curated_path(shard))


def test_a_run_whose_every_shard_fails_still_rebuilds_the_report(env):  # noqa: F811
    """Re-running the one shard under drift limits its captions fail: the report is rebuilt, the shard
    listed as not ok and left out of the pooled figures (the old report called it ok)."""
    shard = "sample-000001"
    run = ["run", "--raw", env["raw"], "--warehouse", env["wh"], "--profile", "text"]
    assert CliRunner().invoke(main, run).exit_code == 0
    wh = Warehouse(env["wh"])
    with open_report(wh) as con:
        assert con.sql("SELECT status FROM shard_summary").fetchall() == [("ok",)]
    limits = just_failing_drift(wh.read_table("final_captions", shard))
    strict = [arg for key, value in limits.items() for arg in ("--set", f"policy.drift.{key}={value}")]
    result = CliRunner().invoke(main, [*run, *strict])
    assert result.exit_code == 1, result.output
    assert f"{shard}: check caption_length_drift failed" in result.output
    assert "quality report: " in result.output and "FAILED: sample-000001\n" in result.output
    with open_report(wh) as con:
        [(status, detail)] = con.sql("SELECT status, status_detail FROM shard_summary").fetchall()
        [(counted,)] = con.sql("SELECT counted_shards FROM overall").fetchall()
    assert status != "ok" and "caption_length_drift" in detail
    assert counted == 0


def test_no_report_line_when_no_shard_was_ever_decided(env, monkeypatch):  # noqa: F811
    """A first run whose only shard fails before its decisions has nothing to report: the CLI says so and
    names no report file (none was built), and the report is not counted as failed."""
    import curation_pipeline.assets.scoring as scoring_assets

    def broken(*_args, **_kwargs):
        raise RuntimeError("the scorers broke")

    monkeypatch.setattr(scoring_assets, "_score", broken)  # the run is in this process (CURATE_FORKSERVER=off)
    result = CliRunner().invoke(main, ["run", "--raw", env["raw"], "--warehouse", env["wh"], "--profile", "text"])
    assert result.exit_code == 1, result.output
    assert "the scorers broke" in result.output
    assert "quality_report: not built, no shard has quality_scores, caption_decisions, final_captions yet" in result.output
    assert "quality report: " not in result.output and "FAILED: sample-000001\n" in result.output
