"""The caption-length distribution new shards are held to.

The drift check on ``final_captions`` compares a shard's rewrites with its own originals; it cannot see
a shard whose originals already differ, such as a source that changed (a scraper that truncates, a site
that switched to file names or alt-text stubs). This is that second check: a shard's original captions
against a reference pinned over chosen shards' stored ``pairs``. Pinned, not rebuilt with each shard, so
a slow change of the source is measured against where it started. Stored as exact counts per length
(``LengthCounts``) with the shards it covers, under ``<warehouse>/validation/``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from curation_pipeline.storage.warehouse import READ_THREADS, Warehouse
from curation_pipeline.validation.lengths import LengthCounts

REFERENCE_ASSET = "caption_length_reference"
RECORD_VERSION = 1


class ReferenceUnavailable(ValueError):
    """The reference cannot be built as asked (no stored pairs, unknown shards)."""


@dataclass(frozen=True)
class LengthReference:
    counts: LengthCounts
    shards: tuple[str, ...]
    built_at: str
    run_id: str | None = None

    def to_dict(self) -> dict:
        return {"version": RECORD_VERSION, "built_at": self.built_at, "run_id": self.run_id,
                "shards": list(self.shards), "pairs": self.counts.n, **self.counts.to_dict()}

    @classmethod
    def from_dict(cls, record: dict) -> LengthReference:
        if record.get("version") != RECORD_VERSION:
            raise ValueError(f"caption-length reference version {record.get('version')!r}, this code reads "
                             f"{RECORD_VERSION}: materialize {REFERENCE_ASSET} again")
        return cls(LengthCounts.from_dict(record), tuple(record["shards"]), record["built_at"], record.get("run_id"))


def reference_path(warehouse: Warehouse) -> str:
    return warehouse.join("validation", f"{REFERENCE_ASSET}.json")


def shard_counts(warehouse: Warehouse, shard: str, unit: str) -> LengthCounts:
    """The length counts of one shard's original captions (only the caption column is read)."""
    return LengthCounts.of_captions(warehouse.read_table("pairs", shard, columns=["caption"])["caption"], unit)


def build_reference(warehouse: Warehouse, unit: str, shards: list[str] | None = None,
                    run_id: str | None = None, min_rows: int = 0) -> LengthReference:
    """The counts over ``shards`` (default: every shard with stored pairs), read 16 shards at a time. Fewer than
    ``min_rows`` captions is no reference: every later shard would pass "not compared" against it, for good."""
    stored = warehouse.shards("pairs")
    if not stored:
        raise ReferenceUnavailable("no pairs are stored in the warehouse: materialize pairs for the shards the "
                             f"reference should describe, then {REFERENCE_ASSET}")
    chosen = sorted(set(shards)) if shards else stored
    missing = sorted(set(chosen) - set(stored))
    if missing:
        raise ReferenceUnavailable(f"no stored pairs for {len(missing)} of the reference's shards: {', '.join(missing[:10])}"
                             f"; materialize pairs for them first (shards with pairs: {len(stored)})")
    with ThreadPoolExecutor(READ_THREADS) as reads:
        parts = list(reads.map(lambda shard: shard_counts(warehouse, shard, unit), chosen))
    counts = LengthCounts.total(parts, unit)
    if counts.n < min_rows:
        raise ReferenceUnavailable(
            f"the reference's {len(chosen)} shard(s) hold {counts.n} captions, fewer than policy.drift.min_rows "
            f"({min_rows}): every shard checked against it would pass without a comparison. Choose more shards "
            "(config shards, or none for every shard with stored pairs), or lower policy.drift.min_rows")
    built = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return LengthReference(counts, tuple(chosen), built, run_id)


def write_reference(warehouse: Warehouse, reference: LengthReference) -> str:
    """Stored atomically; replaces the previous reference."""
    return warehouse.write_json(reference_path(warehouse), reference.to_dict())


def read_reference(warehouse: Warehouse) -> LengthReference | None:
    """The stored reference, None when none was built."""
    record = warehouse.read_json(reference_path(warehouse))
    return None if record is None else LengthReference.from_dict(record)
