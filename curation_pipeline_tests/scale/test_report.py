"""The DuckDB report: it reads the warehouse's Parquet straight from S3 (a real s3rver on
loopback; no httpfs extension, no local copy of the tables), ``open_report`` opens a report that
lives on S3, and its word counts are exactly the drift check's."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from curation_pipeline.reporting.report import build_report, open_report, register_word_count
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline.validation.lengths import caption_lengths
from curation_pipeline_tests.scale.helpers import SECRET

EDGE_CAPTIONS = ["", " ", "a", "a  b", "  a b  ", "\ta\tb\t", "a\nb\r\nc", "a\u00a0b", "a\u3000b\u2003c",
                 "a\x0bb\x0cc", "a\x1cb\x1fc", "a\u200bb", "x" * 300, "one two three four", None]


def test_the_reports_word_count_is_the_drift_checks():
    con = duckdb.connect()
    register_word_count(con)
    con.execute("CREATE TABLE c (caption VARCHAR)")
    con.executemany("INSERT INTO c VALUES (?)", [[c] for c in EDGE_CAPTIONS])
    # rowid keeps insertion order
    report = [n for (n,) in con.execute("SELECT word_count(caption) FROM c ORDER BY rowid").fetchall()]
    drift = caption_lengths(pd.Series(EDGE_CAPTIONS, dtype=object), "words").astype(int).tolist()
    assert report == drift
    assert report[:7] == [0, 0, 1, 2, 2, 2, 3]  # '' is 0 words, 'a  b' is 2, tabs / newlines separate


def _tables(shard: str, captions: list[str | None], finals: list[str | None]) -> dict[str, pd.DataFrame]:
    n = len(captions)
    keys = [f"{shard}-{i:03d}" for i in range(n)]
    outcome = ["kept" if f == c else ("dropped" if f is None else "rewritten") for c, f in zip(captions, finals)]
    return {
        "pairs": pd.DataFrame({"shard": shard, "key": keys, "caption": captions, "decode_status": "ok",
                               "caption_problem": [None] * n}),
        "quality_scores": pd.DataFrame({"shard": shard, "key": keys, "text_quality": np.linspace(0, 1, n)}),
        "caption_decisions": pd.DataFrame({"shard": shard, "key": keys, "nsfw_review": [False] * n}),
        "final_captions": pd.DataFrame({"shard": shard, "key": keys, "original_caption": captions,
                                        "final_caption": finals, "outcome": outcome,
                                        "reason": ["short (3 words)" if o == "dropped" else "" for o in outcome],
                                        "quality_before": np.linspace(0, 1, n),
                                        "quality_final": np.linspace(0.5, 1, n)}),
    }


def _fill(warehouse: Warehouse) -> None:
    shards = {"shard-a": (["a dog  runs", "", "\ttwo\nwords ", "x"], ["a dog runs", "a new caption", None, "x"]),
              "shard-b": (["  cat ", "a b c d e f", "one"], ["  cat ", "a b c", "one"])}
    for shard, (captions, finals) in shards.items():
        for table, df in _tables(shard, captions, finals).items():
            warehouse.write_table(table, shard, df)


def _report_tables(con) -> dict[str, pd.DataFrame]:
    return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").df()
            for t in ("overall", "shard_summary", "caption_lengths", "score_distribution", "drop_reasons")}


def test_the_report_reads_parquet_from_s3_and_equals_the_local_one(s3, tmp_path, caplog):
    server, fs = s3
    local, remote = Warehouse(str(tmp_path / "warehouse")), Warehouse(f"s3://{server.bucket}/warehouse")
    _fill(local)
    _fill(remote)
    assert remote.table_files("pairs")[0].startswith("s3://")  # the views name S3 objects, not local files

    local_report, remote_report = build_report(local), build_report(remote)
    assert local_report.overall == remote_report.overall
    pd.testing.assert_frame_equal(local_report.shards, remote_report.shards)
    # word counts as the drift check counts them: "" is 0 words, "\ttwo\nwords " 2 (dropped: all pairs only);
    # before / after, as the drift check, over the kept pairs that had a caption ("" left out)
    a = local_report.shards.set_index("shard").loc["shard-a"]
    assert a["mean_words_original"] == pytest.approx(np.mean([3, 1]))
    assert a["mean_words_all_pairs"] == pytest.approx(np.mean([3, 0, 2, 1]))

    # the database itself was uploaded (write, verify, commit) and opens from S3 as it does locally
    objects = fs.find(f"{server.bucket}/warehouse")
    assert f"{server.bucket}/warehouse/quality.duckdb" in objects
    assert not [o for o in objects if ".tmp-" in o], objects
    with open_report(local) as con:
        expected = _report_tables(con)
    with open_report(remote) as con:
        got = _report_tables(con)
        # its views read the Parquet on S3 (through the warehouse's s3fs, registered with DuckDB)
        assert con.execute("SELECT count(*) FROM pairs").fetchone()[0] == 7
        assert "s3://" in con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'pairs'").fetchone()[0]
    for name in expected:
        pd.testing.assert_frame_equal(expected[name], got[name], check_dtype=False)
    assert SECRET not in caplog.text

    with pytest.raises(FileNotFoundError, match="no report"):
        with open_report(Warehouse(f"s3://{server.bucket}/elsewhere")):
            pass
