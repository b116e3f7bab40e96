"""The curate CLI: a real run, lineage look-ups, and exit codes that tell bad input from failure."""

import json
import os
import shlex
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from curation_pipeline.cli import EXIT_BAD_INPUT, main
from curation_pipeline_tests.conftest import RAW_SAMPLES


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    return {"raw": str(raw_with(tmp_path, ["sample-000001"])), "wh": str(tmp_path / "wh")}


def raw_with(tmp_path, shards):
    """A raw folder holding copies of these sample shards."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for shard in shards:
        shutil.copy(RAW_SAMPLES / f"{shard}.tar", raw)
    return raw


def test_run_then_lineage_and_report(env, monkeypatch):
    from curation_pipeline import heap

    monkeypatch.setattr(heap, "_FROZEN", set())  # and the run froze what its process keeps (test_heap.py)
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--raw", env["raw"], "--warehouse", env["wh"], "--profile", "text"])
    assert result.exit_code == 0, result.output
    assert heap._FROZEN == {heap.IMPORTED, heap.MODELS}
    assert "done: 1 shard curated" in result.output and "quality.duckdb" in result.output
    lineage = runner.invoke(main, ["lineage", "--warehouse", env["wh"], "--shard", "sample-000001",
                                   "--rewritten-only"])
    assert lineage.exit_code == 0
    assert "REWRITTEN" in lineage.output and "attempt 1 [cleaner" in lineage.output and "accepted" in lineage.output
    from curation_pipeline.storage.warehouse import Warehouse
    final = Warehouse(env["wh"]).read_table("final_captions", "sample-000001")
    kept = final.loc[~final["rewritten"].astype(bool), "key"].iloc[0]
    none = runner.invoke(main, ["lineage", "--warehouse", env["wh"], "--key", kept, "--rewritten-only"])
    assert none.exit_code == 0 and "no rewritten pair among the 1 pair(s)" in none.output, none.output
    one = runner.invoke(main, ["lineage", "--warehouse", env["wh"], "--key", "000010034"])
    assert "original: 'Handwritten mathematical notes" in one.output
    nowhere = runner.invoke(main, ["lineage", "--warehouse", env["wh"], "--shard", "sample-000009"])
    assert nowhere.exit_code == EXIT_BAD_INPUT and f"no pair with shard 'sample-000009' in {env['wh']}" in \
        nowhere.output, nowhere.output  # only what was asked: no key=None
    report = runner.invoke(main, ["report", "--warehouse", env["wh"]])
    assert report.exit_code == 0 and "shard_summary" in report.output and "sample-000001" in report.output


def test_report_rebuild_builds_the_report_of_runs_made_without_one(env, tmp_path):
    """After `--no-report` runs the only ways to rebuild it were Dagster's CLI or a run of every shard; the
    out-of-date warning came as a Python warning with its source line."""
    import dagster as dg

    runner = CliRunner()
    (tmp_path / "more").mkdir()
    raw = raw_with(tmp_path / "more", ["sample-000001", "sample-000002"])
    result = runner.invoke(main, ["run", "--raw", str(raw), "--warehouse", env["wh"], "--profile", "text",
                                  "--shard", "sample-000001", "--no-report"])
    assert result.exit_code == 0 and not (Path(env["wh"]) / "quality.duckdb").exists(), result.output
    report = runner.invoke(main, ["report", "--warehouse", env["wh"]])
    assert report.exit_code == EXIT_BAD_INPUT and f"report --warehouse {env['wh']} --rebuild" in report.output
    with dg.DagsterInstance.get() as instance:
        before = len(instance.get_runs())
    rebuilt = runner.invoke(main, ["report", "--warehouse", env["wh"], "--rebuild"])
    assert rebuilt.exit_code == 0 and "sample-000001" in rebuilt.output and "warning" not in rebuilt.output
    with dg.DagsterInstance.get() as instance:  # one run, the report's, recorded for this warehouse
        runs = instance.get_runs()
        assert len(runs) == before + 1 and runs[0].job_name == "quality_report_job"
        assert runs[0].tags["curation/warehouse"] == str(Path(env["wh"]).resolve())
    result = runner.invoke(main, ["run", "--raw", str(raw), "--warehouse", env["wh"], "--profile", "text",
                                  "--shard", "sample-000002", "--no-report"])
    assert result.exit_code == 0, result.output
    stale = runner.invoke(main, ["report", "--warehouse", env["wh"]])
    assert stale.exit_code == 0 and "\nwarning: the report at" in stale.output
    from curation_pipeline.storage.warehouse import Warehouse

    hint = f"curate report --warehouse {shlex.quote(Warehouse(env['wh']).root)} --rebuild"  # the command as it runs
    assert hint in stale.output and "ReportOutOfDate" not in stale.output
    assert "sample-000002" not in stale.output.split("## drop_reasons")[0]  # the build's figures, not yet its
    fresh = runner.invoke(main, ["report", "--warehouse", env["wh"], "--rebuild"])
    assert fresh.exit_code == 0 and "warning" not in fresh.output and "sample-000002" in fresh.output
    nothing = runner.invoke(main, ["report", "--warehouse", str(tmp_path / "none"), "--rebuild"])
    assert nothing.exit_code == EXIT_BAD_INPUT and "nothing to report" in nothing.output


def test_report_rebuild_reads_the_environment_as_run_does(env, tmp_path, monkeypatch):
    """A deployment's CURATION_RAW went into the report run's config as Dagster's EnvVar, which Dagster refuses
    there; a malformed CURATION_RAY_* variable came out as pydantic's whole error."""
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--raw", env["raw"], "--warehouse", env["wh"], "--profile", "text",
                                  "--no-report"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("CURATION_RAW", env["raw"])
    rebuilt = runner.invoke(main, ["report", "--warehouse", env["wh"], "--rebuild"])
    assert rebuilt.exit_code == 0 and "sample-000001" in rebuilt.output, rebuilt.output
    monkeypatch.setenv("CURATION_RAY_ACTORS", "four")
    refused = runner.invoke(main, ["report", "--warehouse", env["wh"], "--rebuild"])
    assert refused.exit_code == EXIT_BAD_INPUT and "validation error" not in refused.output
    assert "compute.actors: environment variable CURATION_RAY_ACTORS='four'" in refused.output


def test_bad_input_exits_2(env, tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["run", "--raw", str(empty), "--warehouse", env["wh"]])
    assert result.exit_code == EXIT_BAD_INPUT and "no .tar shards found" in result.output
    result = runner.invoke(main, ["run", "--raw", env["raw"], "--warehouse", env["wh"], "--shard", "nope"])
    assert result.exit_code == EXIT_BAD_INPUT and "no raw shard nope" in result.output
    result = runner.invoke(main, ["lineage", "--warehouse", env["wh"], "--shard", "x"])
    assert result.exit_code == EXIT_BAD_INPUT
    result = runner.invoke(main, ["lineage", "--warehouse", env["wh"], "--shard", "../etc"])
    assert result.exit_code == EXIT_BAD_INPUT and "not a valid shard key" in result.output
    result = runner.invoke(main, ["lineage", "--warehouse", env["wh"], "--shard", "sample-000001", "--limit", "-1"])
    assert result.exit_code == EXIT_BAD_INPUT and "--limit" in result.output
    result = runner.invoke(main, ["run", "--raw", env["raw"], "--warehouse", env["wh"], "--profile", "clip"])
    assert result.exit_code == EXIT_BAD_INPUT and "scoring.clip.model (--clip-model)" in result.output
    result = runner.invoke(main, ["run", "--raw", env["raw"], "--warehouse", env["wh"], "--profile", "text"],
                           env={"CURATION_THREADS": "two"})
    assert result.exit_code == EXIT_BAD_INPUT and "CURATION_THREADS must be a whole number" in result.output
    assert not (tmp_path / "wh" / "pairs").exists()  # before any run


def test_every_command_explains_itself_with_an_example():
    runner = CliRunner()
    for command in ("demo", "run", "lineage", "report", "sample-data"):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Example: curate" in result.output


def test_python_dash_m_knows_every_command():
    """``python -m curation_pipeline.cli`` (what benchmarks fall back to) registers all commands first."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "curation_pipeline.cli", "--help"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert main.commands and all(f"  {name} " in out for name in main.commands), out


def test_a_home_is_set_up_once_per_dagster_version_and_settings(tmp_path, monkeypatch):
    """The storages are created (serialized) by the first run; later runs open one instance, not two."""
    import dagster as dg

    from curation_pipeline import cli

    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert cli._dagster_home() == home
    assert (home / "storage").is_dir() or (home / "history").is_dir()  # the SQLite storages exist
    calls = []

    def counted():
        calls.append(1)
        return dg.DagsterInstance.from_config(str(home))

    monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(counted))
    cli._dagster_home()
    assert calls == []  # already set up: no instance here
    (home / "dagster.yaml").write_text((home / "dagster.yaml").read_text() + "\n# changed settings\n")
    cli._dagster_home()
    assert calls == [1]  # new settings: set up (and checked) again


def test_several_shards_are_scored_then_decided_once_against_the_whole_pool(tmp_path, monkeypatch, curated):
    """Two passes: each shard's decisions, rewrites and tar are made once, against the duplicate index
    of the whole pool, and equal what one pass per shard plus re-selecting the stale ones publishes."""
    import dagster as dg

    from curation_pipeline.storage.warehouse import Warehouse
    from curation_pipeline_tests.scale.helpers import table_differences

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = raw_with(tmp_path, curated["shards"])
    result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh")])
    assert result.exit_code == 0, result.output
    with dg.DagsterInstance.get() as instance:
        for asset in ("quality_scores", "caption_decisions", "curated_shards"):
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
            made = sorted(r.event_log_entry.dagster_event.partition for r in records)
            assert made == curated["shards"], (asset, made)  # once per shard: no re-selection
        assert instance.get_latest_materialization_event(dg.AssetKey("dedup_index")) is not None
    # the one-pass reference settled cross-shard duplicates by re-selecting its first shard
    assert any(name.startswith("reselect:") for name in curated["results"])
    assert table_differences(Warehouse(str(curated["warehouse"])), Warehouse(str(tmp_path / "wh")),
                             curated["shards"]) == []


def test_only_missing_settles_the_pool_after_a_shard_is_removed(tmp_path, monkeypatch):
    """A shard withdrawn (its raw file and warehouse files deleted) left the pairs it held copies of dropped as
    its duplicates: --only-missing found no shard to run and said so, settling nothing. It now settles the pool
    as the settle sensor would, and those pairs are decided again."""
    from curation_pipeline.storage.warehouse import Warehouse

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw, wh = raw_with(tmp_path, ["sample-000000", "sample-000001", "sample-000002"]), tmp_path / "wh"
    runner = CliRunner()

    def run(*extra):
        result = runner.invoke(main, ["run", "--raw", str(raw), "--warehouse", str(wh), "--no-report", *extra])
        assert result.exit_code == 0, result.output
        return result.output

    def copies_of(shard):  # pairs dropped as duplicates of a pair in ``shard``
        return {(s, k) for s in ("sample-000000", "sample-000001")
                for k, of in Warehouse(str(wh)).read_table("caption_decisions", s)[["key", "dup_of"]].itertuples(
                    index=False) if isinstance(of, str) and of.startswith(f"{shard}/")}

    run()
    withheld = copies_of("sample-000002")
    assert withheld  # the sample shards share near-duplicate photos
    (raw / "sample-000002.tar").unlink()
    for path in wh.rglob("sample-000002.*"):
        path.unlink()
    output = run("--only-missing")
    assert "up to date, not run: 2 shards" in output and "to settle: dedup_index" in output, output
    assert "done: the pool settled (no shard needed a run of its own)" in output
    assert copies_of("sample-000002") == set()
    final = {s: Warehouse(str(wh)).read_table("final_captions", s).set_index("key")["reason"]
             for s in ("sample-000000", "sample-000001")}
    assert not any(str(final[s][k]).startswith("duplicate") for s, k in withheld)
    assert "nothing to run: every shard selected is curated and up to date" in run("--only-missing")

def test_only_missing_with_shards_named_observes_only_those(tmp_path, monkeypatch):
    """`--only-missing --shard X` observes X's raw file, not every registered shard's (a footer and a stat each:
    O(pool) per call); the shards left out are observed when asked for."""
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw, wh = raw_with(tmp_path, ["sample-000001", "sample-000002"]), str(tmp_path / "wh")

    def run(*extra):
        result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", wh, "--profile", "text",
                                           "--no-report", *extra])
        assert result.exit_code == 0, result.output
        return result.output

    def observed() -> set[str]:  # the partitions the latest observation run observed
        with dg.DagsterInstance.get() as instance:
            (last,) = instance.get_runs(dg.RunsFilter(job_name="observe_raw_shards"), limit=1)
            events = instance.all_logs(last.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)
            return {e.dagster_event.partition for e in events}

    run()
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "sample-000002.tar")  # replaced, not asked for
    output = run("--only-missing", "--shard", "sample-000001")
    assert "nothing to run" in output and observed() == {"sample-000001"}, output
    output = run("--only-missing")
    assert "to run: sample-000002 (stale: raw_shards has a new data version)" in output, output
    assert observed() == {"sample-000001", "sample-000002"}


def test_only_missing_runs_the_new_and_the_replaced_shards_alone(tmp_path, monkeypatch):
    """--only-missing picks what the fill_missing_shards schedule would: a shard never curated, then one whose
    raw file was replaced (observed first, so its new content reads as stale); an up-to-date shard gets no run."""
    import dagster as dg

    from curation_pipeline.storage.warehouse import Warehouse

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw, wh = raw_with(tmp_path, ["sample-000001"]), str(tmp_path / "wh")
    runner = CliRunner()

    def run(*extra):
        result = runner.invoke(main, ["run", "--raw", str(raw), "--warehouse", wh, "--profile", "text", "--no-report",
                                      *extra])
        assert result.exit_code == 0, result.output
        return result.output

    def made(shard):  # the shard's curated tars, by Dagster's record
        with dg.DagsterInstance.get() as instance:
            records = instance.fetch_materializations(dg.AssetKey("curated_shards"), limit=100).records
        return sum(r.event_log_entry.dagster_event.partition == shard for r in records)

    run()
    shutil.copy(RAW_SAMPLES / "sample-000002.tar", raw)
    output = run("--only-missing")
    assert "to run: sample-000002 (missing)" in output and "up to date, not run: 1 shard\n" in output, output
    assert (made("sample-000001"), made("sample-000002")) == (1, 1)
    # another file under the same name: its pairs are another shard's now
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "sample-000001.tar")
    output = run("--only-missing")
    assert "to run: sample-000001 (stale: raw_shards has a new data version)" in output, output
    assert (made("sample-000001"), made("sample-000002")) == (2, 1)
    expected = Warehouse(wh).read_table("pairs", "sample-000001")["key"].tolist()
    assert expected and set(Warehouse(wh).read_table("final_captions", "sample-000001")["key"]) == set(expected)
    with tarfile.open(RAW_SAMPLES / "sample-000000.tar") as tar:  # the new file's samples, not the old one's
        assert {Path(name).name.split(".")[0] for name in tar.getnames()} >= set(expected)
    output = run("--only-missing")
    assert "nothing to run: every shard selected is curated and up to date" in output, output
    assert (made("sample-000001"), made("sample-000002")) == (2, 1)
    # a new shard with a run started elsewhere (the daemon's, another `curate run`): not run beside it
    from dagster._core.test_utils import create_run_for_test

    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "sample-000009.tar")
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("shards", ["sample-000009"])
        busy = create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.STARTED,
                                   tags={"dagster/partition": "sample-000009"})
    output = run("--only-missing")
    assert f"in flight, not run: 1 shard(s) wait on a started run: sample-000009 (run {busy.run_id}" in output, output
    assert "to run: sample-000009" not in output and made("sample-000009") == 0
    # not "every shard ... up to date": one was left to the run in flight
    assert "nothing to run here: 1 shard in flight in another run (named above)" in output, output

    # held by the schedule after two failures in a step: asked by hand it runs, for the reason it needs a run
    from dagster._core.events import DagsterEvent, StepFailureData
    from dagster._core.execution.plan.objects import ErrorSource
    from dagster._utils.error import SerializableErrorInfo

    (Path(wh) / "curated" / "sample-000002.tar").unlink()
    with dg.DagsterInstance.get() as instance:
        for _ in range(2):
            failed = create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.FAILURE,
                                         tags={"dagster/partition": "sample-000002",
                                               "curation/warehouse": str(Path(wh).resolve())})
            instance.report_dagster_event(DagsterEvent(
                event_type_value=dg.DagsterEventType.STEP_FAILURE.value, job_name="curate_shards",
                step_key="final_captions", event_specific_data=StepFailureData(
                    error=SerializableErrorInfo("drifted", [], "Failure"), user_failure_data=None,
                    error_source=ErrorSource.USER_CODE_ERROR)), run_id=failed.run_id)
    output = run("--only-missing", "--shard", "sample-000002")
    assert "held by the schedule, run as asked: sample-000002: failed in 2 runs in a row" in output, output
    assert "to re-decide: sample-000002 (stale, its scores current: missing (no curated_shards file))" in output
    assert made("sample-000002") == 2


def test_only_missing_runs_a_shard_left_half_made_or_last_made_into_another_warehouse(tmp_path, monkeypatch):
    """Dagster's records are the home's: a shard whose run stopped after scoring (new scores, old decisions) and
    one curated since into another warehouse on the same home both read fresh to Dagster, and are run."""
    from curation_pipeline.assets import decisions

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw, wh = raw_with(tmp_path, ["sample-000001", "sample-000002"]), str(tmp_path / "wh")
    runner = CliRunner()

    def run(*extra, warehouse=wh, code=0):
        result = runner.invoke(main, ["run", "--raw", str(raw), "--warehouse", warehouse, "--profile", "text",
                                      "--no-report", *extra])
        assert result.exit_code == code, result.output
        return result.output

    run()
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "sample-000001.tar")  # new content, then a stop
    with monkeypatch.context() as stop:
        stop.setattr(decisions, "decide", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("stopped")))
        run("--shard", "sample-000001", code=1)
    run("--shard", "sample-000002", warehouse=str(tmp_path / "elsewhere"))
    output = run("--only-missing")
    # its scores made in order, only its decide half behind them: that half alone, from the stored scores
    assert ("to re-decide: sample-000001 (stale, its scores current: incomplete: caption_decisions is older than "
            "its input quality_scores" in output), output
    assert "to run: sample-000002 (pairs last made into another warehouse" in output, output
    from curation_pipeline.storage.warehouse import Warehouse

    keys = set(Warehouse(wh).read_table("pairs", "sample-000001")["key"])
    assert set(Warehouse(wh).read_table("final_captions", "sample-000001")["key"]) == keys
    assert "nothing to run" in run("--only-missing")


@pytest.mark.parametrize("profile", ["text", "offline"])  # offline: through the duplicate index's re-selection
def test_only_missing_re_decides_shards_decided_under_other_settings_without_scoring_them(tmp_path, monkeypatch,
                                                                                         profile):
    """Settings are no code version, so Dagster calls such shards fresh: --only-missing re-decides, rewrites and
    publishes them from their stored scores, as a plain run under those settings would; a setting that decides
    nothing re-runs nothing, and the rewrite acceptance (applied in the decisions' run) counts."""
    import dagster as dg

    from curation_pipeline.assets.decisions import POLICY_CONFIG_KEY
    from curation_pipeline.storage.warehouse import Warehouse

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    names = ["sample-000001", "sample-000002"]
    raw = raw_with(tmp_path, names)
    runner = CliRunner()
    lower = ("--set", "policy.keep_threshold=80")

    def run(*extra, warehouse="wh"):
        result = runner.invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / warehouse),
                                      "--profile", profile, "--no-report", *extra])
        assert result.exit_code == 0, result.output
        return result.output

    def made(asset):  # per shard, by Dagster's record
        with dg.DagsterInstance.get() as instance:
            records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
        return [sum(r.event_log_entry.dagster_event.partition == s for r in records) for s in names]

    def final(warehouse):
        wh = Warehouse(str(tmp_path / warehouse))
        return {s: wh.read_table("final_captions", s)[["key", "outcome", "final_caption", "reason"]]
                .sort_values("key", ignore_index=True) for s in names}

    run()
    before = final("wh")
    output = run("--only-missing", *lower)
    for shard in names:
        assert (f"to re-decide: {shard} (decided under other settings: keep_threshold=95.0 (this run: 80.0))"
                in output), output
    assert made("quality_scores") == [1, 1] and made("curated_shards") == [2, 2], output  # not scored again
    wh = Warehouse(str(tmp_path / "wh"))
    assert all(json.loads(wh.table_metadata("caption_decisions", s)[POLICY_CONFIG_KEY])["keep_threshold"] == 80
               for s in names)
    after = final("wh")
    kept = [sum((table["outcome"] == "kept").sum() for table in tables.values()) for tables in (before, after)]
    assert kept[0] < kept[1], kept  # a lower bar keeps more captions as they are
    with monkeypatch.context() as elsewhere:  # the same settings from scratch: the same outcomes and captions
        elsewhere.setenv("DAGSTER_HOME", str(tmp_path / "plain-home"))
        run(*lower, warehouse="plain")
    for shard in names:
        pd.testing.assert_frame_equal(after[shard], final("plain")[shard])
    assert "nothing to run" in run("--only-missing", *lower)
    assert "nothing to run" in run("--only-missing", *lower, "--set", "policy.warn_drop_share=0.5")
    tuned = (*lower, "--set", "policy.acceptance.max_edit_ratio=0.3")
    output = run("--only-missing", *tuned)
    assert f"to re-decide: {names[0]} (decided under other settings: acceptance.max_edit_ratio=" in output, output
    # one shard's rewrites made again alone under other acceptance rules (how the UI tunes them): those are the
    # rules its published captions follow now, whatever its decisions recorded
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.resources import PolicyResource, ScoringResource

    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "wh"),
                             scoring=ScoringResource(profile=profile), policy=PolicyResource(keep_threshold=80))
    with dg.DagsterInstance.get() as instance:
        assert defs.resolve_job_def("curate_shards").execute_in_process(
            partition_key=names[0], instance=instance, asset_selection=[
                dg.AssetKey(name) for name in ("rewritten_captions", "final_captions", "curated_shards")]).success
    output = run("--only-missing", *tuned)
    assert f"to re-decide: {names[0]} (decided under other settings: acceptance.max_edit_ratio=" in output, output
    assert "up to date, not run: 1 shard\n" in output, output
    # a damaged decisions file: named and made again (the duplicate index, which reads every shard's, too)
    (tmp_path / "wh" / "caption_decisions" / f"{names[1]}.parquet").write_bytes(b"junk")
    output = run("--only-missing", *tuned)
    assert (f"to re-decide: {names[1]} (its stored decisions, rewrites or final captions cannot be read: "
            in output), output
    assert "nothing to run" in run("--only-missing", *tuned)


def test_only_missing_rewrites_again_without_scoring_a_shard_made_by_another_rewriter(tmp_path, monkeypatch):
    """Only rewritten_captions reads stale (a new rewriter version, or another rewriter model): the shard's
    stored scores stand, so --only-missing re-decides and rewrites it without scoring it again."""
    import dagster as dg

    from curation_pipeline.rewriting import base as rewriter_base

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = raw_with(tmp_path, ["sample-000001"])
    run = ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--profile", "text", "--no-report"]

    def made():
        with dg.DagsterInstance.get() as instance:
            return [len(instance.fetch_materializations(dg.AssetKey(asset), limit=10).records)
                    for asset in ("quality_scores", "rewritten_captions", "curated_shards")]

    assert CliRunner().invoke(main, run).exit_code == 0
    monkeypatch.setitem(rewriter_base.CODE_VERSIONS, "cleaner", "99")
    result = CliRunner().invoke(main, [*run, "--only-missing"])
    assert result.exit_code == 0, result.output
    assert ("to re-decide: sample-000001 (stale, its scores current: rewritten_captions has a new code version"
            in result.output), result.output
    assert made() == [1, 2, 2]
    assert "nothing to run" in CliRunner().invoke(main, [*run, "--only-missing"]).output
    # a damaged decisions file: named, and made again from the stored scores
    (tmp_path / "wh" / "caption_decisions" / "sample-000001.parquet").write_bytes(b"junk")
    result = CliRunner().invoke(main, [*run, "--only-missing"])
    assert result.exit_code == 0, result.output
    assert ("to re-decide: sample-000001 (its stored decisions, rewrites or final captions cannot be read: "
            in result.output)
    assert made() == [1, 3, 3]


def test_only_missing_scores_again_the_shards_scored_with_another_model_not_with_another_batch_size(tmp_path,
                                                                                                  monkeypatch):
    """A model is no code of this project's, yet the scores are its: a shard scored with another CLIP reads stale
    (quality_scores' code version names the model settings) and runs again; a faster setting runs nothing."""
    from curation_pipeline.storage.warehouse import Warehouse
    from curation_pipeline_tests.tiny_models import make_tiny_clip

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw, wh = raw_with(tmp_path, ["sample-000001"]), str(tmp_path / "wh")
    first = make_tiny_clip(tmp_path / "clip-a")
    second = shutil.copytree(first, tmp_path / "clip-b")  # the same weights by another name: another model

    def run(model, *extra):
        result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", wh, "--profile", "clip",
                                           "--clip-model", str(model), "--no-report", *extra])
        assert result.exit_code == 0, result.output
        return result.output

    def scored_by():
        return json.loads(Warehouse(wh).table_metadata("quality_scores", "sample-000001")["scorers"])["clip"]

    run(first)
    assert str(first) in scored_by()
    output = run(second, "--only-missing")
    assert "to run: sample-000001 (stale: quality_scores has a new code version" in output, output
    assert str(second) in scored_by()
    assert "nothing to run" in run(second, "--only-missing", "--set", "scoring.batch_size=3")


@pytest.mark.parametrize("where", ["in a step", "after the last step"])
def test_a_ctrl_c_during_a_shards_run_stops_the_whole_command(tmp_path, monkeypatch, where):
    """Dagster holds a SIGINT during an in-process run: in a step it fails only that shard's run (the next
    shard would start), after the last step it is forgotten (the run succeeds). Either way `curate run`
    must stop there, as a Ctrl-C stops it anywhere else: "Aborted!", exit 1, the second shard never run."""
    import signal

    import dagster as dg

    from curation_pipeline.assets import scoring

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = raw_with(tmp_path, ["sample-000000", "sample-000001"])
    sent = []

    def interrupt():
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    if where == "in a step":
        score_stream = scoring.score_stream

        def interrupted(*args, **kwargs):
            interrupt()
            return score_stream(*args, **kwargs)

        monkeypatch.setattr(scoring, "score_stream", interrupted)
    else:
        handle = dg.DagsterInstance.handle_new_event

        def handled(self, event, *args, **kwargs):
            handle(self, event, *args, **kwargs)
            if event.dagster_event is not None and event.dagster_event.event_type == dg.DagsterEventType.RUN_SUCCESS:
                interrupt()

        monkeypatch.setattr(dg.DagsterInstance, "handle_new_event", handled)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever ran pytest
    try:
        result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"),
                                           "--profile", "text", "--no-report"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sent and result.exit_code == 1 and "Aborted!" in result.output, result.output
    # said in that one line: not with the forty lines of stack Dagster's console logger printed for each failure
    assert "DagsterExecutionInterruptedError" not in result.output and "Stack Trace" not in result.output
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_run_records()
        assert [r.dagster_run.tags.get("dagster/partition") for r in runs] == ["sample-000000"]
        if where == "in a step":  # the event log keeps the failure, for the UI
            failures = instance.all_logs(runs[0].dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
            assert failures[0].dagster_event.step_failure_data.error.cls_name == "DagsterExecutionInterruptedError"


STOPPED_IN_A_STEP = """
import os, signal, sys
from curation_pipeline import cli
from curation_pipeline.assets import scoring
score_stream, sent = scoring.score_stream, []
def stopped(*args, **kwargs):
    if not sent:
        sent.append(os.kill(os.getpid(), int(sys.argv[1])))
    return score_stream(*args, **kwargs)
scoring.score_stream = stopped
cli.main(args=sys.argv[2:], prog_name="curate")
"""


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_a_sigterm_or_sighup_stops_the_command_as_a_ctrl_c_does(tmp_path, monkeypatch, signum):
    """A scheduler or pod stopping `curate run` (SIGTERM), or a closed terminal (SIGHUP): the shard's run is
    marked failed (not left STARTED for ever, which would hold off the settle sensor), the next shard never
    starts, exit 1. In a process of its own: the default disposition would end the test's own process."""
    import signal
    import subprocess
    import sys

    import dagster as dg

    raw = raw_with(tmp_path, ["sample-000000", "sample-000001"])
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "CURATE_FORKSERVER": "off"}

    def default_dispositions():  # as in a terminal, whatever started pytest (nohup ignores SIGHUP)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)

    done = subprocess.run([sys.executable, "-c", STOPPED_IN_A_STEP, str(int(getattr(signal, signum))), "run",
                           "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--profile", "text",
                           "--no-report"], env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=default_dispositions)
    assert done.returncode == 1 and "Aborted!" in done.stderr, (done.returncode, done.stderr[-3000:])
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        runs = [(r.dagster_run.tags.get("dagster/partition"), r.dagster_run.status) for r in instance.get_run_records()]
    assert runs == [("sample-000000", dg.DagsterRunStatus.FAILURE)]


@pytest.mark.parametrize("shards", [1, 2])
def test_keep_fraction_cuts_the_scored_pool_before_any_shard_is_decided(tmp_path, monkeypatch, shards):
    """keep_fraction is one cut over the pool: `curate run` materializes it between scoring and deciding."""
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    names = ["sample-000000", "sample-000001"][:shards]
    raw = raw_with(tmp_path, names)
    result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--profile",
                                       "text", "--set", "policy.keep_fraction=0.5", "--no-report"])
    assert result.exit_code == 0, result.output
    with dg.DagsterInstance.get() as instance:
        cuts = instance.fetch_materializations(dg.AssetKey("selection_cut"), limit=10).records
        assert len(cuts) == 1
        cut = cuts[0].event_log_entry.asset_materialization.metadata
        assert cut["status"].value == "on" and cut["shards"].value == shards
        decided = instance.fetch_materializations(dg.AssetKey("caption_decisions"), limit=10).records
        assert sorted(r.event_log_entry.dagster_event.partition for r in decided) == names
        inside = sum(r.event_log_entry.asset_materialization.metadata["in_keep_fraction"].value for r in decided)
    assert inside == cut["kept"].value == cut["scored"].value // 2 > 0
    # and the run says what the fraction became
    ties = f"{cut['ties_kept'].value} of {cut['ties_at_cut'].value} pairs tied at it drawn by key"
    assert (f"keep_fraction:  {inside} of {cut['scored'].value} scored pairs inside the cut (top 50% by text_quality: "
            f"cut score {cut['cut_score'].value:g}, {ties})") in result.output, result.output


def test_keep_fraction_decides_an_empty_shard_too(tmp_path, monkeypatch):
    """An empty shard has no scores to cut, but it is in the pool: the cut lists it, so it is decided (to
    nothing) instead of being refused forever as a shard the cut never saw."""
    import tarfile

    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = raw_with(tmp_path, ["sample-000000"])
    tarfile.open(raw / "empty-000001.tar", "w").close()
    result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--profile",
                                       "text", "--set", "policy.keep_fraction=0.5", "--no-report"])
    assert result.exit_code == 0, result.output
    with dg.DagsterInstance.get() as instance:
        cut = instance.get_latest_materialization_event(dg.AssetKey("selection_cut")).asset_materialization.metadata
        assert cut["shards"].value == 2 and cut["scored"].value > 0
        decided = instance.fetch_materializations(dg.AssetKey("caption_decisions"), limit=10).records
        assert sorted(r.event_log_entry.dagster_event.partition for r in decided) == ["empty-000001", "sample-000000"]
    assert (tmp_path / "wh" / "curated" / "empty-000001.tar").exists()


def test_a_pool_of_empty_shards_runs_and_reports(tmp_path, monkeypatch):
    """Every table of an empty shard keeps its text columns as text, so the report over it alone builds."""
    import tarfile

    import duckdb

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = tmp_path / "raw"
    raw.mkdir()
    tarfile.open(raw / "empty-000000.tar", "w").close()
    result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"),
                                       "--profile", "text"])
    assert result.exit_code == 0, result.output
    assert "check" not in result.output  # no check fails or warns on a shard with no pairs
    with duckdb.connect(str(tmp_path / "wh" / "quality.duckdb"), read_only=True) as con:
        assert con.execute("SELECT shard, pairs_read FROM shard_summary").fetchall() == [("empty-000000", 0)]


def test_a_later_runs_cut_is_applied_to_the_shards_of_earlier_runs(tmp_path, monkeypatch):
    """keep_fraction over the pool: a run of a new shard moves the cut, and the shard an earlier run decided
    is re-selected against it, so the latest decisions of all shards keep exactly the cut's pairs."""
    import dagster as dg

    from curation_pipeline.decisions.cut_store import stale_cut_shards
    from curation_pipeline.storage.warehouse import Warehouse

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    names = ["sample-000000", "sample-000001"]
    raw = raw_with(tmp_path, names)
    for shard in names:  # one run each, the second over a pool that has grown
        result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--shard",
                                           shard, "--profile", "text", "--set", "policy.keep_fraction=0.3",
                                           "--no-report"])
        assert result.exit_code == 0, result.output
    assert stale_cut_shards(Warehouse(str(tmp_path / "wh"))) == []
    with dg.DagsterInstance.get() as instance:
        cut = instance.get_latest_materialization_event(dg.AssetKey("selection_cut")).asset_materialization.metadata
        assert cut["shards"].value == 2
        decided = instance.fetch_materializations(dg.AssetKey("caption_decisions"), limit=10).records
        runs = sorted(r.event_log_entry.dagster_event.partition for r in decided)
        assert runs == [names[0], names[0], names[1]]  # the first shard decided again, against the new cut
        latest = {}
        for r in sorted(decided, key=lambda r: r.storage_id):
            latest[r.event_log_entry.dagster_event.partition] = r.event_log_entry.asset_materialization.metadata
    assert all(m["keep_fraction_pool_scored"].value == cut["scored"].value for m in latest.values())
    assert sum(m["in_keep_fraction"].value for m in latest.values()) == cut["kept"].value > 0


def test_a_failed_cut_says_which_shards_are_left_undecided(tmp_path, monkeypatch):
    """No shard can be decided without the cut: the run fails and names the cut's error and those shards.
    Here an earlier run scored its shard with a profile that lacks the quality column now asked for."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    names = ["sample-000000", "sample-000001"]
    raw = raw_with(tmp_path, names)
    run = ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--no-report", "--shard"]
    assert CliRunner().invoke(main, [*run, names[0], "--profile", "text"]).exit_code == 0
    result = CliRunner().invoke(main, [*run, names[1], "--profile", "offline", "--set", "policy.keep_fraction=0.5",
                                       "--set", "policy.quality_column=iq_sharpness"])
    assert result.exit_code == 1, result.output
    assert "quality column 'iq_sharpness' is not in quality_scores of shard 'sample-000000'" in result.output
    assert f"scored but not decided: {names[1]}" in result.output and "FAILED: selection_cut" in result.output


def _report_of(warehouse) -> tuple[dict, int]:
    """shard -> (status, status_detail) of the report, and how many shards its overall figures count."""
    import duckdb

    with duckdb.connect(str(warehouse / "quality.duckdb"), read_only=True) as con:
        statuses = {shard: (status, detail) for shard, status, detail in con.execute(
            "SELECT shard, status, status_detail FROM shard_summary").fetchall()}
        return statuses, con.execute("SELECT counted_shards FROM overall").fetchone()[0]


def test_turning_keep_fraction_off_records_it_and_settles_the_pool(tmp_path, monkeypatch):
    """A run with keep_fraction off after one with it on: the stored cut records off again, and a shard of the
    earlier run (not in this one) is re-selected without a cut, so the report counts every shard. Before, the
    cut stayed "on" and every shard decided off read as unsettled, run after run."""
    from curation_pipeline.decisions.cut_store import CUT_KEY, read_cut_record
    from curation_pipeline.storage.warehouse import Warehouse

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    names = ["sample-000000", "sample-000001"]
    raw, wh = raw_with(tmp_path, names), tmp_path / "wh"
    run = ["run", "--raw", str(raw), "--warehouse", str(wh), "--profile", "text"]
    result = CliRunner().invoke(main, [*run, "--set", "policy.keep_fraction=0.3"])
    assert result.exit_code == 0, result.output
    assert read_cut_record(Warehouse(str(wh)))["status"] == "on"
    result = CliRunner().invoke(main, [*run, "--shard", names[0]])  # keep_fraction off (the default)
    assert result.exit_code == 0, result.output
    warehouse = Warehouse(str(wh))
    assert read_cut_record(warehouse)["status"] == "off"
    assert {s: warehouse.table_metadata("caption_decisions", s).get(CUT_KEY) for s in names} == {s: None for s in names}
    statuses, counted = _report_of(wh)
    assert statuses == {s: ("ok", None) for s in names} and counted == 2


def test_a_frozen_shard_is_left_out_of_the_cut_and_reported_as_it_is(tmp_path, monkeypatch):
    """A shard whose raw file was deleted cannot be re-selected (frozen, as the dedup index calls it): the cut
    counts no place for its pairs, and the report counts it (it publishes its tar) with a detail that says so
    and what to do, instead of "unsettled ... curate run settles too" for ever. Its raw file back, the next run
    decides it under the cut."""
    import warnings

    from curation_pipeline.decisions.cut_store import read_cut_record
    from curation_pipeline.storage.warehouse import Warehouse

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    kept, gone = "sample-000000", "sample-000001"
    raw, wh = raw_with(tmp_path, [kept, gone]), tmp_path / "wh"
    run = ["run", "--raw", str(raw), "--warehouse", str(wh), "--profile", "text"]
    assert CliRunner().invoke(main, run).exit_code == 0
    (raw / f"{gone}.tar").rename(tmp_path / f"{gone}.tar")
    for _ in range(2):  # the second run finds the pool as the first left it
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = CliRunner().invoke(main, [*run, "--set", "policy.keep_fraction=0.3"])
        assert result.exit_code == 0, result.output
        assert not [w for w in caught if "not re-selected" in str(w.message)]  # it is not stale: nothing to do
    warehouse = Warehouse(str(wh))
    record = read_cut_record(warehouse)
    scored = int(warehouse.read_table("quality_scores", kept)["text_quality"].notna().sum())
    assert record["frozen"] == [gone] and set(record["shards"]) == {kept}
    assert record["scored"] == scored and record["kept"] == scored * 3 // 10 == record["shards"][kept]["kept"]
    statuses, counted = _report_of(wh)
    assert statuses[kept] == ("ok", None) and counted == 2
    status, detail = statuses[gone]
    assert status == "ok" and detail.startswith("frozen: it could not be re-selected"), detail
    assert "made with keep_fraction off" in detail and "restore its raw file" in detail
    assert "curate run settles" not in detail

    (tmp_path / f"{gone}.tar").rename(raw / f"{gone}.tar")
    result = CliRunner().invoke(main, [*run, "--set", "policy.keep_fraction=0.3"])
    assert result.exit_code == 0, result.output
    record = read_cut_record(Warehouse(str(wh)))
    assert record["frozen"] == [] and set(record["shards"]) == {kept, gone}
    assert _report_of(wh) == ({kept: ("ok", None), gone: ("ok", None)}, 2)


def test_the_signal_watch_keeps_what_the_process_ignores_and_rearms_sigterm_after_each_run():
    """Under nohup / in a background job (SIGINT ignored): Dagster would take even an ignored SIGINT during a run,
    fail the step it lands in, and leave SIGTERM ignored after it. The watch keeps SIGINT ignored through the run
    (the step succeeds), does not stop the command for it, and keeps SIGTERM stopping it."""
    import signal

    import dagster as dg

    from curation_pipeline import cli

    @dg.op
    def interrupted():
        os.kill(os.getpid(), signal.SIGINT)

    @dg.job
    def one():
        interrupted()

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with cli._stop_on_interrupt() as stop_if_interrupted:
            result = one.execute_in_process(raise_on_error=False)
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # never Dagster's
            try:
                stop_if_interrupted()
            except KeyboardInterrupt:  # caught here: a KeyboardInterrupt reaching pytest would end the session
                pytest.fail("an ignored SIGINT stopped the command")
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_IGN and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                stop_if_interrupted()
            # between two steps of a run (a step's handler put back, the run's in place), a SIGTERM is captured
            # for the run to stop at its next step, never raised inside Dagster's own code
            from dagster._core.errors import DagsterExecutionInterruptedError
            from dagster._utils.interrupts import capture_interrupts, check_captured_interrupt, raise_interrupts_as

            with capture_interrupts():
                with raise_interrupts_as(DagsterExecutionInterruptedError):
                    pass
                os.kill(os.getpid(), signal.SIGTERM)
                assert check_captured_interrupt()
            with pytest.raises(KeyboardInterrupt):  # and the command stops after the run
                stop_if_interrupted()
        from dagster._utils import interrupts

        assert interrupts.signal is signal  # Dagster's own again
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # put back as found
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert result.success  # the ignored SIGINT landed in the step and was ignored (Dagster's capture failed it)


def test_a_relative_or_empty_dagster_home_is_made_absolute(tmp_path, monkeypatch):
    """Dagster refuses a relative home only after everything has loaded, with a traceback."""
    from curation_pipeline.cli import _home_path

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", "data/dagster_home")
    assert _home_path() == tmp_path / "data" / "dagster_home"
    assert os.environ["DAGSTER_HOME"] == str(tmp_path / "data" / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", "")  # an unset shell variable: the default, not the working folder
    assert _home_path() == tmp_path / "data" / "dagster_home"
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "afile"))
    result = CliRunner().invoke(main, ["run", "--raw", str(RAW_SAMPLES), "--warehouse", str(tmp_path / "wh")])
    assert result.exit_code == EXIT_BAD_INPUT and "is a file, not a folder" in result.output


def test_files_where_folders_belong_are_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    shard = RAW_SAMPLES / "sample-000000.tar"
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--raw", str(shard), "--warehouse", str(tmp_path / "wh")])
    assert result.exit_code == EXIT_BAD_INPUT and "is a file: give the folder" in result.output
    result = runner.invoke(main, ["sample-data", "--out", str(shard)])
    assert result.exit_code == EXIT_BAD_INPUT and "is a file, not a folder" in result.output
    result = runner.invoke(main, ["sample-data", "--out", str(tmp_path / "s"), "--shards", "-1"])
    assert result.exit_code == EXIT_BAD_INPUT
    result = runner.invoke(main, ["lineage", "--warehouse", str(shard), "--shard", "sample-000000"])
    assert result.exit_code == EXIT_BAD_INPUT, result.output


@pytest.mark.parametrize("src", ["missing-dir", "curation-tests/not-in-any-cache"])
def test_convert_model_that_cannot_be_loaded_is_bad_input(tmp_path, src):
    """A missing directory, or a hub id offline and not cached (HF_HUB_OFFLINE=1, conftest): exit 2 with
    the loader's message, no traceback."""
    src = str(tmp_path / src) if src == "missing-dir" else src
    result = CliRunner().invoke(main, ["convert-model", src, str(tmp_path / "out")])
    assert result.exit_code == EXIT_BAD_INPUT and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith(f"Error: Model '{src}'") and "could not be loaded" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_a_repeated_shard_runs_once_and_every_printed_path_is_quoted(tmp_path, monkeypatch):
    """`--shard a --shard a` is one shard; the printed follow-up commands work when copied, whatever the
    warehouse's name holds (a space, a quote)."""
    import shlex

    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw, wh = raw_with(tmp_path, ["sample-000001"]), tmp_path / "my wh's"
    runner = CliRunner()
    result = runner.invoke(main, ["run", "--raw", str(raw), "--warehouse", str(wh), "--profile", "offline",
                                  "--shard", "sample-000001", "--shard", "sample-000001"])
    assert result.exit_code == 0 and "done: 1 shard curated" in result.output, result.output
    with dg.DagsterInstance.get() as instance:
        assert len(instance.get_runs(dg.RunsFilter(job_name="curate_shards"))) == 1
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in result.output.splitlines() if ":" in line}
    assert shlex.split(lines["curated shards"]) == [f"{wh / 'curated'}/"]
    report_path, command = lines["quality report"].split("  (")
    assert shlex.split(report_path) == [str(wh / "quality.duckdb")]
    from curation_pipeline.cli import curate_command

    for words in (shlex.split(command.removesuffix(")")), shlex.split(lines["lineage"])):
        assert words[0] == shlex.split(curate_command())[0], words  # curate, or its path where PATH has none
        copied = runner.invoke(main, words[1:])
        assert copied.exit_code == 0 and "sample-000001" in copied.output, (words, copied.output)


@pytest.mark.parametrize("kind", ["vlm", "aitqe"])
def test_a_model_rewriter_without_a_model_is_bad_input_that_names_the_flag(env, kind):
    result = CliRunner().invoke(main, ["run", "--raw", env["raw"], "--warehouse", env["wh"], "--rewriter", kind])
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert f"rewriter '{kind}' needs rewriter.model (--rewriter-model)" in result.output, result.output


def test_demo_curates_the_bundled_samples_never_the_working_folders_data_raw(tmp_path, monkeypatch):
    """Outside the checkout, ./data/raw may hold anyone's shards: the demo runs the bundled samples only, the
    checkout's data/raw, or for an installed package (no checkout) ones written to the user's cache."""
    from curation_pipeline import cli

    samples = ["sample-000000", "sample-000001", "sample-000002"]
    (tmp_path / "data" / "raw").mkdir(parents=True)
    shutil.copy(RAW_SAMPLES / "sample-000001.tar", tmp_path / "data" / "raw" / "mine.tar")
    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setattr(cli, "run_shards", lambda raw, warehouse, shards, report, settings: ran.append(
        (os.path.realpath(raw), list(shards))) or 0)
    assert CliRunner().invoke(main, ["demo"]).exit_code == 0
    assert ran.pop() == (os.path.realpath(RAW_SAMPLES), samples)
    monkeypatch.setattr(cli, "REPO", tmp_path / "site-packages")  # installed: no checkout beside the package
    monkeypatch.delenv("CURATE_CACHE_DIR", raising=False)  # the suite's own cache: the user's, as a user runs it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert CliRunner().invoke(main, ["demo"]).exit_code == 0
    raw, shards = ran.pop()
    assert shards == samples and raw == os.path.realpath(tmp_path / "cache" / "curation-pipeline" / "sample-shards")
    for shard in samples:  # the bundled samples' bytes
        assert (tmp_path / "cache" / "curation-pipeline" / "sample-shards" / f"{shard}.tar").read_bytes() == (
            RAW_SAMPLES / f"{shard}.tar").read_bytes()
    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path / "elsewhere"))  # named outright, it wins
    assert CliRunner().invoke(main, ["demo"]).exit_code == 0
    assert ran.pop()[0] == os.path.realpath(tmp_path / "elsewhere" / "sample-shards")


def test_printed_commands_run_where_the_virtualenv_is_not_activated(tmp_path, monkeypatch):
    """After `make demo` the shell's PATH has no .venv/bin: the report and lineage lines printed a bare
    `curate`, "command not found"; they name this installation's executable unless PATH finds it."""
    import sys
    from pathlib import Path

    from curation_pipeline.cli import curate_command

    own = Path(sys.executable).with_name("curate")
    assert own.is_file()  # installed with the package (make setup)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    assert curate_command() == str(own.absolute())
    monkeypatch.chdir(own.parent.parent.parent)  # the folder holding .venv
    assert curate_command() == str(own.absolute().relative_to(Path.cwd().absolute()))
    monkeypatch.setenv("PATH", f"{own.parent}:/usr/bin:/bin")
    assert curate_command() == "curate"


@pytest.mark.parametrize("home", ["same", "another"])
def test_a_shard_run_names_the_other_shards_it_re_selects(tmp_path, monkeypatch, home):
    """`curate run --shard b` where b holds a larger copy of a pair of a (curated by an earlier run): a's copy is
    no longer its group's kept one, so the run re-decides and publishes a again; it says so, naming a, rather
    than "done: 1 shard curated" alone. Also from another Dagster home (run elsewhere, another machine), where
    a is no registered partition: it was held as frozen (its raw file as if gone) and never re-selected."""
    import io

    from PIL import Image

    from curation_pipeline_tests.faults import builders

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000000.tar", raw / "shard-a.tar")
    with tarfile.open(RAW_SAMPLES / "sample-000000.tar") as source:
        members = {m.name: source.extractfile(m).read() for m in source.getmembers() if m.isfile()}
    key = sorted(members)[0].split(".", 1)[0]
    image = Image.open(io.BytesIO(members[f"{key}.jpg"]))
    larger = io.BytesIO()
    image.resize((image.width * 2, image.height * 2), Image.LANCZOS).save(larger, "JPEG", quality=95)
    builders.write_members(raw / "shard-b.tar", [("copy.jpg", larger.getvalue()), ("copy.txt", members[f"{key}.txt"])])
    run = ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh")]
    first_run = CliRunner().invoke(main, [*run, "--shard", "shard-a"])
    assert first_run.exit_code == 0, first_run.output
    assert "re-selected" not in first_run.output
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / ("home" if home == "same" else "home-2")))
    second = CliRunner().invoke(main, [*run, "--shard", "shard-b"])
    assert second.exit_code == 0, second.output
    assert ("  re-selected 1 other shard against the pool as it is now (their duplicates or keep_fraction cut "
            "changed): shard-a") in second.output


@pytest.mark.parametrize("name", ["datacomp_clip_score.yaml", "laion_clip.yaml"])
def test_the_shipped_baselines_turn_every_image_bound_off(name):
    """DataComp's and LAION's selections apply no other rule: each image bound the scorers declare is off in them,
    one added since included (policy.image.min_contrast was on by default there, unseen by the run below, whose
    sample images all pass it)."""
    import yaml

    from curation_pipeline.resources import PolicyResource
    from curation_pipeline.scoring.registry import bounds

    settings = yaml.safe_load((Path(__file__).resolve().parents[1] / "docs" / "selections" / name).read_text())
    policy = PolicyResource(**settings["policy"]).decision_policy()
    on = [b.setting for b in bounds() if b.effect == "drop" and getattr(policy, b.setting) not in (None, False)]
    assert on == [], on
    assert not policy.require_image_rules and policy.nsfw_drop is None and not policy.drop_duplicates


def test_the_shipped_baseline_selections_select_as_datacomp_and_laion_do(tmp_path, monkeypatch):
    """docs/selections: DataComp's CLIP-score baseline keeps the pool's top 30% by raw cosine, one cut over every
    shard; the LAION-style one, from the same scores (not scored again), keeps cosine >= 0.28 and English. With a
    tiny random CLIP the pairs differ from the real models', the rules do not."""
    import numpy as np

    from curation_pipeline.storage.warehouse import Warehouse
    from curation_pipeline_tests.tiny_models import make_tiny_clip

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    shards = ["sample-000000", "sample-000001", "sample-000002"]
    raw, wh = raw_with(tmp_path, shards), tmp_path / "wh"
    selections = Path(__file__).resolve().parents[1] / "docs" / "selections"
    model = make_tiny_clip(tmp_path / "clip")
    run = ["run", "--raw", str(raw), "--warehouse", str(wh), "--set", f"scoring.clip.model={model}"]

    def published() -> set[tuple[str, str]]:
        final = pd.concat([Warehouse(str(wh)).read_table("final_captions", s) for s in shards])
        return set(map(tuple, final.loc[final["outcome"].ne("dropped"), ["shard", "key"]].to_numpy()))

    result = CliRunner().invoke(main, [*run, "--config", str(selections / "datacomp_clip_score.yaml")])
    assert result.exit_code == 0, result.output
    for shard in shards:  # the cosine of the bare caption, as DataComp's and LAION's: the scorer records it
        scorers = json.loads(Warehouse(str(wh)).table_metadata("quality_scores", shard)["scorers"])
        assert scorers["clip"] == f"4:{model}:prefix=none", scorers
    scores = pd.concat([Warehouse(str(wh)).read_table("quality_scores", s) for s in shards])
    scored = scores[scores["clip_cosine"].notna()].sort_values("clip_cosine", ascending=False)
    top = int(np.floor(0.3 * len(scored)))
    assert scored["clip_cosine"].iloc[top - 1] > scored["clip_cosine"].iloc[top]  # no tie at the cut: one top set
    assert published() == set(map(tuple, scored.head(top)[["shard", "key"]].to_numpy())) and top > 0
    made = {s: (wh / "quality_scores" / f"{s}.parquet").stat().st_mtime_ns for s in shards}

    result = CliRunner().invoke(main, [*run, "--only-missing", "--config", str(selections / "laion_clip.yaml")])
    assert result.exit_code == 0, result.output
    assert {s: (wh / "quality_scores" / f"{s}.parquet").stat().st_mtime_ns for s in shards} == made  # not re-scored
    english = scores["datacomp_english"].fillna(False).astype(bool)
    assert published() == set(map(tuple, scores.loc[(scores["clip_cosine"] >= 0.28) & english,
                                                     ["shard", "key"]].to_numpy()))


def test_storage_lost_after_the_runs_is_a_failed_report_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    """The object store gone mid-run: the shards fail naming it, then the report's listing raised botocore's error
    out of `curate run`, a traceback instead of the FAILED summary."""
    from botocore.exceptions import EndpointConnectionError

    from curation_pipeline import cli
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.storage.warehouse import Warehouse

    def lost(self, table):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/curation")

    defs = build_definitions(raw_root=str(tmp_path / "raw"), warehouse_root=str(tmp_path / "wh"))
    monkeypatch.setattr(Warehouse, "shards", lost)
    failed: list[str] = []
    assert cli._report(defs, None, failed, lambda: None, {}) is False
    assert failed == ["quality_report"]
    assert f"  quality_report: not built, cannot reach {tmp_path / 'wh'}: Could not connect" in capsys.readouterr().err


def test_the_store_lost_between_runs_is_one_line_not_a_traceback(env, monkeypatch):
    """Object storage lost while `curate run` settled the pool (between Dagster runs, in the command itself):
    botocore's traceback ended the command; now one line says what could not be reached and how to go on."""
    import botocore.exceptions

    from curation_pipeline.assets import dedup
    from curation_pipeline.cli import EXIT_FAILED

    def lost(*args, **kwargs):
        raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9/curation/wh/dedup")

    monkeypatch.setattr(dedup, "settle_duplicates", lost)
    result = CliRunner().invoke(main, ["run", "--raw", env["raw"], "--warehouse", env["wh"], "--no-report"])
    assert result.exit_code == EXIT_FAILED and isinstance(result.exception, SystemExit), result.output
    assert f"FAILED: cannot reach {env['wh']}: Could not connect to the endpoint URL" in result.output
    assert "curate run --only-missing` runs what is left" in result.output and "Traceback" not in result.output


def test_a_run_that_mends_blocked_shards_ends_with_the_pool_settled(tmp_path, monkeypatch):
    """Shards blocked by a strict drift check, run again under the default one: the duplicate index is built
    between the passes while they are still blocked, so once they pass it is another pool's. The run settles it
    again before it says done, as the settle sensor would, instead of leaving it unsettled for the next run."""
    import dagster as dg

    from curation_pipeline.assets.dedup import settle_requests
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.reporting.report import unsettled_shards
    from curation_pipeline.storage.warehouse import Warehouse

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    shards = ["sample-000000", "sample-000002"]  # a near copy across them: the index decides which is kept
    raw, wh = raw_with(tmp_path, shards), tmp_path / "wh"

    def run(*extra, code=0):
        result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(wh), "--no-report", *extra])
        assert result.exit_code == code, result.output
        return result.output

    blocked = run("--set", "policy.drift.mean_ratio_min=0.999", code=1)  # a cleaned credit shortens a caption
    assert "caption_length_drift" in blocked, blocked
    run(*[a for s in shards for a in ("--shard", s)])
    assert unsettled_shards(Warehouse(str(wh))) == {}
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(wh))
    with dg.DagsterInstance.get() as instance:
        requests = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert requests == "duplicate index current for 2 shards; no shard is stale", requests  # nothing to request


def test_only_missing_makes_a_damaged_table_file_again(tmp_path, monkeypatch):
    """Dagster's records call a shard up to date, but a file of it was truncated: --only-missing runs it (a scoring
    table) or re-decides it (final_captions) instead of calling it up to date and failing on the pool's next read.
    Meanwhile lineage of another shard reads that shard alone; a look-up that must read the file fails naming it."""
    from curation_pipeline.storage.warehouse import Warehouse

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw, wh = raw_with(tmp_path, ["sample-000000", "sample-000001"]), tmp_path / "wh"

    def invoke(*args):
        return CliRunner().invoke(main, [*args, "--warehouse", str(wh)])

    def damage(table, shard):
        path = wh / table / f"{shard}.parquet"
        path.write_bytes(path.read_bytes()[:100])

    assert invoke("run", "--raw", str(raw), "--no-report").exit_code == 0
    damage("final_captions", "sample-000001")
    shown = invoke("lineage", "--shard", "sample-000000")
    assert shown.exit_code == 0, shown.output  # sample-000001's file is not read
    looked_up = invoke("lineage", "--key", "000010001")
    assert looked_up.exit_code == 1, looked_up.output
    assert "cannot read the tables of" in looked_up.output
    assert "final_captions/sample-000001.parquet" in looked_up.output
    damage("quality_scores", "sample-000000")

    result = invoke("run", "--raw", str(raw), "--only-missing", "--no-report")
    assert result.exit_code == 0, result.output
    assert "to run: sample-000000 (its quality_scores file cannot be read" in result.output, result.output
    assert "to re-decide: sample-000001 (its stored decisions, rewrites or final captions cannot be read" \
        in result.output
    for table, shard in (("quality_scores", "sample-000000"), ("final_captions", "sample-000001")):
        assert len(Warehouse(str(wh)).read_table(table, shard)) == 40
    # every run so far without a report: nothing to run, but the report is built rather than said to be as it was
    assert not (wh / "quality.duckdb").exists()
    result = invoke("run", "--raw", str(raw), "--only-missing")
    assert result.exit_code == 0 and "(the report was missing: built)" in result.output, result.output
    assert (wh / "quality.duckdb").is_file()
    assert "(the report is as it was)" in invoke("run", "--raw", str(raw), "--only-missing").output


def test_a_second_run_on_the_same_warehouse_waits_for_the_first(tmp_path):
    """Two `curate run`s on one warehouse and home: the second waits, told who holds it, instead of deciding the
    shards the first has scored beside it. Another warehouse is not held up."""
    import threading

    from curation_pipeline.cli import warehouse_lock

    said, entered = [], threading.Event()

    def second():
        with warehouse_lock(tmp_path, "wh", say=said.append):
            entered.set()

    with warehouse_lock(tmp_path, "wh"):
        with warehouse_lock(tmp_path, "other-wh"):  # not held up
            pass
        waiter = threading.Thread(target=second)
        waiter.start()
        while not said and waiter.is_alive():
            waiter.join(0.05)
        assert said == [f"waiting for another `curate run` on wh (pid {os.getpid()}) to end"]
        assert not entered.is_set()
    waiter.join()
    assert entered.is_set()  # once the first ended


def test_a_cut_over_another_raw_folder_names_the_shards_it_leaves_frozen(tmp_path, monkeypatch):
    """Two raw folders into one warehouse: the second run's cut covers its own shards, the first folder's stay under
    the earlier cut (frozen: no raw file here). The run says so, not only the report."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    first, second = tmp_path / "raw1", tmp_path / "raw2"
    for folder, shard in ((first, "sample-000000"), (second, "sample-000002")):
        folder.mkdir()
        shutil.copy(RAW_SAMPLES / f"{shard}.tar", folder)

    def run(raw):
        result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--profile",
                                           "text", "--set", "policy.keep_fraction=0.3", "--no-report"])
        assert result.exit_code == 0, result.output
        return result.output

    assert "not in --raw" not in run(first)
    assert ("; 1 shard of the warehouse not in --raw (sample-000000) stay under an earlier cut: run with the --raw "
            "that holds them, or keep one raw location") in run(second)
