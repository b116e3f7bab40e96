"""The settle sensor and the report agree with `curate run` on the stored keep_fraction cut: keep_fraction
turned off (dedup_index built with it off) has the cut record "off" and the pool re-selected without it, while
a cut materialized by hand before dedup_index (the README's recipe, half done) is not undone; a shard that
cannot be re-selected (frozen) is left out of the cut, which is computed again when it can be. Real runs on
two sample shards' stored scores, the sensor's requests executed as the daemon launches them."""

from curation_pipeline.decisions.cut_store import CUT_KEY, frozen_outside_cut, read_cut_record
from curation_pipeline.definitions import build_definitions
from curation_pipeline.reporting.report import unsettled_shards
from curation_pipeline.scoring.selection import GlobalCut
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.assets.test_global_selection import SHARDS, copy_of, new_instance, scored  # noqa: F401
from curation_pipeline_tests.assets.test_settle_keeps_policy import outcome, policy, run, settle
from curation_pipeline_tests.conftest import RAW_SAMPLES

ON = policy(keep_fraction=0.3)


def asked_for(requests) -> list[tuple[str, str | None]]:
    return [(r.job_name, r.partition_key) for r in requests]


def recipe(defs, instance, config):
    """The README's three steps: the cut, the index, every shard re-selected, all under ``config``."""
    run(defs, instance, "selection_cut_job", run_config=config)
    run(defs, instance, "dedup_index_job", run_config=config)
    for shard in SHARDS:
        run(defs, instance, "reselect_shards", shard, config)


def test_keep_fraction_turned_off_records_off_and_a_half_done_change_is_kept(scored, tmp_path):  # noqa: F811
    warehouse = copy_of(scored, tmp_path)
    wh = Warehouse(str(warehouse))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))  # keep_fraction off
    instance = new_instance()
    recipe(defs, instance, ON)
    assert all(in_cut for in_cut, _ in outcome(wh).values()) and unsettled_shards(wh) == {}

    # keep_fraction turned off the sensor's way (dedup_index with the policy to settle under): the cut records
    # off, every shard is re-selected without it, and the report holds the pool to no cut
    run(defs, instance, "dedup_index_job")
    asked, why = settle(defs, instance)
    assert sorted(asked_for(asked)) == sorted([("selection_cut_job", None)] + [("reselect_shards", s) for s in SHARDS])
    assert read_cut_record(wh)["status"] == "off" and "no shard is stale" in why
    assert all(in_cut is False for in_cut, _ in outcome(wh).values())
    assert unsettled_shards(wh) == {}

    # keep_fraction turned on by hand, selection_cut first: the sensor does not undo it, and the report says
    # what is true meanwhile; once dedup_index has it, the pool settles under it
    run(defs, instance, "selection_cut_job", run_config=ON)
    asked, _ = settle(defs, instance)
    assert asked == [] and read_cut_record(wh)["status"] == "on"
    assert {s: "decided with keep_fraction off, but the stored cut is keep_fraction=0.3" in why
            for s, why in unsettled_shards(wh).items()} == {s: True for s in SHARDS}
    run(defs, instance, "dedup_index_job", run_config=ON)
    asked, _ = settle(defs, instance)
    assert sorted(asked_for(asked)) == [("reselect_shards", s) for s in SHARDS]
    assert all(in_cut for in_cut, _ in outcome(wh).values()) and unsettled_shards(wh) == {}


def test_a_frozen_shard_is_left_out_of_the_cut_until_it_can_be_reselected(scored, tmp_path):  # noqa: F811
    warehouse = copy_of(scored, tmp_path)
    wh = Warehouse(str(warehouse))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))
    instance = new_instance()
    recipe(defs, instance, ON)
    live, frozen = SHARDS
    whole = read_cut_record(wh)
    assert whole["frozen"] == [] and set(whole["shards"]) == set(SHARDS)

    # its partition pruned: the index freezes it, then the cut leaves it out and the other shard takes the places
    instance.delete_dynamic_partition("shards", frozen)
    asked, _ = settle(defs, instance)
    assert asked_for(asked) == [("dedup_index_job", None), ("selection_cut_job", None), ("reselect_shards", live)]
    record = read_cut_record(wh)
    assert record["frozen"] == [frozen] and set(record["shards"]) == {live}
    assert record["scored"] == whole["shards"][live]["scored"] and record["kept"] == record["scored"] * 3 // 10
    assert unsettled_shards(wh) == {}
    assert frozen_outside_cut(wh)[frozen].startswith("frozen: it could not be re-selected")

    # back: the cut counts it again (the first cut over the same pool, which its decisions applied), and the
    # other shard is decided under it again
    instance.add_dynamic_partitions("shards", [frozen])
    asked, _ = settle(defs, instance)
    assert asked_for(asked) == [("dedup_index_job", None), ("selection_cut_job", None), ("reselect_shards", live)]
    record = read_cut_record(wh)
    assert record["frozen"] == [] and record["shards"] == whole["shards"]
    digest = GlobalCut.from_dict(record).rule_digest()
    assert {s: wh.table_metadata("caption_decisions", s)[CUT_KEY] for s in SHARDS} == {s: digest for s in SHARDS}
    assert unsettled_shards(wh) == {} and frozen_outside_cut(wh) == {}
