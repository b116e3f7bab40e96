"""A shard whose table failed a blocking check when it was made is not published (no step reads a blocked table):
``curate lineage`` must say so, and which check, rather than show its final captions as if they went out."""

from __future__ import annotations

from click.testing import CliRunner

from curation_pipeline.cli import main
from curation_pipeline.reporting.lineage import BLOCKED_MARK, caption_history, format_history
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.reporting.test_report import FOUR, _fill

BLOCKED_WHY = ("final_captions failed its blocking check(s) caption_length_drift, rewrite_rate when it was made: "
               "nothing of it is published")


def _warehouse(tmp_path) -> Warehouse:
    wh = Warehouse(str(tmp_path / "wh"))
    for shard in ("ok", "blocked"):
        _fill(wh, shard, **FOUR)
    wh.update_table_metadata("final_captions", "blocked",
                             {"failed_blocking_checks": "caption_length_drift,rewrite_rate"})
    wh.fs.rm_file(wh.curated_path("blocked"))  # a blocked table is never published (_fill publishes every shard)
    return wh


def test_a_blocked_shards_captions_are_marked_not_published(tmp_path):
    wh = _warehouse(tmp_path)
    history = caption_history(wh, shard="blocked")
    assert history.blocked == {"blocked": BLOCKED_WHY}
    text = format_history(history, limit=100)
    assert text.startswith(f"BLOCKED shard blocked: {BLOCKED_WHY}")
    assert text.count(f"  BLOCKED:  {BLOCKED_MARK}") == len(history.final) == 4
    assert "nothing of it is published" in text and "caption_length_drift" in text

    ok = caption_history(wh, shard="ok")
    assert ok.blocked == {} and "BLOCKED" not in format_history(ok, limit=100)
    both = caption_history(wh)  # every shard: only the blocked one's pairs are marked
    assert list(both.blocked) == ["blocked"]
    assert format_history(both, limit=100).count(f"  BLOCKED:  {BLOCKED_MARK}") == 4


def test_a_curated_tar_of_an_earlier_run_is_named(tmp_path):
    """A blocked table does not withdraw the tar an earlier run published: lineage says which file still is."""
    wh = _warehouse(tmp_path)
    wh.fs.makedirs(wh.curated_dir, exist_ok=True)
    with wh.fs.open(wh.curated_path("blocked"), "wb") as handle:
        handle.write(b"")
    why = caption_history(wh, shard="blocked").blocked["blocked"]
    assert why.startswith("final_captions failed its blocking check(s) caption_length_drift, rewrite_rate")
    assert "not published, but curated/blocked.tar of an earlier run still is" in why


def test_the_cli_prints_the_blocked_line(tmp_path):
    wh = _warehouse(tmp_path)
    result = CliRunner().invoke(main, ["lineage", "--warehouse", wh.root, "--shard", "blocked"])
    assert result.exit_code == 0, result.output
    assert f"BLOCKED shard blocked: {BLOCKED_WHY}" in result.output
