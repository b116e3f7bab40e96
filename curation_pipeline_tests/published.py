"""For tests that write a shard's tables by hand: its curated tar as ``curated_shards`` would publish it from
the stored final_captions (one sample per kept pair, a stand-in image, the record of that table), so the
report takes the shard as published (else it is ``unpublished``: final_captions keeps pairs, no tar)."""

from __future__ import annotations

from curation_pipeline.shards.writer import ROWS_DIGEST_KEY, curated_record, rows_digest, write_curated
from curation_pipeline.storage.warehouse import Warehouse


def publish(warehouse: Warehouse, shard: str) -> str:
    """Write ``curated/<shard>.tar`` from the shard's stored final_captions; returns its path."""
    final, metadata, version = warehouse.read_table_versioned("final_captions", shard)
    rows = metadata.get(ROWS_DIGEST_KEY)
    if rows is None:  # a table written by hand: its digest recorded, as the final_captions step records its own
        rows = rows_digest(final)
        warehouse.update_table_metadata("final_captions", shard, {ROWS_DIGEST_KEY: rows}, read_version=version)
    kept = final[final["outcome"].ne("dropped")]
    samples = [(key, "jpg", b"\xff\xd8 not an image", {"key": key, "caption": caption or ""})
               for key, caption in zip(kept["key"], kept["final_caption"])]
    path = warehouse.curated_path(shard)
    with warehouse.atomic_open(path) as handle:
        write_curated(handle, samples, curated_record(shard, rows))
    return path
