"""Every step after ``pairs`` proves the raw shard is still the file ``pairs`` read.

``pairs`` stores the raw file's fingerprint in its Parquet schema metadata; ``raw_fingerprint`` checks
the file against it (stat first, re-hash only when the stat differs), and a step that streams the file
again hands it to the reader, so nothing of a changed shard is ever published.
"""

from __future__ import annotations

import dagster as dg

from curation_pipeline.resources import WarehouseResource
from curation_pipeline.shards.fingerprint import RawFingerprint, RawShardChanged, verify_unchanged
from curation_pipeline.storage.provenance import FINGERPRINT_KEY
from curation_pipeline.storage.warehouse import Warehouse



def recorded_fingerprint(wh: Warehouse, shard: str) -> RawFingerprint:
    """What ``pairs`` recorded for the shard; dg.Failure if pairs is missing or predates fingerprints."""
    try:
        meta = wh.table_metadata("pairs", shard)
    except FileNotFoundError as exc:
        raise dg.Failure(description=f"pairs of shard {shard!r} is not in the warehouse "
                         f"({wh.table_path('pairs', shard)}); materialize pairs first") from exc
    text = meta.get(FINGERPRINT_KEY)
    if not text:
        raise dg.Failure(description=f"pairs of shard {shard!r} records no raw-shard fingerprint (written by an "
                         "older version): re-materialize the shard from pairs")
    return RawFingerprint.from_json(text)


def raw_fingerprint(warehouse: WarehouseResource, shard: str) -> RawFingerprint:
    """The recorded fingerprint, after checking that the raw file still matches it."""
    expected = recorded_fingerprint(warehouse.warehouse(), shard)
    try:
        verify_unchanged(warehouse.raw_url(shard), shard, expected)
    except RawShardChanged as exc:
        raise dg.Failure(description=str(exc), metadata={"shard": shard, "recorded_sha256": expected.sha256,
                                                         "recorded_bytes": expected.size}) from exc
    return expected
