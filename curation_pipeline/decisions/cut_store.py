"""The stored keep_fraction cut: computed once over every shard's stored scores, read per shard.

MLM-Filter and DataComp cut a target fraction once over the whole pool, so the cut cannot be made
inside a shard's decisions: a non-partitioned step computes it from the quality column of every
stored ``quality_scores`` file and writes it here; each shard's decisions refuse a missing or stale
cut instead of falling back to a per-shard cut. A shard whose quality_scores failed a blocking check
(``FAILED_CHECKS_KEY``) is left out of the pool and named in the record: no step reads those scores,
so they must not move the cut every other shard is decided by. A shard that cannot be re-selected (no
raw file, or no registered partition: *frozen*, as the dedup index calls it) is left out and named too: its
decisions and its curated tar stay as they are, so the cut must not count places for pairs it can never
apply to (``frozen_outside_cut`` says so in the report), and its quality column is not read (scored under
another profile, it cannot be re-scored). ``compute_cut`` is the one function deciding which shards a cut
covers: ``selection_cut`` stores its cut, and the dedup index picks survivors under it until one is stored.

A stored cut is "on" or "off". An "on" cut is superseded by keep_fraction off (``turned_off``) once
dedup_index was built after it under a policy with keep_fraction off: the pool settles under that policy
(the settle sensor's), so shards decided with keep_fraction off are not stale against the old cut, and
``selection_cut`` is asked to record "off" (``assets.selection.cut_request``); ``curate run`` with
keep_fraction off records it itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd
import pyarrow.parquet as pq

from curation_pipeline.decisions.dedup import read_manifest
from curation_pipeline.scoring.selection import GlobalCut, global_cut, scores_digest
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
from curation_pipeline.storage.warehouse import Warehouse

CUT_ASSET = "selection_cut"
RECORD_VERSION = 1
CUT_KEY = "keep_fraction_cut"  # in caption_decisions' Parquet metadata: the rule digest of the cut it applied
INDEX_MARK_KEY = "dedup_index"  # in the record: which stored dedup_index there was when the cut was computed
WITHDRAW = ("restore its raw file (curate run, or the settle sensor, then decides it again), or, to take it out of "
            "the pool, delete its files under the warehouse (<table>/{shard}.parquet, curated/{shard}.tar) and prune "
            "its partition (the prune_shards job)")


class CutUnavailable(RuntimeError):
    """keep_fraction is on but no matching cut is stored: materialize the selection asset first."""


def cut_path(warehouse: Warehouse) -> str:
    return warehouse.join("selection", "keep_fraction_cut.json")


@dataclass
class PoolScores:
    """The pool a cut is computed over: shard, key and the quality column of every shard whose
    quality_scores passed their blocking checks and that can be re-selected, and the shards left out."""

    scores: pd.DataFrame
    blocked: dict[str, str] = field(default_factory=dict)  # shard -> the blocking checks its scores failed
    frozen: list[str] = field(default_factory=list)  # shards left out as frozen (those not blocked too)


def read_pool_scores(warehouse: Warehouse, column: str, frozen=()) -> PoolScores:
    """shard, key and ``column`` of every shard's stored quality_scores (only those columns are read),
    but those that failed a blocking check (their pass/fail is read from the same file, as the dedup
    index's ``BLOCKED``, so a file replaced meanwhile is read as one version) and the ``frozen`` ones:
    their columns are not looked at, since a frozen shard cannot be re-scored (no raw file) and its
    scores decide nothing any more (its decisions stay as they are)."""
    frames, blocked, left = [], {}, []
    frozen = set(frozen)
    for shard in warehouse.shards("quality_scores"):
        with warehouse.fs.open(warehouse.table_path("quality_scores", shard), "rb") as handle:
            parquet = pq.ParquetFile(handle)
            failed = (parquet.schema_arrow.metadata or {}).get(FAILED_CHECKS_KEY.encode(), b"").decode()
            if failed:  # untrusted scores (e.g. the model raised on most pairs): not in the pool, named
                blocked[shard] = failed
                continue
            if shard in frozen:  # before the column check: scored under another profile, it can never be re-scored
                left.append(shard)
                continue
            names = parquet.schema_arrow.names
            if column not in names:
                raise KeyError(
                    f"quality column {column!r} is not in quality_scores of shard {shard!r} "
                    f"(columns: {', '.join(n for n in names if not n.endswith('_error'))}); "
                    "pick a column the scoring profile produces, or re-score that shard")
            frame = parquet.read(columns=["shard", "key", column]).to_pandas()
            if len(frame):  # an empty shard adds no rows (the cut lists it from the pool's identity)
                frames.append(frame)
    if not frames:
        return PoolScores(pd.DataFrame({"shard": pd.Series(dtype=object), "key": pd.Series(dtype=object),
                                        column: pd.Series(dtype=float)}), blocked, left)
    return PoolScores(pd.concat(frames, ignore_index=True), blocked, left)


def compute_cut(warehouse: Warehouse, fraction: float, column: str, identity: dict[str, str],
                frozen=()) -> tuple[GlobalCut, PoolScores]:
    """The keep_fraction cut over the pool as it is now (``identity``: its scored shards), blocked and
    ``frozen`` shards left out: the one ``selection_cut`` stores and the one the dedup index picks survivors
    under until it is stored (``dedup.pool_cut``), so the two are equal by construction. A KeyError names a
    shard (not frozen nor blocked) whose scores lack ``column``."""
    pool = read_pool_scores(warehouse, column, frozen)
    left_out = set(pool.blocked) | set(frozen)
    cut = global_cut(pool.scores, fraction, column, shards=[shard for shard in identity if shard not in left_out])
    return cut, pool


def write_cut(warehouse: Warehouse, cut: GlobalCut | None, **provenance) -> str:
    """Store the cut (``None``: keep_fraction is off) atomically; returns the path."""
    record = {"version": RECORD_VERSION, "status": "off" if cut is None else "on",
              "computed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **provenance}
    if cut is not None:
        record.update(cut.to_dict())
    return warehouse.write_json(cut_path(warehouse), record)


def read_cut_record(warehouse: Warehouse) -> dict | None:
    """The stored cut record, None when there is none."""
    return warehouse.read_json(cut_path(warehouse))


def cut_for_shard(warehouse: Warehouse, fraction: float, column: str, shard: str,
                  shard_scores: pd.DataFrame) -> GlobalCut:
    """The stored cut, checked to be for this fraction and column and for this shard's current scores."""
    path = cut_path(warehouse)
    how = (f"Materialize the {CUT_ASSET} asset first (after quality_scores of every shard, with the same "
           f"policy: keep_fraction={fraction:g}, quality_column={column!r}), then caption_decisions.")
    record = read_cut_record(warehouse)
    if record is None:
        raise CutUnavailable(f"keep_fraction={fraction:g} is one cut over all shards, and no cut is stored yet "
                             f"({path}). {how}")
    if record.get("status") != "on":
        raise CutUnavailable(f"the stored cut ({path}) was recorded with keep_fraction off, but this run asks "
                             f"keep_fraction={fraction:g}. {how}")
    cut = GlobalCut.from_dict(record)
    if cut.fraction != float(fraction) or cut.quality_column != column:
        raise CutUnavailable(f"the stored cut ({path}) is stale: it was computed for keep_fraction="
                             f"{cut.fraction:g} by {cut.quality_column!r}, but this run asks keep_fraction="
                             f"{fraction:g} by {column!r}. {how}")
    if shard in (record.get("blocked") or {}) and shard not in cut.shards:
        raise CutUnavailable(f"the quality_scores of shard {shard!r} had failed blocking check(s) "
                             f"{record['blocked'][shard].replace(',', ', ')} when the cut was computed "
                             f"({record.get('computed_at')}), so the cut left them out. {how}")
    if shard in (record.get("frozen") or ()) and shard not in cut.shards:
        raise CutUnavailable(f"shard {shard!r} could not be re-selected (no raw file or no registered partition) "
                             f"when the cut was computed ({record.get('computed_at')}), so the cut left it out. {how}")
    if shard not in cut.shards:
        raise CutUnavailable(f"shard {shard!r} had no stored quality_scores when the cut was computed "
                             f"({len(cut.shards)} shards, {record.get('computed_at')}). {how}")
    if column not in shard_scores.columns:
        raise CutUnavailable(f"quality_scores of shard {shard!r} no longer has {column!r}: the cut is stale. {how}")
    digest = scores_digest(shard_scores["key"], shard_scores[column])
    if digest != cut.shards[shard].get("digest"):
        raise CutUnavailable(f"quality_scores of shard {shard!r} changed since the cut was computed "
                             f"({record.get('computed_at')}): the cut is stale. {how}")
    return cut


def index_mark(manifest: dict | None) -> str | None:
    """Which stored dedup_index this is (when it was built, by which run): a cut records the one it saw
    (``INDEX_MARK_KEY``), so an index built after it is told apart without comparing clocks."""
    return None if manifest is None else f"{manifest.get('computed_at', '')}:{manifest.get('run_id', '')}"


def turned_off(warehouse: Warehouse, record: dict | None = None) -> str | None:
    """Why a stored "on" cut no longer applies (None when it does, or none is stored): dedup_index was built
    after it with keep_fraction off in its policy, the policy the pool settles under (the settle sensor's;
    ``curate run``'s own too). An index built before the cut is not: the cut is then a change to keep_fraction
    on, half done by hand (the README's recipe: selection_cut, then dedup_index). A record of older code,
    which names no index, is compared by the time each was computed."""
    record = read_cut_record(warehouse) if record is None else record
    if record is None or record.get("status") != "on":
        return None
    manifest = read_manifest(warehouse)
    policy = (manifest or {}).get("policy")
    if not isinstance(policy, dict) or "keep_fraction" not in policy or policy["keep_fraction"] is not None:
        return None
    if INDEX_MARK_KEY in record:
        after = record[INDEX_MARK_KEY] != index_mark(manifest)
    else:
        after = str(manifest.get("computed_at") or "") > str(record.get("computed_at") or "")
    if not after:
        return None
    return (f"dedup_index was built with keep_fraction off ({manifest.get('computed_at') or 'unknown time'}) after "
            f"the stored cut (keep_fraction={float(record.get('fraction', -1)):g}, {record.get('computed_at')})")


def _frozen(warehouse: Warehouse, record: dict) -> set[str]:
    """The shards that could not be re-selected, as the later of the stored cut and the stored dedup_index
    found them (a raw file may be back since the other looked)."""
    manifest = read_manifest(warehouse)
    if manifest is not None and ("frozen" not in record or record.get(INDEX_MARK_KEY) != index_mark(manifest)):
        return set(manifest.get("frozen") or ())  # the index was built after the cut (or the cut names none)
    return set(record.get("frozen") or ())


def _cuts_applied(warehouse: Warehouse):
    """(shard, the CUT_KEY its stored decisions record, None without one) for every decided shard: the footers
    through the settle sensor's cache (``listed_metadata``: one listing, unchanged files not read again)."""
    from curation_pipeline.decisions.dedup import listed_metadata

    read = listed_metadata(warehouse, "caption_decisions", warehouse.shard_files("caption_decisions"))
    for shard, metadata in read.items():
        if isinstance(metadata, FileNotFoundError):  # replaced between the listing and the read: picked up next time
            continue
        if isinstance(metadata, Exception):
            raise metadata
        yield shard, metadata.get(CUT_KEY)


def cut_staleness(warehouse: Warehouse) -> dict[str, str]:
    """Shard -> why its stored decisions applied another keep_fraction cut than the pool's: with a stored
    "on" cut, decided against a smaller pool, another fraction, or with keep_fraction off; with keep_fraction
    off (an "off" record, or an "on" one ``turned_off``), decided with a cut. Re-select them
    (``reselect_shards``), or the curated pool keeps another fraction than asked. Shards the stored cut did
    not score are left to their own run; frozen ones (``frozen_outside_cut``) keep their decisions."""
    record = read_cut_record(warehouse)
    if record is None:
        return {}
    off = "the stored selection_cut records keep_fraction off" if record.get("status") != "on" \
        else turned_off(warehouse, record)
    if off:
        frozen = _frozen(warehouse, record)
        return {shard: f"decided with a keep_fraction cut, but keep_fraction is off now ({off})"
                for shard, used in _cuts_applied(warehouse) if used is not None and shard not in frozen}
    cut = GlobalCut.from_dict(record)
    now = cut.rule_digest()
    stored = (f"keep_fraction={cut.fraction:g} by {cut.quality_column!r}, computed {record.get('computed_at')} "
              f"over {len(cut.shards)} shards")
    return {shard: (f"decided with keep_fraction off, but the stored cut is {stored}" if used is None
                    else f"decided with another keep_fraction cut than the stored one ({stored})")
            for shard, used in _cuts_applied(warehouse) if shard in cut.shards and used != now}


def stale_cut_shards(warehouse: Warehouse) -> list[str]:
    """The shards ``cut_staleness`` names: re-select them, so the whole pool applies the cut it stores."""
    return sorted(cut_staleness(warehouse))


def frozen_outside_cut(warehouse: Warehouse) -> dict[str, str]:
    """Shard -> what is true of a decided shard that could not be re-selected (frozen) where the stored cut
    would change it: with keep_fraction on, the cut left it out (counted no place for it); with keep_fraction
    off, it was decided with a cut. Either way its decisions and curated tar stay as they are, and it publishes
    what that tar holds, outside the pool's keep_fraction rule; what a user can do is said too."""
    record = read_cut_record(warehouse)
    if record is None:
        return {}
    blocked = set(record.get("blocked") or {})
    off = record.get("status") != "on" or turned_off(warehouse, record)
    if off:
        frozen = _frozen(warehouse, record) - blocked
        return {shard: (f"frozen: it cannot be re-selected (no raw file or no registered partition), so its "
                        f"decisions, made with a keep_fraction cut, and its curated tar stay as they are though "
                        f"keep_fraction is off now; {WITHDRAW.format(shard=shard)}")
                for shard, used in _cuts_applied(warehouse) if used is not None and shard in frozen}
    cut = GlobalCut.from_dict(record)
    frozen = set(record.get("frozen") or ()) - blocked - set(cut.shards)
    now = cut.rule_digest()
    return {shard: (f"frozen: it could not be re-selected (no raw file or no registered partition) when the "
                    f"keep_fraction cut was computed ({record.get('computed_at')}), so the cut leaves it out and "
                    f"counts no place for it; its decisions, made "
                    + ("with keep_fraction off" if used is None else "with another keep_fraction cut")
                    + f", and its curated tar stay as they are, outside the cut; {WITHDRAW.format(shard=shard)}")
            for shard, used in _cuts_applied(warehouse) if shard in frozen and used != now}


def cut_is_current(warehouse: Warehouse, fraction: float, column: str, identity: dict[str, str]) -> bool:
    """Whether the stored cut is for this fraction and column and was computed over the scored pool
    as it is now (``identity``: shard -> identity of its quality_scores file, as recorded by the cut).
    The identity covers blocked shards too: a check's verdict is stored in the file, so a re-run that
    passes or a check run that fails (``update_table_metadata``) writes it again, and the cut is stale."""
    return _current(read_cut_record(warehouse), fraction, column, identity)


def current_cut(warehouse: Warehouse, fraction: float, column: str, identity: dict[str, str],
                frozen) -> GlobalCut | None:
    """The stored cut when it is current (``cut_is_current``, read once) and left out these ``frozen`` shards,
    so ``compute_cut`` would compute it again now; else None (a new cut is to be stored)."""
    record = read_cut_record(warehouse)
    if not _current(record, fraction, column, identity) or sorted(record.get("frozen") or ()) != sorted(frozen):
        return None
    return GlobalCut.from_dict(record)


def _current(record: dict | None, fraction: float, column: str, identity: dict[str, str]) -> bool:
    return (record is not None and record.get("status") == "on" and record.get("identity") == identity
            and float(record.get("fraction", -1)) == float(fraction) and record.get("quality_column") == column)


def other_cut(warehouse: Warehouse, fraction: float, column: str) -> str | None:
    """How the stored cut's rules differ from keep_fraction ``fraction`` by ``column`` (a cut made under
    another policy, or keep_fraction off), None when they do not or no cut is stored."""
    record = read_cut_record(warehouse)
    if record is None:
        return None
    if record.get("status") != "on":
        return "keep_fraction off"
    if float(record.get("fraction", -1)) == float(fraction) and record.get("quality_column") == column:
        return None
    return f"keep_fraction={float(record.get('fraction', -1)):g} by {record.get('quality_column')!r}"


def undecided_shards(warehouse: Warehouse) -> list[str]:
    """Shards the stored cut scored that have no decisions (their run failed waiting for the cut)."""
    record = read_cut_record(warehouse)
    if record is None or record.get("status") != "on":
        return []
    decided = set(warehouse.shards("caption_decisions"))  # one listing, not a look-up per shard
    return [shard for shard in sorted(record.get("shards") or {}) if shard not in decided]
