"""A frozen shard (no raw file: it cannot be re-scored, nor re-selected) scored under another profile lacks the
policy's quality column. The keep_fraction cut leaves frozen shards out, so it must not read that column and
fail: that failed the cut, and so every shard's decisions, with advice (re-score the shard) that cannot be
followed. A shard that can be re-scored and lacks the column still fails the cut, naming it."""

import dagster as dg
import pandas as pd

from curation_pipeline.decisions.cut_store import cut_for_shard, read_cut_record
from curation_pipeline.definitions import build_definitions
from curation_pipeline.scoring.selection import in_cut
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import QUIET
from curation_pipeline_tests.decisions.test_dedup_survivor import _row

POLICY = {"keep_fraction": 0.5, "quality_column": "clip_score", "keep_threshold": 2.0, "drop_threshold": 0.5}
RUN_CONFIG = {**QUIET, "resources": {"policy": {"config": POLICY}}}


def _cut(defs, instance):
    return defs.resolve_job_def("selection_cut_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config=RUN_CONFIG)


def test_a_frozen_shard_without_the_quality_column_is_left_out_of_the_cut(tmp_path):
    raw, warehouse = tmp_path / "raw", tmp_path / "wh"
    raw.mkdir()
    (raw / "new.tar").write_bytes(b"")  # old's raw file is gone: frozen
    wh = Warehouse(str(warehouse))
    new = pd.DataFrame([_row("new", f"k{i}", 90.0, 400, clip_score=float(i)) for i in range(4)])
    wh.write_table("quality_scores", "new", new)
    wh.write_table("quality_scores", "old", pd.DataFrame([_row("old", "b", 90.0, 400)]))  # an offline profile
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", ["new", "old"])
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(warehouse))

    result = _cut(defs, instance)
    assert result.success
    record = read_cut_record(wh)
    assert record["frozen"] == ["old"] and set(record["shards"]) == {"new"} and record["blocked"] == {}
    assert (record["scored"], record["kept"], record["cut_score"]) == (4, 2, 2.0)
    meta = result.asset_materializations_for_node("selection_cut")[0].metadata
    assert meta["frozen_shards"].value == 1 and meta["frozen"].value == ["old"] and meta["unscored"].value == 0
    cut = cut_for_shard(wh, 0.5, "clip_score", "new", new)  # the live shard is decided by it
    assert list(new.loc[in_cut(new, cut), "key"]) == ["k2", "k3"]

    # its raw file back, the shard can be re-scored: a cut without its column fails, saying so
    (raw / "old.tar").write_bytes(b"")
    result = _cut(defs, instance)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert "quality column 'clip_score' is not in quality_scores of shard 'old'" in failure.description
