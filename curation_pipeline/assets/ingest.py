"""Stage 1, ingest: raw shards become the ``pairs`` inventory."""


import dagster as dg
import pandas as pd

from curation_pipeline.assets.integrity import FINGERPRINT_KEY
from curation_pipeline.assets.metadata import counts_markdown, numbers, table, table_metadata
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.resources import WarehouseResource
from curation_pipeline.shards.reader import RECORD_COLUMNS, ShardReader

raw_shards = dg.AssetSpec(
    "raw_shards",
    partitions_def=shard_partitions,
    group_name="ingest",
    description="Raw webdataset .tar shards in the configured raw location (one partition per file). "
    "Registered by the `new_shards_sensor`; not written by the pipeline.",
    kinds={"webdataset"},
)

SKIP_COLUMNS = ["shard", "reason", "key", "member", "detail"]


@dg.asset(
    partitions_def=shard_partitions,
    group_name="ingest",
    deps=[raw_shards],
    kinds={"parquet"},
    description="Inventory of every sample in the shard: key, caption, image size/format/bytes, content "
    "hashes, decode status and error. Members that are not samples are counted in the `skips` table.",
)
def pairs(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    shard = context.partition_key
    if warehouse.raw_mtime(shard) is None:  # a mistyped or deleted partition: say which file, and what exists
        try:
            available = ", ".join(sorted(warehouse.list_raw()[0])) or "none"
        except FileNotFoundError:
            available = "none (the raw location does not exist)"
        raise dg.Failure(description=f"raw shard file {warehouse.raw_url(shard)} does not exist; shards in "
                         f"{warehouse.raw_root}: {available}. Remove stale partitions with the prune_shards job.")
    wh = warehouse.warehouse()
    for orphan in wh.clean_temp_files():  # of writers killed in an earlier run (crash, full disk)
        context.log.warning(f"removed orphaned temp file {orphan}")
    reader = ShardReader(warehouse.raw_url(shard), shard)
    records = [sample.record for sample in reader]
    inventory = pd.DataFrame.from_records(records, columns=RECORD_COLUMNS)
    skips = pd.DataFrame([{"shard": shard, **vars(s)} for s in reader.skips], columns=SKIP_COLUMNS)
    wh.write_table("skips", shard, skips)
    # the fingerprint of what was read: every later step checks the raw file against it
    fingerprint = reader.fingerprint
    path = wh.write_table("pairs", shard, inventory, metadata={FINGERPRINT_KEY: fingerprint.to_json()})
    status = inventory["decode_status"].value_counts() if len(inventory) else pd.Series(dtype=int)
    skip_counts = skips["reason"].value_counts()
    context.log.info(f"{shard}: {len(inventory)} pairs, {len(skips)} skipped members")
    return dg.MaterializeResult(metadata={
        **table_metadata("pairs", inventory),
        **numbers({
            "pairs": len(inventory),
            "decoded": int(status.get("ok", 0)),
            "undecodable": int(len(inventory) - status.get("ok", 0)),
            "no_caption": int(inventory["caption"].isna().sum()) if len(inventory) else 0,
            "caption_problems": int(inventory["caption_problem"].notna().sum()) if len(inventory) else 0,
            "skipped_members": len(skips),
            "raw_bytes": fingerprint.size,
            "meta_errors": int(inventory["meta_error"].notna().sum()) if len(inventory) else 0,
        }),
        "raw_sha256": dg.MetadataValue.text(fingerprint.sha256),
        "decode_status": dg.MetadataValue.md(counts_markdown(status, "Decode status")),
        "skips": dg.MetadataValue.md(counts_markdown(skip_counts, "Skipped members by reason")),
        "caption_problems_by_kind": dg.MetadataValue.md(counts_markdown(
            inventory["caption_problem"].dropna().str.split(" ").str[0].value_counts(), "Caption repairs")),
        "skipped_members_preview": table(skips),
        "path": dg.MetadataValue.path(path),
    })
