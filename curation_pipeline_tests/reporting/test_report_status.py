"""Which shards the report counts: a shard's tables must be complete and come from the raw file its
``pairs`` read now (the sha256 each table records, as the IO manager compares them), and its last run
must have finished; any other shard is listed with a status and why, and left out of every pooled figure.
Lineage marks a shard whose captions come from another raw file."""

from __future__ import annotations

import shutil

import dagster as dg
import duckdb
import pandas as pd
import pytest

from curation_pipeline.reporting.lineage import caption_history, format_history
from curation_pipeline.reporting.report import build_report, overall_values, report_markdown
from curation_pipeline.shards.fingerprint import RawFingerprint
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.reporting.test_report import FOUR, _attempts, _fill

OLD, NEW = "a" * 64, "b" * 64


def _stamp(wh: Warehouse, shard: str, sha: str, tables: tuple[str, ...] = (
        "quality_scores", "caption_decisions", "rewritten_captions", "final_captions")) -> None:
    """Record what the IO manager records: pairs' raw-file fingerprint, each later table's raw sha256."""
    wh.update_table_metadata("pairs", shard, {"raw_fingerprint": RawFingerprint(size=1, sha256=sha).to_json()})
    for table in tables:
        if wh.has_table(table, shard):
            wh.update_table_metadata(table, shard, {"raw_sha256": sha})


def test_the_metadata_keys_are_the_io_managers():
    """The reporting layer imports no Dagster: it reads the keys and raw sha as the IO manager does."""
    from curation_pipeline.assets import integrity, io
    from curation_pipeline.reporting import report

    assert (report.FINGERPRINT_KEY, report.RAW_SHA_KEY, report.FAILED_CHECKS_KEY) == (
        integrity.FINGERPRINT_KEY, io.RAW_SHA_KEY, io.FAILED_CHECKS_KEY)
    fingerprint = {integrity.FINGERPRINT_KEY: RawFingerprint(size=3, sha256=NEW).to_json()}
    for meta in (fingerprint, {io.RAW_SHA_KEY: OLD}, {}):
        assert report.raw_sha(meta) == io.raw_sha(meta)


@pytest.fixture
def mixed(tmp_path):
    """ok: whole and from one raw file; stale: pairs made again from a replaced raw file, the rest not;
    undecided: scored only; blocked: final_captions failed a blocking check; failed: its last run failed
    (tables of an earlier run left); incomplete: final_captions left without pairs."""
    wh = Warehouse(str(tmp_path / "wh"))
    for shard in ("ok", "stale", "blocked", "failed"):
        _fill(wh, shard, attempts=_attempts("cleaner", "3", None, [True]), **FOUR)
        _stamp(wh, shard, OLD)
    _stamp(wh, "stale", NEW, tables=())  # only pairs read the new file
    wh.update_table_metadata("final_captions", "blocked", {"failed_blocking_checks": "caption_length_drift"})
    wh.fs.rm_file(wh.curated_path("blocked"))  # a blocked table is never published
    _fill(wh, "undecided", captions=["a", "b", "c"], outcomes=["kept"] * 3)
    for table in ("caption_decisions", "final_captions"):
        wh.fs.rm_file(wh.table_path(table, "undecided"))
    _fill(wh, "incomplete", captions=["a"], outcomes=["kept"])
    wh.fs.rm_file(wh.table_path("pairs", "incomplete"))
    return wh


def test_only_whole_consistent_shards_count_and_the_others_say_why(mixed):
    report = build_report(mixed, failures={"failed": "final_captions: boom"})
    rows = report.shards.set_index("shard")
    assert rows["status"].to_dict() == {"blocked": "blocked", "failed": "failed", "incomplete": "incomplete",
                                        "ok": "ok", "stale": "stale", "undecided": "undecided"}
    detail = rows["status_detail"]
    assert detail["ok"] is None
    assert detail["stale"].startswith("quality_scores, caption_decisions, rewritten_captions, final_captions from "
                                      f"another raw file than its pairs (sha256 {NEW[:16]})")
    assert "materialize it from quality_scores on" in detail["stale"]
    assert detail["undecided"] == "not decided yet: no caption_decisions, final_captions"
    assert detail["blocked"] == ("final_captions failed its blocking check(s) caption_length_drift when it was made: "
                                 "nothing of it is published")
    assert detail["failed"] == "last run: final_captions: boom" and rows.loc["failed", "error"] == "final_captions: boom"
    assert detail["incomplete"] == "no pairs"
    assert rows.loc["stale", "pairs_read"] == 4 and rows.loc["undecided", "pairs_read"] == 3  # still shown per shard

    o = overall_values(report)
    assert (o["shards"], o["counted_shards"], o["left_out_shards"]) == (6, 1, 5)
    assert {k: o[f"{k}_shards"] for k in ("failed", "stale", "blocked", "incomplete", "undecided")} == dict.fromkeys(
        ("failed", "stale", "blocked", "incomplete", "undecided"), 1)
    assert (o["pairs_read"], o["kept"], o["dropped"], o["left_out_pairs_read"]) == (4, 3, 1, 4 * 3 + 3)
    assert o["keep_rate"] == 0.75 and o["drop_rate"] == 0.25
    assert report.rewriters["attempts"].tolist() == [1]  # the ok shard's attempt only
    assert set(report.rewrite_distributions["n"]) == {1}
    assert len(report.quality) == 4  # the charts: the ok shard's pairs
    md = report_markdown(report)
    assert "**5 of 6 shards left out** of every figure pooled over shards (1 failed, 1 stale, 1 blocked, " \
           "1 incomplete, 1 undecided; 15 pairs read)" in md
    assert "| undecided | undecided | not decided yet: no caption_decisions, final_captions |" in md
    assert "| dropped for a reason | 1 |" in md  # pooled drop reasons: the ok shard's one


def test_no_shard_counted_gives_zero_counts_and_no_rates(mixed):
    for table in ("pairs", "final_captions", "quality_scores", "caption_decisions", "rewritten_captions"):
        mixed.fs.rm_file(mixed.table_path(table, "ok"))
    o = overall_values(build_report(mixed, failures={"failed": "x"}))
    assert (o["counted_shards"], o["pairs_read"], o["kept"]) == (0, 0, 0)
    assert o["keep_rate"] is None and o["drop_rate"] is None


def test_tables_without_a_recorded_raw_file_are_taken_as_current(tmp_path):
    """As the IO manager: a table written before the sha was recorded (or by hand) is not called stale."""
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, **FOUR)
    wh.update_table_metadata("pairs", "shard-a", {"raw_fingerprint": RawFingerprint(size=1, sha256=NEW).to_json()})
    assert build_report(wh).shards["status"].tolist() == ["ok"]


def test_lineage_marks_captions_made_from_another_raw_file(mixed):
    history = caption_history(mixed, shard="stale")
    assert list(history.stale) == ["stale"] and "from another raw file than its pairs" in history.stale["stale"]
    text = format_history(history)
    assert text.startswith("STALE shard stale: ")
    assert text.count("  STALE:    made from another raw file") == 4
    current = caption_history(mixed, shard="ok")
    assert current.stale == {} and "STALE" not in format_history(current)
    assert list(caption_history(mixed).stale) == ["stale"]


def test_a_replaced_raw_shard_and_an_undecided_one_are_left_out_end_to_end(tmp_path, monkeypatch):
    """Through Dagster: the raw shard replaced and only `pairs` made again (UI: materialize pairs) succeeds,
    as does a shard scored but not decided; the report must neither call them ok nor count them, and lineage
    must not present the old file's captions as the originals unmarked."""
    from curation_pipeline.automation import SCORE_KEYS
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.resources import ScoringResource
    from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES, truncated_captions_copy

    raw, wh_dir = tmp_path / "raw", tmp_path / "wh"
    raw.mkdir()
    for shard in ("sample-000000", "sample-000001"):
        shutil.copy(RAW_SAMPLES / f"{shard}.tar", raw / f"{shard}.tar")
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(wh_dir), scoring=ScoringResource(profile="text"))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["sample-000000", "sample-000001"])
        job = defs.resolve_job_def("curate_shards")

        def run(shard, keys=None):
            return job.execute_in_process(partition_key=shard, instance=instance, raise_on_error=False,
                                          run_config=QUIET, asset_selection=keys).success

        assert run("sample-000000")
        truncated_captions_copy(RAW_SAMPLES / "sample-000000.tar", raw / "sample-000000.tar")
        assert run("sample-000000", [dg.AssetKey("pairs")])
        assert run("sample-000001", SCORE_KEYS)
        from curation_pipeline.assets import reporting

        monkeypatch.setattr(reporting, "SHARDS_SHOWN", 1)  # a pool with more shards than the UI table holds
        assert defs.resolve_job_def("quality_report_job").execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET).success
        meta = instance.get_latest_materialization_event(dg.AssetKey("quality_report")).asset_materialization.metadata
        assert len(meta["shards"].value.records) == 1
        assert meta["shards_shown"].value == ("first 1 of 2 shards (those not ok first); all: shard_summary in the "
                                              "report database (curate report)")

    with duckdb.connect(str(wh_dir / "quality.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT shard, status, status_detail FROM shard_summary ORDER BY shard").fetchall()
        overall = con.execute("SELECT counted_shards, stale_shards, undecided_shards, pairs_read, keep_rate "
                              "FROM overall").fetchone()
    assert [r[:2] for r in rows] == [("sample-000000", "stale"), ("sample-000001", "undecided")]
    assert "final_captions" in rows[0][2] and "from another raw file than its pairs" in rows[0][2]
    assert overall == (0, 1, 1, 0, None)
    history = caption_history(Warehouse(str(wh_dir)), shard="sample-000000")
    assert list(history.stale) == ["sample-000000"]
    assert format_history(history, limit=1).startswith("STALE shard sample-000000: ")


def test_a_blocked_shard_whose_earlier_tar_is_still_published_says_so(mixed):
    """A blocked table does not withdraw the curated tar an earlier run published: "nothing is published"
    was untrue while that tar was there."""
    mixed.fs.makedirs(mixed.curated_dir, exist_ok=True)
    with mixed.fs.open(mixed.curated_path("blocked"), "wb") as tar:
        tar.write(b"")
    detail = build_report(mixed).shards.set_index("shard")["status_detail"]["blocked"]
    assert detail.endswith("not published, but curated/blocked.tar of an earlier run still is (re-run the shard, "
                           "or delete that tar to withdraw it)")


def test_the_ui_shards_table_puts_the_shards_not_ok_first():
    from curation_pipeline.assets.reporting import attention_first

    shards = pd.DataFrame({"shard": ["a", "b", "c", "d"], "status": ["ok", "failed", "ok", "unsettled"]})
    assert list(attention_first(shards)["shard"]) == ["b", "d", "a", "c"]
