"""The DuckDB quality report: views over the warehouse plus summary tables.

The database is rebuilt in a temporary file and renamed into place (uploaded with ``atomic_open`` on
object storage, where DuckDB reads the Parquet through the warehouse's own fsspec filesystem), so a
reader never meets a half-written report or a writer's lock, and shard partitions never contend with
it. A failed build removes its temp file (and ``.wal``) at once; those of dead builders go next time.
Word counts are the drift check's own (``validation.drift.caption_lengths``), registered with DuckDB
as ``word_count``. Shards whose last run failed are listed in ``shard_summary`` as ``failed``.

Before / after figures (``shard_summary``'s ``*_original`` / ``mean_quality_before`` against ``*_final``,
``caption_lengths``' ``original`` / ``final`` stages) are over the same pairs, the kept ones (the length
figures over the kept ones that had a caption), as the drift check compares them; ``*_all_pairs`` (and the
``original_all_pairs`` stage) cover every pair read. Quantiles are DuckDB's interpolated ones
(``quantile_cont``); the check's are numpy's ``nearest``.
Rewriters are reported per name, version (the model) and prompt hash: every VLM is named ``vlm``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from curation_pipeline.reporting.markdown import markdown_table
from curation_pipeline.storage.warehouse import TABLES, Warehouse, temp_name
from curation_pipeline.validation.lengths import caption_lengths
from curation_pipeline.values import plain

if TYPE_CHECKING:  # imported where it is used: `curate run --no-report` never loads DuckDB
    import duckdb

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SIGNAL_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_:]*)=")  # the policy's ``low_text_quality=62.0``


@dataclass
class Report:
    db_path: str
    overall: dict
    shards: pd.DataFrame
    drop_reasons: pd.DataFrame
    scores: pd.DataFrame
    lengths: pd.DataFrame
    rewriters: pd.DataFrame
    rewrite_distributions: pd.DataFrame
    quality: pd.DataFrame  # per pair: quality before / final and outcome, for the overall charts


def _word_counts(captions: pa.Array) -> pa.Array:
    """DuckDB's ``word_count(text)``: exactly the drift check's word count (NULL counts 0)."""
    return pa.array(caption_lengths(captions.to_pandas(), "words").astype("int64"), pa.int64())


def _split_top_level(text: str, sep: str) -> list[str]:
    """``text`` split on ``sep`` outside parentheses (a rewrite's verdict in parentheses has its own "; ")."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        if text[i] in "()":
            depth = max(0, depth + (1 if text[i] == "(" else -1))
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i = i + len(sep)
            continue
        i += 1
    return [*parts, text[start:]]


def reason_signals(reason: str | None) -> list[str]:
    """The signals a reason names, without the pair's own values, so pairs dropped for the same signal
    count together: ``low_text_quality=30.0 (rules); not_english`` is ``low_text_quality`` and
    ``not_english`` (the policy joins a caption's signals with "; "), ``caption still weak after rewriting
    (60.0 < 65)`` is ``caption still weak after rewriting``; ``duplicate:near_image``, ``fails: <expr>``
    stay whole."""
    signals = []
    for part in _split_top_level(reason or "", "; "):
        part = part.strip()
        named = SIGNAL_VALUE.match(part)
        if named:
            part = named[1]
        elif " (" in part:
            head = _split_top_level(part, " (")[0].rstrip()
            part = head if head and not head.endswith(":") else part  # ``fails: (a > 1)`` is its expression
        if part and part not in signals:
            signals.append(part)
    return signals or ["unknown"]


def register_word_count(con: duckdb.DuckDBPyConnection) -> None:
    import duckdb

    con.create_function("word_count", _word_counts, [duckdb.sqltype("VARCHAR")], duckdb.sqltype("BIGINT"),
                        type="arrow", null_handling="special", side_effects=False)
    con.create_function("reason_signals", reason_signals, [duckdb.sqltype("VARCHAR")],
                        duckdb.list_type(duckdb.sqltype("VARCHAR")), null_handling="special", side_effects=False)


@contextlib.contextmanager
def open_report(warehouse: Warehouse):
    """A read-only DuckDB connection to the warehouse's ``quality.duckdb``, local or on object
    storage (downloaded to a temp file, with the warehouse's filesystem registered so the views
    over ``s3://`` Parquet work too). Raises FileNotFoundError when there is no report."""
    path = warehouse.local_path(warehouse.report_db_path)
    if not (os.path.exists(path) if warehouse.is_local else warehouse.fs.exists(warehouse.report_db_path)):
        raise FileNotFoundError(f"no report at {path}")
    with tempfile.TemporaryDirectory(prefix="quality-report-") as folder:
        if not warehouse.is_local:
            path = os.path.join(folder, "quality.duckdb")
            warehouse.fs.get(warehouse.report_db_path, path)
        import duckdb

        with contextlib.closing(duckdb.connect(path, read_only=True)) as con:
            if not warehouse.is_local:
                con.register_filesystem(warehouse.fs)
            yield con


def parquet_paths(files: list[str]) -> list[str]:
    """Paths for DuckDB's ``read_parquet``, which globs every path it is given (a list too): ``*``, ``?``
    and ``[`` of the warehouse's own path escaped as ``[*]``, ``[?]``, ``[[]``, so each path reads exactly
    its file (``run[1]`` would otherwise match ``run1``, ``a?b`` any ``a_b``). Also through fsspec."""
    return [glob.escape(f) for f in files]


# Every read_parquet of warehouse files: no hive partitioning, or a ``name=value`` folder above the
# warehouse (``.../outcome=kept/wh``) silently replaces the table's own column ``name`` with ``value``.
PARQUET_OPTIONS = "union_by_name = true, hive_partitioning = false"


def _quote(name: str) -> str:
    if not IDENT.fullmatch(name):
        raise ValueError(f"refusing column name {name!r} in SQL")
    return f'"{name}"'


def _create_views(con: duckdb.DuckDBPyConnection, warehouse: Warehouse) -> list[str]:
    present = []
    for table in TABLES:
        if not warehouse.shards(table):
            continue
        # explicit file lists (shard keys are validated), never a glob that could meet a temp file
        files = ", ".join("'" + f.replace("'", "''") + "'" for f in parquet_paths(warehouse.table_files(table)))
        # each view has its table's name (one name per concept)
        con.execute(f"CREATE OR REPLACE VIEW {table} AS "
                    f"SELECT * FROM read_parquet([{files}], {PARQUET_OPTIONS})")
        present.append(table)
    return present


def _score_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The numeric scores the registered scorers declare, in the table's order."""
    from curation_pipeline.scoring.registry import score_columns

    declared = score_columns()
    return [name for name, *_ in con.execute("DESCRIBE quality_scores").fetchall()
            if name in declared and declared[name].numeric and IDENT.fullmatch(name)]


SHARD_SUMMARY = """
CREATE TABLE shard_summary AS
WITH p AS (
  SELECT shard, count(*) AS pairs_read,
         count(*) FILTER (WHERE decode_status = 'ok') AS decoded,
         count(*) FILTER (WHERE caption IS NULL) AS no_caption,
         count(*) FILTER (WHERE caption_problem IS NOT NULL) AS caption_problems
  FROM pairs GROUP BY shard),
f AS (  -- before / after over the same (kept) pairs; *_all_pairs over every pair
  SELECT shard,
         count(*) FILTER (WHERE outcome = 'kept') AS kept_as_is,
         count(*) FILTER (WHERE outcome = 'rewritten') AS rewritten,
         count(*) FILTER (WHERE outcome = 'dropped') AS dropped,
         avg(length(coalesce(original_caption, ''))) FILTER (WHERE kept_captioned) AS mean_chars_original,
         avg(length(final_caption)) FILTER (WHERE kept_captioned) AS mean_chars_final,
         avg(words_original) FILTER (WHERE kept_captioned) AS mean_words_original,
         avg(word_count(final_caption)) FILTER (WHERE kept_captioned) AS mean_words_final,
         avg(quality_before) FILTER (WHERE kept_pair) AS mean_quality_before,
         avg(quality_final) FILTER (WHERE kept_pair) AS mean_quality_final,
         avg(words_original) AS mean_words_all_pairs,
         avg(quality_before) AS mean_quality_before_all_pairs
  FROM (SELECT *, outcome <> 'dropped' AS kept_pair, word_count(original_caption) AS words_original,
               outcome <> 'dropped' AND word_count(original_caption) > 0 AS kept_captioned FROM final_captions)
  GROUP BY shard),
r AS (
  SELECT shard, count(*) AS rewrite_attempts, count(*) FILTER (WHERE accepted) AS rewrites_accepted
  FROM rewritten_captions GROUP BY shard),
s AS ({skips}),
d AS (SELECT shard, count(*) FILTER (WHERE nsfw_review) AS nsfw_review FROM caption_decisions GROUP BY shard)
SELECT shard_list.shard, coalesce(st.status, 'ok') AS status, st.error,
       coalesce(p.pairs_read, 0) AS pairs_read, coalesce(p.decoded, 0) AS decoded,
       coalesce(p.no_caption, 0) AS no_caption, coalesce(p.caption_problems, 0) AS caption_problems,
       coalesce(f.kept_as_is, 0) + coalesce(f.rewritten, 0) AS kept,
       coalesce(f.kept_as_is, 0) AS kept_as_is, coalesce(f.rewritten, 0) AS rewritten,
       coalesce(f.dropped, 0) AS dropped, coalesce(s.skipped, 0) AS skipped_members,
       coalesce(d.nsfw_review, 0) AS nsfw_review,
       coalesce(r.rewrite_attempts, 0) AS rewrite_attempts, coalesce(r.rewrites_accepted, 0) AS rewrites_accepted,
       f.mean_quality_before, f.mean_quality_final,
       f.mean_chars_original, f.mean_chars_final, f.mean_words_original, f.mean_words_final,
       f.mean_words_all_pairs, f.mean_quality_before_all_pairs
FROM shard_list LEFT JOIN p USING (shard) LEFT JOIN f USING (shard) LEFT JOIN r USING (shard)
     LEFT JOIN s USING (shard) LEFT JOIN d USING (shard) LEFT JOIN shard_status st USING (shard)
ORDER BY shard_list.shard
"""


def build_report(warehouse: Warehouse, failures: dict[str, str] | None = None) -> Report:
    """Rebuild ``quality.duckdb`` from whatever shards the warehouse holds.

    ``failures``: shard -> error of its last run; those shards are listed as failed (with
    whatever tables an earlier run left), so a failed shard is never silently missing."""
    if not warehouse.is_local or "?" in warehouse.report_db_path:
        # DuckDB reads a database path's "?" as the start of options (its WAL would go to ``a.wal?b/...``):
        # such a local warehouse gets its report built elsewhere and copied into place, as on object storage
        return _build_remote(warehouse, failures or {})
    final_path = warehouse.local_path(warehouse.report_db_path)
    os.makedirs(os.path.dirname(final_path), exist_ok=True)
    warehouse.remove_orphans(*warehouse.report_db_path.rsplit("/", 1), tail="*")  # with DuckDB's .wal
    tmp_path = os.path.join(os.path.dirname(final_path), temp_name(os.path.basename(final_path)))
    try:
        report = _build(warehouse, failures or {}, final_path, tmp_path)
        os.replace(tmp_path, final_path)
    except BaseException:
        for leftover in (tmp_path, f"{tmp_path}.wal"):
            with contextlib.suppress(OSError):
                os.remove(leftover)
        raise
    return report


def _build_remote(warehouse: Warehouse, failures: dict[str, str]) -> Report:
    """Object storage (s3://): DuckDB reads the Parquet tables straight from the bucket through the
    warehouse's own fsspec filesystem (registered with DuckDB: the same credentials, none in SQL or
    in the file), builds the database in a local temp file, and uploads it with ``atomic_open``
    (read back and verified, then one server-side copy: readers see the old report or the new).
    Also a local warehouse whose path DuckDB cannot open a database under (a ``?``): built in a temp
    folder, then copied beside the target and renamed into place."""
    with tempfile.TemporaryDirectory(prefix="quality-report-") as folder:
        local = os.path.join(folder, "quality.duckdb")
        report = _build(warehouse, failures, warehouse.local_path(warehouse.report_db_path), local)
        with open(local, "rb") as src, warehouse.atomic_open(warehouse.report_db_path) as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return report


def _build(warehouse: Warehouse, failures: dict[str, str], final_path: str, tmp_path: str) -> Report:
    import duckdb

    if "?" in tmp_path:
        raise ValueError(f"DuckDB cannot write a database under a path with '?' ({tmp_path}); "
                         "set TMPDIR to a folder without one")
    con = duckdb.connect(tmp_path)
    register_word_count(con)
    if not warehouse.is_local:
        con.register_filesystem(warehouse.fs)  # views read s3:// Parquet through fsspec (s3fs)
    try:
        views = _create_views(con, warehouse)
        for needed in ("pairs", "quality_scores", "caption_decisions", "final_captions"):
            if needed not in views:
                raise FileNotFoundError(
                    f"no {needed} tables under {warehouse.root}: materialize at least one shard before the report"
                )
        if "rewritten_captions" not in views:  # no rewrites yet: an empty stand-in, not stored with the report
            con.execute("""CREATE TEMP VIEW rewritten_captions AS SELECT NULL::VARCHAR AS shard,
                NULL::VARCHAR AS rewriter, NULL::VARCHAR AS rewriter_version, NULL::VARCHAR AS prompt_hash,
                NULL::BOOLEAN AS accepted, NULL::DOUBLE AS quality_before,
                NULL::DOUBLE AS quality_after, NULL::DOUBLE AS edit_ratio, NULL::DOUBLE AS length_ratio,
                NULL::DOUBLE AS semantic_similarity, NULL::VARCHAR AS original_caption,
                NULL::VARCHAR AS candidate_caption WHERE false""")
        skips = ("SELECT shard, count(*) AS skipped FROM skips GROUP BY shard" if "skips" in views
                 else "SELECT NULL::VARCHAR AS shard, 0 AS skipped WHERE false")
        # every shard with a pairs file, even one with no pairs (an empty or unreadable tar), and every failed one
        con.execute("CREATE TEMP TABLE shard_list (shard VARCHAR)")
        con.executemany("INSERT INTO shard_list VALUES (?)",
                        [[s] for s in sorted(set(warehouse.shards("pairs")) | set(failures))])
        con.execute("CREATE TEMP TABLE shard_status (shard VARCHAR, status VARCHAR, error VARCHAR)")
        if failures:
            con.executemany("INSERT INTO shard_status VALUES (?, 'failed', ?)",
                            [[s, str(e)[:2000]] for s, e in sorted(failures.items())])
        con.execute(SHARD_SUMMARY.format(skips=skips))
        # per signal, not per reason text (which carries the pair's score); a pair with several signals counts
        # under each
        con.execute("""
            CREATE TABLE drop_reasons AS
            WITH r AS (SELECT shard, reason, count(*) AS n FROM final_captions WHERE outcome = 'dropped' GROUP BY ALL)
            SELECT shard, signal AS reason, sum(n)::BIGINT AS pairs
            FROM (SELECT shard, unnest(reason_signals(reason)) AS signal, n FROM r)
            GROUP BY ALL ORDER BY shard, pairs DESC, reason""")
        parts = []
        for col in _score_columns(con):
            q = _quote(col)
            parts.append(f"""SELECT '{col}' AS score, shard, count({q}) AS n, avg({q}) AS mean, min({q}) AS min,
                quantile_cont({q}, 0.1) AS p10, quantile_cont({q}, 0.5) AS p50, quantile_cont({q}, 0.9) AS p90,
                max({q}) AS max FROM quality_scores GROUP BY shard""")
        con.execute("CREATE TABLE score_distribution AS " + (" UNION ALL ".join(parts) if parts else
                    "SELECT NULL::VARCHAR AS score, NULL::VARCHAR AS shard WHERE false") + " ORDER BY score, shard")
        con.execute("""
            CREATE TABLE caption_lengths AS
            WITH l AS (
              SELECT shard, unnest(CASE WHEN outcome <> 'dropped' AND word_count(original_caption) > 0
                                        THEN ['original', 'original_all_pairs'] ELSE ['original_all_pairs'] END) AS stage,
                     word_count(original_caption) AS words
              FROM final_captions
              UNION ALL
              SELECT shard, 'final', word_count(final_caption) FROM final_captions
              WHERE outcome <> 'dropped' AND word_count(original_caption) > 0)
            SELECT shard, stage, count(*) AS n, avg(words) AS mean_words, quantile_cont(words, 0.1) AS p10,
                   quantile_cont(words, 0.5) AS p50, quantile_cont(words, 0.9) AS p90, max(words) AS max_words
            FROM l GROUP BY shard, stage
            ORDER BY shard, list_position(['original', 'final', 'original_all_pairs'], stage)""")
        con.execute("""
            CREATE TABLE rewriter_summary AS
            SELECT rewriter, rewriter_version::VARCHAR AS rewriter_version, prompt_hash::VARCHAR AS prompt_hash,
                   count(*) AS attempts, count(*) FILTER (WHERE accepted) AS accepted,
                   avg(CASE WHEN accepted THEN 1.0 ELSE 0.0 END) AS acceptance_rate,
                   avg(quality_after - quality_before) FILTER (WHERE accepted) AS mean_gain,
                   avg(edit_ratio) FILTER (WHERE accepted) AS mean_edit_ratio,
                   avg(length_ratio) FILTER (WHERE accepted) AS mean_length_ratio,
                   avg(semantic_similarity) FILTER (WHERE accepted) AS mean_similarity
            FROM rewritten_captions GROUP BY ALL ORDER BY rewriter, rewriter_version, prompt_hash""")
        con.execute("""
            CREATE TABLE rewrite_distributions AS
            WITH m AS (
              UNPIVOT (SELECT rewriter, rewriter_version::VARCHAR AS rewriter_version,
                              prompt_hash::VARCHAR AS prompt_hash, accepted, quality_before, quality_after,
                              edit_ratio, length_ratio, semantic_similarity,
                              word_count(original_caption)::DOUBLE AS words_before,
                              word_count(candidate_caption)::DOUBLE AS words_after
                       FROM rewritten_captions)
              ON quality_before, quality_after, edit_ratio, length_ratio, semantic_similarity, words_before, words_after
              INTO NAME measure VALUE value)
            SELECT rewriter, rewriter_version, prompt_hash, accepted, measure, count(value) AS n, avg(value) AS mean,
                   quantile_cont(value, 0.1) AS p10, quantile_cont(value, 0.5) AS p50, quantile_cont(value, 0.9) AS p90
            FROM m WHERE isfinite(value) GROUP BY ALL
            ORDER BY rewriter, rewriter_version, prompt_hash, accepted DESC, measure""")
        con.execute("""
            CREATE TABLE overall AS
            SELECT count(*) AS shards, count(*) FILTER (WHERE status = 'failed') AS failed_shards,
                   sum(pairs_read)::BIGINT AS pairs_read, sum(decoded)::BIGINT AS decoded, sum(kept)::BIGINT AS kept,
                   sum(kept_as_is)::BIGINT AS kept_as_is, sum(rewritten)::BIGINT AS rewritten, sum(dropped)::BIGINT AS dropped,
                   sum(skipped_members)::BIGINT AS skipped_members, sum(nsfw_review)::BIGINT AS nsfw_review,
                   sum(caption_problems)::BIGINT AS caption_problems,
                   sum(kept)::DOUBLE / nullif(sum(pairs_read), 0) AS keep_rate,
                   sum(rewritten)::DOUBLE / nullif(sum(pairs_read), 0) AS rewrite_rate,
                   sum(dropped)::DOUBLE / nullif(sum(pairs_read), 0) AS drop_rate
            FROM shard_summary""")
        tables = {"shards": "shard_summary", "drop_reasons": "drop_reasons", "scores": "score_distribution",
                  "lengths": "caption_lengths", "rewriters": "rewriter_summary",
                  "rewrite_distributions": "rewrite_distributions"}
        overall = con.execute("SELECT * FROM overall")  # each value in its SQL type: a whole rate stays a float
        names = [column[0] for column in overall.description]
        report = Report(db_path=final_path, overall=dict(zip(names, overall.fetchone())),
                        quality=con.execute("SELECT outcome, quality_before, quality_final FROM final_captions").df(),
                        **{field: con.execute(f"SELECT * FROM {table}").df() for field, table in tables.items()})
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return report


def overall_values(report: Report) -> dict:
    """The overall row as plain Python values, typed as the SQL has them (counts BIGINT, rates DOUBLE): a
    rate is a float even when whole (0.0, 1.0), so Dagster plots one series per key, never Int then Float."""
    return {key: plain(value) for key, value in report.overall.items()}


def report_markdown(report: Report) -> str:
    """What the report asset shows in the UI and ``curate report`` prints."""
    o = overall_values(report)
    lines = [
        f"**{o['pairs_read']} pairs** in {o['shards']} shards: {o['kept_as_is']} kept as is, "
        f"{o['rewritten']} rewritten, {o['dropped']} dropped, {o['skipped_members']} members skipped.",
        "", "### Per shard", "", "Quality and words before / after: the kept pairs' original and final caption.",
        "", _md(report.shards[[
            "shard", "pairs_read", "decoded", "kept_as_is", "rewritten", "dropped", "skipped_members",
            "mean_quality_before", "mean_quality_final", "mean_words_original", "mean_words_final"]]),
        *(["", "### Failed shards", "", _md(report.shards.loc[report.shards["status"].eq("failed"), ["shard", "error"]])]
          if "status" in report.shards and report.shards["status"].eq("failed").any() else []),
        "", "### Drop reasons", "", "Pairs per signal; a pair dropped for several signals counts under each.", "",
        _md(report.drop_reasons.groupby("reason", as_index=False)["pairs"].sum().sort_values("pairs", ascending=False)),
        "", "### Rewriters", "", "Per rewriter, version (its model) and prompt hash.", "", _md(report.rewriters),
        "", "### Rewrites before / after (accepted)", "",
        _md(report.rewrite_distributions[report.rewrite_distributions["accepted"].fillna(False).astype(bool)]
            .drop(columns=["accepted"])),
        "", f"Query it: `duckdb {report.db_path}` then `SELECT * FROM shard_summary;`",
    ]
    return "\n".join(lines)


def _md(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_"
    shown = df.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        elif shown[col].dtype == object:  # e.g. the cleaner's prompt hash: blank, not "None"
            shown[col] = shown[col].map(lambda v: "" if pd.api.types.is_scalar(v) and pd.isna(v) else v)
    return markdown_table(shown.columns, shown.itertuples(index=False))
