"""Duplicate groups over the whole pool, with a survivor that does not depend on shard order.

A group can span shards, so it is resolved over every shard's stored fingerprints at once (the
``dedup_index`` asset). Each group keeps ONE pair, among the members the policy itself would publish:
an image that passes the image rules and was checked by every enabled one (a scorer that failed on it
leaves it ``unchecked``), and a caption that is kept, or rewritten with a safe fallback (rewrite on,
``fallback: keep_original``, a score of at least ``drop_threshold``, inside the keep_fraction cut and meeting
keep_expression; with
rewrite off or ``fallback: drop``, only a caption good enough to keep as is). Among those: the largest image, then
the best caption, then (shard, key). So a thumbnail never displaces its original, a copy ``decide``
drops never takes its group with it, and the same pool gives the same survivors whatever the order or
parallelism of shard runs.

A shard that cannot be re-selected (pruned, or its raw file gone: the asset layer says which, as
``frozen``) keeps its stored tables and its published tar in the pool, and its decisions stay as they
are. So the pairs its curated tar holds are the incumbents of their groups (ranked first: a new copy
gives way to them, or the pair would be published twice), and its other pairs rank last (it will not
publish them). The index records the frozen set it assumed; another set is another index.

A shard with a table of ``PUBLISH_CHAIN`` that failed a blocking check (quality_scores or final_captions,
``FAILED_CHECKS_KEY``) is held the same way: no step reads that table until the check passes, so no new tar
is written, and the shard publishes what its curated tar holds (an earlier run's, or none), not what its
tables say. The index records the blocked shards it assumed with their files (``held_identity``): a mark
that appears or clears writes its file again, so another set is another index. Such a tar may be an earlier
raw file's: a pair it publishes that the stored scores hold otherwise, or not at all, is grouped by the
fingerprints its sidecar stores (``published_pool``), so its copies elsewhere are still dropped.

The index lives under ``<warehouse>/dedup/``: ``groups.parquet``, ``links.parquet`` (so a new shard is
compared against the pool once, not the whole pool against itself again) and ``index.json`` (the
scores files, rules, frozen and blocked shards it was built from, a digest of each shard's rows, and the
``policy`` config it was built under, which the settle sensor keeps the pool decided with, and the digest
of the keep_fraction cut its survivors were picked under: another stored cut makes it stale, ``cut_mismatch``).
When it covers the current pool, rules and cut, ``dedup_for_shard`` reads only its shard's rows of it (the
Parquet row groups that hold them, checked against that shard's digest): a decision reads its own rows, not
the pool's. Else it computes the same on the spot (cached under ``dedup/cache/``). Each decision records a digest of its
shard's rows (and its rules, when not the stored index's), so shards decided against an older pool, or under
other rules, are found (``stale_shards``) and re-selected. Each decision also records a digest of the whole
policy config it ran under (``POLICY_KEY``, duplicate signals or not), so a shard decided under another policy
than the stored index's is found whichever field differs (``stale_reasons`` says which of the two it is).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curation_pipeline.scoring.registry import bounds, columns_of, error_columns_of
from curation_pipeline.scoring.signals.duplicates import CAPTION_EMBEDDING
from curation_pipeline.shards.reader import base_plus_ext
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
from curation_pipeline.storage.warehouse import READ_THREADS, Warehouse

RESULT_COLUMNS = ("dup_group", "dup_kind", "dup_keep", "dup_of")
INDEX_ASSET = "dedup_index"
# 2: survivors must pass the scorers' error checks (unchecked:<column>) and the caption part of the
# policy as decide() applies it; groups.parquet names the survivor's shard (survivor_shard)
# 3: the pairs frozen shards publish survive their groups (index.json: frozen; groups.parquet: incumbent)
# 4: pairs of quality_scores that failed a blocking check rank last (index.json: blocked); a frozen shard
# publishes what its curated tar holds (none without one)
# 5: a shard with a blocking mark on any table of PUBLISH_CHAIN is held like a frozen one: it publishes what
# its curated tar holds (index.json: blocked, shard -> its files)
# 6: with keep_fraction on, a copy outside the cut is published only through an accepted rewrite
# 7: a held shard's pair that its tar publishes but its stored scores hold otherwise or not at all (an earlier
# raw file's) is grouped by its tar's sidecar (index.json: from_tar)
# 8: a copy failing keep_expression is published only through an accepted rewrite, as one outside the cut
# 9: a dropped copy's dup_kind is how it is joined to the copy kept (the weakest link on the strongest path
# between them), not its strongest link to any pair
# 10: a copy whose weak-caption check failed on it (its scorer's error, no value) is weak (caption_unchecked:)
INDEX_VERSION = 10
DIGEST_KEY = "dedup_digest"  # in caption_decisions' Parquet metadata: the digest of the rows it used
# appended to DIGEST_KEY's value, with the decision's rules digest, when those are not the stored index's
RULES_MARK = ":rules="
# in caption_decisions' Parquet metadata, with or without duplicate signals: ``policy_digest`` of the policy
# config the decisions ran under (the config index.json records as ``policy``)
POLICY_KEY = "policy_digest"
DECIDED_BY_KEY = "decided_by_run"  # the run that wrote the decisions: a settle request per decision, not per shard
# why a shard is stale (``stale_reasons``): its duplicate rows changed, or it was decided under another policy
POOL_CHANGED, OTHER_RULES = "pool changed", "other rules"
GROUPS_ROW_GROUP = 65_536  # rows per Parquet row group of groups.parquet: what a shard's decision reads
# the tables a curated tar is made from, in turn: a tar is written from final_captions only when none of them
# failed a blocking check (``FAILED_CHECKS_KEY``), so otherwise the tar itself says what a frozen shard publishes
PUBLISH_CHAIN = ("quality_scores", "caption_decisions", "final_captions")
CURATED = "curated"  # the curated tar, beside PUBLISH_CHAIN's tables in ``chain_listing`` and a held shard's files


def dup_columns() -> tuple[str, ...]:
    """The fingerprints the duplicate scorer declares (what groups are built from)."""
    return tuple(c for c in columns_of("dup") if not c.endswith("_error"))


def usability_columns() -> tuple[str, ...]:
    """What decides which copy of a group is usable: the inventory, every declared bound (drop, and
    weak: a weak caption is not safe with rewrite off) and their scorers' error columns (a failed
    check drops a pair as ``unchecked:<column>``, so it cannot be the group's survivor)."""
    columns = [b.column for b in bounds()]
    errors = error_columns_of()
    return ("caption", "decode_status", "width", "height",
            *dict.fromkeys([*columns, *(e for c in columns for e in errors.get(c, ()))]))


def index_paths(wh: Warehouse, cache: bool = False) -> dict[str, str]:
    """The dedup_index asset's files, or (``cache``) the copy decisions keep of what they computed."""
    folder = wh.join("dedup", "cache") if cache else wh.join("dedup")
    return {name: f"{folder}/{file}" for name, file in
            (("groups", "groups.parquet"), ("links", "links.parquet"), ("manifest", "index.json"))}


# --- the rules a survivor must pass ------------------------------------------------------------

def rules_digest(policy) -> str:
    """What decides usability and grouping; an index made under other rules is stale."""
    from curation_pipeline.decisions import duplicate_groups as groups

    fields = {name: getattr(policy, name) for name in (
        "quality_column", "drop_threshold", "require_image_rules", "nsfw_drop", "max_text_area", "min_sharpness",
        "min_brightness", "max_brightness", "min_entropy", "min_contrast",
        # whether a caption is published (``caption_published``): kept, or rewritten with a safe fallback
        "keep_threshold", "rewrite", "fallback", "keep_expression", "keep_fraction", "caption_rules_mark_weak")}
    fields.update(version=INDEX_VERSION, phash=groups.PHASH_MAX_DISTANCE, cosine=groups.CAPTION_MIN_COSINE,
                  loose=groups.NEAR_CAPTION_PHASH_MAX_DISTANCE)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


# policy fields no decision row nor publication depends on, so a change of them re-selects nothing: checks
# that re-selection does not run (max_unscored_share: quality_scores'), only warn (warn_drop_share), or drift
# (thresholds of a check on what was decided: a blocked shard's published tar is not withdrawn anyway)
POLICY_DIGEST_IGNORES = frozenset({"max_unscored_share", "warn_drop_share", "drift"})


def policy_digest(config: dict, full: bool = False) -> str:
    """A short digest of a policy config (the ``policy`` resource's, as index.json records it) over the fields
    that can change a decision or what is published after it (not ``POLICY_DIGEST_IGNORES``): canonical JSON,
    so the same config gives the same digest whatever its key order. ``full``: over every field, as decisions
    recorded it before (equal to the stored policy's: decided under it)."""
    kept = config if full else {key: value for key, value in config.items() if key not in POLICY_DIGEST_IGNORES}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def needs_cut(policy) -> bool:
    """Whether the survivor pick depends on the keep_fraction cut: whenever it is on, since outside the
    cut a caption is published only through an accepted rewrite (no fallback to the original)."""
    return policy.keep_fraction is not None


def preference(pool: pd.DataFrame, policy, cut=None) -> pd.DataFrame:
    """Per pair: ``usable`` tier (2 = ``decide`` would not drop the image, +1 = the caption would be
    published: ``policy.caption_published``), ``pixels`` and ``quality``: the survivor ranks highest on
    (tier, pixels, quality). Both parts are the policy's own functions, so the survivor is a copy
    ``decide`` keeps whenever the group has one. ``cut``: the global keep_fraction cut (see
    ``needs_cut``; computed over ``pool`` when not given)."""
    from curation_pipeline.decisions.policy import caption_published, image_drop_reasons
    from curation_pipeline.scoring.selection import global_cut

    df = pool.reset_index(drop=True)
    image_ok = image_drop_reasons(df, replace(policy, drop_duplicates=False)).isna().to_numpy()
    quality = (pd.to_numeric(df[policy.quality_column], errors="coerce") if policy.quality_column in df
               else pd.Series(np.nan, index=df.index)).astype(float).to_numpy()
    caption = df["caption"] if "caption" in df else pd.Series(None, index=df.index, dtype=object)
    if cut is None and needs_cut(policy) and policy.quality_column in df:
        cut = global_cut(df, policy.keep_fraction, policy.quality_column)
    caption_ok = (caption.fillna("").astype(str).str.strip().ne("").to_numpy()
                  & caption_published(df, policy, cut).to_numpy(dtype=bool))
    width, height = (pd.to_numeric(df[c], errors="coerce") if c in df else pd.Series(np.nan, index=df.index)
                     for c in ("width", "height"))
    pixels = (width * height).fillna(0).astype(float).to_numpy()
    return pd.DataFrame({"tier": image_ok.astype(int) * 2 + caption_ok.astype(int), "pixels": pixels,
                         "quality": np.where(np.isnan(quality), -np.inf, quality)}, index=pool.index)


# --- the pool ----------------------------------------------------------------------------------

def file_identity(info: dict) -> str:
    """Which version of a file a result was computed from (size and modification time; inode or ETag)."""
    mtime = info.get("mtime") or info.get("LastModified") or info.get("updated") or ""
    mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else mtime  # this form is in stored indexes: kept
    return f"{info.get('size')}:{mtime}:{info.get('ino', '')}:{info.get('ETag', '')}"


def pool_identity(wh: Warehouse) -> dict[str, str]:
    """Shard -> identity of its stored quality_scores, for every scored shard (one listing of the folder:
    every shard's decision asks, so a stat per file would make each decision grow with the pool)."""
    return {shard: file_identity(info) for shard, info in wh.shard_files("quality_scores").items()}


def _signal_scores(wh: Warehouse, shard: str, wanted: set[str]) -> pd.DataFrame | None:
    """The ``wanted`` columns of a shard's stored quality_scores, None when they carry no duplicate signals
    (or the file is gone: replaced between the listing and the read, picked up next time)."""
    try:
        with wh.fs.open(wh.table_path("quality_scores", shard), "rb") as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            if not all(c in names for c in dup_columns()):
                return None
            return parquet.read(columns=[c for c in names if c in wanted]).to_pandas()
    except FileNotFoundError:
        return None


def load_pool(wh: Warehouse, shards: list[str], quality_column: str, extra=()) -> pd.DataFrame:
    """shard, key, the dup_* hashes and the usability columns of the given shards (only
    shards whose scores carry duplicate signals), ordered by (shard, key), with the ``extra`` columns (those a
    keep_expression reads) where stored. Not the caption vectors: they are most of a pool's bytes,
    and ``pool_vectors`` reads the few a comparison needs."""
    wanted = {"shard", "key", *dup_columns(), *usability_columns(), quality_column, *extra} - {CAPTION_EMBEDDING}
    with ThreadPoolExecutor(READ_THREADS) as pool_reads:  # in order; on object storage each is a round trip
        read = pool_reads.map(lambda shard: _signal_scores(wh, shard, wanted), shards)
        frames = [frame.assign(shard=shard) for shard, frame in zip(shards, read) if frame is not None]
    if not frames:
        return pd.DataFrame(columns=["shard", "key", *dup_columns()])
    pool = pd.concat(frames, ignore_index=True)
    return pool.sort_values(["shard", "key"], kind="mergesort").reset_index(drop=True)


def pool_vectors(wh: Warehouse, pool: pd.DataFrame):
    """The caption vectors of rows of ``pool`` (positions; see ``load_pool``), read from their
    shards' stored scores when asked for: None where a pair has none (or its shard's scores were
    replaced since: that shard is compared again next time, its identity having changed)."""
    def shard_vectors(shard: str, keys: pd.Series) -> dict:
        try:
            with wh.fs.open(wh.table_path("quality_scores", shard), "rb") as handle:
                stored = pq.read_table(handle, columns=["key", CAPTION_EMBEDDING],
                                       filters=[("key", "in", sorted(set(keys)))]).to_pandas()
        except FileNotFoundError:
            return {}
        return dict(zip(stored["key"].astype(str), stored[CAPTION_EMBEDDING]))

    def read(rows: np.ndarray) -> pd.Series:
        rows = np.asarray(rows, dtype=np.int64)
        out = pd.Series([None] * len(rows), index=rows, dtype=object)
        wanted = pool.iloc[rows]
        by_shard = list(pd.Series(wanted["key"].astype(str).to_numpy(), index=rows).groupby(
            wanted["shard"].astype(str).to_numpy()))
        with ThreadPoolExecutor(READ_THREADS) as reads:
            for (shard, keys), vectors in zip(by_shard, reads.map(lambda item: shard_vectors(*item), by_shard)):
                out.loc[keys.index] = [vectors.get(key) for key in keys]
        return out
    return read


# --- held shards: frozen or blocked ------------------------------------------------------------

@dataclass
class Frozen:
    """Pool shards whose published pairs are their curated tar's, not what their tables say now (see the
    module docstring): frozen ones (they cannot be re-selected) and blocked ones (a table of
    ``PUBLISH_CHAIN`` failed a blocking check); and what they publish."""
    identity: dict[str, str]  # frozen shard -> identity of the files its published pairs come from (assumed)
    published: pd.DataFrame  # shard, key: the pairs their curated tars hold
    blocked: dict[str, str] = field(default_factory=dict)  # blocked shard -> the same identity
    # shard, key and what its tar's sidecar says of the pair (fingerprints, rule columns; ``curated_pairs``),
    # for the shards whose tar, not final_captions, says what they publish
    sidecars: pd.DataFrame | None = None

    @property
    def held(self) -> set[str]:
        return set(self.identity) | set(self.blocked)


def chain_listing(wh: Warehouse) -> dict[str, dict[str, dict]]:
    """Table of ``PUBLISH_CHAIN``, and ``CURATED`` -> shard -> the file system's details of its file: one
    listing each, whatever the size of the pool."""
    return {**{table: wh.shard_files(table) for table in PUBLISH_CHAIN}, CURATED: wh.curated_files()}


def _held_files(listed: dict[str, dict[str, dict]], shards) -> dict[str, dict[str, str | None]]:
    """Shard -> identity of each file ``read_frozen`` reads for it (None where absent): its tables of
    ``PUBLISH_CHAIN`` (a blocking check's mark is changed by writing the file again) and its curated tar."""
    return {shard: {name: file_identity(listed[name][shard]) if shard in listed[name] else None
                    for name in (*PUBLISH_CHAIN, CURATED)} for shard in sorted(set(shards))}


def _identity_text(files: dict[str, str | None]) -> str:
    return ";".join(f"{name}={ident or 'none'}" for name, ident in files.items())


def _modified(info: dict | None) -> float | None:
    """A listed file's modification time in seconds; None when there is no file or no time to read."""
    mtime = (info or {}).get("mtime") or (info or {}).get("LastModified") or (info or {}).get("updated")
    if hasattr(mtime, "timestamp"):
        return mtime.timestamp()
    try:
        return float(mtime)
    except (TypeError, ValueError):
        try:
            return datetime.fromisoformat(str(mtime)).timestamp()
        except ValueError:
            return None


def _marked(wh: Warehouse, table: str, shard: str) -> bool:
    """Whether a stored table failed a blocking check (``FAILED_CHECKS_KEY``: its footer, not its rows)."""
    try:
        return bool(wh.table_metadata(table, shard).get(FAILED_CHECKS_KEY))
    except FileNotFoundError:  # gone since the listing: its identity changed, so the index is rebuilt
        return False
    except (OSError, ValueError):  # damaged (pyarrow's errors are these): no mark to read; re-made by the
        return False  # shard's re-selection (``stale_reasons``), or its own step fails reading it


def blocked_shards(wh: Warehouse, listed: dict[str, dict[str, dict]] | None = None) -> list[str]:
    """The shards with a table of ``PUBLISH_CHAIN`` that failed a blocking check. A marked table is read by no
    step, so its shard's curated tar (made from the chain) is older than it, or absent: only the footers of
    tables not older than their shard's tar are read (a shard in progress, never curated, or blocked), so a
    settled pool costs the listings (``chain_listing``) alone."""
    listed = chain_listing(wh) if listed is None else listed
    tars = listed[CURATED]

    def settled(table: str, shard: str) -> bool:
        made, tar = _modified(listed[table][shard]), _modified(tars.get(shard))
        return made is not None and tar is not None and made < tar

    candidates = [(t, s) for t in PUBLISH_CHAIN for s in listed[t] if not settled(t, s)]
    with ThreadPoolExecutor(READ_THREADS) as reads:  # on object storage each is a round trip
        marks = list(reads.map(lambda found: _marked(wh, *found), candidates))
    return sorted({shard for (_, shard), mark in zip(candidates, marks) if mark})


def held_identity(wh: Warehouse, frozen) -> tuple[dict[str, str], dict[str, str]]:
    """The identity (``_held_files``) of each of the ``frozen`` shards, and of each blocked shard: what an
    index built now assumes (``DedupIndex.frozen``, ``.blocked``). Another set, or another version of any of
    their files, is another index."""
    listed = chain_listing(wh)
    return tuple({shard: _identity_text(files) for shard, files in _held_files(listed, shards).items()}
                 for shards in (frozen, blocked_shards(wh, listed)))


def curated_keys(wh: Warehouse, shard: str) -> pd.Series:
    """The keys of a shard's curated tar, from its member headers (the members' data is skipped, not
    read). Raises FileNotFoundError without one, ValueError when it does not read as a tar."""
    keys = {}
    with _curated_tar(wh, shard) as tar:
        for info in _regular_members(tar):
            keys[base_plus_ext(info.name)[0]] = None
    return pd.Series([k for k in keys if k is not None], dtype=object)


@contextmanager
def _curated_tar(wh: Warehouse, shard: str):
    """A shard's curated tar, open for streaming; one that does not read is a ValueError that says what to do."""
    import tarfile

    path = wh.curated_path(shard)
    try:
        with wh.fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            yield tar
    except tarfile.TarError as exc:
        raise ValueError(f"the curated tar of frozen shard {shard!r} ({wh.local_path(path)}) does not read "
                         f"({exc}): which pairs it publishes is unknown. Restore it, or remove it (then the "
                         "shard publishes nothing)") from exc


def _regular_members(tar):
    for info in tar:
        tar.members = []  # tarfile keeps every header otherwise
        if info.isreg():
            yield info


def curated_pairs(wh: Warehouse, shard: str) -> pd.DataFrame:
    """key, and what each sidecar of a shard's curated tar stores of its pair: its declared scores (the
    duplicate fingerprints among them, not the caption vector) and ``caption`` (the original one, as in
    quality_scores); ``sidecar_has_fingerprints`` says whether they were stored. Reads the members' headers
    and the sidecars, not the images. Raises as ``curated_keys``."""
    rows = {}
    with _curated_tar(wh, shard) as tar:
        for info in _regular_members(tar):
            key, ext = base_plus_ext(info.name)
            if key is None:
                continue
            row = rows.setdefault(key, {"key": key})
            if ext == "json":
                try:
                    meta = json.loads(tar.extractfile(info).read().decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    meta = None  # a sidecar that does not read says nothing of the pair
                scores = meta.get("scores") if isinstance(meta, dict) else None
                scores = scores if isinstance(scores, dict) else {}
                row.update(scores, caption=meta.get("original_caption") if isinstance(meta, dict) else None,
                           sidecar_has_fingerprints=all(c in scores for c in dup_columns()[:3]))
    out = pd.DataFrame(list(rows.values()), columns=None if rows else ["key"])
    return out.assign(sidecar_has_fingerprints=out.get("sidecar_has_fingerprints", pd.Series(False, index=out.index))
                      .fillna(False).astype(bool))


def read_frozen(wh: Warehouse, shards, deciding: str | None = None) -> Frozen:
    """The held shards: ``shards`` (frozen) and the blocked ones (``blocked_shards``; not ``deciding``, the
    shard being decided: it publishes anew), and the pairs each publishes: those its curated tar holds (none
    without one). Read from its final_captions (those it does not drop) when no table of ``PUBLISH_CHAIN``
    failed a blocking check (the tar is written from it). Else (a marked table is read by no step, so the
    tar, if any, is older than it, maybe made from an earlier raw file) from the tar, with what its sidecars
    say of each pair (``Frozen.sidecars``)."""
    from curation_pipeline.decisions.policy import DROPPED

    listed = chain_listing(wh)
    blocked = set(blocked_shards(wh, listed)) - {deciding}
    found = _held_files(listed, {*shards, *blocked})

    def published(shard: str) -> pd.DataFrame | None:
        files = found[shard]
        try:
            if files[CURATED] is None:
                return None
            marked = shard in blocked or any(files[t] and _marked(wh, t, shard) for t in PUBLISH_CHAIN)
            if files["final_captions"] and not marked:
                final = wh.read_table("final_captions", shard, columns=["key", "outcome"])
                return pd.DataFrame({"shard": shard, "key": final.loc[final["outcome"].ne(DROPPED), "key"].astype(str)})
            return curated_pairs(wh, shard).assign(shard=shard)
        except FileNotFoundError:  # deleted since the listing: its identity changed, so the index is rebuilt
            return None

    with ThreadPoolExecutor(READ_THREADS) as reads:
        frames = [f for f in reads.map(published, list(found)) if f is not None]
    text = {shard: _identity_text(files) for shard, files in found.items()}
    from_tars = [f for f in frames if "sidecar_has_fingerprints" in f]
    return Frozen({shard: text[shard] for shard in sorted(set(shards))},
                  pd.concat([f[["shard", "key"]] for f in frames], ignore_index=True) if frames
                  else pd.DataFrame({"shard": pd.Series(dtype=object), "key": pd.Series(dtype=object)}),
                  {shard: text[shard] for shard in sorted(blocked)},
                  pd.concat(from_tars, ignore_index=True) if from_tars else None)


def published_pool(pool: pd.DataFrame, frozen: Frozen | None) -> tuple[pd.DataFrame, np.ndarray]:
    """``pool`` with the pairs held shards publish from their tars as the tars hold them: a pair whose
    stored scores are missing or carry other fingerprints (the raw file was replaced since the tar was made:
    the tar still publishes the earlier file's pair) is the row its sidecar makes, else its copies elsewhere
    go unseen and are published too. Only where the sidecar stored the fingerprints (else the row stays as
    it is: counted in ``DedupIndex.unindexed`` when there is none). Such a row has no caption vector (a
    sidecar does not store it): it takes no near_caption link. Returns the pool (same order: (shard, key))
    and which of its rows come from a tar."""
    hashes = list(dup_columns()[:3])
    none = np.zeros(len(pool), bool)
    if frozen is None or frozen.sidecars is None or not len(pool):
        return pool, none
    told = frozen.sidecars[frozen.sidecars["sidecar_has_fingerprints"]]
    if told.empty:
        return pool, none
    told = told.astype({"shard": str, "key": str}).set_index(["shard", "key"])
    stored = pool.assign(shard=pool["shard"].astype(str), key=pool["key"].astype(str)).set_index(["shard", "key"])
    at = stored.index.get_indexer(told.index)
    same = np.zeros(len(told), bool)
    if (at >= 0).any():
        mine, theirs = stored.iloc[at[at >= 0]][hashes], told.loc[at >= 0, hashes]
        same[at >= 0] = (mine.fillna("").astype(str).to_numpy() == theirs.fillna("").astype(str).to_numpy()).all(axis=1)
    told = told[~same]
    if told.empty:
        return pool, none
    rows = told.reset_index().reindex(columns=pool.columns)
    kept = pool[~stored.index.isin(told.index)]
    out = pd.concat([kept.assign(_tar=False), rows.assign(_tar=True)], ignore_index=True)
    out = out.sort_values(["shard", "key"], kind="mergesort").reset_index(drop=True)
    return out.drop(columns="_tar"), out["_tar"].to_numpy(dtype=bool)


def standing(shards: np.ndarray, keys: np.ndarray, frozen: Frozen | None) -> np.ndarray:
    """Per pair, what ranks before the policy's preference: 1 = a held shard (frozen or blocked) publishes it
    (the incumbent), 0 = its shard can be re-selected, -1 = a held shard's pair that it does not publish."""
    out = np.zeros(len(shards), np.int8)
    if frozen is None or not frozen.held or not len(shards):
        return out
    published = pd.MultiIndex.from_arrays([shards, keys]).isin(pd.MultiIndex.from_arrays(
        [frozen.published["shard"].astype(str), frozen.published["key"].astype(str)]))
    return np.where(published, 1, np.where(np.isin(shards, list(frozen.held)), -1, out)).astype(np.int8)


# --- grouping ----------------------------------------------------------------------------------

@dataclass
class DedupIndex:
    # shard, key, dup_group, dup_kind, dup_keep, dup_of, survivor_shard, incumbent (grouped pairs only)
    groups: pd.DataFrame
    links: pd.DataFrame  # shard_a, key_a, shard_b, key_b, kind (rank, see duplicate_groups.KINDS)
    identity: dict[str, str]  # shard -> scores identity the index was built from
    rules: str
    computed_at: str = ""
    frozen: dict[str, str] = field(default_factory=dict)  # the frozen shards it assumed (``Frozen.identity``)
    blocked: dict[str, str] = field(default_factory=dict)  # the blocked shards it assumed (``Frozen.blocked``)
    # held shard -> pairs its tar publishes that its stored scores do not hold (an older raw file's) and whose
    # sidecars do not say their fingerprints: their copies elsewhere cannot be found, so they may be published twice
    unindexed: dict[str, int] = field(default_factory=dict)
    # held shard -> pairs grouped by what its tar's sidecars say (``published_pool``), not its stored scores
    from_tar: dict[str, int] = field(default_factory=dict)
    # the ``policy`` resource's config it was built under (plain JSON; the asset's index only, not the cache):
    # the rules the pool was last deliberately decided with, which the settle sensor keeps
    policy: dict | None = None
    # ``GlobalCut.rule_digest`` of the keep_fraction cut its survivors were picked under (``needs_cut``), None
    # without one: an index picked under another cut than the stored one is stale (``cut_mismatch``)
    cut: str | None = None
    # a digest of the code location's own policy when it was built: where the location's policy changed since
    # (its settings file edited), that edit, not the stored policy, is what the pool is settled under
    location_policy: str | None = None

    def for_shard(self, shard: str) -> pd.DataFrame:
        return self.groups[self.groups["shard"].eq(shard)]

    def slice_digests(self) -> dict[str, str]:
        """``slice_digest`` of every indexed shard's rows, the same text hashed, with the lines made for the whole
        index at once (the settle sensor asks each tick: a frame and a sort per shard grew with the pool)."""
        groups = self.groups
        found: dict[str, str] = {}
        if len(groups):
            rows = groups.sort_values(["shard", "key"], kind="mergesort")
            keep = rows["dup_keep"].astype(bool).map({True: "True", False: "False"})
            lines = (rows["key"].astype(str) + "\t" + rows["dup_group"].astype(str) + "\t"
                     + rows["dup_kind"].astype(str) + "\t" + keep)
            for shard, text in lines.groupby(rows["shard"].to_numpy(), sort=False):
                joined = "\n".join(text.tolist()).encode("utf-8", "surrogatepass")
                found[shard] = hashlib.sha256(joined).hexdigest()[:32]
        return {shard: found.get(shard, "none") for shard in sorted(self.identity)}


def _label(shards: np.ndarray, keys: np.ndarray) -> np.ndarray:
    return np.char.add(np.char.add(shards.astype(str), "/"), keys.astype(str)) if len(shards) else np.array([], str)


def _joined_to_survivor(n: int, src: np.ndarray, dst: np.ndarray, kind: np.ndarray, survivor: np.ndarray,
                        rank: np.ndarray) -> np.ndarray:
    """Per pair, the strongest kind k such that links of kind k or stronger join it to its group's survivor
    (the weakest link on the strongest path between them); a survivor keeps its strongest link (``rank``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from curation_pipeline.decisions.duplicate_groups import KINDS

    out = np.zeros(n, dtype=np.int8)
    for k in range(len(KINDS) - 1, 0, -1):  # strongest first: a pair takes the first kind that joins it
        strong = kind >= k
        if not strong.any():
            continue
        component = connected_components(coo_matrix((np.ones(int(strong.sum()), np.int8),
                                                     (src[strong], dst[strong])), shape=(n, n)), directed=False)[1]
        out[(out == 0) & (component == component[survivor])] = k
    own = survivor == np.arange(n)
    out[own] = rank[own]
    return out


def build_index(pool: pd.DataFrame, policy, previous: DedupIndex | None = None,
                identity: dict[str, str] | None = None, vectors=None, cut=None,
                frozen: Frozen | None = None, from_tar: np.ndarray | None = None) -> DedupIndex:
    """Duplicate groups and survivors over ``pool`` (see ``load_pool``).

    With ``previous`` built under the same rules, its links among shards whose scores did not
    change (and that were not linked to one that did, or left) are reused; only the other shards'
    pairs are compared against the pool. Caption vectors
    come from ``vectors`` (``pool_vectors``), else from the pool's own ``dup_caption_emb``. ``cut``: the
    global keep_fraction cut, where the survivor pick depends on it (``needs_cut``; ``refresh_index``
    passes the one over every scored shard), else it is computed over ``pool``. ``frozen``: the held shards
    (frozen or blocked), whose published pairs survive their groups and other pairs rank last (``standing``).
    ``from_tar``: the rows of ``pool`` made from a held shard's tar (``published_pool``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from curation_pipeline.decisions.duplicate_groups import KINDS, duplicate_graph, vectors_of

    identity = dict(identity or {})
    rules = rules_digest(policy)
    pool = pool.reset_index(drop=True)
    n = len(pool)
    shards = pool["shard"].astype(str).to_numpy()
    keys = pool["key"].astype(str).to_numpy()
    reuse = previous is not None and previous.rules == rules
    unchanged = ({s for s, ident in identity.items() if previous.identity.get(s) == ident} if reuse else set())
    tar_rows = (pd.Series(shards[from_tar]).value_counts().sort_index() if from_tar is not None and n
                else pd.Series(dtype=np.int64))
    # rows made from a tar (now or in ``previous``) are not what the shard's scores identity stands for
    unchanged -= set(tar_rows.index) | (set(previous.from_tar) if reuse else set())
    if reuse and len(previous.links):
        # A near link is stored through the first holder of a hash value: A and B may be linked only by
        # way of a pair of shard X. When X changes or leaves, its links go, so the shards it linked to are
        # compared against the pool again, or A and B would stay apart (a full rebuild groups them).
        old = previous.links
        crossing = old["shard_a"].isin(unchanged) != old["shard_b"].isin(unchanged)
        unchanged -= set(old.loc[crossing, "shard_a"]) | set(old.loc[crossing, "shard_b"])
    query = ~np.isin(shards, list(unchanged)) if n else np.zeros(0, bool)
    order = np.argsort(~query, kind="stable")  # query nodes first, for duplicate_graph
    if vectors is None:
        vectors = vectors_of(pool[CAPTION_EMBEDDING])
    graph = duplicate_graph(pool.iloc[order], int(query.sum()),
                            vectors=lambda rows: vectors(order[rows]).set_axis(rows))
    src, dst, kind = graph.edges()
    src, dst = order[src], order[dst]
    if reuse and len(previous.links):
        index = pd.Series(np.arange(n), index=pd.MultiIndex.from_arrays([shards, keys]))
        old = previous.links[previous.links["shard_a"].isin(unchanged) & previous.links["shard_b"].isin(unchanged)]
        a = index.reindex(pd.MultiIndex.from_arrays([old["shard_a"], old["key_a"]])).to_numpy()
        b = index.reindex(pd.MultiIndex.from_arrays([old["shard_b"], old["key_b"]])).to_numpy()
        ok = ~(np.isnan(a) | np.isnan(b))
        src = np.concatenate([src, a[ok].astype(np.int64)])
        dst = np.concatenate([dst, b[ok].astype(np.int64)])
        kind = np.concatenate([kind, old["kind"].to_numpy(dtype=np.int8)[ok]])
    rank = np.zeros(n, dtype=np.int8)
    np.maximum.at(rank, src, kind)
    np.maximum.at(rank, dst, kind)
    component = connected_components(coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n)),
                                     directed=False)[1] if n else np.zeros(0, np.int64)
    pref = preference(pool, policy, cut)
    stand = standing(shards, keys, frozen)
    # best first: a held shard's published pair (``standing``: its other pairs last), highest tier, most
    # pixels, best caption, (shard, key)
    best = np.lexsort((keys, shards, -pref["quality"].to_numpy(), -pref["pixels"].to_numpy(),
                       -pref["tier"].to_numpy(), -stand, component))
    first = pd.Series(best, index=component[best]).groupby(level=0).first()
    survivor = first.reindex(component).to_numpy() if n else np.zeros(0, np.int64)
    # a dropped copy's kind says how it is joined to the copy kept: exact to a third pair and near to the
    # survivor is a near copy of what is published (reviewing near drops must find it), not an exact one
    joined = _joined_to_survivor(n, src, dst, kind, survivor, rank)
    grouped = rank > 0
    rows = np.flatnonzero(grouped)
    surv = survivor[rows]
    same = shards[surv] == shards[rows]
    label = np.where(same, keys[surv], _label(shards[surv], keys[surv])) if len(rows) else np.array([], object)
    keep = surv == rows
    groups = pd.DataFrame({
        "shard": shards[rows], "key": keys[rows],
        "dup_group": label.astype(object),
        "dup_kind": np.array(KINDS, dtype=object)[joined[rows]],
        "dup_keep": keep,
        "dup_of": np.where(keep, None, label).astype(object),
        # the kept copy's shard: the label reads ``key`` in the same shard and ``shard/key`` in another,
        # which a key holding "/" makes ambiguous; this column is not
        "survivor_shard": shards[surv].astype(object),
        # a held shard publishes it (and will): dropped only for another held shard's copy
        "incumbent": stand[rows] == 1,
    })
    a_first = (shards[src] < shards[dst]) | ((shards[src] == shards[dst]) & (keys[src] <= keys[dst]))
    lo, hi = np.where(a_first, src, dst), np.where(a_first, dst, src)
    links = pd.DataFrame({"shard_a": shards[lo], "key_a": keys[lo], "shard_b": shards[hi], "key_b": keys[hi],
                          "kind": kind}).sort_values(["shard_a", "key_a", "shard_b", "key_b", "kind"])
    links = links.drop_duplicates(["shard_a", "key_a", "shard_b", "key_b"], keep="last").reset_index(drop=True)
    return DedupIndex(groups.reset_index(drop=True), links, identity, rules,
                      datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      dict(frozen.identity) if frozen is not None else {},
                      dict(frozen.blocked) if frozen is not None else {}, _unindexed(pool, frozen),
                      {str(shard): int(count) for shard, count in tar_rows.items()},
                      cut=cut.rule_digest() if cut is not None and needs_cut(policy) else None)


def _unindexed(pool: pd.DataFrame, frozen: Frozen | None) -> dict[str, int]:
    """Held shard -> how many pairs its tar publishes that ``pool`` has no row for, even from the tar's
    sidecars (``DedupIndex.unindexed``)."""
    if frozen is None or frozen.published.empty:
        return {}
    published = frozen.published.astype(str)
    known = pd.MultiIndex.from_arrays([published["shard"], published["key"]]).isin(
        pd.MultiIndex.from_arrays([pool["shard"].astype(str), pool["key"].astype(str)]))
    return {str(shard): int(n) for shard, n in published.loc[~known, "shard"].value_counts().sort_index().items()}


def dropped_for_another_shard(groups: pd.DataFrame) -> int:
    """Pairs of an index's groups dropped for a kept copy in another shard (from ``survivor_shard``, not
    the ``dup_of`` label: a key may hold "/", so ``sub/x`` can be a key of the same shard)."""
    if groups.empty:
        return 0
    return int((~groups["dup_keep"].astype(bool) & groups["survivor_shard"].ne(groups["shard"])).sum())


def slice_digest(groups: pd.DataFrame) -> str:
    """Digest of one shard's duplicate rows (order-free): equal digests, equal dedup outcome."""
    if groups.empty:
        return "none"
    rows = groups.sort_values("key", kind="mergesort")
    text = "\n".join(f"{r.key}\t{r.dup_group}\t{r.dup_kind}\t{bool(r.dup_keep)}" for r in rows.itertuples())
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# --- storage -----------------------------------------------------------------------------------

def write_index(wh: Warehouse, index: DedupIndex, cache: bool = False, **provenance) -> dict[str, str]:
    """Store the index atomically: the two tables first, the manifest (which makes them current) last."""
    paths = index_paths(wh, cache)
    for name in ("groups", "links"):  # groups are in (shard, key) order: a shard's rows sit in few row groups
        with wh.atomic_open(paths[name]) as handle:
            pq.write_table(pa.Table.from_pandas(getattr(index, name), preserve_index=False), handle,
                           compression="zstd", row_group_size=GROUPS_ROW_GROUP)
    manifest = {"version": INDEX_VERSION, "rules": index.rules, "identity": index.identity, "frozen": index.frozen,
                "blocked": index.blocked, "unindexed": index.unindexed, "from_tar": index.from_tar,
                "computed_at": index.computed_at, "pairs_in_groups": int(len(index.groups)),
                "links": int(len(index.links)),
                "groups_digest": _file_digest(index.groups), "links_digest": _file_digest(index.links),
                "shards": index.slice_digests(), **({} if index.policy is None else {"policy": index.policy}),
                "cut": index.cut,
                **({} if index.location_policy is None else {"location_policy": index.location_policy}),
                **provenance}
    wh.write_json(paths["manifest"], manifest)
    return paths


def _file_digest(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df.astype(str), index=False).to_numpy().tobytes()).hexdigest()[:16]


def read_manifest(wh: Warehouse, cache: bool = False) -> dict | None:
    """The stored index's manifest (rules, pool identity, per-shard digests), None if there is none."""
    manifest = wh.read_json(index_paths(wh, cache)["manifest"])
    return manifest if manifest is not None and manifest.get("version") == INDEX_VERSION else None


def read_index(wh: Warehouse, cache: bool = False) -> DedupIndex | None:
    """The stored index, or None if there is none (or its files do not match its manifest)."""
    paths = index_paths(wh, cache)
    manifest = read_manifest(wh, cache)
    if manifest is None:
        return None
    try:
        tables = {}
        for name in ("groups", "links"):
            with wh.fs.open(paths[name], "rb") as handle:
                tables[name] = pq.read_table(handle).to_pandas()
    except FileNotFoundError:
        return None
    if (_file_digest(tables["groups"]) != manifest.get("groups_digest")
            or _file_digest(tables["links"]) != manifest.get("links_digest")):
        return None  # a concurrent writer is between its files: treat as absent
    return DedupIndex(tables["groups"], tables["links"], manifest["identity"], manifest["rules"],
                      manifest.get("computed_at", ""), manifest["frozen"], manifest["blocked"], manifest["unindexed"],
                      manifest["from_tar"], manifest.get("policy"), manifest.get("cut"),
                      manifest.get("location_policy"))


# --- per shard ---------------------------------------------------------------------------------

@dataclass
class ShardDedup:
    rows: pd.DataFrame  # this shard's dup_* results, on the scores' index
    digest: str
    source: str  # "dedup_index" or why it was computed on the spot


def refresh_index(wh: Warehouse, policy, previous: DedupIndex | None = None, frozen=(),
                  deciding: str | None = None) -> DedupIndex:
    """The index of the current pool. Only shards that changed are compared against the pool: the links
    among the others come from ``previous`` (default: the stored index, or the cache that the previous
    shard's decisions left as the pool grew, whichever covers more of the current pool). ``frozen``: the
    names of the shards that cannot be re-selected (``read_frozen`` reads what they, and the blocked shards
    but ``deciding``, publish)."""
    identity = pool_identity(wh)  # every scored shard, with duplicate signals or not
    if previous is None:
        rules = rules_digest(policy)
        candidates = [i for i in (read_index(wh), read_index(wh, cache=True)) if i is not None and i.rules == rules]
        previous = max(candidates, key=lambda i: sum(identity.get(s) == v for s, v in i.identity.items()), default=None)
    from curation_pipeline.scoring.selection import columns_used

    pool = load_pool(wh, sorted(identity), policy.quality_column, extra=sorted(columns_used(policy.keep_expression)))
    held = read_frozen(wh, frozen, deciding)
    pool, from_tar = published_pool(pool, held)
    vectors = pool_vectors(wh, pool)
    if from_tar.any():  # a sidecar stores no caption vector; the stored one under its key is another pair's
        vectors = _no_vectors_for(vectors, from_tar)
    return build_index(pool, policy, previous, identity, vectors=vectors,
                       cut=pool_cut(wh, policy, identity, frozen) if needs_cut(policy) else None,
                       frozen=held, from_tar=from_tar)


def _no_vectors_for(vectors, rows: np.ndarray):
    """``vectors`` (``pool_vectors``) with None for the pool rows of the mask ``rows``."""
    def read(positions: np.ndarray) -> pd.Series:
        out = vectors(positions)
        out.loc[positions[rows[positions]]] = None
        return out
    return read


def pool_cut(wh: Warehouse, policy, identity: dict[str, str], frozen=()):
    """The keep_fraction cut ``decide`` applies, so the survivor pick sees it: the stored one when it is
    current and left out these ``frozen`` shards, else the one ``selection_cut`` will store over this pool
    (``compute_cut``: the same function, blocked and ``frozen`` shards left out), so which of the two runs
    first does not matter. None when a shard lacks the quality column (then the pool's own cut is used; the
    decisions fail anyway)."""
    from curation_pipeline.decisions.cut_store import compute_cut, current_cut

    stored = current_cut(wh, policy.keep_fraction, policy.quality_column, identity, frozen)
    if stored is not None:
        return stored
    try:
        return compute_cut(wh, policy.keep_fraction, policy.quality_column, identity, frozen)[0]
    except (KeyError, FileNotFoundError):
        return None


def cut_mismatch(wh: Warehouse, index_cut: str | None, index_frozen, policy, identity: dict[str, str]) -> str | None:
    """Why an index (its ``DedupIndex.cut`` and ``.frozen``) is stale for the keep_fraction cut: the stored
    cut is the one it would be picked under now (``pool_cut``: current, with the same frozen shards), and its
    survivors were picked under another (by older code, which recorded none, or as the pool changed
    meanwhile), so ``decide`` would drop a group's survivor as outside the cut, and with it the whole group.
    None when they agree, keep_fraction is off, or the stored cut is to be computed again (a rebuilt index
    would not read it either: comparing then would rebuild it over and over)."""
    if not needs_cut(policy):
        return None
    from curation_pipeline.decisions.cut_store import current_cut

    stored = current_cut(wh, policy.keep_fraction, policy.quality_column, identity, index_frozen)
    if stored is None or stored.rule_digest() == index_cut:
        return None
    return (f"its survivors were picked under another keep_fraction cut ({index_cut or 'none recorded'}) than "
            f"the stored one ({stored.rule_digest()})")


def dedup_for_shard(wh: Warehouse, shard: str, scores: pd.DataFrame, policy) -> ShardDedup | None:
    """dup_group / dup_kind / dup_keep / dup_of for one shard's scores, from the whole pool.

    None when the scores carry no duplicate signals (the ``text`` profile). The frozen and blocked shards
    are those the stored index assumed (the dedup_index asset knows partitions and raw files; the settle
    sensor rebuilds it when they change; an index computed here finds the blocked ones itself), less this
    shard: it is being decided, so it publishes anew."""
    if not all(c in scores.columns for c in dup_columns()[:3]):
        return None
    manifest = read_manifest(wh)
    frozen = set(manifest["frozen"]) if manifest is not None else set()
    rules = rules_digest(policy)
    identity = pool_identity(wh)
    fresh = (manifest is not None and manifest["rules"] == rules
             and manifest["identity"] == identity and shard not in frozen | set(manifest["blocked"])
             and not cut_mismatch(wh, manifest.get("cut"), manifest["frozen"], policy, identity))
    groups = stored_groups(wh, shard, manifest) if fresh else None
    source = INDEX_ASSET
    if groups is None:
        index = refresh_index(wh, policy, frozen=sorted(frozen - {shard}), deciding=shard)
        write_index(wh, index, cache=True)  # a cache for the next shard: the dedup_index asset stays the record
        groups = index.for_shard(shard)
        source = "computed over the current pool (the stored dedup_index is missing or stale)"
    mine = groups.set_index("key")
    keys = scores["key"].astype(str)
    found = keys.isin(mine.index)
    rows = pd.DataFrame({c: keys.map(mine[c]).astype(object).where(found, None) for c in RESULT_COLUMNS},
                        index=scores.index)
    rows["dup_keep"] = ~found | keys.map(mine["dup_keep"]).eq(True)  # a pair in no group is kept
    digest = slice_digest(groups)
    if manifest is not None and manifest["rules"] != rules:
        # decided under other rules than the stored index's (a launchpad run, a new shard run with the code
        # location's policy): said in the digest, so ``stale_shards`` names it until it is re-selected under them
        digest = f"{digest}{RULES_MARK}{rules}"
    return ShardDedup(rows, digest, source)


def stored_groups(wh: Warehouse, shard: str, manifest: dict) -> pd.DataFrame | None:
    """One shard's rows of the stored index, reading only the row groups that can hold them (not the
    pool's rows); None unless they match the manifest's digest of that shard (a writer between its
    files, or a shard the index does not cover)."""
    expected = manifest.get("shards", {}).get(shard)
    try:
        with wh.fs.open(index_paths(wh)["groups"], "rb") as handle:
            rows = pq.read_table(handle, filters=[("shard", "==", shard)]).to_pandas()
    except FileNotFoundError:
        return None
    return rows.reset_index(drop=True) if expected is not None and slice_digest(rows) == expected else None


def mark_duplicates(scores: pd.DataFrame, warehouse: Warehouse, shard: str, policy) -> tuple[pd.DataFrame, ShardDedup | None]:
    """``scores`` with dup_group / dup_kind / dup_keep / dup_of added (when the profile computed
    duplicate signals), resolved over the whole pool."""
    result = dedup_for_shard(warehouse, shard, scores, policy)
    if result is None:
        return scores, None
    out = scores.copy()
    for column in RESULT_COLUMNS:
        out[column] = result.rows[column].to_numpy()
    return out, result


@dataclass(frozen=True)
class Stale:
    digest: str  # the duplicate rows the index has for the shard now (what its re-selection will record)
    why: str  # POOL_CHANGED or OTHER_RULES
    decided_by: str = ""  # the run that wrote the stale decisions (empty before decisions recorded it)


_FOOTERS: OrderedDict[str, tuple[str, dict[str, str]]] = OrderedDict()  # file -> (file_identity, metadata)
_FOOTERS_LOCK = threading.Lock()  # sensors are evaluated in the code server's threads
FOOTERS_KEPT = 50_000  # files whose metadata a process keeps (a caption_decisions footer's: about 2 KB)
SETTLED_S = 2.0  # a file modified this recently is read again next time: a clock of whole seconds, as git's index


def _cacheable(info: dict) -> bool:
    """Whether the listing's details tell one version of the file from the next: an ETag (object storage), or a
    modification time old enough that a rewrite would change it (on a file system that keeps whole seconds, two
    rewrites within one can bring back the size, the time and even the inode)."""
    if info.get("ETag"):
        return True
    mtime = _modified(info)
    return mtime is not None and time.time() - mtime > SETTLED_S


def listed_metadata(wh: Warehouse, table: str, files: dict[str, dict]) -> dict[str, dict[str, str] | Exception]:
    """Shard -> its table file's metadata (``Warehouse.table_metadata``), for files listed with their details
    (``shard_files``), or the error reading it raised (FileNotFoundError: gone since the listing; OSError or
    ValueError: damaged). A file read before in this process, and listed as the same version (``file_identity``,
    ``_cacheable``), is not read again: ``dedup_settle_sensor`` asks for every shard each minute, and on object
    storage each read is a request, some 10 minutes for 12,800 shards one at a time. The rest are read a few at
    a time."""
    out: dict[str, dict[str, str] | Exception] = {}
    unread = []
    with _FOOTERS_LOCK:
        for shard, info in files.items():
            path, identity = wh.table_path(table, shard), file_identity(info)
            cached = _FOOTERS.get(path)
            if cached is not None and cached[0] == identity:
                _FOOTERS.move_to_end(path)
                out[shard] = dict(cached[1])
            else:
                unread.append((shard, path, identity if _cacheable(info) else None))

    def read(item: tuple[str, str, str | None]) -> dict[str, str] | Exception:
        try:
            return wh.table_metadata(table, item[0])
        except (OSError, ValueError) as exc:
            return exc

    if unread:
        with ThreadPoolExecutor(READ_THREADS) as reads:  # on object storage each is a round trip
            found = list(reads.map(read, unread))
        with _FOOTERS_LOCK:
            for (shard, path, identity), metadata in zip(unread, found):
                out[shard] = metadata
                if isinstance(metadata, Exception) or identity is None:
                    _FOOTERS.pop(path, None)
                else:
                    _FOOTERS[path] = (identity, dict(metadata))
                    _FOOTERS.move_to_end(path)
            while len(_FOOTERS) > FOOTERS_KEPT:
                _FOOTERS.popitem(last=False)
    return out


def stale_reasons(wh: Warehouse, index: DedupIndex | None = None, assumed: dict | None = None) -> dict[str, Stale]:
    """Shards whose stored decisions used other duplicate rows than the index has for them now (decided
    against an older pool: ``POOL_CHANGED``), or ran under another policy than the one the index records
    (``POLICY_KEY``) or other dedup rules than its own (``dedup_for_shard``): ``OTHER_RULES``, whatever their
    rows. A shard whose decisions file cannot be read is stale too (``POOL_CHANGED``): re-selected, it is made
    again. Re-select them (``reselect_shards``), the latter with the index's policy as run config. Not a held
    shard (frozen or blocked): the index was built around what it publishes; unless the index drops a pair it
    publishes (another held shard publishes it too: it goes out twice until one of them can be re-selected).

    A decision that records no policy (made before decisions did) is taken to have run under ``assumed`` (the
    code location's config: what a plain run got); without it, or with an index that records no policy, only
    the rules its duplicate rows were resolved under are compared."""
    index = read_index(wh) if index is None else index
    if index is None:
        return {}
    # a decision's digest from before it left the checks' fields out is the stored policy's full one
    settled = None if index.policy is None else {policy_digest(index.policy), policy_digest(index.policy, full=True)}
    legacy = None if assumed is None else policy_digest(assumed)
    out, digests = {}, index.slice_digests()
    groups = index.groups
    clashing = set(groups.loc[groups["incumbent"].astype(bool) & ~groups["dup_keep"].astype(bool), "shard"])
    decided = {shard: info for shard, info in wh.shard_files("caption_decisions").items() if shard in digests
               and not ((shard in index.frozen or shard in index.blocked) and shard not in clashing)}
    read = listed_metadata(wh, "caption_decisions", decided)
    for shard in decided:
        now, metadata = digests[shard], read[shard]
        if isinstance(metadata, FileNotFoundError):  # deleted between the listing and the read: nothing to re-select
            continue
        if isinstance(metadata, Exception):  # a damaged file (pyarrow's errors are these): re-selecting replaces it
            out[shard] = Stale(now, POOL_CHANGED)
            continue
        used, _, rules = (metadata.get(DIGEST_KEY) or "").partition(RULES_MARK)
        decided = metadata.get(POLICY_KEY) or legacy
        if (settled is not None and decided is not None and decided not in settled) or (rules and rules != index.rules):
            # whatever its rows: they were picked under other rules
            out[shard] = Stale(now, OTHER_RULES, metadata.get(DECIDED_BY_KEY, ""))
        elif used != now and not (not used and now == "none"):  # no signals, no groups: nothing to redo
            out[shard] = Stale(now, POOL_CHANGED)
    return out


def stale_shards(wh: Warehouse, index: DedupIndex | None = None, assumed: dict | None = None) -> dict[str, str]:
    """``stale_reasons``: shard -> the digest of the duplicate rows it should use."""
    return {shard: stale.digest for shard, stale in stale_reasons(wh, index, assumed).items()}


def pool_has_signals(wh: Warehouse) -> bool:
    """Whether any stored quality_scores carries duplicate signals (not with the ``text`` profile)."""
    return any(_signal_scores(wh, shard, set()) is not None for shard in wh.shards("quality_scores"))
