"""The stored keep_fraction cut: computed once over every shard's stored scores, read per shard.

MLM-Filter and DataComp cut a target fraction once over the whole pool, so the cut cannot be made
inside a shard's decisions: a non-partitioned step computes it from the quality column of every
stored ``quality_scores`` file and writes it here; each shard's decisions refuse a missing or stale
cut instead of falling back to a per-shard cut. A shard whose quality_scores failed a blocking check
(``FAILED_CHECKS_KEY``) is left out of the pool and named in the record: no step reads those scores,
so they must not move the cut every other shard is decided by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd
import pyarrow.parquet as pq

from curation_pipeline.scoring.selection import GlobalCut, scores_digest
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
from curation_pipeline.storage.warehouse import Warehouse

CUT_ASSET = "selection_cut"
RECORD_VERSION = 1
CUT_KEY = "keep_fraction_cut"  # in caption_decisions' Parquet metadata: the rule digest of the cut it applied


class CutUnavailable(RuntimeError):
    """keep_fraction is on but no matching cut is stored: materialize the selection asset first."""


def cut_path(warehouse: Warehouse) -> str:
    return warehouse.join("selection", "keep_fraction_cut.json")


@dataclass
class PoolScores:
    """The pool a cut is computed over: shard, key and the quality column of every shard whose
    quality_scores passed their blocking checks, and the shards left out."""

    scores: pd.DataFrame
    blocked: dict[str, str] = field(default_factory=dict)  # shard -> the blocking checks its scores failed


def read_pool_scores(warehouse: Warehouse, column: str) -> PoolScores:
    """shard, key and ``column`` of every shard's stored quality_scores (only those columns are read),
    but those that failed a blocking check: their pass/fail is read from the same file (as the dedup
    index's ``BLOCKED``), so a file replaced meanwhile is read as one version."""
    frames, blocked = [], {}
    for shard in warehouse.shards("quality_scores"):
        with warehouse.fs.open(warehouse.table_path("quality_scores", shard), "rb") as handle:
            parquet = pq.ParquetFile(handle)
            failed = (parquet.schema_arrow.metadata or {}).get(FAILED_CHECKS_KEY.encode(), b"").decode()
            if failed:  # untrusted scores (e.g. the model raised on most pairs): not in the pool, named
                blocked[shard] = failed
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
                                        column: pd.Series(dtype=float)}), blocked)
    return PoolScores(pd.concat(frames, ignore_index=True), blocked)


def load_pool_scores(warehouse: Warehouse, column: str) -> pd.DataFrame:
    """``read_pool_scores``' scores: the pool the cut is computed over, blocked shards left out."""
    return read_pool_scores(warehouse, column).scores


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


def stale_cut_shards(warehouse: Warehouse) -> list[str]:
    """Shards whose stored decisions applied another keep_fraction cut than the stored one (decided
    against a smaller pool, or with keep_fraction off): re-select them (``reselect_shards``), or the
    curated pool keeps another fraction than asked. Shards the stored cut did not score are left to
    their own run."""
    record = read_cut_record(warehouse)
    if record is None or record.get("status") != "on":
        return []
    cut = GlobalCut.from_dict(record)
    now = cut.rule_digest()
    stale = []
    for shard in warehouse.shards("caption_decisions"):
        if shard not in cut.shards:
            continue
        try:
            if warehouse.table_metadata("caption_decisions", shard).get(CUT_KEY) != now:
                stale.append(shard)
        except FileNotFoundError:  # replaced between the listing and the read: picked up next time
            continue
    return stale


def cut_is_current(warehouse: Warehouse, fraction: float, column: str, identity: dict[str, str]) -> bool:
    """Whether the stored cut is for this fraction and column and was computed over the scored pool
    as it is now (``identity``: shard -> identity of its quality_scores file, as recorded by the cut).
    The identity covers blocked shards too: a check's verdict is stored in the file, so a re-run that
    passes or a check run that fails (``update_table_metadata``) writes it again, and the cut is stale."""
    record = read_cut_record(warehouse)
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
    return [shard for shard in sorted(record.get("shards") or {}) if not warehouse.has_table("caption_decisions", shard)]
