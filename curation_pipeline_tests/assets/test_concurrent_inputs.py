"""Two runs deciding one shard at once (a `curate run` between its passes and `--only-missing`, the schedule, or
the UI): a table is committed only while every table its step loaded is still the one it read, else the step
fails and the other run's tables stand. Before, the slower run's final_captions, made from the rewrites it had
read, replaced the faster run's, and the shard was left STALE with both runs reported done."""

import dagster as dg
import pytest

from curation_pipeline.definitions import build_definitions
from curation_pipeline.resources import ScoringResource
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import QUIET, one_shard_curated

SHARD = "sample-000002"


@pytest.mark.parametrize("remade", ["rewritten_captions", "caption_decisions"])
def test_a_table_made_from_inputs_another_run_made_again_is_not_committed(tmp_path, monkeypatch, remade):
    scoring = ScoringResource(profile="text")
    raw, warehouse, instance = one_shard_curated(tmp_path, SHARD, scoring)
    wh = Warehouse(str(warehouse))
    before = wh.fs.cat(wh.table_path("final_captions", SHARD))

    store = Warehouse.store_table

    def racing(self, table, shard, df, metadata=None, requires=None):
        if table == "final_captions":  # another run makes one of its inputs again while this step runs
            other, meta, _ = self.read_table_versioned(remade, shard)
            store(self, remade, shard, other, metadata=meta)
        return store(self, table, shard, df, metadata, requires)

    monkeypatch.setattr(Warehouse, "store_table", racing)
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse), scoring=scoring)
    result = defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key=SHARD, instance=instance, raise_on_error=False, run_config=QUIET,
        asset_selection=[dg.AssetKey("final_captions")])
    assert not result.success
    message = str(next(e for e in result.all_events if e.is_step_failure).event_specific_data.error)
    assert f"final_captions of shard '{SHARD}' was not written: a table this step read was made again" in message
    assert f"{remade}/{SHARD}.parquet" in message
    assert wh.fs.cat(wh.table_path("final_captions", SHARD)) == before  # the other run's stands
