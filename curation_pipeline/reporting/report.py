"""The DuckDB quality report: views over the warehouse plus summary tables.

The database is rebuilt in a temporary file and renamed into place (uploaded with ``atomic_open`` on
object storage, where DuckDB reads the Parquet through the warehouse's own fsspec filesystem), so a
reader never meets a half-written report or a writer's lock, and shard partitions never contend with
it. A failed build removes its temp file (and ``.wal``) at once; those of dead builders go next time.
Word counts are the drift check's own (``validation.drift.caption_lengths``), registered with DuckDB
as ``word_count``.

Every shard with a table is listed in ``shard_summary`` with a ``status`` and, unless ``ok``, a
``status_detail`` saying why: ``failed`` (its last run failed or was canceled; ``error``), ``stale`` (a
table was made from another raw file than the one its ``pairs`` read now: the raw shard was replaced
and only part of the shard made again; or ``final_captions`` resolved other rewrite attempts than the
stored ``rewritten_captions`` holds, that table made again alone: ``stale_rewrites``; or other decisions than the
stored ``caption_decisions``: ``stale_decisions``), ``blocked`` (a
table failed a blocking check when it was made: not published, though a curated tar of an earlier run
stays, and is named), ``incomplete`` (a table missing, e.g. no ``pairs``), ``undecided`` (scored,
or only read, but no ``final_captions`` yet) or ``unsettled`` (decided against an older duplicate index
or keep_fraction cut than the pool's: shards run one by one, as a backfill does, until the settle sensor
or ``curate run`` re-selects them; see ``unsettled_shards``); ``unpublished`` (its final_captions keeps pairs but
no curated tar is there, or the tar there was made from another final_captions, as the record in its first
block says, or records none: a run killed while publishing, or another run's tar renamed over it;
``publication_problems``) comes before ``unsettled``. An ``ok`` shard has a detail too when it is
frozen (no raw file or no registered partition) where the stored keep_fraction cut would change it: it
publishes its tar as decided, outside the cut, and counts (``frozen_outside_cut``). The raw file is
compared as the IO manager compares it: by the SHA-256 each table records in its Parquet metadata (a table without one is taken as current).
Figures pooled over shards (``overall``, ``rewriter_summary``, ``rewrite_distributions``, the charts'
``quality``) count the ``ok`` shards only, and ``overall`` says how many shards were left out and why;
the per-shard tables (``shard_summary``, ``drop_reasons``, ``score_distribution``, ``caption_lengths``)
list every shard, to be read with its status. Quality figures are in the score the shard was decided
on (``policy.quality_column``, which a policy change can change between shards): ``shard_summary``
names it, and the rewriter tables are grouped by it, never pooling two scales.

The views name each table's shard files (an explicit list, never a glob). On object storage DuckDB reads
them through the warehouse's own filesystem (``register_warehouse``), which looks each named file up rather
than globbing for it. ``report_files`` records them, each with the version it had when the build listed it
(``file_identity``: size, modification time, inode or ETag, from one listing per table); ``open_report``
warns (``ReportOutOfDate``) when a file was written again, removed or added since, naming them and how to
rebuild, and re-points a view whose files were removed at the ones left.

Before / after figures (``shard_summary``'s ``*_original`` / ``mean_quality_before`` against ``*_final``,
``caption_lengths``' ``original`` / ``final`` stages) are over the same pairs, the kept ones (the length
figures over the kept ones that had a caption), as the drift check compares them; ``*_all_pairs`` (and the
``original_all_pairs`` stage) cover every pair read. ``decoded`` counts the images that decoded in full, as
``quality_scores`` decoded them (``pairs.decode_status`` is, by default, from the image header alone, which a
truncated body passes): NULL for a shard not scored yet, or for a pool whose quality_scores carry no
``decode_status`` (tables of an older version; every profile decodes each image now, ``text`` included).
``no_caption`` counts pairs whose caption has no word (none, or only whitespace), as ``word_count`` counts.
Quantiles are DuckDB's interpolated ones (``quantile_cont``); the check's are numpy's ``nearest``.
Rewriters are reported per name, version (the model) and prompt hash: every VLM is named ``vlm``.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import inspect
import os
import re
import shlex
import shutil
import tarfile
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, TypeVar

import pandas as pd
import pyarrow as pa
from fsspec.implementations.dirfs import DirFileSystem

from curation_pipeline.decisions.cut_store import cut_staleness, frozen_outside_cut
from curation_pipeline.decisions.dedup import (DECIDED_BY_KEY, DIGEST_KEY, OTHER_RULES, READ_THREADS, file_identity,
                                               held_identity, pool_identity, read_index, read_manifest,
                                               stale_reasons)
from curation_pipeline.decisions.outcome import ATTEMPT_RUNS_KEY, DECISIONS_RUN_KEY, attempt_runs
from curation_pipeline.decisions.policy import EXPRESSION_FAILED
from curation_pipeline.reporting.markdown import markdown_table
from curation_pipeline.shards.writer import FINAL_CAPTIONS_KEY, RAW_KEY, ROWS_DIGEST_KEY, read_curated_record
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY, FINGERPRINT_KEY, RAW_SHA_KEY, raw_sha
from curation_pipeline.storage.warehouse import TABLES, Warehouse, temp_folder, temp_name
from curation_pipeline.validation.lengths import caption_lengths
from curation_pipeline.values import plain

if TYPE_CHECKING:  # imported where it is used: `curate run --no-report` never loads DuckDB
    import duckdb

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SIGNAL_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_:]*)=")  # the policy's ``low_text_quality=62.0``

# tables a shard needs before it is reported as ok (rewritten_captions and skips may be absent)
REQUIRED_TABLES = ("pairs", "quality_scores", "caption_decisions", "final_captions")
# the statuses other than ok, first first
LEFT_OUT = ("failed", "stale", "blocked", "incomplete", "undecided", "unpublished", "unsettled")
REBUILD_HINT = ("`curate report --warehouse {warehouse} --rebuild` (no shard runs), or materialize quality_report (in "
                "the UI, or `dagster asset materialize -m curation_pipeline.definitions --select quality_report`)")
SETTLE_HINT = ("settle the pool: turn on dedup_settle_sensor (Automation), or materialize dedup_index (and "
               "selection_cut, with keep_fraction on) then backfill the reselect_shards job for these shards; "
               "curate run settles too")
# a shard decided under another policy than the stored dedup_index's: a plain re-selection (the code location's
# policy) would not settle it
RULES_HINT = ("re-select them under the policy dedup_index was built with: turn on dedup_settle_sensor (it runs "
              "reselect_shards with that policy as run config), or backfill reselect_shards with it; or, to keep "
              "theirs, materialize dedup_index with their policy (the pool then settles under it)")


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
    quality: pd.DataFrame  # per pair of the ok shards: quality column, before / final and outcome, for the charts


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
        elif " (" in part and not part.startswith(EXPRESSION_FAILED):  # ``fails: a and (b or c)``: all expression
            part = _split_top_level(part, " (")[0].rstrip() or part
        if part and part not in signals:
            signals.append(part)
    return signals or ["unknown"]


def register_word_count(con: duckdb.DuckDBPyConnection) -> None:
    import duckdb

    con.create_function("word_count", _word_counts, [duckdb.sqltype("VARCHAR")], duckdb.sqltype("BIGINT"),
                        type="arrow", null_handling="special", side_effects=False)
    con.create_function("reason_signals", reason_signals, [duckdb.sqltype("VARCHAR")],
                        duckdb.list_type(duckdb.sqltype("VARCHAR")), null_handling="special", side_effects=False)


class ReportOutOfDate(UserWarning):
    """Table files the report was built from were written again, removed or added since: rebuild the report."""


@contextlib.contextmanager
def open_report(warehouse: Warehouse):
    """A read-only DuckDB connection to the warehouse's ``quality.duckdb``, local or on object
    storage (downloaded to a temp file, with the warehouse's filesystem registered so the views
    over ``s3://`` Parquet work too). Raises FileNotFoundError when there is no report.

    A table file written again (a partition re-materialized), removed or added since the build makes the
    summary tables disagree with the warehouse: a ``ReportOutOfDate`` warning names them. A view one of whose
    files was removed (a shard withdrawn) would fail for every shard: it is shadowed, in this connection
    only, by one over the files of the build that are left."""
    path = warehouse.local_path(warehouse.report_db_path)
    if not (os.path.exists(path) if warehouse.is_local else warehouse.fs.exists(warehouse.report_db_path)):
        raise FileNotFoundError(f"no report at {path}")
    with tempfile.TemporaryDirectory(prefix="quality-report-") as folder:
        if not warehouse.is_local:
            path = os.path.join(folder, "quality.duckdb")
            # one file, by its exact name: ``get`` would glob a ``[``, ``*`` or ``?`` in the warehouse's path
            warehouse.fs.get_file(warehouse.report_db_path, path)
        import duckdb

        with contextlib.closing(duckdb.connect(path, read_only=True)) as con:
            register_warehouse(con, warehouse)
            _repoint_views(con, warehouse)
            yield con


def _repoint_views(con: duckdb.DuckDBPyConnection, warehouse: Warehouse) -> None:
    """Warn about table files changed since the build; temp views, over the files left, for the stored
    views whose files were removed."""
    import duckdb

    try:
        stored = con.execute("SELECT * FROM report_files").df()
    except duckdb.CatalogException:  # a report built before report_files: its views stay as they are
        return
    versioned = "version" in stored.columns  # a report built before versions were recorded: removals only
    built: dict[str, dict[str, tuple[str, str | None]]] = {}
    for row in stored.itertuples(index=False):
        built.setdefault(row.table_name, {})[row.shard] = (row.path, row.version if versioned else None)
    gone, changed, added = [], [], []
    for table in TABLES:
        files = built.get(table, {})
        now = {shard: file_identity(info) for shard, info in warehouse.shard_files(table).items()}
        changed += [f"{table}/{s}" for s, (_, version) in sorted(files.items())
                    if versioned and s in now and now[s] != version]
        added += [f"{table}/{s}" for s in sorted(set(now) - set(files))] if versioned else []
        missing = sorted(set(files) - set(now))
        if not missing:
            continue
        gone += [f"{table}/{shard}" for shard in missing]
        left = [files[shard][0] for shard in sorted(files) if shard in now]
        if left:  # else the stored view stays, and fails naming the missing file
            con.execute(f"CREATE TEMP VIEW {_quote(table)} AS SELECT * FROM read_parquet("
                        f"{_path_list(left)}, {PARQUET_OPTIONS})")
    if CURATED in built:  # the curated tars the statuses read (a report built before recorded none)
        tars = {shard: version for shard, (_, version) in built[CURATED].items()}
        now = {shard: file_identity(info) for shard, info in warehouse.curated_files().items()}
        gone += [f"curated/{s}.tar" for s in sorted(set(tars) - set(now))]
        if versioned:
            changed += [f"curated/{s}.tar" for s in sorted(tars) if s in now and now[s] != tars[s]]
            added += [f"curated/{s}.tar" for s in sorted(set(now) - set(tars))]
    parts = [f"{len(files)} file(s) {what} ({_shown(files)})" for what, files in (
        ("it was built from are gone", gone), ("it was built from were written again since", changed),
        ("were added since", added)) if files]
    if parts:
        warnings.warn(ReportOutOfDate(
            f"the report at {warehouse.local_path(warehouse.report_db_path)} is out of date: {'; '.join(parts)}. "
            "Its summary tables (shard_summary, overall, ...) still show the figures of the build, its views the "
            "files there now (less those gone, without those added). Rebuild it: "
            f"{REBUILD_HINT.format(warehouse=shlex.quote(warehouse.root))}."), stacklevel=4)


def _shown(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def parquet_paths(files: list[str]) -> list[str]:
    """Paths for DuckDB's ``read_parquet``, which globs every path it is given (a list too): ``*``, ``?``
    and ``[`` of the warehouse's own path escaped as ``[*]``, ``[?]``, ``[[]``, so each path reads exactly
    its file (``run[1]`` would otherwise match ``run1``, ``a?b`` any ``a_b``). On object storage the
    registered filesystem (``register_warehouse``) reads such a path back as the one file it names."""
    return [glob.escape(f) for f in files]


ESCAPED_CHAR = re.compile(r"\[([*?[])\]")  # how glob.escape writes a ``*``, ``?`` or ``[``


def escaped_file(pattern: str) -> str | None:
    """The file a ``glob.escape``d path names (``s3://b/wh[[]1]/x`` -> ``s3://b/wh[1]/x``), or None when
    ``pattern`` is a real glob (a ``*``, ``?`` or ``[`` outside an escape)."""
    if any(c in ESCAPED_CHAR.sub("", pattern) for c in "*?["):
        return None
    return ESCAPED_CHAR.sub(r"\1", pattern)


class ExactFileSystem(DirFileSystem):
    """The warehouse's object-store filesystem as DuckDB sees it: every call passes straight through, except
    ``glob`` of an escaped file path (what ``parquet_paths`` writes), answered by looking that one file up.
    DuckDB globs every path it reads, and fsspec's glob lists everything from the first ``[`` or ``?`` up
    (under ``s3://bucket/wh[1]/``: the whole bucket, per file) and, where the store's nested listings are
    incomplete, finds nothing; a lookup reads exactly the file named, never a temp file beside it.

    The files of a listing handed to ``remember`` are answered from it (glob, info, size, modification
    time, and the details a read is opened with): DuckDB asks for them at every query that reads a file, which
    on S3 was four requests a file a query (about 190 a shard for the report). Those files are then read as
    listed: on s3fs one replaced since fails its read (``FileExpired``), never read as a mix of versions, and
    the build or look-up reads anew from a fresh listing (``reread_on_replaced``)."""

    def __init__(self, fs):
        super().__init__(path="/", fs=fs)  # no prefix in fact: _join / _relpath pass every path through
        self.protocol = fs.protocol  # DuckDB routes a path to the filesystem registered for its protocol
        self.listed: dict[str, dict] = {}  # path as the store names it -> its details, from a listing
        self._opens_sized = "size" in inspect.signature(fs._open).parameters  # s3fs: no request to learn it

    def remember(self, infos) -> None:
        self.listed.update((self.fs._strip_protocol(info["name"]), info) for info in infos)

    def _known(self, path) -> dict | None:
        return self.listed.get(self.fs._strip_protocol(path)) if self.listed else None

    def _join(self, path):
        return path

    def _relpath(self, path):
        return path

    def glob(self, path, **kwargs):
        file = escaped_file(path)
        if file is None or kwargs:  # a real pattern (a query of the user's): the store's own glob
            return self.fs.glob(path, **kwargs)
        name = self.fs._strip_protocol(file)
        return [name] if name in self.listed or self.fs.isfile(file) else []

    def info(self, path, **kwargs):
        known = self._known(path)
        return dict(known) if known is not None and not kwargs else super().info(path, **kwargs)

    def size(self, path):
        known = self._known(path)
        return known["size"] if known is not None and known.get("size") is not None else super().size(path)

    def modified(self, path):
        known = self._known(path)
        if known is not None and isinstance(known.get("LastModified"), datetime.datetime):  # s3fs's own answer
            return known["LastModified"]
        return super().modified(path)

    def open(self, path, mode="rb", *args, **kwargs):
        known = self._known(path) if "r" in mode and self._opens_sized and "size" not in kwargs else None
        if known is None or known.get("size") is None:
            return super().open(path, mode, *args, **kwargs)
        handle = super().open(path, mode, *args, size=known["size"], **kwargs)
        handle.details = known  # what s3fs would ask for with a request of its own before the first read
        if known.get("ETag") and isinstance(getattr(handle, "read_kw", None), dict):
            # as s3fs does with what it asked for: a file replaced since the listing fails (FileExpired)
            handle.read_kw = {**handle.read_kw, "IfMatch": known["ETag"]}
        return handle


def register_warehouse(con: duckdb.DuckDBPyConnection, warehouse: Warehouse,
                       as_listed: bool = False) -> ExactFileSystem | None:
    """Let ``con`` read the warehouse's files: on object storage through its own fsspec filesystem (no httpfs,
    the warehouse's credentials), as an ``ExactFileSystem`` (returned: a build hands it its listings); local
    files DuckDB reads itself.

    ``as_listed``: the caller reads only files of the listings it hands the filesystem, each read held to its
    listed version, so what DuckDB's file cache keeps of a file is that version too: its bytes serve every
    later query of ``con`` without asking the store again. DuckDB checks them against the file's time otherwise,
    and never trusts a file written in the last few seconds: a build just after a run read each of the run's
    files once per query (25 GETs a shard's final_captions)."""
    if warehouse.is_local:
        return None
    fs = ExactFileSystem(warehouse.fs)
    con.register_filesystem(fs)
    if as_listed:
        con.execute("SET validate_external_file_cache = 'NO_VALIDATION'")
    return fs


T = TypeVar("T")
REREADS = 2  # times a build or look-up starts again when a file it listed was replaced while it read


def replaced_since(warehouse: Warehouse, fs: ExactFileSystem | None) -> list[str]:
    """The table files ``fs`` answered for from a listing that are not that version now (written again by a shard
    run, or removed): a read held to its listing fails on them, and a fresh listing reads them as they are."""
    if fs is None or not fs.listed:
        return []
    now = {fs.fs._strip_protocol(info["name"]): info for table in TABLES
           for info in warehouse.shard_files(table).values()}
    return sorted(name for name, info in fs.listed.items()
                  if name not in now or file_identity(now[name]) != file_identity(info))


def reread_on_replaced(warehouse: Warehouse, read: Callable[[list], T], what: str) -> T:
    """``read(seen)`` (which appends the filesystem it registers to ``seen``), again, with fresh listings, where it
    failed on a file replaced since its listing (up to ``REREADS`` times): a report built while shard runs write
    reads each file as listed, never a mix of versions, and is not lost to a run that wrote in the meantime."""
    attempt = 0
    while True:
        seen: list = []
        try:
            return read(seen)
        except Exception as exc:
            replaced = replaced_since(warehouse, seen[0] if seen else None)
            if not replaced:
                raise
            if attempt == REREADS:
                raise RuntimeError(f"{what}: files were written again while it read them, {REREADS + 1} times "
                                   f"(last: {_shown(replaced)}): try again once the runs writing them are done"
                                   ) from exc
            warnings.warn(f"{what}: {_shown(replaced)} written again while it read them: reading anew", stacklevel=2)
            attempt += 1


# Every read_parquet of warehouse files: no hive partitioning, or a ``name=value`` folder above the
# warehouse (``.../outcome=kept/wh``) silently replaces the table's own column ``name`` with ``value``.
PARQUET_OPTIONS = "union_by_name = true, hive_partitioning = false"


def _quote(name: str) -> str:
    if not IDENT.fullmatch(name):
        raise ValueError(f"refusing column name {name!r} in SQL")
    return f'"{name}"'


def _path_list(files: list[str]) -> str:
    """A SQL list literal of ``files`` for ``read_parquet``, glob characters escaped (``parquet_paths``)."""
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in parquet_paths(files)) + "]"


def _create_views(con: duckdb.DuckDBPyConnection, warehouse: Warehouse,
                  fs: ExactFileSystem | None = None) -> dict[str, dict[str, str]]:
    """A view per table over its shard files; returns table -> shard -> file, for the tables present.
    ``report_files`` records each file with its version as listed before any is read (a file written again
    during the build reads as changed: a warning too many, never one too few). ``fs`` (object storage)
    answers for the files from these listings."""
    present, versions = {}, {}
    for table in TABLES:
        listed = warehouse.shard_files(table)
        if fs is not None:
            fs.remember(listed.values())
        files = {shard: warehouse.local_path(warehouse.table_path(table, shard)) for shard in listed}
        if not files:
            continue
        versions[table] = {shard: file_identity(info) for shard, info in listed.items()}
        # explicit file lists (shard keys are validated), never a glob that could meet a temp file; each
        # view has its table's name (one name per concept)
        con.execute(f"CREATE OR REPLACE VIEW {table} AS "
                    f"SELECT * FROM read_parquet({_path_list(list(files.values()))}, {PARQUET_OPTIONS})")
        present[table] = files
    con.execute("CREATE TABLE report_files (table_name VARCHAR, shard VARCHAR, path VARCHAR, version VARCHAR)")
    rows = [[table, shard, file, versions[table][shard]] for table, files in present.items()
            for shard, file in files.items()]
    # and the curated tars, whose presence and record each shard's status reads (unpublished)
    rows += [[CURATED, shard, warehouse.local_path(warehouse.curated_path(shard)), file_identity(info)]
             for shard, info in warehouse.curated_files().items()]
    if rows:
        con.executemany("INSERT INTO report_files VALUES (?, ?, ?, ?)", rows)
    return present


def table_provenance(con: duckdb.DuckDBPyConnection, files: dict[str, dict[str, str]]
                     ) -> dict[str, dict[str, dict[str, str]]]:
    """table -> shard -> what its file records (raw sha256 ``raw``, failed blocking checks ``failed``; for
    final_captions ``attempt_runs``, the rewrite attempts' runs it resolved, and ``decisions_run``, the run of the
    decisions it resolved; for caption_decisions ``decisions_run``, the run that made them; None when
    unrecorded), from the
    files' Parquet footers, one DuckDB query per table (through the warehouse's file system); for
    rewritten_captions ``attempt_runs`` is that of its rows (one more query, of the run_id column)."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    keys = [FINGERPRINT_KEY, RAW_SHA_KEY, FAILED_CHECKS_KEY, ATTEMPT_RUNS_KEY, DECIDED_BY_KEY, DECISIONS_RUN_KEY]
    for table, by_shard in files.items():
        shard_of = {os.path.basename(f)[: -len(".parquet")]: s for s, f in by_shard.items()}
        meta: dict[str, dict[str, str]] = {s: {} for s in by_shard}
        if by_shard:
            rows = con.execute(
                "SELECT file_name, decode(key), decode(value) FROM parquet_kv_metadata($files) "
                "WHERE decode(key) IN (SELECT unnest($keys))",
                {"files": parquet_paths(list(by_shard.values())), "keys": keys}).fetchall()
            for file, key, value in rows:
                shard = shard_of.get(file.rsplit("/", 1)[-1][: -len(".parquet")])
                if shard is not None:
                    meta[shard][key] = value
        run_key = DECIDED_BY_KEY if table == "caption_decisions" else DECISIONS_RUN_KEY
        out[table] = {s: {"raw": raw_sha(m), "failed": m.get(FAILED_CHECKS_KEY) or "",
                          "attempt_runs": m.get(ATTEMPT_RUNS_KEY), "decisions_run": m.get(run_key)}
                      for s, m in meta.items()}
    if files.get("rewritten_captions"):
        import duckdb

        by_shard = files["rewritten_captions"]
        shard_of = {os.path.basename(f)[: -len(".parquet")]: s for s, f in by_shard.items()}
        runs: dict[str, list[str]] = {s: [] for s in by_shard}
        try:
            rows = con.execute(f"SELECT DISTINCT filename, run_id::VARCHAR FROM read_parquet($files, "
                               f"{PARQUET_OPTIONS}, filename = true)",
                               {"files": parquet_paths(list(by_shard.values()))}).fetchall()
        except duckdb.BinderException:  # no file has a run_id column (not written by the pipeline): unrecorded
            rows = None
        if rows is not None:
            for file, run in rows:
                shard = shard_of.get(file.rsplit("/", 1)[-1][: -len(".parquet")])
                if shard is not None:
                    runs[shard].append(run)
            for shard, made_by in runs.items():
                out["rewritten_captions"][shard]["attempt_runs"] = attempt_runs(made_by)
    return out


def stale_tables(provenance: dict[str, dict[str, dict[str, str]]], shard: str) -> tuple[list[str], str]:
    """The shard's tables made from another raw file than the one its ``pairs`` read now (each as the IO
    manager compares them: an unrecorded sha is taken as current), and a sentence saying so ('' if none)."""
    now = provenance.get("pairs", {}).get(shard, {}).get("raw")
    if not now:
        return [], ""
    stale = [t for t in TABLES if t != "pairs" and provenance.get(t, {}).get(shard, {}).get("raw") not in (None, now)]
    if not stale:
        return [], ""
    return stale, (f"{', '.join(stale)} from another raw file than its pairs (sha256 {now[:16]}): the raw shard "
                   f"was replaced and only part of the shard made again; materialize it from {stale[0]} on")


def stale_rewrites(provenance: dict[str, dict[str, dict[str, str]]], shard: str) -> str:
    """A sentence ('' if none) when the shard's final_captions resolved other rewrite attempts than its stored
    rewritten_captions holds (that table made again alone: a launchpad run, a new rewriter or policy), so the
    attempts its lineage shows are not those the published captions came from. Unrecorded (older tables) is taken
    as current."""
    read = provenance.get("final_captions", {}).get(shard, {}).get("attempt_runs")
    stored = provenance.get("rewritten_captions", {}).get(shard, {}).get("attempt_runs")
    if read is None or stored is None or read == stored:
        return ""
    return (f"final_captions (and any curated tar made from it) were made from an earlier rewritten_captions "
            f"({_runs(read)}) than the stored one ({_runs(stored)}): rewritten_captions was made again without "
            "them, so the attempts it shows are not those the published captions came from (a deterministic "
            "rewriter may have proposed the same captions again: runs are compared, not text); materialize "
            "final_captions and curated_shards of this shard")


def stale_decisions(provenance: dict[str, dict[str, dict[str, str]]], shard: str) -> str:
    """A sentence ('' if none) when the shard's final_captions resolved the decisions of another run than its
    stored caption_decisions (those made again alone, or a run that failed after deciding), so the decisions
    lineage shows are not those the published captions came from. Unrecorded (older tables) is taken as current."""
    read = provenance.get("final_captions", {}).get(shard, {}).get("decisions_run")
    stored = provenance.get("caption_decisions", {}).get(shard, {}).get("decisions_run")
    if not read or not stored or read == stored:
        return ""
    return (f"final_captions (and any curated tar made from it) resolved the decisions of run {read[:8]}, but the "
            f"stored caption_decisions are run {stored[:8]}'s: the shard was decided again without them, so its "
            "decisions are not those the published captions came from (runs are compared, not decisions); "
            "materialize rewritten_captions, final_captions and curated_shards of this shard")


def _runs(stamp: str) -> str:
    """``run <id8>[, <id8>...]`` for an ``attempt_runs`` record, ``no attempts`` for an empty one."""
    return f"run {', '.join(r[:8] for r in stamp.split(','))}" if stamp else "no attempts"


def unsettled_shards(warehouse: Warehouse) -> dict[str, str]:
    """shard -> why its stored decisions are not those of the pool as it is now, as the settle sensor
    (``settle_requests``) finds them: decided against older duplicate rows than the index over the current
    pool has for it (``stale_shards``), or with another keep_fraction cut than the stored one
    (``cut_staleness``: with keep_fraction turned off since, a cut at all). Each shard's
    ``caption_decisions`` dedups against the pool as it stood when it
    ran, so shards run one by one (a UI backfill, a ``dagster asset materialize`` loop) publish a cross-shard
    duplicate twice until they are re-selected. The index is the ``dedup_index`` asset's, else the one the
    last decision computed (its cache), whichever covers the scored pool and its blocked shards as they are now;
    when neither does (scores written since the last decision, a shard that failed a blocking check since, as
    the sensor compares them), every shard decided with duplicate rows is named, as which of
    them change is known only once the index is rebuilt. A shard decided under another policy than the one
    the stored index records is named as such, with how to settle it (``RULES_HINT``); the code location's
    policy is not known here, so a decision that records no policy (made before decisions did) is not."""
    identity = pool_identity(warehouse)
    manifests = {cache: m for cache in (False, True) if (m := read_manifest(warehouse, cache=cache)) is not None}
    # a shard that failed a blocking check since (or was mended) is another pool: its pairs published or not
    blocked = held_identity(warehouse, ())[1] if manifests else {}
    covering = [cache for cache, m in manifests.items() if m["identity"] == identity and m["blocked"] == blocked]
    current = read_index(warehouse, cache=covering[0]) if covering else None  # None too while it is being written
    out: dict[str, list[str]] = {}
    other_rules: set[str] = set()
    if current is not None:
        for shard, stale in stale_reasons(warehouse, current).items():
            if stale.why == OTHER_RULES:
                other_rules.add(shard)
                out.setdefault(shard, []).append(
                    f"decided under another policy than the one dedup_index was built with (index of "
                    f"{current.computed_at or 'unknown time'}): it may publish otherwise than the pool is settled "
                    f"under")
            else:
                out.setdefault(shard, []).append(
                    f"decided against an older duplicate index (the pool grew or changed since; index of "
                    f"{current.computed_at or 'unknown time'}): a cross-shard duplicate may be published twice, "
                    "or withheld as a copy of a pair no longer in the pool")
    elif not covering and manifests and len(identity) > 1:
        newer = sorted(s for s, version in identity.items()
                       if all(m["identity"].get(s) != version for m in manifests.values()))
        moved = sorted(s for s in {*blocked, *(s for m in manifests.values() for s in m["blocked"])}
                       if all(m["blocked"].get(s) != blocked.get(s) for m in manifests.values()))
        since = (f"quality_scores written since: {_shown(newer, 5)}" if newer else
                 f"a blocking check failed, or passed again, since on: {_shown(moved, 5)}" if moved else
                 "quality_scores removed since")
        for shard in warehouse.shards("caption_decisions"):
            try:
                used = warehouse.table_metadata("caption_decisions", shard).get(DIGEST_KEY)
            except FileNotFoundError:  # removed since the listing
                continue
            if used is not None:
                out.setdefault(shard, []).append(
                    f"no duplicate index covers the pool as it is now ({since}): a cross-shard "
                    "duplicate may be published twice, or withheld as a copy of a pair no longer in the pool")
    for shard, why in cut_staleness(warehouse).items():
        out.setdefault(shard, []).append(why)
    return {shard: f"{'; '.join(why)}. To {SETTLE_HINT}" if shard not in other_rules
            else f"{'; '.join(why)}. To settle: {RULES_HINT}" for shard, why in sorted(out.items())}


RERUN_HINT = "run the shard again (curate run --shard, or materialize its assets)"
CURATED = "curated"  # report_files' name for the curated tars (table_name), beside the tables
UNVERIFIED = "unverified"  # _publication_problem of a tar and table both made before tars recorded their table


def publication_problems(warehouse: Warehouse, kept: dict[str, int]) -> tuple[dict[str, str], dict[str, str]]:
    """Two maps of shard -> why, for the shards with a final_captions (``kept``: shard -> the pairs it keeps).
    First the unpublished: its curated tar is not known to be its current final_captions: no tar though it
    keeps pairs, a tar made from another final_captions (the run its first block records,
    ``read_curated_record``, against the one the table's metadata names), one recording none while the table
    records its run (made since tars record it: a killed run's), or one that does not read. Then the
    unverified: a tar and a table both made before either recorded it (a warehouse of before), counted (they
    may well match) with a note, not held against the shard. Only each tar's first blocks and each table's
    footer are read, ``READ_THREADS`` shards at a time (on object storage each read is a round trip)."""
    files = warehouse.curated_files()
    shards = sorted(kept)
    with ThreadPoolExecutor(READ_THREADS) as reads:
        found = list(reads.map(lambda s: _publication_problem(warehouse, s, kept[s], s in files), shards))
    unpublished = {shard: why for shard, why in zip(shards, found) if why and why != UNVERIFIED}
    unverified = {shard: (f"curated/{shard}.tar and its final_captions were made before curated tars recorded the "
                          f"final_captions they were made from: not checked against each other ({RERUN_HINT} to "
                          "check them)") for shard, why in zip(shards, found) if why == UNVERIFIED}
    return unpublished, unverified


def _joined(*notes: dict[str, str]) -> dict[str, str]:
    """Shard -> its notes of every map, ``; ``-joined."""
    out: dict[str, str] = {}
    for part in notes:
        for shard, note in part.items():
            out[shard] = f"{out[shard]}; {note}" if shard in out else note
    return out


def _publication_problem(warehouse: Warehouse, shard: str, keeps: int, listed: bool) -> str | None:
    where = f"curated/{shard}.tar"
    missing = f"no {where}, though final_captions keeps {keeps} pairs"
    if not listed:
        return (f"{missing} (a run was killed while publishing, or curated_shards has not run since): "
                f"{RERUN_HINT}") if keeps else None
    try:
        with warehouse.fs.open(warehouse.curated_path(shard), "rb", block_size=1 << 16) as handle:
            found = read_curated_record(handle)
    except FileNotFoundError:  # removed since the listing
        return f"{missing}: {RERUN_HINT}" if keeps else None
    except (tarfile.TarError, OSError, EOFError) as exc:
        return f"{where} does not read ({type(exc).__name__}: {exc}): {RERUN_HINT}"
    recorded = found.record.get(FINAL_CAPTIONS_KEY)
    if recorded is None and found.empty:  # an empty tar holds exactly what a table that keeps no pair keeps
        return f"{where} is empty, though final_captions keeps {keeps} pairs: {RERUN_HINT}" if keeps else None
    try:  # the table's footer only: the digest it recorded of its rows, and the raw file it came from
        meta = warehouse.table_metadata("final_captions", shard)
    except FileNotFoundError:  # removed since the listing: the shard is reported without it
        return None
    current, images, made_from = meta.get(ROWS_DIGEST_KEY), found.record.get(RAW_KEY), raw_sha(meta)
    if recorded is None and current is None:  # both made before either recorded it (a warehouse of before)
        return UNVERIFIED
    if recorded is None:
        return (f"{where} records no final_captions, but the current one was made since they do (a run was killed "
                f"while publishing): {RERUN_HINT}")
    if current != recorded:
        return (f"{where} was not made from the current final_captions (a run was killed while publishing, or "
                f"another run replaced it): {RERUN_HINT}")
    if images and made_from and images != made_from:  # the same rows from a re-encoded download
        return (f"{where} holds the images of another raw file (sha256 {images[:16]}) than its final_captions was "
                f"made from ({made_from[:16]}): the raw shard was replaced and its tar not made again: {RERUN_HINT}")
    return None


def _failed_on(failure: str, marks: dict[str, str]) -> bool:
    """Whether a run's failure is the blocking check its table records (``marks``: table -> its failed checks):
    one event, reported once, as blocked (the status that says what to do), not failed too."""
    return "DagsterAssetCheckFailedError" in failure and any(
        f"{table}: {check}" in failure for table, checks in marks.items() for check in checks.split(","))


def shard_statuses(provenance: dict[str, dict[str, dict[str, str]]], failures: dict[str, str],
                   unsettled: dict[str, str] | None = None, published: set[str] | frozenset = frozenset(),
                   notes: dict[str, str] | None = None,
                   unpublished: dict[str, str] | None = None) -> dict[str, tuple[str, str | None]]:
    """shard -> (status, why not ok) for every shard with a table or a failed run; the status is the first
    of failed (a run's failure on the blocking check a table records is blocked alone), stale, blocked,
    incomplete, undecided, unpublished (``unpublished``: shard -> why, from
    ``publication_problems``), unsettled (``unsettled``: shard -> why) that applies (the detail names them
    all), else ok. ``published``: the shards with a curated tar (a blocked shard's may be an earlier run's,
    which a blocked table does not withdraw, and its detail says so: not unpublished too). ``notes``: shard
    -> what else is true of it (a frozen shard outside the keep_fraction cut, ``frozen_outside_cut``), in
    its detail even when ok: it publishes its tar, so it counts."""
    shards = sorted({s for files in provenance.values() for s in files} | set(failures))
    out = {}
    for shard in shards:
        problems: list[tuple[str, str]] = []
        marks = {table: failed for table in TABLES
                 if (failed := provenance.get(table, {}).get(shard, {}).get("failed"))}
        if shard in failures and not _failed_on(str(failures[shard]), marks):
            problems.append(("failed", f"last run: {str(failures[shard])[:500]}"))
        _, stale = stale_tables(provenance, shard)
        stale = stale or stale_rewrites(provenance, shard) or stale_decisions(provenance, shard)
        if stale:
            problems.append(("stale", stale))
        for table, failed in marks.items():
            problems.append(("blocked", f"{table} failed its blocking check(s) {failed.replace(',', ', ')} when "
                                        "it was made: " + (
                                            f"not published, but curated/{shard}.tar of an earlier run still "
                                            "is (re-run the shard, or delete that tar to withdraw it)"
                                            if shard in published else "nothing of it is published")))
        missing = [t for t in REQUIRED_TABLES if shard not in provenance.get(t, {})]
        if "pairs" in missing or (missing and "final_captions" not in missing):
            problems.append(("incomplete", f"no {', '.join(missing)}"))
        elif missing:
            problems.append(("undecided", f"not decided yet: no {', '.join(missing)}"))
        if shard in (unpublished or {}) and not any(status == "blocked" for status, _ in problems):
            problems.append(("unpublished", unpublished[shard]))
        if shard in (unsettled or {}):
            problems.append(("unsettled", unsettled[shard]))
        if shard in (notes or {}):
            problems.append(("ok", notes[shard]))
        out[shard] = (problems[0][0], "; ".join(text for _, text in problems)) if problems else ("ok", None)
    return out


def _has_column(con: duckdb.DuckDBPyConnection, view: str, column: str) -> bool:
    return column in [name for name, *_ in con.execute(f"DESCRIBE {_quote(view)}").fetchall()]


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
         -- no word (none, only whitespace or controls), as the drift check and the rewriter count it
         count(*) FILTER (WHERE word_count(caption) = 0) AS no_caption,
         count(*) FILTER (WHERE caption_problem IS NOT NULL) AS caption_problems
  FROM pairs GROUP BY shard),
-- images decoded in full: quality_scores' decode, not pairs' (by default from the image header, which a
-- truncated body passes); NULL for a shard with no quality_scores file (nothing decoded yet) or whose profile
-- decodes no image (no decode_status); 0 for an empty scores file
sc AS (
  SELECT shard, CASE WHEN n.shard IS NULL THEN 0 ELSE n.decoded END AS decoded
  FROM (SELECT DISTINCT shard FROM report_files WHERE table_name = 'quality_scores') LEFT JOIN (
    SELECT shard, {decoded} AS decoded FROM quality_scores GROUP BY shard
  ) n USING (shard)),
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
SELECT st.shard, st.status, st.status_detail, st.error,
       coalesce(p.pairs_read, 0) AS pairs_read, sc.decoded,
       coalesce(p.no_caption, 0) AS no_caption, coalesce(p.caption_problems, 0) AS caption_problems,
       coalesce(f.kept_as_is, 0) + coalesce(f.rewritten, 0) AS kept,
       coalesce(f.kept_as_is, 0) AS kept_as_is, coalesce(f.rewritten, 0) AS rewritten,
       coalesce(f.dropped, 0) AS dropped, coalesce(s.skipped, 0) AS skipped_members,
       coalesce(d.nsfw_review, 0) AS nsfw_review,
       coalesce(r.rewrite_attempts, 0) AS rewrite_attempts, coalesce(r.rewrites_accepted, 0) AS rewrites_accepted,
       q.quality_column, f.mean_quality_before, f.mean_quality_final,
       f.mean_chars_original, f.mean_chars_final, f.mean_words_original, f.mean_words_final,
       f.mean_words_all_pairs, f.mean_quality_before_all_pairs
FROM shard_status st LEFT JOIN p USING (shard) LEFT JOIN f USING (shard) LEFT JOIN r USING (shard)
     LEFT JOIN s USING (shard) LEFT JOIN d USING (shard) LEFT JOIN shard_quality q USING (shard)
     LEFT JOIN sc USING (shard)
ORDER BY st.shard
"""


def build_report(warehouse: Warehouse, failures: dict[str, str] | None = None) -> Report:
    """Rebuild ``quality.duckdb`` from whatever shards the warehouse holds.

    ``failures``: shard -> error of its last run; those shards are listed as failed (with
    whatever tables an earlier run left), so a failed shard is never silently missing."""
    if warehouse.is_local:
        os.makedirs(os.path.dirname(warehouse.local_path(warehouse.report_db_path)), exist_ok=True)
        # dead builders' temp databases, with DuckDB's .wal and the old report's .wal moved aside
        warehouse.remove_orphans(*warehouse.report_db_path.rsplit("/", 1), tail="*")
    if not warehouse.is_local or "?" in warehouse.report_db_path:
        # DuckDB reads a database path's "?" as the start of options (its WAL would go to ``a.wal?b/...``):
        # such a local warehouse gets its report built elsewhere and copied into place, as on object storage
        return _build_remote(warehouse, failures or {})
    final_path = warehouse.local_path(warehouse.report_db_path)
    temps = temp_folder(os.path.dirname(final_path))  # where remove_orphans looks
    os.makedirs(temps, exist_ok=True)
    tmp_path = os.path.join(temps, temp_name(os.path.basename(final_path)))
    try:
        report = _build(warehouse, failures or {}, final_path, tmp_path)
        with _replacing_database(final_path):
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
        final_path = warehouse.local_path(warehouse.report_db_path)

        def build(seen: list) -> Report:
            for leftover in (local, f"{local}.wal"):  # a failed build's database: each build starts afresh
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)
            return _build(warehouse, failures, final_path, local, seen)

        report = reread_on_replaced(warehouse, build, "the report's build")
        with (_replacing_database(final_path) if warehouse.is_local else contextlib.nullcontext()), \
                open(local, "rb") as src, warehouse.atomic_open(warehouse.report_db_path) as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return report


@contextlib.contextmanager
def _replacing_database(final_path: str):
    """Around the rename of a new database over ``final_path``: the old one's ``.wal`` (what a read-write
    session left in it without a checkpoint, e.g. one killed) belongs to the old file, and DuckDB would refuse
    to open the new one under it ("WAL does not match database file"). It is moved aside (a temp name of
    this writer, which the next build removes if this one dies) before the rename, back if the rename
    fails, and removed after it."""
    wal = f"{final_path}.wal"
    aside = os.path.join(temp_folder(os.path.dirname(final_path)), temp_name(os.path.basename(final_path)) + ".wal")
    try:
        os.replace(wal, aside)
    except FileNotFoundError:
        aside = None
    try:
        yield
    except BaseException:
        if aside and not os.path.exists(wal):  # the old database stays, and so does its WAL
            with contextlib.suppress(OSError):
                os.replace(aside, wal)
        raise
    if aside:
        with contextlib.suppress(FileNotFoundError):
            os.remove(aside)


def _build(warehouse: Warehouse, failures: dict[str, str], final_path: str, tmp_path: str,
           seen: list | None = None) -> Report:
    """``seen``: gets the object-storage filesystem the build reads through (``reread_on_replaced``)."""
    import duckdb

    if "?" in tmp_path:
        raise ValueError(f"DuckDB cannot write a database under a path with '?' ({tmp_path}); "
                         "set TMPDIR to a folder without one")
    con = duckdb.connect(tmp_path)
    register_word_count(con)
    fs = register_warehouse(con, warehouse, as_listed=True)
    if seen is not None and fs is not None:
        seen.append(fs)
    try:
        views = _create_views(con, warehouse, fs)
        for needed in REQUIRED_TABLES:
            if needed not in views:
                raise FileNotFoundError(
                    f"no {needed} tables under {warehouse.root}: materialize at least one shard before the report"
                )
        if "rewritten_captions" not in views:  # no rewrites yet: an empty stand-in, not stored with the report
            con.execute("""CREATE TEMP VIEW rewritten_captions AS SELECT NULL::VARCHAR AS shard,
                NULL::VARCHAR AS rewriter, NULL::VARCHAR AS rewriter_version, NULL::VARCHAR AS prompt_hash,
                NULL::VARCHAR AS quality_column, NULL::BOOLEAN AS accepted, NULL::DOUBLE AS quality_before,
                NULL::DOUBLE AS quality_after, NULL::DOUBLE AS edit_ratio, NULL::DOUBLE AS length_ratio,
                NULL::DOUBLE AS semantic_similarity, NULL::VARCHAR AS original_caption,
                NULL::VARCHAR AS candidate_caption WHERE false""")
        skips = ("SELECT shard, count(*) AS skipped FROM skips GROUP BY shard" if "skips" in views
                 else "SELECT NULL::VARCHAR AS shard, 0 AS skipped WHERE false")
        # every shard with a table (even one with no pairs: an empty or unreadable tar), and every failed one,
        # with its status: only ok shards count in the figures pooled over shards
        kept = dict(con.execute("SELECT shard, count(*) FILTER (WHERE outcome <> 'dropped') FROM final_captions "
                                "GROUP BY shard").fetchall())
        unpublished, unverified = publication_problems(warehouse, {s: kept.get(s, 0) for s in views["final_captions"]})
        statuses = shard_statuses(table_provenance(con, views), failures, unsettled_shards(warehouse),
                                  warehouse.curated_shards(), _joined(unverified, frozen_outside_cut(warehouse)),
                                  unpublished)
        con.execute("CREATE TEMP TABLE shard_status (shard VARCHAR, status VARCHAR, status_detail VARCHAR, "
                    "error VARCHAR)")
        con.executemany("INSERT INTO shard_status VALUES (?, ?, ?, ?)",
                        [[shard, status, detail, str(failures[shard])[:2000] if shard in failures else None]
                         for shard, (status, detail) in statuses.items()])
        con.execute("CREATE TEMP VIEW ok_shards AS SELECT shard FROM shard_status WHERE status = 'ok'")
        # the score each shard was decided on (policy.quality_column); older tables may not name it
        decided_on = "quality_column::VARCHAR" if _has_column(con, "final_captions", "quality_column") \
            else "NULL::VARCHAR"
        con.execute(f"""CREATE TEMP VIEW shard_quality AS
            SELECT shard, string_agg(DISTINCT q, ', ' ORDER BY q) AS quality_column
            FROM (SELECT shard, {decided_on} AS q FROM final_captions) GROUP BY shard""")
        # rewrite attempts of the ok shards, each with the score that judged it (its own column, else its shard's)
        judged_on = "r.quality_column::VARCHAR" if _has_column(con, "rewritten_captions", "quality_column") \
            else "NULL::VARCHAR"
        con.execute(f"""CREATE TEMP VIEW ok_attempts AS
            SELECT r.rewriter, r.rewriter_version::VARCHAR AS rewriter_version, r.prompt_hash::VARCHAR AS prompt_hash,
                   coalesce({judged_on}, q.quality_column) AS quality_column, r.accepted, r.quality_before,
                   r.quality_after, r.edit_ratio, r.length_ratio, r.semantic_similarity, r.original_caption,
                   r.candidate_caption
            FROM rewritten_captions r LEFT JOIN shard_quality q USING (shard)
            WHERE r.shard IN (SELECT shard FROM ok_shards)""")
        decodes = "decode_status" in {name for name, *_ in con.execute("DESCRIBE quality_scores").fetchall()}
        decoded = ("CASE WHEN count(decode_status) > 0 THEN count(*) FILTER (WHERE decode_status = 'ok') END"
                   if decodes else "NULL::BIGINT")  # scores of an older version, made without the column
        con.execute(SHARD_SUMMARY.format(skips=skips, decoded=decoded))
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
            SELECT rewriter, rewriter_version, prompt_hash, quality_column,
                   count(*) AS attempts, count(*) FILTER (WHERE accepted) AS accepted,
                   avg(CASE WHEN accepted THEN 1.0 ELSE 0.0 END) AS acceptance_rate,
                   avg(quality_after - quality_before) FILTER (WHERE accepted) AS mean_gain,
                   avg(edit_ratio) FILTER (WHERE accepted) AS mean_edit_ratio,
                   avg(length_ratio) FILTER (WHERE accepted) AS mean_length_ratio,
                   avg(semantic_similarity) FILTER (WHERE accepted) AS mean_similarity
            FROM ok_attempts GROUP BY ALL ORDER BY rewriter, rewriter_version, prompt_hash, quality_column""")
        con.execute("""
            CREATE TABLE rewrite_distributions AS
            WITH m AS (
              UNPIVOT (SELECT rewriter, rewriter_version, prompt_hash, quality_column, accepted, quality_before,
                              quality_after, edit_ratio, length_ratio, semantic_similarity,
                              word_count(original_caption)::DOUBLE AS words_before,
                              -- an attempt that produced no candidate has no length (UNPIVOT drops it)
                              CASE WHEN candidate_caption IS NULL THEN NULL
                                   ELSE word_count(candidate_caption)::DOUBLE END AS words_after
                       FROM ok_attempts)
              ON quality_before, quality_after, edit_ratio, length_ratio, semantic_similarity, words_before, words_after
              INTO NAME measure VALUE value)
            SELECT rewriter, rewriter_version, prompt_hash, quality_column, accepted, measure, count(value) AS n,
                   avg(value) AS mean, quantile_cont(value, 0.1) AS p10, quantile_cont(value, 0.5) AS p50,
                   quantile_cont(value, 0.9) AS p90
            FROM m WHERE isfinite(value) GROUP BY ALL
            ORDER BY rewriter, rewriter_version, prompt_hash, quality_column, accepted DESC, measure""")
        con.execute("""
            CREATE TABLE overall AS
            WITH c AS (SELECT * FROM shard_summary WHERE status = 'ok')  -- a shard left out counts in no figure
            SELECT (SELECT count(*) FROM shard_summary) AS shards, count(*) AS counted_shards,
                   (SELECT count(*) FILTER (WHERE status <> 'ok') FROM shard_summary) AS left_out_shards,
                   {left_out}, (SELECT coalesce(sum(pairs_read), 0)::BIGINT FROM shard_summary WHERE status <> 'ok')
                       AS left_out_pairs_read,
                   coalesce(sum(pairs_read), 0)::BIGINT AS pairs_read, sum(decoded)::BIGINT AS decoded,
                   coalesce(sum(kept), 0)::BIGINT AS kept, coalesce(sum(kept_as_is), 0)::BIGINT AS kept_as_is,
                   coalesce(sum(rewritten), 0)::BIGINT AS rewritten, coalesce(sum(dropped), 0)::BIGINT AS dropped,
                   coalesce(sum(skipped_members), 0)::BIGINT AS skipped_members,
                   coalesce(sum(nsfw_review), 0)::BIGINT AS nsfw_review,
                   coalesce(sum(caption_problems), 0)::BIGINT AS caption_problems,
                   sum(kept)::DOUBLE / nullif(sum(pairs_read), 0) AS keep_rate,
                   sum(rewritten)::DOUBLE / nullif(sum(pairs_read), 0) AS rewrite_rate,
                   sum(dropped)::DOUBLE / nullif(sum(pairs_read), 0) AS drop_rate
            FROM c""".format(left_out=", ".join(
                f"(SELECT count(*) FILTER (WHERE status = '{status}') FROM shard_summary) AS {status}_shards"
                for status in LEFT_OUT)))
        tables = {"shards": "shard_summary", "drop_reasons": "drop_reasons", "scores": "score_distribution",
                  "lengths": "caption_lengths", "rewriters": "rewriter_summary",
                  "rewrite_distributions": "rewrite_distributions"}
        overall = con.execute("SELECT * FROM overall")  # each value in its SQL type: a whole rate stays a float
        names = [column[0] for column in overall.description]
        report = Report(db_path=final_path, overall=dict(zip(names, overall.fetchone())),
                        quality=con.execute(
                            "SELECT q.quality_column, f.outcome, f.quality_before, f.quality_final "
                            "FROM final_captions f LEFT JOIN shard_quality q USING (shard) "
                            "WHERE f.shard IN (SELECT shard FROM ok_shards)").df(),
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
    shards = report.shards
    left_out = shards[shards["status"].ne("ok")]
    frozen = shards[shards["status"].eq("ok") & shards["status_detail"].notna()]  # frozen_outside_cut
    why = ", ".join(f"{o[f'{status}_shards']} {status}" for status in LEFT_OUT if o.get(f"{status}_shards"))
    accepted = report.rewrite_distributions[report.rewrite_distributions["accepted"].fillna(False).astype(bool)]
    lines = [
        f"**{o['pairs_read']} pairs** in {o['counted_shards']} shards: {o['kept_as_is']} kept as is, "
        f"{o['rewritten']} rewritten, {o['dropped']} dropped, {o['skipped_members']} members skipped.",
        *(["", f"**{len(left_out)} of {o['shards']} shards left out** of every figure pooled over shards ({why}; "
           f"{o['left_out_pairs_read']} pairs read): see *Shards left out*."] if len(left_out) else []),
        *(["", f"**The pool is not settled**: {o['unsettled_shards']} shards were decided against an older duplicate "
           f"index or keep_fraction cut (shards run one by one, as a backfill does, or a shard removed: a cross-shard "
           f"duplicate may be published twice, or withheld as a copy of a pair no longer in the pool), or under "
           f"another policy than dedup_index's. To {SETTLE_HINT} (each shard's "
           f"reason under *Shards left out* says how); then rebuild this report."]
          if o.get("unsettled_shards") else []),
        *(["", f"**{len(frozen)} frozen shards** ({', '.join(frozen['shard'])}) cannot be re-selected (no raw file or "
           f"no registered partition): counted, as they publish their curated tar, but decided otherwise than the "
           f"pool's keep_fraction rule; their status_detail says what to do."] if len(frozen) else []),
        "", "### Per shard", "",
        "Quality (in the shard's quality column) and words before / after: the kept pairs' original and final "
        "caption.", "", _md(shards[[
            "shard", "status", "pairs_read", "decoded", "kept_as_is", "rewritten", "dropped", "skipped_members",
            "quality_column", "mean_quality_before", "mean_quality_final", "mean_words_original",
            "mean_words_final"]]),
        *(["", "### Shards left out", "", "Not counted in the overall figures, the drop reasons, the rewriters or the "
           "charts until their tables are complete, from one raw file and decided against the pool as it is now: "
           "re-run them (an unsettled shard: settle the pool, as its status_detail says).", "",
           _md(left_out[["shard", "status", "status_detail"]])] if len(left_out) else []),
        "", "### Drop reasons", "", "Pairs per signal; a pair dropped for several signals counts under each.", "",
        _md(pooled_drop_reasons(report)),
        "", "### Rewriters", "", "Per rewriter, version (its model), prompt hash and the quality column that judged "
        "the rewrite (gains are in its scale).", "", _md(report.rewriters),
        "", "### Rewrites before / after (accepted)", "", _md(accepted.drop(columns=["accepted"])),
        "", f"Query it: {query_hint(report.db_path)} then `SELECT * FROM shard_summary;`",
    ]
    return "\n".join(lines)


def pooled_drop_reasons(report: Report) -> pd.DataFrame:
    """Pairs per drop signal over the ok shards (those the overall figures count), most first."""
    counted = report.shards["shard"][report.shards["status"].eq("ok")]
    drops = report.drop_reasons[report.drop_reasons["shard"].isin(counted)]
    return drops.groupby("reason", as_index=False)["pairs"].sum().sort_values("pairs", ascending=False)


def query_hint(db_path: str) -> str:
    """How a person opens the report: read-only (a read-write session would leave a ``.wal`` behind that
    belongs to this file only, and take the lock the next build's readers need)."""
    if "://" in db_path:  # on object storage: downloaded by open_report
        return f"`open_report(Warehouse({db_path.rsplit('/', 1)[0]!r}))` (curation_pipeline.reporting.report)"
    return f"`duckdb -readonly {shlex.quote(db_path)}`"


def _md(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_"
    shown = df.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        elif shown[col].dtype == object or isinstance(shown[col].dtype, pd.api.extensions.ExtensionDtype):
            # e.g. the cleaner's prompt hash, an unscored shard's decoded: blank, not "None" / "<NA>"
            shown[col] = shown[col].astype(object).map(lambda v: "" if pd.api.types.is_scalar(v) and pd.isna(v) else v)
    return markdown_table(shown.columns, shown.itertuples(index=False))
