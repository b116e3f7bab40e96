"""``curate lineage`` answers *why* for every pair: a caption sent to the rewriter whose rewrite was rejected
shows the decision's reason (the outcome's reason names only the rejection), and a dropped duplicate names
the copy kept for it."""

from __future__ import annotations

from curation_pipeline.reporting.lineage import caption_history, format_history
from curation_pipeline.storage.warehouse import Warehouse


def _pair_lines(text: str, shard: str, key: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"{shard}/{key}: ")))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


def test_lineage_shows_the_decisions_reason_and_the_kept_copy(curated):
    wh = Warehouse(str(curated["warehouse"]))
    shard = curated["shards"][0]
    decisions = wh.read_table("caption_decisions", shard).set_index("key")
    final = wh.read_table("final_captions", shard).set_index("key")
    text = format_history(caption_history(wh, shard=shard), limit=1000)

    rejected = [k for k in final.index if final.at[k, "action"] == "rewrite" and not final.at[k, "rewritten"]]
    assert rejected, "the sample shard has rewrites that were not accepted"
    outcomes = set()
    for key in rejected:
        why, lines = decisions.at[key, "reason"], _pair_lines(text, shard, key)
        outcomes.add(final.at[key, "outcome"])
        if final.at[key, "outcome"] == "kept":  # the original stands: its reason says why a rewrite was tried
            assert final.at[key, "reason"].startswith(f"{why}; rewrite rejected (")
            assert not any(line.startswith("  decided:") for line in lines)
        else:  # a weak caption dropped: the outcome does not say why it was weak, the decided line does
            assert why not in final.at[key, "reason"]
            assert f"  decided:  rewrite ({why})" in lines
    assert outcomes == {"kept", "dropped"}, outcomes

    duplicates = decisions[decisions["dup_of"].notna()]
    assert len(duplicates), "the sample shards hold duplicates"
    for key, dup_of in duplicates["dup_of"].items():
        lines = _pair_lines(text, shard, key)
        assert f"  duplicate of: {dup_of}" in lines
        if final.at[key, "outcome"] == "dropped":
            assert "  final:    none (dropped)" in lines

    kept = next(k for k in final.index if final.at[k, "action"] == "keep")  # its reason is the outcome's own
    assert not any(line.startswith("  decided:") for line in _pair_lines(text, shard, kept))


def test_the_uis_decisions_preview_names_the_kept_copy(curated):
    import dagster as dg

    shard = curated["shards"][0]
    event = curated["instance"].get_latest_materialization_event(dg.AssetKey("caption_decisions"))
    records = [e for e in curated["instance"].fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("caption_decisions"), asset_partitions=[shard]), limit=1).records]
    assert event is not None and records
    preview = records[0].asset_materialization.metadata["decisions_preview"].value
    assert [c.name for c in preview.schema.columns] == ["key", "action", "reason", "quality_before", "dup_of"]
    duplicates = [r.data for r in preview.records if r.data.get("dup_of")]
    assert duplicates and all(r["reason"].startswith("duplicate:") for r in duplicates)



def test_the_uis_drop_reasons_count_signals_as_the_report_does(tmp_path):
    """``drop_reasons`` grouped by a reason's first word: with rewriting off, ``low_text_quality=30.0`` made a row
    per score value, and a second signal of a reason (``; too_few_words``) was never counted. It counts each
    signal now, as the report's ``drop_reasons`` does."""
    import re

    import dagster as dg

    from curation_pipeline.reporting.report import reason_signals
    from curation_pipeline.resources import PolicyResource, ScoringResource
    from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline

    shard = "sample-000001"
    instance, _ = run_pipeline(RAW_SAMPLES, tmp_path / "wh", [shard], report=False, settle=False,
                               scoring=ScoringResource(profile="text"), policy=PolicyResource(rewrite=False))
    decisions = Warehouse(str(tmp_path / "wh")).read_table("caption_decisions", shard)
    record = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("caption_decisions"), asset_partitions=[shard]), limit=1).records[0]
    metadata = record.asset_materialization.metadata
    shown = {k: int(v) for k, v in re.findall(r"^\| (.+?) \| (\d+) \|$", metadata["drop_reasons"].value, re.M)}
    expected = {}
    reasons = decisions.loc[decisions["action"].eq("drop"), "reason"]
    for reason in reasons:
        for signal in reason_signals(reason):
            expected[signal] = expected.get(signal, 0) + 1
    assert reasons.str.contains("=").any() and reasons.str.contains("; ").any()  # values, and several signals
    assert shown == expected
    assert not any("=" in signal for signal in shown)  # a score's value is no reason of its own


def test_the_uis_final_captions_count_every_drop_and_name_each_rewriter(curated):
    """caption_decisions' drop_reasons count the pairs decided 'drop' only; a weak caption no rewrite saved is
    dropped later, so the shard's every drop is counted on final_captions; and its rewritten preview says by which
    model each caption was rewritten, beside from what and why."""
    import re

    import dagster as dg

    from curation_pipeline.reporting.report import reason_signals

    wh, instance = Warehouse(str(curated["warehouse"])), curated["instance"]
    previewed = 0
    for shard in curated["shards"]:
        final = wh.read_table("final_captions", shard)
        metadata = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("final_captions"), asset_partitions=[shard]), limit=1).records[0] \
            .asset_materialization.metadata
        shown = {k: int(v) for k, v in re.findall(r"^\| (.+?) \| (\d+) \|$", metadata["drop_reasons"].value, re.M)}
        expected: dict[str, int] = {}
        for reason in final.loc[final["outcome"].eq("dropped"), "reason"]:
            for signal in reason_signals(reason):
                expected[signal] = expected.get(signal, 0) + 1
        assert shown == expected
        preview = metadata["rewritten_preview"].value
        assert {"rewriter", "rewriter_version"} <= {c.name for c in preview.schema.columns}
        rewritten = final[final["rewritten"]].set_index("key")
        for row in preview.records:
            assert row.data["rewriter_version"] == rewritten.at[row.data["key"], "rewriter_version"]
            previewed += 1
    assert previewed, "the sample shards have rewritten captions"
    drops = wh.read_table("final_captions", curated["shards"][0])
    assert drops["outcome"].eq("dropped").sum() > drops["action"].eq("drop").sum()  # drops after the decisions


def test_the_uis_previews_say_what_they_leave_out(curated):
    import dagster as dg

    wh, instance = Warehouse(str(curated["warehouse"])), curated["instance"]
    for shard in curated["shards"]:
        n = len(wh.read_table("caption_decisions", shard))
        record = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("caption_decisions"), asset_partitions=[shard]), limit=1).records[0]
        assert record.asset_materialization.metadata["decisions_shown"].value == (
            f"all {n} pairs" if n <= 30 else
            f"first 30 of {n} pairs; all: the caption_decisions table, or curate lineage --shard {shard}")

        rewritten = int(wh.read_table("final_captions", shard)["rewritten"].sum())
        record = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("final_captions"), asset_partitions=[shard]), limit=1).records[0]
        assert record.asset_materialization.metadata["rewritten_shown"].value == (
            f"all {rewritten} rewritten pairs" if rewritten <= 30 else
            f"first 30 of {rewritten} rewritten pairs; all: curate lineage --shard {shard} --rewritten-only")
