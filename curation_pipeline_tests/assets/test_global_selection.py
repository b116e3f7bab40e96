"""keep_fraction is one cut over the whole pool (MLM-Filter, DataComp), computed by the non-partitioned
selection_cut asset from stored scores and applied per shard by caption_decisions: real materializations
on the bundled sample shards."""

import hashlib
import os
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from curation_pipeline.decisions.cut_store import cut_path, read_cut_record
from curation_pipeline.definitions import ASSETS, build_resources
from curation_pipeline.resources import ImageQualityConfig, NsfwConfig, PolicyResource
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES

SHARDS = ["sample-000000", "sample-000001"]
# everything but the keep_fraction cut is relaxed, so "kept as is" means "inside the cut, image decodable"
RELAXED = dict(keep_threshold=0.0, drop_threshold=0.0, caption_rules_mark_weak=False, drop_duplicates=False,
               image=ImageQualityConfig(require_datacomp_rules=False, min_brightness=None, max_brightness=None,
                                        min_entropy=None, min_contrast=None),
               nsfw=NsfwConfig(drop=None))


def materialize(warehouse, instance, selection, partition=None, **policy):
    resources = build_resources(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse),
                                policy=PolicyResource(**{**RELAXED, **policy}))
    return dg.materialize(ASSETS, selection=selection, partition_key=partition, instance=instance,
                          resources=resources, raise_on_error=False, run_config=QUIET)


def new_instance() -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", SHARDS)
    return instance


def decide_all(warehouse, instance, shards, fraction):
    """The cut once, then each shard's decisions in the given order; returns the decisions' metadata."""
    result = materialize(warehouse, instance, ["selection_cut"], keep_fraction=fraction)
    assert result.success
    meta = {}
    for shard in shards:
        result = materialize(warehouse, instance, ["caption_decisions"], shard, keep_fraction=fraction)
        assert result.success, failure_text(result)
        meta[shard] = result.asset_materializations_for_node("caption_decisions")[0].metadata
    return meta


def failure_text(result) -> str:
    texts = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            texts.append((data.user_failure_data.description if data.user_failure_data else "") or "")
            texts.append(data.error.message if data.error else "")
    return "\n".join(texts)


def expected_top(warehouse, fraction) -> set[tuple[str, str]]:
    """The definition, computed independently: sort the whole pool by score (desc), break ties by
    BLAKE2b(shard NUL key), keep floor(N * fraction) of the N pairs with a known score."""
    scores = Warehouse(str(warehouse)).read_all("quality_scores")
    scored = scores[scores["text_quality"].notna()].copy()
    scored["tie"] = [int.from_bytes(hashlib.blake2b(f"{s}\0{k}".encode(), digest_size=8).digest(), "big") >> 1
                     for s, k in zip(scored["shard"], scored["key"])]
    scored = scored.sort_values(["text_quality", "tie"], ascending=[False, True])
    n_kept = int(len(scored) * round(fraction * 100)) // 100
    return set(zip(scored["shard"].head(n_kept), scored["key"].head(n_kept)))


def decisions_of(warehouse) -> pd.DataFrame:
    return Warehouse(str(warehouse)).read_all("caption_decisions").sort_values(["shard", "key"]).reset_index(drop=True)


def kept_as_is(decisions: pd.DataFrame) -> set[tuple[str, str]]:
    kept = decisions[decisions["action"] == "keep"]
    return set(zip(kept["shard"], kept["key"]))


def undecodable(warehouse) -> set[tuple[str, str]]:
    scores = Warehouse(str(warehouse)).read_all("quality_scores")
    bad = scores[scores["decode_status"] != "ok"]
    return set(zip(bad["shard"], bad["key"]))


@pytest.fixture(scope="module")
def scored(curated, tmp_path_factory):
    """Two sample shards' stored scores (pairs + quality_scores), taken from the session's pipeline run
    so that no scorer runs again here, in a warehouse and instance of this module's own."""
    warehouse = tmp_path_factory.mktemp("scored") / "wh"
    source, target = Warehouse(str(curated["warehouse"])), Warehouse(str(warehouse))
    for shard in SHARDS:
        for table in ("pairs", "quality_scores"):
            Path(target.table_path(table, shard)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.table_path(table, shard), target.table_path(table, shard))
    return {"warehouse": warehouse}


def copy_of(scored, tmp_path):
    """A fresh warehouse holding the stored scores only (no cut, no decisions yet)."""
    target = tmp_path / "wh"
    shutil.copytree(scored["warehouse"], target, ignore=lambda d, names: [
        n for n in names if n not in ("pairs", "quality_scores", "skips") and Path(d, n).is_dir()])
    return target


def test_kept_set_is_the_global_top_fraction_whatever_the_shard_order(scored, tmp_path):
    fraction = 0.3
    forward = copy_of(scored, tmp_path)
    meta = decide_all(forward, new_instance(), SHARDS, fraction)
    cut = read_cut_record(Warehouse(str(forward)))
    n = int(Warehouse(str(forward)).read_all("quality_scores")["text_quality"].notna().sum())
    assert cut["status"] == "on" and cut["scored"] == n and cut["kept"] == int(n * 3) // 10
    # the sample shards tie heavily at the top (text_quality 100): the cut really has to break ties,
    # and the tied pairs it keeps come from more than one shard
    assert 0 < cut["ties_kept"] < cut["ties_at_cut"]
    assert sum(1 for info in cut["shards"].values() if info["kept"]) >= 2

    top = expected_top(forward, fraction)
    assert len(top) == cut["kept"]
    assert sum(m["in_keep_fraction"].value for m in meta.values()) == cut["kept"]
    decisions = decisions_of(forward)
    assert kept_as_is(decisions) == top - undecodable(forward)
    outside = decisions[~decisions.apply(lambda r: (r["shard"], r["key"]) in top, axis=1)
                        & (decisions["action"] != "drop")]
    assert len(outside) and outside["reason"].str.contains("outside top 30% by text_quality").all()

    # another warehouse that received the scored shards in the opposite order (scoring itself is
    # deterministic and covered elsewhere; re-running it here would only cost time), then the cut and
    # each shard's decisions in the opposite order: the same cut, the same decisions
    backward = tmp_path / "backward"
    source, target = Warehouse(str(scored["warehouse"])), Warehouse(str(backward))
    for shard in SHARDS[::-1]:
        target.write_table("quality_scores", shard, source.read_table("quality_scores", shard).iloc[::-1])
        # pairs as stored (with the raw shard's fingerprint, which every step after pairs verifies)
        Path(target.table_path("pairs", shard)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.table_path("pairs", shard), target.table_path("pairs", shard))
    instance = new_instance()
    decide_all(backward, instance, SHARDS[::-1], fraction)
    reverse_cut = read_cut_record(Warehouse(str(backward)))
    provenance = ("computed_at", "run_id", "identity")  # identity: which files (size, time) it read
    assert {k: v for k, v in reverse_cut.items() if k not in provenance} == \
        {k: v for k, v in cut.items() if k not in provenance}
    again = decisions_of(backward)
    assert kept_as_is(again) == kept_as_is(decisions)
    pd.testing.assert_frame_equal(again[["shard", "key", "action", "reason"]],
                                  decisions[["shard", "key", "action", "reason"]])


def test_the_settle_sensor_cuts_the_grown_pool_then_reselects_every_shard(scored, tmp_path):
    """Automation with keep_fraction on: a shard scored after the cut cannot be decided (its run fails);
    once no run is in progress, the settle sensor requests the cut over the grown pool, then re-selects
    the shard decided against the old cut and the undecided one; then it asks for nothing."""
    from curation_pipeline.assets.dedup import dedup_settle_sensor
    from curation_pipeline.resources import WarehouseResource

    fraction = 0.3
    warehouse, instance = copy_of(scored, tmp_path), new_instance()
    wh = Warehouse(str(warehouse))
    later = Path(wh.table_path("quality_scores", SHARDS[1]))
    aside = tmp_path / "aside.parquet"
    shutil.move(later, aside)  # the pool as it was before the second shard was scored
    decide_all(warehouse, instance, SHARDS[:1], fraction)
    shutil.move(aside, later)
    result = materialize(warehouse, instance, ["caption_decisions"], SHARDS[1], keep_fraction=fraction)
    assert not result.success and "had no stored quality_scores when the cut was computed" in failure_text(result)
    resources = {"warehouse": WarehouseResource(raw_root=str(RAW_SAMPLES), root=str(warehouse)),
                 "policy": PolicyResource(**RELAXED, keep_fraction=fraction)}

    def sensor():  # a context with resources is a context manager: left open, it leaves the instance current
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            return dedup_settle_sensor(context)

    # a run killed outright stays STARTED: the sensor waits, and says which run and what to do
    dead = instance.add_run(dg.DagsterRun(job_name="curate_shards", run_id="deadbeef-0000-4000-8000-000000000000",
                                          status=dg.DagsterRunStatus.STARTED))
    waiting = sensor()
    assert isinstance(waiting, dg.SkipReason) and "deadbeef" in waiting.skip_message
    assert "terminate it in the UI" in waiting.skip_message
    instance.report_run_canceled(dead)
    requests = sensor()
    (cut_request,) = [r for r in requests if r.job_name == "selection_cut_job"]
    # Dagster launches a run_key once: after a failed cut run the sensor must not return that request for
    # ever (holding off the rest), but say so, and still ask for what does not depend on it
    instance.add_run(dg.DagsterRun(job_name="selection_cut_job", run_id="cafebabe-0000-4000-8000-000000000000",
                                   status=dg.DagsterRunStatus.FAILURE, tags={"dagster/run_key": cut_request.run_key}))
    assert [r.job_name for r in requests] == ["dedup_index_job", "selection_cut_job"]  # the pool grew
    assert [r.job_name for r in sensor()] == ["dedup_index_job"]
    assert materialize(warehouse, instance, ["dedup_index"], keep_fraction=fraction).success
    dedup_only = sensor()  # the index is current: its re-selections go ahead, none for the failed cut
    assert dedup_only and {r.tags["curation/reason"] for r in dedup_only} == {"dedup_index changed"}
    assert materialize(warehouse, instance, ["dedup_index", "selection_cut"], keep_fraction=fraction).success
    assert sensor()[0].job_name == "reselect_shards"  # the cut is current now: the same rebuild is not asked again
    reasons = {}
    for _ in range(3):  # re-select what the sensor asks for until it asks for nothing
        requests = sensor()
        if isinstance(requests, dg.SkipReason):
            break
        for request in requests:
            assert request.job_name == "reselect_shards"
            reasons.setdefault(request.partition_key, request.tags["curation/reason"])
            assert materialize(warehouse, instance, ["caption_decisions"], request.partition_key,
                               keep_fraction=fraction).success
    assert isinstance(requests, dg.SkipReason), requests
    assert {s: "selection_cut changed" in why for s, why in reasons.items()} == {s: True for s in SHARDS}
    cut = read_cut_record(wh)
    assert set(cut["shards"]) == set(SHARDS)
    assert kept_as_is(decisions_of(warehouse)) == expected_top(warehouse, fraction) - undecodable(warehouse)


def test_changing_the_fraction_reselects_without_rescoring(scored, tmp_path):
    warehouse, instance = copy_of(scored, tmp_path), new_instance()
    wh = Warehouse(str(warehouse))

    def score_files():
        out = {}
        for table in ("pairs", "quality_scores"):
            for shard in SHARDS:
                path = wh.table_path(table, shard)
                with open(path, "rb") as handle:
                    out[path] = (os.stat(path).st_mtime_ns, handle.read())
        return out

    def scoring_runs() -> int:
        return sum(len(instance.fetch_materializations(dg.AssetKey(name), limit=1000).records)
                   for name in ("pairs", "quality_scores"))

    before = score_files()
    decide_all(warehouse, instance, SHARDS, 0.3)
    first = kept_as_is(decisions_of(warehouse))
    meta = decide_all(warehouse, instance, SHARDS, 0.7)
    second = kept_as_is(decisions_of(warehouse))
    cut = read_cut_record(wh)
    assert cut["fraction"] == 0.7 and cut["quality_column"] == "text_quality"
    assert sum(m["in_keep_fraction"].value for m in meta.values()) == cut["kept"] == int(cut["scored"] * 7) // 10
    assert second == expected_top(warehouse, 0.7) - undecodable(warehouse)
    assert first < second  # the wider cut keeps a superset
    # no model re-ran: the stored scores are byte-for-byte the same files, and no new materialization
    assert score_files() == before
    assert scoring_runs() == 0


def test_a_missing_or_stale_cut_fails_clearly(scored, tmp_path):
    warehouse = copy_of(scored, tmp_path)
    instance = new_instance()
    shard = SHARDS[0]

    # no scores at all: the cut has nothing to cut
    empty = materialize(tmp_path / "empty", instance, ["selection_cut"], keep_fraction=0.3)
    assert not empty.success and "no quality_scores are stored" in failure_text(empty)

    # no cut stored yet
    result = materialize(warehouse, instance, ["caption_decisions"], shard, keep_fraction=0.3)
    assert not result.success
    text = failure_text(result)
    assert "no cut is stored yet" in text and "Materialize the selection_cut asset first" in text

    # keep_fraction off: the cut asset records "off" without reading scores, and decisions run as before
    off = materialize(warehouse, instance, ["selection_cut"])
    assert off.success
    assert off.asset_materializations_for_node("selection_cut")[0].metadata["status"].value == "off"
    assert read_cut_record(Warehouse(str(warehouse)))["status"] == "off"
    assert materialize(warehouse, instance, ["caption_decisions"], shard).success
    result = materialize(warehouse, instance, ["caption_decisions"], shard, keep_fraction=0.3)
    assert not result.success and "recorded with keep_fraction off" in failure_text(result)

    # a cut for another fraction or another column
    assert materialize(warehouse, instance, ["selection_cut"], keep_fraction=0.3).success
    result = materialize(warehouse, instance, ["caption_decisions"], shard, keep_fraction=0.5)
    assert not result.success
    text = failure_text(result)
    assert "stale" in text and "keep_fraction=0.3" in text and "selection_cut" in text
    result = materialize(warehouse, instance, ["caption_decisions"], shard, keep_fraction=0.3,
                         quality_column="nsfw_prob", keep_threshold=0.9, drop_threshold=0.5)
    assert not result.success and "'text_quality'" in failure_text(result)

    # a shard re-scored after the cut
    wh = Warehouse(str(warehouse))
    scores = wh.read_table("quality_scores", shard)
    scores.loc[scores.index[0], "text_quality"] = 1.0 if scores["text_quality"].iloc[0] != 1.0 else 2.0
    wh.write_table("quality_scores", shard, scores)
    result = materialize(warehouse, instance, ["caption_decisions"], shard, keep_fraction=0.3)
    assert not result.success and "changed since the cut was computed" in failure_text(result)

    # a shard scored after the cut
    shutil.copy(Warehouse(str(scored["warehouse"])).table_path("quality_scores", shard),
                wh.table_path("quality_scores", shard))
    assert materialize(warehouse, instance, ["caption_decisions"], shard, keep_fraction=0.3).success
    os.remove(wh.table_path("quality_scores", SHARDS[1]))
    assert materialize(warehouse, instance, ["selection_cut"], keep_fraction=0.3).success
    shutil.copy(Warehouse(str(scored["warehouse"])).table_path("quality_scores", SHARDS[1]),
                wh.table_path("quality_scores", SHARDS[1]))
    result = materialize(warehouse, instance, ["caption_decisions"], SHARDS[1], keep_fraction=0.3)
    assert not result.success and "had no stored quality_scores when the cut was computed" in failure_text(result)
    assert os.path.exists(cut_path(wh))


def test_the_graph_shows_the_cut_between_all_scores_and_every_shards_decisions():
    from curation_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    cut = graph.get(dg.AssetKey("selection_cut"))
    assert cut.partitions_def is None
    assert cut.parent_keys == {dg.AssetKey("quality_scores")}
    mapping = graph.get_partition_mapping(dg.AssetKey("selection_cut"), dg.AssetKey("quality_scores"))
    assert isinstance(mapping, dg.AllPartitionMapping)
    assert dg.AssetKey("selection_cut") in graph.get(dg.AssetKey("caption_decisions")).parent_keys
    # re-selecting after a new cut runs decisions -> curated tar, never scoring
    reselect = defs.resolve_job_def("reselect_shards")
    assert {k.to_user_string() for k in reselect.asset_layer.selected_asset_keys} == {
        "caption_decisions", "rewritten_captions", "final_captions", "curated_shards"}
