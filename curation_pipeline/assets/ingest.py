"""Stage 1, ingest: raw shards become the ``pairs`` inventory."""


import contextlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd

from curation_pipeline.assets.integrity import FINGERPRINT_KEY
from curation_pipeline.assets.io import FILE_METADATA
from curation_pipeline.assets.metadata import numbers, table
from curation_pipeline.checks.quality import (PAIRS_CHECKS, SKIPS_ATTR, checked_table, pairs_checks,
                                              skips_summary, table_out)
from curation_pipeline.partitions import shard_partitions
from curation_pipeline.reporting.markdown import counts_markdown
from curation_pipeline.resources import ComputeResource, PolicyResource, WarehouseResource
from curation_pipeline.shards.fingerprint import RawFingerprint, observed_version
from curation_pipeline.shards.reader import RECORD_COLUMNS, TAR_DAMAGE, ShardReader
from curation_pipeline.storage.warehouse import READ_THREADS
from curation_pipeline.validation.lengths import caption_lengths

# a run tag: the shards (a JSON list) an observation of no partition covers, where not every registered one
OBSERVE_TAG = "curation/observe_shards"

@dg.observable_source_asset(
    partitions_def=shard_partitions, group_name="ingest",
    description="Raw webdataset .tar shards in the configured raw location (one partition per file), "
    "registered by `register_shards` or the `new_shards_sensor`; not written by the pipeline. Observing "
    "records each file's SHA-256 as its data version, so a replaced file marks its partitions stale. A file "
    "is read only when its stat differs from what `pairs` read and from what an observation last hashed "
    "(kept in the warehouse's raw_observed folder).",
    tags={"stage": "ingest", "dagster/kind/webdataset": ""},
)
def raw_shards(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> dg.DataVersionsByPartition:
    versions: dict[str, dg.DataVersion] = {}
    wh = warehouse.warehouse()
    hashed, unrecorded = 0, []
    # in a shard's run: that shard, first, so pairs records the version it derives from; `curate run --shard`
    # names its shards (OBSERVE_TAG): observing every registered one cost each call O(pool)
    registered = (None if context.has_partition_key
                  else set(context.instance.get_dynamic_partitions(shard_partitions.name)))
    named = context.run.tags.get(OBSERVE_TAG)
    shards = ([context.partition_key] if registered is None
              else [s for s in json.loads(named) if s in registered] if named else sorted(registered))

    def observe(shard: str):
        read = None
        with contextlib.suppress(FileNotFoundError, KeyError, ValueError):  # pairs not yet run for it
            read = RawFingerprint.from_json(wh.table_metadata("pairs", shard)[FINGERPRINT_KEY])
        try:
            return observed_version(wh, shard, warehouse.raw_url(shard), read)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:  # pairs fails on it, naming it
            return exc

    with ThreadPoolExecutor(READ_THREADS) as pool:  # a footer and a stat each: round trips on object storage
        seen = list(pool.map(observe, shards))  # threads start as needed: one for a shard's own run
    for shard, observed in zip(shards, seen):
        if isinstance(observed, Exception):
            context.log.warning(f"{shard}: raw file {warehouse.raw_url(shard)} cannot be observed "
                                f"({type(observed).__name__}); prune_shards removes partitions whose file is gone")
            continue
        versions[shard] = dg.DataVersion(observed.sha256)
        hashed += observed.hashed
        if observed.unrecorded:
            unrecorded.append(f"{shard} ({observed.unrecorded})")
    if unrecorded:
        context.log.warning(f"{len(unrecorded)} raw shard(s) hashed but their stat not recorded, so read again "
                            f"next time: {'; '.join(unrecorded[:10])}")
    context.log.info(f"observed {len(versions)} raw shard(s); read {hashed} whose stat was new")
    return dg.DataVersionsByPartition(versions)


SKIP_COLUMNS = ["shard", "reason", "key", "member", "detail"]


@dg.multi_asset(
    name="pairs", partitions_def=shard_partitions, can_subset=True, deps=[raw_shards], check_specs=PAIRS_CHECKS,
    outs={"pairs": table_out(
        "ingest", "8",  # code version: bump when the same inputs give different output (2: a caption file's
        # BOM and line ending are not caption; a json sidecar with NaN is read, the NaN as null. 3: .jfif and
        # .jpe are images; caption_problem / meta_error / decode_error name a caption, json or image member
        # not read; caption_problem records NUL bytes removed and a json caption the .txt overrode. 4: a pair
        # with no caption names the members never parsed, y.text, in caption_problem. 5: and its json's
        # caption-like keys; an image of a format other than JPEG, PNG, WebP, BMP, GIF or TIFF is not opened; a
        # caption cut at max_caption_chars ends before a word the cut would split. 6: a sample the tar's damage came
        # right after says which parts it may have lost there; a UTF-16 caption file is decoded; each member of a
        # repeated key is a skip; tars joined with cat, plain or compressed, are a skip. 7: compressed streams that
        # follow one another read as one, a stream failing its check, a decompression bomb and oversized or
        # chained extended headers are corrupt_tar skips. 8: an empty caption file beside a json caption gives
        # way to it)
        "Inventory of every sample in the shard: key, caption, image size/format/bytes, content hashes, decode "
        "status and error. Members that are not samples are counted in the `skips` table.")},
)
def pairs(context: dg.AssetExecutionContext, warehouse: WarehouseResource, compute: ComputeResource,
          policy: PolicyResource):
    for event in checked_table(context, warehouse, "pairs", lambda: _inventory(context, warehouse, compute),
                               lambda table: pairs_checks(table, context.partition_key, warehouse, policy)):
        if isinstance(event, dg.Output):
            yield from _derived_from(context, event.value)
        yield event


def _derived_from(context: dg.AssetExecutionContext, inventory: pd.DataFrame) -> Iterator[dg.AssetObservation]:
    """Point the table's raw_shards input at this shard's observation of the file it read. Dagster points a
    partition's input at the asset's latest observation of any shard, with a version hashed from materializations
    only: a shard made outside its own job's run (the UI's Materialize, an asset backfill), never observed or
    replaced since, read as stale at the next observation, and the schedule ran it again whole. Where the shard's
    latest observation is of another file (or none), the file read is observed here first."""
    from dagster._core.definitions.data_version import DATA_VERSION_TAG, extract_data_version_from_entry
    from dagster._core.execution.context.data_version_cache import InputAssetVersionInfo

    shard, step = context.partition_key, context.get_step_execution_context()
    read = dg.DataVersion(RawFingerprint.from_json(inventory.attrs[FILE_METADATA][FINGERPRINT_KEY]).sha256)

    def latest() -> dg.EventLogRecord | None:
        return context.instance.get_latest_data_version_record(raw_shards.key, True, shard)

    record = latest()
    if record is None or extract_data_version_from_entry(record.event_log_entry) != read:
        # stored before this generator goes on (Dagster handles each event as it is yielded)
        yield dg.AssetObservation(asset_key=raw_shards.key, partition=shard, tags={DATA_VERSION_TAG: read.value},
                                  metadata={"observed_by": dg.MetadataValue.text("pairs, as it read the file")})
        record = latest()
    if record is not None and extract_data_version_from_entry(record.event_log_entry) == read:
        step.input_asset_records[raw_shards.key] = InputAssetVersionInfo(  # the dict the materialization reads
            record.storage_id, record.event_log_entry.dagster_event_type, read, record.run_id, record.timestamp)


def _inventory(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
               compute: ComputeResource) -> tuple[pd.DataFrame, dict]:
    shard = context.partition_key
    if not warehouse.raw_exists(shard):  # a mistyped or deleted partition: say which file, and what exists
        try:
            available = ", ".join(sorted(warehouse.list_raw()[0])) or "none"
        except FileNotFoundError:
            available = "none (the raw location does not exist)"
        raise dg.Failure(description=f"raw shard file {warehouse.raw_url(shard)} does not exist; shards in "
                         f"{warehouse.raw_root}: {available}. Remove stale partitions with the prune_shards job.")
    wh = warehouse.warehouse()  # each write removes its own file's orphans; the report sweeps the rest
    full = warehouse.inventory_decode == "full"  # else image headers only: quality_scores decodes once
    ray_stats = {}
    if compute.uses_ray:  # the same rows, skips and fingerprint, made on the cluster
        from curation_pipeline.compute.ray_data import pairs_inventory

        made = pairs_inventory(warehouse.raw_url(shard), shard, compute.options("score", warehouse.batch_size),
                               full_decode=full, warn=context.log.warning)
        inventory, skipped, fingerprint = made.inventory, made.skips, made.fingerprint
        ray_stats = made.stats.metadata()
    else:
        reader = ShardReader(warehouse.raw_url(shard), shard, decode="verify" if full else "header")
        inventory = pd.DataFrame.from_records([sample.record for sample in reader], columns=RECORD_COLUMNS)
        skipped, fingerprint = reader.skips, reader.fingerprint
    skips = pd.DataFrame([{"shard": shard, **vars(s)} for s in skipped], columns=SKIP_COLUMNS)
    wh.write_table("skips", shard, skips)
    inventory.attrs[SKIPS_ATTR] = skips_summary(skips)  # for pairs_read_whole, which would read them back
    # the fingerprint of what was read: every later step checks the raw file against it
    inventory.attrs[FILE_METADATA] = {FINGERPRINT_KEY: fingerprint.to_json()}
    status = inventory["decode_status"].value_counts() if len(inventory) else pd.Series(dtype=int)
    skip_counts = skips["reason"].value_counts()
    context.log.info(f"{shard}: {len(inventory)} pairs, {len(skips)} skipped members")
    for damage in skips[skips["reason"].isin(TAR_DAMAGE)].itertuples(index=False):
        context.log.warning(f"{shard}: the raw file is damaged, nothing after it is read: {damage.reason} "
                            f"{damage.detail}")
    # named for what was checked: a header read says nothing of the body (a truncated image passes it), so its
    # counts are no decode's; quality_scores decodes every image, and the report's ``decoded`` counts that
    ok, not_ok = ("decoded", "undecodable") if full else ("headers_ok", "headers_not_ok")
    return inventory, {
        **numbers({"pairs": len(inventory), ok: int(status.get("ok", 0)),
                   not_ok: int(len(inventory) - status.get("ok", 0)),
                   # no word (none, or only whitespace), as the report, the drift check and the rewriter count it
                   "no_caption": int((caption_lengths(inventory["caption"]) == 0).sum()) if len(inventory) else 0,
                   "caption_problems": int(inventory["caption_problem"].notna().sum()) if len(inventory) else 0,
                   "skipped_members": len(skips), "raw_bytes": fingerprint.size,
                   "meta_errors": int(inventory["meta_error"].notna().sum()) if len(inventory) else 0}),
        **numbers(ray_stats),
        "compute": dg.MetadataValue.text(compute.engine),
        "image_decode": dg.MetadataValue.text("full" if full else "header (quality_scores decodes each image)"),
        "raw_sha256": dg.MetadataValue.text(fingerprint.sha256),
        "decode_status": dg.MetadataValue.md(counts_markdown(
            status, "Decode status" if full else "Decode status from the image header (not decoded)")),
        "skips": dg.MetadataValue.md(counts_markdown(skip_counts, "Skipped members by reason", "members")),
        "caption_problems_by_kind": dg.MetadataValue.md(counts_markdown(
            inventory["caption_problem"].dropna().str.split("; ").explode().map(ShardReader.problem_kind)
            .value_counts(),
            "Caption repairs", "notes")),  # a caption may have two: "invalid utf-8 replaced; truncated from N chars"
        "skipped_members_preview": table(skips),
    }

