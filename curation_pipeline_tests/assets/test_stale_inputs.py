"""A shard whose raw file was replaced and whose pairs was made again must not feed its old tables into
a later step: curated_shards run alone would publish the new images with the old captions and scores."""

import dagster as dg

from curation_pipeline.definitions import build_definitions
from curation_pipeline.resources import ScoringResource
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES, one_shard_curated, truncated_captions_copy

SHARD = "sample-000002"


def _run(defs, instance, *assets):
    return defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key=SHARD, instance=instance, raise_on_error=False, run_config=QUIET,
        asset_selection=[dg.AssetKey(a) for a in assets] if assets else None)


def test_old_tables_of_a_replaced_raw_shard_are_refused_until_made_again(tmp_path):
    scoring = ScoringResource(profile="text")
    raw, warehouse, instance = one_shard_curated(tmp_path, SHARD, scoring)
    wh = Warehouse(str(warehouse))
    published = wh.fs.cat(wh.curated_path(SHARD))
    first_sha = wh.table_metadata("final_captions", SHARD)["raw_sha256"]

    truncated_captions_copy(RAW_SAMPLES / f"{SHARD}.tar", raw / f"{SHARD}.tar")  # same keys, new captions
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse), scoring=scoring)
    assert _run(defs, instance, "pairs").success
    alone = _run(defs, instance, "curated_shards")
    assert not alone.success
    failure = next(e for e in alone.all_events if e.is_step_failure)
    message = str(failure.event_specific_data.error)
    assert "was made from another raw file" in message and "the raw shard was replaced" in message
    assert wh.fs.cat(wh.curated_path(SHARD)) == published  # nothing mismatched was published

    assert _run(defs, instance).success  # the whole shard again: every table from the new file
    assert wh.table_metadata("final_captions", SHARD)["raw_sha256"] != first_sha
    assert wh.fs.cat(wh.curated_path(SHARD)) != published
