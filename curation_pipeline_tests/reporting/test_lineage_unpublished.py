"""``final_captions`` made again without ``curated_shards`` (the UI's "Materialize selected", a run killed while
publishing) leaves a published tar that holds other captions than lineage shows: ``curate lineage`` must say so,
as the report calls the shard unpublished, rather than show a pair DROPPED that is still published rewritten."""

from __future__ import annotations

from click.testing import CliRunner

from curation_pipeline.cli import main
from curation_pipeline.reporting.lineage import UNPUBLISHED_MARK, caption_history, format_history
from curation_pipeline.shards.writer import ROWS_DIGEST_KEY
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.reporting.test_report import FOUR, _fill


def _warehouse(tmp_path) -> Warehouse:
    wh = Warehouse(str(tmp_path / "wh"))
    for shard in ("ok", "remade", "gone"):
        _fill(wh, shard, **FOUR)
    # final_captions made again (its rows' digest changed) after the tar was published; another's tar removed
    wh.update_table_metadata("final_captions", "remade", {ROWS_DIGEST_KEY: "a later run's rows"})
    wh.fs.rm_file(wh.curated_path("gone"))
    return wh


def test_a_shard_whose_tar_is_not_its_final_captions_is_marked(tmp_path):
    wh = _warehouse(tmp_path)
    history = caption_history(wh)
    assert set(history.unpublished) == {"remade", "gone"}
    assert "curated/remade.tar was not made from the current final_captions" in history.unpublished["remade"]
    assert history.unpublished["gone"].startswith("no curated/gone.tar, though final_captions keeps 3 pairs")
    text = format_history(history, limit=100)
    assert text.startswith("UNPUBLISHED shard gone: no curated/gone.tar")
    assert text.count(f"  UNPUBLISHED: {UNPUBLISHED_MARK}") == 8  # the four pairs of each, not the ok shard's
    ok = caption_history(wh, shard="ok")
    assert ok.unpublished == {} and "UNPUBLISHED" not in format_history(ok, limit=100)
    # a look at one pair counts what its whole shard keeps: the tar must hold all three kept pairs
    one = caption_history(wh, key="gone-002")
    assert one.unpublished["gone"].startswith("no curated/gone.tar, though final_captions keeps 3 pairs")


def test_the_cli_prints_the_unpublished_line_and_each_pairs_score(tmp_path):
    wh = _warehouse(tmp_path)
    result = CliRunner().invoke(main, ["lineage", "--warehouse", wh.root, "--shard", "remade"])
    assert result.exit_code == 0, result.output
    assert "UNPUBLISHED shard remade: curated/remade.tar was not made from the current final_captions" in result.output
    # the score the decision read, for a pair kept or dropped with no attempt as for a rewritten one
    assert "remade/remade-000: KEPT" in result.output and "  score:    text_quality 10\n" in result.output
    assert "  score:    text_quality 36.7 -> 36.7\n" in result.output  # rewritten (the test's tables keep its score)


def test_a_shard_not_resolved_yet_is_named_as_such(tmp_path):
    """A run stopped between rewritten_captions and final_captions: the shard has pairs and attempts, not "no pair"."""
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, "stopped", **FOUR)
    wh.fs.rm_file(wh.local_path(wh.table_path("final_captions", "stopped")))
    result = CliRunner().invoke(main, ["lineage", "--warehouse", wh.root, "--shard", "stopped"])
    assert result.exit_code == 2
    assert ("shard 'stopped' has pairs, quality_scores, caption_decisions but no final_captions yet (its run stopped "
            "before resolving it): run `curate run --shard stopped`") in " ".join(result.output.split())
    _fill(wh, "done", **FOUR)  # with a final_captions elsewhere: an unknown shard is still just unknown
    unknown = CliRunner().invoke(main, ["lineage", "--warehouse", wh.root, "--shard", "nope"])
    assert unknown.exit_code == 2 and "no pair with shard 'nope'" in unknown.output and "has" not in unknown.output
    # one of its pairs looked up by key alone: its shard is found and named as not resolved yet, not "no pair"
    by_key = CliRunner().invoke(main, ["lineage", "--warehouse", wh.root, "--key", "stopped-001"])
    assert by_key.exit_code == 2 and "shard 'stopped' has pairs, quality_scores" in by_key.output, by_key.output
    nowhere = CliRunner().invoke(main, ["lineage", "--warehouse", wh.root, "--key", "nope-001"])
    assert nowhere.exit_code == 2 and "no pair with key 'nope-001'" in nowhere.output and "has" not in nowhere.output
