"""A duplicate group's survivor is picked under the keep_fraction cut ``decide`` applies, whichever of
dedup_index and selection_cut runs first (the settle sensor asks for both in one tick; the README's recipe
runs one after the other): both leave frozen shards out of the cut, and an index picked under another cut
than the stored one is rebuilt. Else the survivor is a copy outside the cut, ``decide`` drops it as such and
every other copy as its duplicate: the group loses every copy.

The pool (rewrite off, keep_threshold 70, keep_fraction 0.5): s1/a scores 90 (the smaller image), s2/b is a
near copy scoring 80 (the larger image); shard f holds two unrelated pairs scoring 10. Over s1 and s2 the cut
keeps a alone, so a must survive; counting f too it would keep a and b, and b (larger) would survive."""

from dataclasses import replace

import dagster as dg
import pandas as pd
import pytest
from dagster._core.storage.tags import RUN_KEY_TAG

from curation_pipeline.assets.dedup import policy_config, settle_requests
from curation_pipeline.decisions.cut_store import cut_for_shard, read_cut_record
from curation_pipeline.decisions.dedup import (build_index, index_paths, load_pool, mark_duplicates, pool_identity,
                                               pool_vectors, read_frozen, read_index, read_manifest, write_index)
from curation_pipeline.decisions.policy import decide
from curation_pipeline.definitions import build_definitions
from curation_pipeline.resources import PolicyResource
from curation_pipeline.scoring.selection import GlobalCut, global_cut
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import QUIET
from curation_pipeline_tests.decisions.test_dedup_survivor import PHASH, _row

SHARDS = ("s1", "s2", "f")
CONFIG = {"rewrite": False, "keep_threshold": 70.0, "keep_fraction": 0.5}
RUN_CONFIG = {**QUIET, "resources": {"policy": {"config": CONFIG}}}


def _pool(tmp_path):
    """The pool's stored scores, a raw file for each shard but f (it cannot be re-selected: frozen) and each
    shard's partition; the definitions and instance over them."""
    raw, warehouse = tmp_path / "raw", tmp_path / "wh"
    raw.mkdir()
    for shard in ("s1", "s2"):
        (raw / f"{shard}.tar").write_bytes(b"")
    rows = [_row("s1", "a", 90.0, 400), _row("s2", "b", 80.0, 1000, phash=f"{int(PHASH, 16) ^ 1:016x}"),
            _row("f", "x", 10.0, 400, phash="fedcba9876543210"), _row("f", "y", 10.0, 400, phash="00ff00ff00ff00ff")]
    wh = Warehouse(str(warehouse))
    for shard, frame in pd.DataFrame(rows).groupby("shard"):
        wh.write_table("quality_scores", shard, frame.reset_index(drop=True))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", list(SHARDS))
    return wh, build_definitions(raw_root=str(raw), warehouse_root=str(warehouse)), instance


def _run(defs, instance, job: str, run_config=None, tags=None) -> None:
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, raise_on_error=False, run_config={**QUIET, **(run_config or RUN_CONFIG)}, tags=tags)
    assert result.success, job


def _decided(wh: Warehouse) -> dict:
    """(action, reason) of each re-selectable shard's pairs, decided as caption_decisions decides them."""
    policy = PolicyResource(**CONFIG).decision_policy()
    out = {}
    for shard in ("s1", "s2"):
        scores = wh.read_table("quality_scores", shard)
        cut = cut_for_shard(wh, policy.keep_fraction, policy.quality_column, shard, scores)
        marked, _ = mark_duplicates(scores, wh, shard, policy)
        out.update({(r.shard, r.key): (r.action, r.reason) for r in decide(marked, policy, cut=cut).itertuples()})
    return out


def _survivors(wh: Warehouse) -> set[tuple[str, str]]:
    groups = read_index(wh).groups
    kept = groups[groups["dup_keep"].astype(bool)]
    return set(zip(kept["shard"], kept["key"]))


@pytest.mark.parametrize("first", ["dedup_index_job", "selection_cut_job"])
def test_the_survivor_is_picked_under_the_stored_cut_whichever_runs_first(tmp_path, first):
    wh, defs, instance = _pool(tmp_path)
    for job in (first, ({"dedup_index_job", "selection_cut_job"} - {first}).pop()):
        _run(defs, instance, job)
    record = read_cut_record(wh)
    assert record["frozen"] == ["f"] and record["kept"] == 1
    assert _survivors(wh) == {("s1", "a")}
    assert read_manifest(wh)["cut"] == GlobalCut.from_dict(record).rule_digest()
    decided = _decided(wh)
    assert decided[("s1", "a")][0] == "keep"
    assert decided[("s2", "b")] == ("drop", "duplicate:near_image")
    # the sensor finds both current: it asks only for the shards to be decided
    requests = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert sorted(r.job_name for r in requests) == ["reselect_shards", "reselect_shards"]


def _index_of_older_code(wh: Warehouse) -> None:
    """dedup_index as the code before stored it when it ran before selection_cut: its survivors picked under a
    cut over every shard, the frozen one too, and no cut recorded."""
    rules = PolicyResource(**CONFIG).decision_policy()
    identity = pool_identity(wh)
    pool = load_pool(wh, sorted(identity), rules.quality_column)
    counting_f = global_cut(pool, rules.keep_fraction, rules.quality_column)
    index = build_index(pool, rules, None, identity, vectors=pool_vectors(wh, pool), cut=counting_f,
                        frozen=read_frozen(wh, ["f"]))
    write_index(wh, replace(index, policy=policy_config(PolicyResource(**CONFIG))), run_id="older")
    manifest = wh.read_json(index_paths(wh)["manifest"])
    manifest.pop("cut", None)
    wh.write_json(index_paths(wh)["manifest"], manifest)


def test_an_index_picked_under_another_cut_than_the_stored_one_is_stale(tmp_path):
    """An index whose survivors were picked under another cut than the stored one (here one stored by older
    code, which counted the frozen shard and recorded no cut): a shard decided meanwhile computes its groups
    under the stored cut, and the settle sensor rebuilds the index before it re-selects any shard."""
    wh, defs, instance = _pool(tmp_path)
    _run(defs, instance, "selection_cut_job")
    _index_of_older_code(wh)
    assert _survivors(wh) == {("s2", "b")}  # outside the stored cut: decide() drops it
    decided = _decided(wh)
    assert decided[("s1", "a")][0] == "keep" and decided[("s2", "b")] == ("drop", "duplicate:near_image")

    requests = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert [r.job_name for r in requests] == ["dedup_index_job"]
    _run(defs, instance, "dedup_index_job", requests[0].run_config, {RUN_KEY_TAG: requests[0].run_key})
    assert _survivors(wh) == {("s1", "a")}
    assert read_manifest(wh)["cut"] == GlobalCut.from_dict(read_cut_record(wh)).rule_digest()
    requests = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert sorted((r.job_name, r.partition_key) for r in requests) == [("reselect_shards", "s1"),
                                                                       ("reselect_shards", "s2")]
