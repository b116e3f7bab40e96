"""The report never shows figures that are not the pool's as it is now without saying so: shards run one by one
(a UI backfill, with dedup_settle_sensor off) are decided against an older duplicate index, and are listed as
``unsettled`` with how to settle them until they are re-selected; a table file written again, removed or added
after the build makes ``open_report`` (and ``curate report``) warn, naming it and how to rebuild."""

from __future__ import annotations

import warnings

import pytest

from curation_pipeline.reporting.report import (ReportOutOfDate, build_report, open_report, overall_values,
                                                report_markdown)
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.published import publish
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES, run_pipeline
from curation_pipeline_tests.reporting.test_report import FOUR, SHARD, _fill

# sample-000000/000000028 is a near copy of sample-000002/000020021: decided alone, each shard keeps its own
SHARDS = ["sample-000000", "sample-000002"]


def test_shards_decided_one_by_one_are_unsettled_until_the_pool_is_settled(tmp_path):
    from curation_pipeline.assets.dedup import settle_duplicates
    from curation_pipeline.definitions import build_definitions

    warehouse = tmp_path / "warehouse"
    instance, results = run_pipeline(RAW_SAMPLES, warehouse, SHARDS, report=False, settle=False)  # a backfill
    assert all(r.success for r in results.values())
    wh = Warehouse(str(warehouse))

    report = build_report(wh)
    rows = report.shards.set_index("shard")
    # the first shard was decided before the second was scored: its duplicate of the second goes out twice
    assert rows["status"].to_dict() == {"sample-000000": "unsettled", "sample-000002": "ok"}
    detail = rows.loc["sample-000000", "status_detail"]
    assert detail.startswith("decided against an older duplicate index")
    assert "turn on dedup_settle_sensor" in detail and "reselect_shards" in detail
    o = overall_values(report)
    assert (o["shards"], o["counted_shards"], o["unsettled_shards"], o["left_out_shards"]) == (2, 1, 1, 1)
    assert o["pairs_read"] == rows.loc["sample-000002", "pairs_read"]  # the unsettled shard counts in no pooled figure
    text = report_markdown(report)
    assert "**The pool is not settled**: 1 shards" in text and "turn on dedup_settle_sensor" in text
    assert "1 unsettled" in text

    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))
    assert settle_duplicates(defs, instance, QUIET) == []  # what the sensor (or curate run) does
    settled = build_report(wh)
    assert set(settled.shards["status"]) == {"ok"}
    assert overall_values(settled)["unsettled_shards"] == 0
    assert "not settled" not in report_markdown(settled)


def _outdated(wh: Warehouse) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_report(wh) as con:
            con.execute("SELECT count(*) FROM shard_summary").fetchone()
    return [str(w.message) for w in caught if issubclass(w.category, ReportOutOfDate)]


def test_a_table_written_again_after_the_build_makes_the_report_warn_naming_it(tmp_path):
    """A partition re-materialized (here: its decisions made again, nothing rewritten) after the build: the
    summary tables still hold the build's figures, so opening the report says which files changed and how
    to rebuild it; a rebuild is current again. A shard added since is named too."""
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, **FOUR)
    _fill(wh, "shard-b", captions=["x", "y"], outcomes=["kept", "dropped"])
    build_report(wh)
    assert _outdated(wh) == []  # nothing changed: no warning

    final = wh.read_table("final_captions", SHARD)
    final["outcome"] = final["outcome"].replace({"rewritten": "kept"})
    wh.write_table("final_captions", SHARD, final)
    [message] = _outdated(wh)
    assert "1 file(s) it was built from were written again since (final_captions/shard-a)" in message
    assert "still show the figures of the build" in message
    assert "materialize quality_report" in message and "--select quality_report" in message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportOutOfDate)
        with open_report(wh) as con:  # the views read the new file, the summary the old: what the warning says
            assert con.execute("SELECT rewritten FROM shard_summary WHERE shard = ?", [SHARD]).fetchone() == (1,)
            assert con.execute("SELECT count(*) FROM final_captions WHERE outcome = 'rewritten'").fetchone() == (0,)

    report = build_report(wh)
    assert _outdated(wh) == []
    assert report.shards.set_index("shard").loc[SHARD, "rewritten"] == 0

    _fill(wh, "shard-c", captions=["z"], outcomes=["kept"])
    [message] = _outdated(wh)
    assert "file(s) were added since (pairs/shard-c, quality_scores/shard-c, caption_decisions/shard-c" in message
    assert "written again" not in message


def test_a_curated_tar_removed_or_replaced_after_the_build_makes_the_report_warn(tmp_path):
    """Each shard's status reads its curated tar (unpublished when missing or made from other rows): a tar
    removed or written again since the build leaves the stored statuses wrong, so opening the report says so."""
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, **FOUR)
    _fill(wh, "shard-b", captions=["x", "y"], outcomes=["kept", "dropped"])
    assert set(build_report(wh).shards["status"]) == {"ok"}
    assert _outdated(wh) == []
    wh.fs.rm_file(wh.curated_path("shard-b"))
    [message] = _outdated(wh)
    assert "1 file(s) it was built from are gone (curated/shard-b.tar)" in message
    assert build_report(wh).shards.set_index("shard").loc["shard-b", "status"] == "unpublished"
    publish(wh, "shard-b")
    [message] = _outdated(wh)
    assert "file(s) were added since (curated/shard-b.tar)" in message


def test_a_report_built_before_file_versions_were_recorded_still_opens(tmp_path):
    """An older report's ``report_files`` has no version: it opens, warning only about removed files."""
    import duckdb

    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, **FOUR)
    build_report(wh)
    path = wh.local_path(wh.report_db_path)
    with duckdb.connect(path) as con:
        con.execute("ALTER TABLE report_files DROP COLUMN version")
        con.execute("CHECKPOINT")
    final = wh.read_table("final_captions", SHARD)
    wh.write_table("final_captions", SHARD, final.iloc[:-1])
    assert _outdated(wh) == []
    wh.fs.rm_file(wh.table_path("final_captions", SHARD))
    with pytest.warns(ReportOutOfDate, match=r"1 file\(s\) it was built from are gone \(final_captions/shard-a\)"):
        with open_report(wh):
            pass


def test_unsettled_is_the_last_status_a_shard_takes(tmp_path):
    """A shard that is also failed, stale, blocked, incomplete or undecided takes that status (re-running it
    re-decides it anyway); unsettled is only for a shard otherwise ok."""
    from curation_pipeline.reporting.report import LEFT_OUT, shard_statuses

    assert LEFT_OUT[-1] == "unsettled"
    provenance = {t: {"a": {"raw": None, "failed": ""}, "b": {"raw": None, "failed": ""}}
                  for t in ("pairs", "quality_scores", "caption_decisions", "final_captions")}
    statuses = shard_statuses(provenance, {"b": "boom"}, {"a": "decided against an older duplicate index",
                                                          "b": "decided against an older duplicate index"})
    assert statuses["a"] == ("unsettled", "decided against an older duplicate index")
    assert statuses["b"][0] == "failed" and "older duplicate index" in statuses["b"][1]
