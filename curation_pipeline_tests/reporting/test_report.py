"""The DuckDB report and ``caption_history`` over small warehouses written through ``Warehouse``: what the
tables say must not depend on where the warehouse lives (``name=value`` folders, glob characters, a ``?``),
and each figure must count what its name says."""

from __future__ import annotations

import glob
import uuid
import warnings

import duckdb
import fsspec
import numpy as np
import pandas as pd
import pytest

from curation_pipeline.reporting.lineage import caption_history
from curation_pipeline.reporting.report import (
    build_report,
    escaped_file,
    open_report,
    overall_values,
    parquet_paths,
    report_markdown,
)
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline.validation.drift import check_caption_length_drift
from curation_pipeline_tests.published import publish

SHARD = "shard-a"


def _fill(warehouse: Warehouse, shard: str = SHARD, *, captions: list[str | None], outcomes: list[str],
          finals: list[str | None] | None = None, reasons: list[str] | None = None,
          quality: list[float] | None = None, attempts: pd.DataFrame | None = None,
          decoded: list[str] | None = None) -> list[str]:
    """One shard's pairs, scores, decisions and final captions (and rewrite attempts); returns the keys.
    ``decoded``: quality_scores' decode_status per pair (all ok by default; pairs' header read says ok)."""
    n = len(captions)
    keys = [f"{shard}-{i:03d}" for i in range(n)]
    finals = finals if finals is not None else [None if o == "dropped" else c for c, o in zip(captions, outcomes)]
    quality = quality if quality is not None else list(np.linspace(10, 90, n))
    reasons = reasons if reasons is not None else [f"{o} for a reason" for o in outcomes]
    warehouse.write_table("pairs", shard, pd.DataFrame({
        "shard": shard, "key": keys, "caption": captions, "decode_status": "ok", "caption_problem": [None] * n}))
    warehouse.write_table("quality_scores", shard, pd.DataFrame({
        "shard": shard, "key": keys, "decode_status": decoded if decoded is not None else ["ok"] * n,
        "text_quality": quality}))
    warehouse.write_table("caption_decisions", shard, pd.DataFrame({
        "shard": shard, "key": keys, "action": "keep", "reason": reasons, "nsfw_review": [False] * n}))
    warehouse.write_table("final_captions", shard, pd.DataFrame({
        "shard": shard, "key": keys, "outcome": outcomes, "reason": reasons, "original_caption": captions,
        "final_caption": finals, "rewritten": [o == "rewritten" for o in outcomes],
        "rewriter": [None] * n, "rewriter_version": [None] * n, "quality_column": "text_quality",
        "quality_before": quality,
        "quality_final": [np.nan if o == "dropped" else q for o, q in zip(outcomes, quality)],
        "action": "keep"}))
    if attempts is not None:
        warehouse.write_table("rewritten_captions", shard, attempts.assign(shard=shard))
    publish(warehouse, shard)  # as curated_shards would: else the shard is unpublished, in no pooled figure
    return keys


def _attempts(rewriter: str, version: str, prompt_hash: str | None, accepted: list[bool]) -> pd.DataFrame:
    n = len(accepted)
    return pd.DataFrame({
        "shard": SHARD, "key": [f"k{i}" for i in range(n)], "attempt": 1, "rewriter": rewriter,
        "rewriter_version": version, "prompt_hash": prompt_hash, "original_caption": "a dog",
        "candidate_caption": "a brown dog on grass", "quality_before": 40.0, "quality_after": 70.0,
        "edit_ratio": 0.5, "length_ratio": 2.0, "semantic_similarity": 0.9, "accepted": accepted,
        "reason": "ok", "run_id": "run", "created_at": "2024-01-01T00:00:00+00:00"})


FOUR = {"captions": ["a dog runs", "two cats", "one", "a red car parked"],
        "outcomes": ["kept", "rewritten", "dropped", "kept"]}


@pytest.mark.parametrize("folder", ["outcome=kept", "shard=eu", "key=x", "rewritten=true"])
def test_name_value_folders_above_the_warehouse_are_not_hive_partitions(tmp_path, folder):
    """DuckDB would read ``.../outcome=kept/wh`` as a hive partition and replace every row's ``outcome``."""
    wh = Warehouse(str(tmp_path / folder / "wh"))
    keys = _fill(wh, **FOUR)

    report = build_report(wh)
    o = overall_values(report)
    assert (o["pairs_read"], o["kept_as_is"], o["rewritten"], o["dropped"]) == (4, 2, 1, 1)
    assert list(report.shards["shard"]) == [SHARD]
    with open_report(wh) as con:  # the stored views read the same
        assert con.execute("SELECT outcome, count(*) FROM final_captions GROUP BY ALL ORDER BY ALL").fetchall() == [
            ("dropped", 1), ("kept", 2), ("rewritten", 1)]

    history = caption_history(wh, key=keys[2], shard=SHARD)
    assert history.final[["shard", "key", "outcome"]].values.tolist() == [[SHARD, keys[2], "dropped"]]
    assert len(caption_history(wh, rewritten_only=True).final) == 1


def test_drop_reasons_count_each_signal_not_each_score_value(tmp_path):
    """A filter-mode reason carries the pair's score and joins its signals with "; ": the table counts
    pairs per signal (each signal of a pair), and the outcome's own texts read as one signal each."""
    reasons = ["low_text_quality=30.0 (rules); not_english", "low_text_quality=35.0", "low_text_quality=nan",
               "not_english; too_few_words", "duplicate:near_image", "duplicate:near_image", "image_too_small",
               "caption still weak after rewriting (60.0 < 65)", "caption still weak after rewriting (58.5 < 65)",
               "caption weak and not rewritten (no candidate: no caption)",
               "caption weak and not rewritten (quality 40.0 -> 41.0; gain 1.0 < 5)",
               "fails: text_quality >= 50", "fails: a >= 50 and (b > 0.5 or c >= 90)",
               "fails: (a > 1) or b < 2", "outside top 50% by text_quality", "kept for a reason"]
    outcomes = ["dropped"] * (len(reasons) - 1) + ["kept"]
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, captions=[f"caption {i}" for i in range(len(reasons))], outcomes=outcomes, reasons=reasons)

    report = build_report(wh)
    got = dict(zip(report.drop_reasons["reason"], report.drop_reasons["pairs"]))
    assert got == {"low_text_quality": 3, "not_english": 2, "too_few_words": 1, "duplicate:near_image": 2,
                   "image_too_small": 1, "caption still weak after rewriting": 2,
                   "caption weak and not rewritten": 2, "fails: text_quality >= 50": 1,
                   "fails: a >= 50 and (b > 0.5 or c >= 90)": 1, "fails: (a > 1) or b < 2": 1,
                   "outside top 50% by text_quality": 1}  # an expression whole, brackets and all
    assert set(report.drop_reasons["shard"]) == {SHARD}
    md = report_markdown(report)
    assert "| low_text_quality | 3 |" in md and "=30.0" not in md


def test_before_and_after_figures_are_over_the_same_kept_pairs(tmp_path):
    """Dropped pairs (here short, low-quality captions) must not pull the 'original' figures down: before /
    after compare the kept pairs' captions, as the drift check does; all pairs are a separate column."""
    captions = ["a dog runs on the beach", "x", "", "two cats sleep on a sofa together", "no"]
    outcomes = ["kept", "dropped", "dropped", "rewritten", "dropped"]
    finals = ["a dog runs on the beach", None, None, "two cats sleep on a sofa", None]
    quality = [80.0, 5.0, 0.0, 60.0, 10.0]
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, captions=captions, outcomes=outcomes, finals=finals, quality=quality)

    report = build_report(wh)
    row = report.shards.set_index("shard").loc[SHARD]
    kept = [i for i, o in enumerate(outcomes) if o != "dropped"]
    drift = check_caption_length_drift(pd.Series([captions[i] for i in kept]), pd.Series([finals[i] for i in kept]))
    assert row["mean_words_original"] == pytest.approx(drift.mean_original) == pytest.approx((6 + 7) / 2)
    assert row["mean_words_final"] == pytest.approx(drift.mean_final) == pytest.approx((6 + 6) / 2)
    assert row["mean_chars_original"] == pytest.approx(np.mean([len(captions[i]) for i in kept]))
    assert row["mean_quality_before"] == pytest.approx(70.0) and row["mean_quality_final"] == pytest.approx(70.0)
    assert row["mean_words_all_pairs"] == pytest.approx((6 + 1 + 0 + 7 + 1) / 5)
    assert row["mean_quality_before_all_pairs"] == pytest.approx(np.mean(quality))

    lengths = report.lengths.set_index("stage")
    assert list(report.lengths["stage"]) == ["original", "final", "original_all_pairs"]
    assert lengths.loc["original", "n"] == lengths.loc["final", "n"] == 2
    assert lengths.loc["original", "mean_words"] == pytest.approx(6.5)
    assert lengths.loc["original_all_pairs", "n"] == 5


def test_decoded_counts_the_images_the_full_decode_read_not_the_headers(tmp_path):
    """``decoded`` is quality_scores' full decode: a truncated body whose header reads (pairs' default
    ``decode_status``) is not decoded. A shard read but not scored has no figure (NULL, blank in the UI), not
    its header count nor 0; a scored shard with no pairs decoded 0."""
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, "scored", decoded=["ok", "corrupt", "ok", "corrupt"], **FOUR)  # pairs: every header ok
    _fill(wh, "other", decoded=["ok", "ok", "missing", "ok"], **FOUR)
    _fill(wh, "unscored", **FOUR)
    for table in ("quality_scores", "caption_decisions", "final_captions"):
        wh.fs.rm_file(wh.table_path(table, "unscored"))
    _fill(wh, "empty", captions=[], outcomes=[])

    report = build_report(wh)
    rows = report.shards.set_index("shard")
    assert rows["decoded"].drop("unscored").to_dict() == {"empty": 0, "other": 3, "scored": 2}
    assert pd.isna(rows.loc["unscored", "decoded"])
    assert rows.loc["unscored", "pairs_read"] == 4 and rows.loc["unscored", "status"] == "undecided"
    assert overall_values(report)["decoded"] == 5  # the ok shards'
    unscored = next(line for line in report_markdown(report).splitlines() if line.startswith("| unscored |"))
    assert unscored.startswith("| unscored | undecided | 4 |  | 0 |"), unscored  # blank, not <NA> or 4


def test_a_profile_that_decodes_no_image_has_no_decoded_figure(tmp_path):
    """The text profile scores captions only: its quality_scores has no decode_status, so nothing was
    decoded (NULL, not 0, and the report builds); beside a shard that decoded, only that one counts."""
    wh = Warehouse(str(tmp_path / "wh"))
    keys = _fill(wh, "text", **FOUR)
    wh.write_table("quality_scores", "text", pd.DataFrame({"shard": "text", "key": keys,
                                                          "text_quality": np.linspace(10, 90, len(keys))}))
    only_text = build_report(wh)
    assert pd.isna(only_text.shards.set_index("shard").loc["text", "decoded"])
    assert pd.isna(overall_values(only_text)["decoded"])
    _fill(wh, "images", decoded=["ok", "corrupt", "ok", "ok"], **FOUR)
    both = build_report(wh).shards.set_index("shard")
    assert pd.isna(both.loc["text", "decoded"]) and both.loc["images", "decoded"] == 3


def test_length_figures_leave_out_captions_written_for_pairs_that_had_none(tmp_path):
    """As the drift check: a caption written for a captionless pair is not a length change."""
    captions = ["a dog runs on the beach", None, "two cats sleep on a sofa together", ""]
    outcomes = ["kept", "rewritten", "rewritten", "rewritten"]
    finals = ["a dog runs on the beach", "a red bird sits on a branch in the sun", "two cats sleep on a sofa",
              "a bowl of soup"]
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, captions=captions, outcomes=outcomes, finals=finals, quality=[80.0, 70.0, 60.0, 70.0])
    report = build_report(wh)
    row = report.shards.set_index("shard").loc[SHARD]
    assert row["mean_words_original"] == pytest.approx(6.5) and row["mean_words_final"] == pytest.approx(6.0)
    lengths = report.lengths.set_index("stage")
    assert lengths.loc["original", "n"] == lengths.loc["final", "n"] == 2
    assert lengths.loc["original_all_pairs", "n"] == 4


def test_no_caption_counts_the_pairs_without_a_word(tmp_path):
    """None, empty, whitespace, an ideographic space and controls Python counts as space (\\x0b, \\x1c, \\x85) are
    no caption, as the drift check and the rewriter count it; a caption of one character is one."""
    captions = ["a dog", None, "", " \t ", "\u3000", "\x0b\x1c\x85", "#"]
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, captions=captions, outcomes=["kept"] * len(captions))
    assert build_report(wh).shards.set_index("shard").loc[SHARD, "no_caption"] == 5


def test_rewriters_are_split_by_model_and_prompt(tmp_path):
    """Every VLM rewriter is named ``vlm``: two models (``rewriter_version``) or prompts are two rows."""
    wh = Warehouse(str(tmp_path / "wh"))
    attempts = pd.concat([_attempts("vlm", "1:org/vlm-A:beams=1", "p1", [True, True]),
                          _attempts("vlm", "1:org/vlm-B:beams=1", "p1", [False, False, False]),
                          _attempts("vlm", "1:org/vlm-B:beams=1", "p2", [True]),
                          _attempts("cleaner", "2", None, [True, False])], ignore_index=True)
    _fill(wh, attempts=attempts, **FOUR)

    report = build_report(wh)
    rows = report.rewriters[["rewriter", "rewriter_version", "prompt_hash", "attempts", "accepted"]]
    assert rows.astype(object).where(rows.notna(), None).values.tolist() == [
        ["cleaner", "2", None, 2, 1],
        ["vlm", "1:org/vlm-A:beams=1", "p1", 2, 2],
        ["vlm", "1:org/vlm-B:beams=1", "p1", 3, 0],
        ["vlm", "1:org/vlm-B:beams=1", "p2", 1, 1]]
    dist = report.rewrite_distributions
    after = dist[dist["measure"].eq("quality_after")].fillna({"prompt_hash": ""})
    assert after.groupby(["rewriter", "rewriter_version", "prompt_hash", "accepted"])["n"].sum().to_dict() == {
        ("cleaner", "2", "", False): 1, ("cleaner", "2", "", True): 1,
        ("vlm", "1:org/vlm-A:beams=1", "p1", True): 2, ("vlm", "1:org/vlm-B:beams=1", "p1", False): 3,
        ("vlm", "1:org/vlm-B:beams=1", "p2", True): 1}
    assert "| cleaner | 2 |  | text_quality | 2 | 1 |" in report_markdown(report)  # no prompt: blank, not "None"


def test_a_report_without_rewrites_has_the_rewriter_columns(tmp_path):
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, **FOUR)
    report = build_report(wh)
    assert report.rewriters.empty and list(report.rewriters.columns[:3]) == ["rewriter", "rewriter_version",
                                                                             "prompt_hash"]


@pytest.mark.parametrize("folder, decoy", [("run[1]", "run1"), ("a*b", "aXb"), ("q?x", "q1x"), ("b]r[x]", "b]rx")])
def test_glob_characters_in_the_warehouse_path_read_exactly_its_files(tmp_path, folder, decoy):
    """DuckDB globs every path given to read_parquet: ``run[1]`` would read ``run1``'s files (or none),
    ``a*b`` both folders. A ``?`` also broke writing the database (DuckDB took it for options)."""
    wh, other = Warehouse(str(tmp_path / folder / "wh")), Warehouse(str(tmp_path / decoy / "wh"))
    keys = _fill(wh, **FOUR)
    _fill(other, captions=["decoy"] * 3, outcomes=["dropped"] * 3)

    o = overall_values(build_report(wh))
    assert (o["pairs_read"], o["dropped"]) == (4, 1)
    assert (tmp_path / folder / "wh" / "quality.duckdb").is_file()
    assert not list((tmp_path / folder / "wh").rglob(".tmp-*"))
    with open_report(wh) as con:
        assert con.execute("SELECT count(*) FROM pairs").fetchone()[0] == 4
    assert caption_history(wh).final["key"].tolist() == keys


@pytest.fixture
def memory_fs():
    """fsspec's in-memory file system under a fresh top folder (DuckDB reads it through fsspec, as s3://)."""
    top = f"/report-{uuid.uuid4().hex}"
    yield f"memory://{top}"
    fsspec.filesystem("memory").rm(top, recursive=True)


def test_glob_characters_are_escaped_through_fsspec_too(memory_fs):
    """A remote warehouse is read through its fsspec file system, which globs the same way; lineage
    reads it through that file system as the report does."""
    wh, other = Warehouse(f"{memory_fs}/run[1]/wh"), Warehouse(f"{memory_fs}/run1/wh")
    keys = _fill(wh, **FOUR)
    _fill(other, captions=["decoy"] * 3, outcomes=["dropped"] * 3)

    assert overall_values(build_report(wh))["pairs_read"] == 4
    assert wh.fs.exists(wh.report_db_path)
    assert caption_history(wh).final["key"].tolist() == keys


@pytest.mark.parametrize("folder", ["run[1]", "a*b", "q?x", "b]r[x]", "[*]", "[[]", "plain"])
def test_an_escaped_path_is_read_back_as_the_one_file_it_names(folder):
    """On object storage the registered filesystem answers DuckDB's glob of an escaped path (the views') by
    looking up the file it names; a real pattern still goes to the store's glob."""
    path = f"s3://bucket/{folder}/pairs/shard-a.parquet"
    assert escaped_file(parquet_paths([path])[0]) == path
    assert escaped_file(f"s3://bucket/{glob.escape(folder)}/pairs/*.parquet") is None
    assert escaped_file("s3://bucket/run[1]/pairs/shard-a.parquet") is None  # run[1] unescaped: matches run1


def test_whole_rates_stay_floats(tmp_path):
    """All pairs dropped: keep_rate 0.0 and drop_rate 1.0 are floats (Dagster metadata keeps one type per
    key), counts are ints."""
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, captions=["a", "b"], outcomes=["dropped", "dropped"])
    o = overall_values(build_report(wh))
    assert [(o[k], type(o[k])) for k in ("keep_rate", "rewrite_rate", "drop_rate")] == [
        (0.0, float), (0.0, float), (1.0, float)]
    assert all(type(o[k]) is int for k in ("shards", "pairs_read", "kept", "dropped", "skipped_members"))
    with duckdb.connect(str(tmp_path / "wh" / "quality.duckdb"), read_only=True) as con:
        assert con.execute("SELECT drop_rate FROM overall").fetchone() == (1.0,)


def test_the_report_opens_from_object_storage_by_its_exact_name(memory_fs):
    """``open_report`` downloads the database by its exact name: ``fs.get`` globbed ``run[1]`` (found nothing, or
    the ``run1`` decoy's folder)."""
    wh, decoy = Warehouse(f"{memory_fs}/run[1]/wh"), Warehouse(f"{memory_fs}/run1/wh")
    _fill(wh, **FOUR)
    build_report(wh)
    with open_report(wh) as con:
        assert con.execute("SELECT pairs_read FROM overall").fetchone() == (4,)
    _fill(decoy, captions=["decoy"] * 3, outcomes=["dropped"] * 3)
    build_report(decoy)
    with open_report(wh) as con:
        assert con.execute("SELECT pairs_read FROM overall").fetchone() == (4,)
        assert con.execute("SELECT count(*) FROM pairs").fetchone() == (4,)


def test_a_rebuild_removes_the_old_reports_wal(tmp_path):
    """A read-write session on the report that dies before its checkpoint leaves ``quality.duckdb.wal``; the
    rebuilt database renamed under it would not open ("WAL does not match database file")."""
    import subprocess
    import sys

    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, **FOUR)
    report = build_report(wh)
    db = tmp_path / "wh" / "quality.duckdb"
    session = (f"import duckdb, os\ncon = duckdb.connect({str(db)!r}); con.execute(\"SET checkpoint_threshold='1TB'\")\n"
               "con.execute('CREATE TABLE my_notes AS SELECT 42 AS x'); con.execute('DELETE FROM shard_summary')\n"
               "os._exit(9)")
    subprocess.run([sys.executable, "-c", session], check=False)
    assert (tmp_path / "wh" / "quality.duckdb.wal").exists()

    build_report(wh)
    assert not (tmp_path / "wh" / "quality.duckdb.wal").exists()
    assert not list((tmp_path / "wh").rglob(".tmp-*"))
    with open_report(wh) as con:
        assert con.execute("SELECT count(*) FROM shard_summary").fetchone() == (1,)
    with duckdb.connect(str(db)) as con:  # read-write too
        assert con.execute("SELECT pairs_read FROM overall").fetchone() == (4,)
    # the hint opens it read-only: a read-write session is what leaves a WAL (and takes the lock)
    assert f"`duckdb -readonly {report.db_path}`" in report_markdown(report)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_removed_shard_leaves_the_other_shards_views_readable(tmp_path, request, where):
    """Each view names its files; one shard's files removed after the build failed every view for every shard.
    ``open_report`` re-points such views at the files left, and warns that the report is out of date."""
    from curation_pipeline.reporting.report import ReportOutOfDate

    wh = Warehouse(str(tmp_path / "wh") if where == "local" else f"{request.getfixturevalue('memory_fs')}/run[1]/wh")
    _fill(wh, **FOUR)
    _fill(wh, "shard-b", captions=["x", "y"], outcomes=["kept", "dropped"])
    build_report(wh)
    with warnings.catch_warnings(record=True) as caught:  # nothing removed: the stored views, no warning
        warnings.simplefilter("always")
        with open_report(wh) as con:
            assert con.execute("SELECT count(*) FROM pairs").fetchone() == (6,)
    assert not [w for w in caught if issubclass(w.category, ReportOutOfDate)]

    for table in ("pairs", "final_captions"):
        wh.fs.rm_file(wh.table_path(table, "shard-b"))
    with pytest.warns(ReportOutOfDate, match=r"2 file\(s\) .* gone \(pairs/shard-b, final_captions/shard-b\)"):
        with open_report(wh) as con:
            assert con.execute("SELECT shard, count(*) FROM pairs GROUP BY ALL").fetchall() == [(SHARD, 4)]
            assert con.execute("SELECT count(*) FROM final_captions").fetchone() == (4,)
            assert con.execute("SELECT count(*) FROM quality_scores").fetchone() == (6,)  # untouched: stored view
            assert con.execute("SELECT count(*) FROM shard_summary").fetchone() == (2,)  # as built


def test_quality_figures_are_labelled_and_grouped_by_their_quality_column(tmp_path):
    """Shards decided on different scores (a policy change between runs: text_quality 0-100, aitqe_overall 1-10)
    are never pooled: shard_summary names its column, the rewriter tables and the charts are per column."""
    from curation_pipeline.assets.reporting import quality_charts

    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, "shard-a", quality=[80.0, 40.0, 5.0, 90.0], attempts=_attempts("cleaner", "3", None, [True]), **FOUR)
    _fill(wh, "shard-b", quality=[8.0, 4.0, 1.0, 9.0],
          attempts=_attempts("cleaner", "3", None, [True]).assign(quality_before=4.0, quality_after=7.0), **FOUR)
    final = wh.read_table("final_captions", "shard-b")
    wh.write_table("final_captions", "shard-b", final.assign(quality_column="aitqe_overall"))
    publish(wh, "shard-b")

    report = build_report(wh)
    assert dict(zip(report.shards["shard"], report.shards["quality_column"])) == {
        "shard-a": "text_quality", "shard-b": "aitqe_overall"}
    rows = report.rewriters[["rewriter", "quality_column", "attempts", "mean_gain"]].values.tolist()
    assert rows == [["cleaner", "aitqe_overall", 1, 3.0], ["cleaner", "text_quality", 1, 30.0]]
    dist = report.rewrite_distributions
    gains = dist[dist["measure"].eq("quality_after")].set_index("quality_column")["mean"].to_dict()
    assert gains == {"aitqe_overall": 7.0, "text_quality": 70.0}
    assert sorted(report.quality.groupby("quality_column")["quality_before"].max().items()) == [
        ("aitqe_overall", 9.0), ("text_quality", 90.0)]
    charts = quality_charts(report.quality)
    assert len(charts) == 2 and "aitqe_overall before and after" in charts[0] and "text_quality" in charts[1]
    assert "| shard-b | ok |" in report_markdown(report) and "aitqe_overall" in report_markdown(report)


def test_an_attempts_own_quality_column_wins_over_its_shards(tmp_path):
    wh = Warehouse(str(tmp_path / "wh"))
    _fill(wh, attempts=_attempts("vlm", "1:m", "p", [True, False]).assign(quality_column="aitqe_overall"), **FOUR)
    assert build_report(wh).rewriters["quality_column"].tolist() == ["aitqe_overall"]


def test_lineage_prints_the_prompt_hash(tmp_path):
    """Two attempts by the same model under different prompts: each attempt line, and the accepted one's
    ``by:`` line, names its prompt; the cleaner (no prompt) prints none."""
    from curation_pipeline.reporting.lineage import format_history

    wh = Warehouse(str(tmp_path / "wh"))
    keys = _fill(wh, **FOUR)
    attempts = pd.concat([_attempts("vlm", "1:org/vlm-B:beams=1", "p-OLD", [False]),
                          _attempts("vlm", "1:org/vlm-B:beams=1", "p-NEW", [True]),
                          _attempts("cleaner", "3", None, [False])], ignore_index=True)
    wh.write_table("rewritten_captions", SHARD, attempts.assign(shard=SHARD, key=keys[1], attempt=[1, 2, 3]))
    final = wh.read_table("final_captions", SHARD)
    final.loc[1, ["rewriter", "rewriter_version"]] = ["vlm", "1:org/vlm-B:beams=1"]
    wh.write_table("final_captions", SHARD, final)

    text = format_history(caption_history(wh, key=keys[1]))
    lines = text.splitlines()
    assert "  by:       vlm 1:org/vlm-B:beams=1, prompt p-NEW" in lines
    assert [line.split("]")[0] for line in lines if line.startswith("  attempt")] == [
        "  attempt 1 [vlm 1:org/vlm-B:beams=1, prompt p-OLD, run run, 2024-01-01T00:00:00+00:00",
        "  attempt 2 [vlm 1:org/vlm-B:beams=1, prompt p-NEW, run run, 2024-01-01T00:00:00+00:00",
        "  attempt 3 [cleaner 3, run run, 2024-01-01T00:00:00+00:00"]


def test_an_attempt_without_a_candidate_has_no_length_after(tmp_path):
    """A rewriter that gave no candidate (a VLM's unreadable reply) left no caption: counting it as a
    0-word rewrite dragged the rejected attempts' words_after to 0."""
    wh = Warehouse(str(tmp_path / "wh"))
    attempts = _attempts("vlm", "1:org/vlm:beams=1", "p1", [False, False, False, True])
    attempts.loc[:1, ["candidate_caption", "quality_after", "edit_ratio", "length_ratio", "semantic_similarity"]] = None
    _fill(wh, attempts=attempts, **FOUR)
    dist = build_report(wh).rewrite_distributions.set_index(["accepted", "measure"])
    assert dist.loc[(False, "words_after"), ["n", "mean"]].tolist() == [1, 5.0]  # "a brown dog on grass"
    assert dist.loc[(False, "words_before"), "n"] == 3


def test_a_table_cell_with_a_line_break_or_pipe_stays_one_cell():
    """Failure texts (Dagster's have line breaks) reach the report's tables: a break ended the row."""
    from curation_pipeline.reporting.markdown import markdown_table

    table = markdown_table(["shard", "why"], [["s1", "step failed:\nfinal_captions: drift | kl"], ["s2", "ok"]])
    assert table.splitlines() == ["| shard | why |", "|---|---|",
                                  "| s1 | step failed: final_captions: drift \\| kl |", "| s2 | ok |"]
