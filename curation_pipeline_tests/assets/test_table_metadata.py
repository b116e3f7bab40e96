"""Every table asset shows Dagster's column schema, each column described, and its row count."""

import io
import json
import re
import tarfile

import dagster as dg


def test_every_column_of_every_table_is_described(curated):
    instance, shard = curated["instance"], curated["shards"][0]
    for asset in ("pairs", "quality_scores", "caption_decisions", "rewritten_captions", "final_captions"):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[shard]), limit=1).records
        metadata = records[0].event_log_entry.asset_materialization.metadata
        schema = metadata["dagster/column_schema"].value
        undescribed = [c.name for c in schema.columns if not c.description]
        assert not undescribed, f"{asset}: columns without a description in tables.py: {undescribed}"
        assert {"shard", "key"} <= {c.name for c in schema.columns}
        assert metadata["dagster/row_count"].value >= 1
    curated_meta = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("curated_shards"), asset_partitions=[shard]),
        limit=1).records[0].event_log_entry.asset_materialization.metadata
    assert curated_meta["dagster/row_count"].value == curated_meta["samples"].value


def test_lineage_preview_says_why_each_caption_was_attempted(curated):
    from curation_pipeline.storage.warehouse import Warehouse

    instance, shard = curated["instance"], curated["shards"][0]
    metadata = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("rewritten_captions"), asset_partitions=[shard]),
        limit=1).records[0].event_log_entry.asset_materialization.metadata
    wh = Warehouse(str(curated["warehouse"]))
    lineage, decisions = wh.read_table("rewritten_captions", shard), wh.read_table("caption_decisions", shard)
    rows = [r.data for r in metadata["lineage"].value.records]
    assert rows and len(rows) == min(30, len(lineage))
    reasons = decisions.set_index("key")["reason"]
    for row in rows:
        assert row["attempted_because"] == reasons[row["key"]] and row["attempted_because"]
        assert len(row["run"]) == 8 and lineage["run_id"].str.startswith(row["run"]).all()
        # which model rewrote it (a VLM's id is in its version), with which prompt
        versions = set(lineage.loc[lineage["key"] == row["key"], "rewriter_version"])
        assert row["rewriter_version"] in versions and row["rewriter_version"]
        hashes = set(lineage.loc[lineage["key"] == row["key"], "prompt_hash"].map(lambda h: None if h != h else h))
        assert "prompt_hash" in row and row["prompt_hash"] in hashes  # the cleaner asks no prompt: None
    assert metadata["lineage_shown"].value.startswith(f"first {len(rows)} of {len(lineage)} attempts")


def test_the_caption_columns_say_what_the_reader_writes(tmp_path):
    """Every caption_source the reader writes is named, and every kind of caption_problem; a missing, empty or
    blank caption has no problem, and the description says so (not "missing or unusable")."""
    from curation_pipeline.shards.reader import ReaderLimits, ShardReader
    from curation_pipeline.tables import TABLES

    members = {"nocap.json": b'{"uid": 1}', "empty.txt": b"", "blank.txt": b" \t\r\n", "ext.caption": b"a dog",
               "js.json": json.dumps({"caption": "a cat"}).encode(), "latin1.txt": "caf\xe9".encode("latin-1"),
               "long.txt": b"x" * (ReaderLimits().max_caption_chars + 5), "num.json": b'{"caption": 7}'}
    with tarfile.open(tmp_path / "caps.tar", "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows = {s.key: s.record for s in ShardReader(str(tmp_path / "caps.tar"), "caps", decode="header")}
    assert len(rows) == len(members)
    docs = TABLES["pairs"]
    sources = {r["caption_source"] for r in rows.values()} - {None}
    assert sources == {"txt", "caption", "json"}
    for source in sources:
        assert re.search(rf"\b{source}\b", docs["caption_source"].split(":", 1)[1]), source
    kinds = {re.split(r" [\d(]", part)[0] for r in rows.values() if r["caption_problem"]
             for part in r["caption_problem"].split("; ")}
    assert kinds == {"invalid utf-8 replaced", "truncated from", "non-text json caption"}
    for kind in kinds:
        assert kind in docs["caption_problem"], kind
    assert [rows[k]["caption_problem"] for k in ("nocap", "empty", "blank")] == [None] * 3
    assert "missing, empty or blank caption" in docs["caption_problem"]
