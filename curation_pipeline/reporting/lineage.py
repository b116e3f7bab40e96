"""How a caption came to be: the decision, every rewrite attempt, the final caption.

Reads the warehouse's Parquet with an in-memory DuckDB connection, so it never waits on (or blocks)
the report's writer. Keys and shards are bound as parameters, never pasted into SQL. The files are read
as the report reads them (``PARQUET_OPTIONS``: no hive partitioning from ``name=value`` folders above
the warehouse; glob characters of its path escaped), through the warehouse's own filesystem.

A shard whose ``final_captions`` or ``rewritten_captions`` was made from another raw file than the one its
``pairs`` read now (the raw shard replaced, only ``pairs`` made again) is marked: its captions are not the
current file's (``CaptionHistory.stale``, and a ``STALE`` line under each of its pairs). So is a shard whose
``final_captions`` resolved other rewrite attempts than its stored ``rewritten_captions`` holds (that table
made again alone): its published captions did not come from the attempts it shows (``stale_rewrites``); and one
whose ``final_captions`` resolved the decisions of another run than its stored ``caption_decisions``
(``stale_decisions``): the ``decided:`` lines are not the decisions it was published under.
A shard with a table that failed a blocking check when it was made (``failed_blocking_checks`` in its Parquet
metadata, as the report reads it) is marked ``BLOCKED``: its final captions are shown, but none of them is
published by that run (no step reads a blocked table), only a curated tar of an earlier run may be. A shard
whose curated tar is missing or was not made from its current ``final_captions`` (``final_captions`` made again
without ``curated_shards``, a run killed while publishing) is marked ``UNPUBLISHED``, as the report marks it: what
is published there is not what these lines show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from curation_pipeline.reporting.report import (
    PARQUET_OPTIONS,
    parquet_paths,
    publication_problems,
    register_warehouse,
    reread_on_replaced,
    stale_decisions,
    stale_rewrites,
    stale_tables,
    table_provenance,
)
from curation_pipeline.shards.keys import validate_key
from curation_pipeline.storage.warehouse import TABLES, Warehouse


@dataclass
class CaptionHistory:
    final: pd.DataFrame  # one row per matching pair
    attempts: pd.DataFrame  # every rewrite attempt of those pairs, in order
    # shard -> why its captions are not the current raw file's, for the shards of ``final`` that are stale
    stale: dict[str, str] = field(default_factory=dict)
    stale_marks: dict[str, str] = field(default_factory=dict)  # shard -> the STALE line under each of its pairs
    # shard -> which table failed which blocking check(s), and what of the shard is published, for blocked shards
    blocked: dict[str, str] = field(default_factory=dict)
    # shard -> why its published tar is not made from these final captions (``report.publication_problems``)
    unpublished: dict[str, str] = field(default_factory=dict)
    matched: int = 0  # pairs matching key/shard, rewritten or not: with ``rewritten_only``, none rewritten is no error


def caption_history(warehouse: Warehouse, key: str | None = None, shard: str | None = None,
                    rewritten_only: bool = False) -> CaptionHistory:
    """Pairs matching ``key`` and/or ``shard`` with their lineage; both None means all."""
    if shard is not None:
        validate_key(shard)
    return reread_on_replaced(warehouse, lambda seen: _history(warehouse, key, shard, rewritten_only, seen),
                              "the lineage look-up")


def _history(warehouse: Warehouse, key: str | None, shard: str | None, rewritten_only: bool,
             seen: list) -> CaptionHistory:
    listed = {table: warehouse.shard_files(table) for table in TABLES}
    # a shard asked for: its files alone (another shard's damaged file is no reason to fail, nor to read it all)
    files = {table: {s: warehouse.local_path(warehouse.table_path(table, s)) for s in listed[table]
                     if shard is None or s == shard} for table in TABLES}
    final_files = parquet_paths(list(files["final_captions"].values()))
    attempt_files = parquet_paths(list(files["rewritten_captions"].values()))
    if not final_files:
        why = unresolved(warehouse, shard) if shard is not None else None
        if why or not listed["final_captions"]:
            raise FileNotFoundError(why or f"no final_captions under {warehouse.root}: run the pipeline first")
        return CaptionHistory(final=pd.DataFrame(), attempts=pd.DataFrame())  # a shard the warehouse does not hold
    where = "($key IS NULL OR key = $key) AND ($shard IS NULL OR shard = $shard)"
    params = {"key": key, "shard": shard}
    import duckdb  # here, not at import: a run that never looks up lineage never pays for it

    con = duckdb.connect()
    # s3:// through the warehouse's fsspec filesystem, as the report
    fs = register_warehouse(con, warehouse, as_listed=True)
    if fs is not None:  # and the files' details from these listings, not a request each per query
        fs.remember(info for infos in listed.values() for info in infos.values())
        seen.append(fs)
    try:
        final = con.execute(
            f"""SELECT f.shard, f.key, f.outcome, f.reason, f.original_caption, f.final_caption, f.rewriter,
                       f.rewriter_version, f.quality_column, f.quality_before, f.quality_final, f.action
                FROM read_parquet($final, {PARQUET_OPTIONS}) f
                WHERE {where} {"AND rewritten" if rewritten_only else ""} ORDER BY shard, key""",
            {**params, "final": final_files}).df()
        final = final.merge(_decided(con, parquet_paths(list(files["caption_decisions"].values())), where, params),
                            on=["shard", "key"], how="left")
        matched = len(final) if not rewritten_only else con.execute(
            f"SELECT count(*) FROM read_parquet($final, {PARQUET_OPTIONS}) WHERE {where}",
            {**params, "final": final_files}).fetchone()[0]
        if not attempt_files:
            attempts = pd.DataFrame()
        else:
            attempts = con.execute(
                f"""SELECT shard, key, attempt, rewriter, rewriter_version, prompt_hash, original_caption,
                           candidate_caption, quality_before, quality_after, edit_ratio, length_ratio,
                           semantic_similarity, accepted, reason, run_id, created_at
                    FROM read_parquet($attempts, {PARQUET_OPTIONS})
                    WHERE {where} ORDER BY shard, key, attempt""",
                {**params, "attempts": attempt_files}).df()
            if rewritten_only:
                attempts = attempts.merge(final[["shard", "key"]], on=["shard", "key"])
        shown = set(final["shard"])  # the raw file each of their tables came from, from the files' metadata
        provenance = table_provenance(con, {t: {s: f for s, f in by_shard.items() if s in shown}
                                            for t, by_shard in files.items()})
        # what each shown shard keeps in all (not only the pairs shown): what its published tar must hold
        kept = dict(con.execute(
            f"""SELECT shard, count(*) FILTER (WHERE outcome <> 'dropped') FROM read_parquet($final, {PARQUET_OPTIONS})
                WHERE list_contains($shown, shard) GROUP BY shard""",
            {"final": final_files, "shown": sorted(shown)}).fetchall()) if shown else {}
    finally:
        con.close()
    stale, marks = {}, {}
    for s in sorted(shown):
        tables, why = stale_tables(provenance, s)
        if {"final_captions", "rewritten_captions"} & set(tables):
            stale[s], marks[s] = why, RAW_MARK
        elif why := stale_rewrites(provenance, s):
            stale[s], marks[s] = why, REWRITES_MARK
        elif why := stale_decisions(provenance, s):
            stale[s], marks[s] = why, DECISIONS_MARK
    blocked = _blocked(provenance, sorted(shown), warehouse)  # says itself what of the shard is published
    unpublished, _ = publication_problems(warehouse, {s: int(kept.get(s, 0)) for s in shown if s not in blocked})
    return CaptionHistory(final=final, attempts=attempts, stale=stale, stale_marks=marks, blocked=blocked,
                          unpublished=unpublished, matched=int(matched))


def unresolved(warehouse: Warehouse, shard: str) -> str | None:
    """Why a shard with no final_captions is not shown, where it has earlier tables: its run stopped before
    resolving it (the tables it has, so its attempts are not taken for lost), else None."""
    if shard in warehouse.shards("final_captions"):
        return None
    made = [table for table in TABLES if table != "final_captions" and shard in warehouse.shards(table)]
    if not made:
        return None
    return (f"shard {shard!r} has {', '.join(made)} but no final_captions yet (its run stopped before resolving "
            f"it): run `curate run --shard {shard}`, or materialize final_captions for it, then look again")


UNDECIDED_LOOKED_UP = 50  # at most this many undecided shards' keys read for a key not found (a request each on S3)


def undecided_shard(warehouse: Warehouse, key: str) -> str | None:
    """The shard without final_captions whose pairs hold ``key``, if any: a key looked up alone and not found
    may be a pair its run has not resolved yet, which ``unresolved`` then says (only those shards' keys are read,
    and none where more than ``UNDECIDED_LOOKED_UP`` are undecided: a large first run in progress)."""
    undecided = sorted(set(warehouse.shards("pairs")) - set(warehouse.shards("final_captions")))
    for shard in undecided if len(undecided) <= UNDECIDED_LOOKED_UP else ():
        try:
            if warehouse.read_table("pairs", shard, columns=["key"], keep=False)["key"].eq(key).any():
                return shard
        except FileNotFoundError:  # removed since the listing
            continue
    return None


def _decided(con, files: list[str], where: str, params: dict) -> pd.DataFrame:
    """shard, key, decided_because (the decision's reason: why a pair was sent to the rewriter, which the final
    reason of a rejected rewrite does not repeat) and dup_of (the kept copy a duplicate was dropped for)."""
    columns = ["shard", "key", "decided_because", "dup_of"]
    if not files:
        return pd.DataFrame(columns=columns)
    stored = set(con.execute(f"DESCRIBE SELECT * FROM read_parquet($files, {PARQUET_OPTIONS})",
                             {"files": files}).df()["column_name"])
    dup_of = "dup_of" if "dup_of" in stored else "NULL"  # a profile without duplicate signals has none
    return con.execute(f"""SELECT shard, key, reason AS decided_because, {dup_of} AS dup_of
                           FROM read_parquet($files, {PARQUET_OPTIONS}) WHERE {where}""",
                       {**params, "files": files}).df()[columns]


def _blocked(provenance: dict[str, dict[str, dict[str, str]]], shards: list[str], warehouse: Warehouse
             ) -> dict[str, str]:
    """shard -> a sentence naming its tables that failed a blocking check when made, and the checks, in the
    report's words (``shard_statuses``): nothing of the shard is published, or a curated tar of an earlier
    run still is, which a blocked table does not withdraw."""
    failed = {}
    for shard in shards:
        tables = [(t, checks) for t in TABLES if (checks := provenance.get(t, {}).get(shard, {}).get("failed"))]
        if tables:
            failed[shard] = "; ".join(f"{t} failed its blocking check(s) {checks.replace(',', ', ')}"
                                      for t, checks in tables)
    published = warehouse.curated_shards() if failed else set()
    return {shard: f"{which} when it was made: " + (
        f"not published, but curated/{shard}.tar of an earlier run still is (re-run the shard, or delete that tar "
        "to withdraw it)" if shard in published else "nothing of it is published") for shard, which in failed.items()}


RAW_MARK = "made from another raw file than the shard's pairs read now (see above)"
REWRITES_MARK = "final caption made from earlier rewrite attempts than those below (see above)"
DECISIONS_MARK = "final caption resolved earlier decisions than the one shown (see above)"
BLOCKED_MARK = "not published: the shard failed a blocking check (see above)"
UNPUBLISHED_MARK = "the published tar was not made from this final caption (see above)"


def format_history(history: CaptionHistory, limit: int = 50) -> str:
    """Readable text for the CLI: per pair, the final outcome (and the decision's reason where the outcome's
    does not hold it, and the kept copy of a duplicate), then each attempt."""
    if history.final.empty:
        return "no matching pairs"
    lines = [f"BLOCKED shard {shard}: {why}" for shard, why in history.blocked.items()]
    lines += [f"UNPUBLISHED shard {shard}: {why}" for shard, why in history.unpublished.items()]
    lines += [f"STALE shard {shard}: {why}" for shard, why in history.stale.items()]
    grouped = {k: g for k, g in history.attempts.groupby(["shard", "key"])} if len(history.attempts) else {}
    for row in history.final.head(limit).itertuples(index=False):
        attempts = grouped.get((row.shard, row.key), pd.DataFrame())
        lines.append(f"{row.shard}/{row.key}: {row.outcome.upper()} — {row.reason}")
        if row.shard in history.blocked:
            lines.append(f"  BLOCKED:  {BLOCKED_MARK}")
        if row.shard in history.unpublished:
            lines.append(f"  UNPUBLISHED: {UNPUBLISHED_MARK}")
        if row.shard in history.stale:
            lines.append(f"  STALE:    {history.stale_marks.get(row.shard, RAW_MARK)}")
        decided = getattr(row, "decided_because", None)
        if isinstance(decided, str) and decided not in str(row.reason):
            lines.append(f"  decided:  {row.action} ({decided})")
        dup_of = getattr(row, "dup_of", None)
        if isinstance(dup_of, str) and dup_of:
            lines.append(f"  duplicate of: {dup_of}")
        if not pd.isna(row.quality_before):  # the score the decision read, and the published caption's
            final = f" -> {_score(row.quality_final)}" if row.outcome == "rewritten" else ""
            lines.append(f"  score:    {row.quality_column} {_score(row.quality_before)}{final}")
        lines.append(f"  original: {row.original_caption!r}")
        lines.append(f"  final:    {row.final_caption!r}" if isinstance(row.final_caption, str)
                     else f"  final:    none ({row.outcome})")
        if row.rewriter:
            accepted = [a for a in attempts.itertuples(index=False) if a.accepted and a.rewriter == row.rewriter]
            prompt = _prompt(accepted[-1].prompt_hash) if accepted else ""
            lines.append(f"  by:       {row.rewriter} {row.rewriter_version}{prompt}")
        for a in attempts.itertuples(index=False):
            mark = "accepted" if a.accepted else "rejected"
            candidate = repr(a.candidate_caption) if isinstance(a.candidate_caption, str) else "no candidate"
            lines.append(f"  attempt {a.attempt} [{a.rewriter} {a.rewriter_version}{_prompt(a.prompt_hash)}, "
                         f"run {str(a.run_id)[:8]}, {a.created_at}] {mark}: {candidate} "
                         f"(score {_score(a.quality_before)} -> {_score(a.quality_after)}{_minimality(a)}; {a.reason})")
    if len(history.final) > limit:
        lines.append(f"... {len(history.final) - limit} more pairs (use --limit)")
    return "\n".join(lines)


def _score(value) -> str:
    """A score as the attempt line shows it: an unknown one (not scored, NaN) says so."""
    return "unknown" if value is None or pd.isna(value) else f"{value:.3g}"


# Lineage column -> its word on an attempt line; a measure that was not taken (NaN, or a table made before the
# column existed) is left out.
MINIMALITY_SHOWN = {"edit_ratio": "edit", "length_ratio": "length", "semantic_similarity": "similarity"}


def _minimality(attempt) -> str:
    """``, edit 0.28, length 1.10, similarity 0.91`` for an attempt: how close the candidate stayed to the
    original (``rewriting.verify.MINIMALITY_COLUMNS``), the measures it has."""
    shown = [f"{word} {value:.2f}" for column, word in MINIMALITY_SHOWN.items()
             if (value := getattr(attempt, column, None)) is not None and not pd.isna(value)]
    return "".join(", " + part for part in shown)


def _prompt(prompt_hash) -> str:
    """``, prompt <hash>`` for an attempt that had a prompt (a VLM's), '' for one that had none (the cleaner)."""
    return "" if prompt_hash is None or pd.isna(prompt_hash) or prompt_hash == "" else f", prompt {prompt_hash}"


LINEAGE_PREVIEW = ["key", "accepted", "original_caption", "candidate_caption", "attempted_because", "reason",
                   "quality_before", "quality_after", "edit_ratio", "semantic_similarity", "rewriter",
                   "rewriter_version", "prompt_hash", "run"]  # rewriter_version names the model (a VLM's id)


def lineage_preview(lineage: pd.DataFrame, decisions: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The rows the UI shows: why each caption was attempted (the decision's reason), the verdict,
    and a short run id (the full one is in the table)."""
    if not len(lineage):
        return pd.DataFrame(columns=LINEAGE_PREVIEW)
    why = decisions.set_index("key")["reason"]
    shown = lineage.sort_values("accepted", ascending=False, kind="stable").head(rows).copy()
    shown["attempted_because"] = shown["key"].map(why)
    shown["run"] = shown["run_id"].astype(str).str[:8]
    return shown[LINEAGE_PREVIEW]
