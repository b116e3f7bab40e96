"""The DuckDB report: it reads the warehouse's Parquet straight from S3 (a real s3rver on
loopback; no httpfs extension, no local copy of the tables), also under a path with glob characters,
``open_report`` opens a report that lives on S3, and its word counts are exactly the drift check's."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from curation_pipeline.reporting.report import (
    build_report,
    open_report,
    parquet_paths,
    register_warehouse,
    register_word_count,
)
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline.validation.lengths import caption_lengths
from curation_pipeline_tests.published import publish
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
        publish(warehouse, shard)


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


def _decoy(warehouse: Warehouse) -> None:
    """Other tables where a glob of the warehouse's path would land (``run[1]`` matches ``run1``)."""
    for table, df in _tables("shard-a", ["decoy"] * 3, [None] * 3).items():
        warehouse.write_table(table, "shard-a", df)


def test_the_report_reads_exactly_its_files_on_s3_under_a_path_with_glob_characters(s3, tmp_path):
    """DuckDB globs every path it reads, through the registered fsspec filesystem; the views' escaped paths
    (``run[[]1]``) went to s3fs's glob, which lists from the first ``[`` and found nothing (the build failed:
    "No files found"). Each is now looked up as the one file it names, in the build and in ``open_report``."""
    server, fs = s3
    remote = Warehouse(f"s3://{server.bucket}/run[1]/wh")
    local = Warehouse(str(tmp_path / "run[1]" / "wh"))
    _fill(remote)
    _fill(local)
    _decoy(Warehouse(f"s3://{server.bucket}/run1/wh"))

    remote_report, local_report = build_report(remote), build_report(local)
    assert remote_report.overall == local_report.overall and remote_report.overall["pairs_read"] == 7
    pd.testing.assert_frame_equal(local_report.shards, remote_report.shards)
    assert fs.exists(f"{server.bucket}/run[1]/wh/quality.duckdb")
    with open_report(local) as con:
        expected = _report_tables(con)
    with open_report(remote) as con:
        got = _report_tables(con)
        assert con.execute("SELECT shard, count(*) FROM pairs GROUP BY ALL ORDER BY ALL").fetchall() == [
            ("shard-a", 4), ("shard-b", 3)]
        view = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'pairs'").fetchone()[0]
        assert f"s3://{server.bucket}/run[[]1]/wh/pairs/shard-a.parquet" in view
    for name in expected:
        pd.testing.assert_frame_equal(expected[name], got[name], check_dtype=False)


def test_a_question_mark_in_the_path_on_s3_reads_exactly_its_file(s3, tmp_path):
    """``q?x`` as a glob matches ``q1x`` too (s3rver cannot commit a ``?`` key by copy, so the files are put
    directly): the report's reads (escaped paths, the warehouse's registered filesystem) get the one file."""
    server, fs = s3
    source = Warehouse(str(tmp_path / "wh"))
    _fill(source)
    _decoy(Warehouse(str(tmp_path / "decoy")))
    fs.put_file(str(tmp_path / "wh" / "pairs" / "shard-a.parquet"), f"{server.bucket}/q?x/wh/pairs/shard-a.parquet")
    fs.put_file(str(tmp_path / "decoy" / "pairs" / "shard-a.parquet"), f"{server.bucket}/q1x/wh/pairs/shard-a.parquet")

    remote = Warehouse(f"s3://{server.bucket}/q?x/wh")
    files = parquet_paths(remote.table_files("pairs"))
    with duckdb.connect() as con:
        register_warehouse(con, remote)
        assert con.execute("SELECT caption FROM read_parquet($files) ORDER BY key", {"files": files}
                           ).fetchall() == [("a dog  runs",), ("",), ("\ttwo\nwords ",), ("x",)]


@pytest.fixture()
def s3_requests(monkeypatch):
    """Every S3 request this process makes, by operation; reads by operation and object too."""
    import collections

    import s3fs

    made, real = collections.Counter(), s3fs.S3FileSystem._call_s3

    async def call(self, method, *args, **kwargs):
        made[method] += 1
        if method == "get_object":  # and which object each read asked for
            made[method, kwargs.get("Key")] += 1
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", call)
    return made


def test_the_report_asks_s3_for_each_files_details_once_from_its_listing(s3, s3_requests):
    """DuckDB asks for a file's details (glob, size, modification time, the open's own look-up) at every query
    that reads it: about 190 HEAD requests a shard for one build (a rebuild of 12,800 shards: 2.4 million).
    The build's listings answer them."""
    server, _ = s3
    remote, written = Warehouse(f"s3://{server.bucket}/warehouse"), 0
    for i in range(6):
        shard = f"shard-{i}"
        for table, df in _tables(shard, ["a dog  runs", "", "one"], ["a dog runs", "a new caption", None]).items():
            remote.write_table(table, shard, df)
            written += 1
        publish(remote, shard)
    s3_requests.clear()
    report = build_report(remote)
    assert report.overall["pairs_read"] == 18 and report.overall["rewritten"] == 12
    # the curated tars' records and the report's own upload: a few; none per query
    assert s3_requests["head_object"] <= 3 * 6 + 5, dict(s3_requests)
    # and each table file is read once by DuckDB, though written just now: its file cache distrusts a file written
    # in the last seconds, which had every query read final_captions again (25 GETs a shard); final_captions'
    # footer is read once more, by the check of what was published (publication_problems)
    reads = {key[1]: n for key, n in s3_requests.items() if isinstance(key, tuple) and key[1].endswith(".parquet")}
    expected = {key: 2 if "/final_captions/" in key else 1 for key in reads}
    assert len(reads) == written and reads == expected, {k: n for k, n in reads.items() if n != expected[k]}


def test_a_file_replaced_after_its_listing_fails_its_read_and_is_never_read_in_part(s3):
    """Read as listed, a file written again since must not be read with the old size over the new bytes: the
    read is held to the listing's ETag. S3 itself checks it (If-Match); s3rver ignores If-Match, so here s3fs
    checks it on each answer (``local_expiry_check``, as for stores that ignore it)."""
    import s3fs
    from s3fs.utils import FileExpired

    from curation_pipeline.reporting.report import ExactFileSystem

    server, _ = s3
    fs = s3fs.S3FileSystem(local_expiry_check=True, skip_instance_cache=True)
    path = f"{server.bucket}/t/x.bin"
    fs.pipe_file(path, b"first version")
    exact = ExactFileSystem(fs)
    exact.remember([fs.info(path)])
    with exact.open(f"s3://{path}", "rb") as handle:
        assert handle.read() == b"first version"
    fs.pipe_file(path, b"the second version, longer")
    with pytest.raises(FileExpired), exact.open(f"s3://{path}", "rb") as handle:
        handle.read()
    exact.listed.clear()  # no listing: each read looks the file up, as before
    with exact.open(f"s3://{path}", "rb") as handle:
        assert handle.read() == b"the second version, longer"


@pytest.fixture()
def etag_checked(s3, monkeypatch):
    """The warehouse's s3fs checks each answer's ETag itself (s3rver ignores If-Match, which S3 honours)."""
    server, _ = s3
    remote = Warehouse(f"s3://{server.bucket}/warehouse")
    monkeypatch.setattr(remote.fs, "local_expiry_check", True)
    return remote


def test_a_report_built_while_a_run_writes_a_table_reads_it_anew(etag_checked, monkeypatch):
    """Its reads held to the build's listing, a table a shard run wrote meanwhile failed the whole build: it is
    built again from a fresh listing, with the new table."""
    from curation_pipeline.reporting import report as report_module

    remote = etag_checked
    _fill(remote)
    real, calls = report_module.ExactFileSystem.remember, []

    def remember(fs, infos):
        infos = list(infos)
        real(fs, infos)
        if any(info["name"].endswith("pairs/shard-b.parquet") for info in infos):
            calls.append(1)
            if len(calls) == 1:  # a run writes shard-b's pairs again, after the listing, before the first read
                pairs = remote.read_table("pairs", "shard-b")
                remote.write_table("pairs", "shard-b", pd.concat([pairs, pairs.tail(1).assign(key="shard-b-new")]))

    monkeypatch.setattr(report_module.ExactFileSystem, "remember", remember)
    with pytest.warns(UserWarning, match=r"pairs/shard-b\.parquet written again while it read them: reading anew"):
        report = build_report(remote)
    assert len(calls) == 2 and report.overall["pairs_read"] == 8  # the new table's 4 rows


def test_a_lineage_look_up_while_a_run_writes_a_table_reads_it_anew(etag_checked, curated, monkeypatch):
    from curation_pipeline.reporting import lineage

    remote, local = etag_checked, Warehouse(str(curated["warehouse"]))
    shard = curated["shards"][0]
    for table in ("pairs", "caption_decisions", "rewritten_captions", "final_captions"):
        remote.fs.put_file(local.local_path(local.table_path(table, shard)),
                           remote.table_path(table, shard).removeprefix("s3://"))
    expected = lineage.caption_history(local, shard=shard)
    real, calls = lineage.register_warehouse, []

    def register(con, warehouse, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # after the listing: final_captions written again (the same rows, other bytes)
            final = warehouse.read_table("final_captions", shard)
            warehouse.write_table("final_captions", shard, final.iloc[::-1].sort_values("key", kind="stable"))
        return real(con, warehouse, **kwargs)

    monkeypatch.setattr(lineage, "register_warehouse", register)
    with pytest.warns(UserWarning, match="final_captions/.*written again while it read them"):
        got = lineage.caption_history(remote, shard=shard)
    assert len(calls) == 2
    pd.testing.assert_frame_equal(got.final, expected.final)
