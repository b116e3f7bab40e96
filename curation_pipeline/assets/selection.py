"""Stage 3, decisions: the keep_fraction cut, once over every shard's stored scores (not partitioned)."""


import hashlib
import json
import math

import dagster as dg
import pandas as pd

from curation_pipeline.assets.metadata import OWNERS, numbers, shown, table
from curation_pipeline.assets.scoring import quality_scores
from curation_pipeline.automation import reselect_each, reselectable
from curation_pipeline.decisions.cut_store import (INDEX_MARK_KEY, compute_cut, cut_is_current, index_mark,
                                                   read_cut_record, stale_cut_shards, turned_off, undecided_shards,
                                                   write_cut)
from curation_pipeline.decisions.dedup import pool_identity, read_manifest
from curation_pipeline.resources import PolicyResource, WarehouseResource
from curation_pipeline.scoring.selection import GlobalCut


@dg.asset(
    group_name="decisions", owners=OWNERS, tags={"stage": "decisions"},
    code_version="1",  # bump when the same inputs give different output
    deps=[dg.AssetDep(quality_scores, partition_mapping=dg.AllPartitionMapping())],
    kinds={"json"},
    description="MLM-Filter's / DataComp's target fraction as ONE cut over the whole pool: reads the quality "
    "column of every shard's stored quality_scores, keeps floor(N * keep_fraction) of the N pairs with a known "
    "score (ties at the cut chosen by a stable hash of shard and key) and stores the cut for caption_decisions. "
    "Shards whose quality_scores failed a blocking check are left out (no step reads those scores) and named, "
    "and so are frozen shards (no registered partition or no raw file: they cannot be re-selected, so their "
    "decisions and curated tar stay as they are). No model runs. With keep_fraction off it records 'off'.",
)
def selection_cut(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                  policy: PolicyResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    rules = policy.decision_policy()
    # before reading: a shard re-scored meanwhile reads as a changed pool. Blocked shards are in it too:
    # their check's verdict is in the file, so a change of it reads as a changed pool (cut_is_current)
    identity = pool_identity(wh)
    # the index there is now: one built after this cut, with keep_fraction off, supersedes it (turned_off)
    mark = {INDEX_MARK_KEY: index_mark(read_manifest(wh))}
    try:  # frozen: its decisions stay as they are, so the cut counts no place for its pairs (as dedup_index keeps them)
        frozen = reselectable(context.instance, warehouse, sorted(identity))[1] if identity else []
    except (FileNotFoundError, NotADirectoryError) as exc:  # an unmounted disk is not a pool of frozen shards
        if rules.keep_fraction is not None:
            raise dg.Failure(description=f"the raw location cannot be listed ({exc}): which shards can be "
                             "re-selected, and so decided by the cut, is unknown") from exc
        frozen = None
    if rules.keep_fraction is None:
        path = write_cut(wh, None, run_id=context.run_id, **mark, **({} if frozen is None else {"frozen": frozen}))
        return dg.MaterializeResult(metadata={"status": "off", "path": dg.MetadataValue.path(path)})
    if not identity:
        raise dg.Failure(description="no quality_scores are stored in the warehouse: materialize pairs and "
                         "quality_scores for the shards first, then selection_cut")
    try:  # the function dedup_index picks survivors under until this cut is stored: the same cut by construction
        cut, pool = compute_cut(wh, rules.keep_fraction, rules.quality_column, identity, frozen)
    except KeyError as exc:
        raise dg.Failure(description=str(exc.args[0])) from exc
    scores, blocked = pool.scores, pool.blocked
    path = write_cut(wh, cut, run_id=context.run_id, identity=identity, blocked=blocked, frozen=frozen, **mark)
    frozen = [shard for shard in frozen if shard not in blocked]  # named as blocked already
    per_shard = pd.DataFrame([{"shard": shard, "scored": info["scored"], "kept": info["kept"]}
                              for shard, info in sorted(cut.shards.items())])
    metadata = {
        "status": "on",
        "quality_column": cut.quality_column,
        **numbers({"keep_fraction": cut.fraction, "scored": cut.scored, "kept": cut.kept,
                   "unscored": len(scores) - cut.scored, "shards": len(cut.shards), "above_cut": cut.above,
                   "ties_at_cut": cut.ties_at_cut, "ties_kept": cut.ties_kept, "blocked_shards": len(blocked),
                   "frozen_shards": len(frozen)}),
        "per_shard": table(per_shard, limit=100),
        "per_shard_shown": shown(per_shard, 100, "shards", "the cut file at path"),
        "path": dg.MetadataValue.path(path),
    }
    if blocked:
        metadata["blocked"] = table(pd.DataFrame({"shard": list(blocked),
                                                  "failed_blocking_checks": list(blocked.values())}), limit=100)
        context.log.warning(f"keep_fraction cut: {len(blocked)} shard(s) left out, their quality_scores failed a "
                            f"blocking check (no step reads them): {', '.join(sorted(blocked))}")
    if frozen:
        metadata["frozen"] = dg.MetadataValue.json(frozen)
        context.log.warning(f"keep_fraction cut: {len(frozen)} frozen shard(s) left out (no registered partition or "
                            f"no raw file: their decisions and curated tar stay as they are): {', '.join(frozen)}")
    if cut.cut_score is not None:
        metadata["cut_score"] = (dg.MetadataValue.float(float(cut.cut_score)) if math.isfinite(cut.cut_score)
                                 else dg.MetadataValue.text(str(cut.cut_score)))
    if cut.boundary is not None:
        metadata["tie_boundary"] = dg.MetadataValue.json(
            {"tie_rank": str(cut.boundary[0]), "shard": cut.boundary[1], "key": cut.boundary[2]})
    context.log.info(f"keep_fraction cut: {cut.kept} of {cut.scored} scored pairs by {cut.quality_column} "
                     f"(cut score {cut.cut_score}, {cut.ties_kept} of {cut.ties_at_cut} ties kept)")
    return dg.MaterializeResult(metadata=metadata)


selection_cut_job = dg.define_asset_job(
    "selection_cut_job", selection=dg.AssetSelection.assets(selection_cut),
    description="Recompute the keep_fraction cut over every shard's stored scores (no model runs); then "
    "re-select the shards (reselect_shards) to apply it.")


def settle_cut(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict | None = None,
               skip: tuple[str, ...] = (), results: dict | None = None, after_each_run=lambda: None) -> list[str]:
    """In process, after selection_cut: re-select every shard (but ``skip``) decided with another cut,
    so the whole curated pool applies the one just stored. Returns the shards whose run failed;
    fills ``results`` (``reselect:<shard>`` -> execution result) if given; calls ``after_each_run``
    after each run."""
    warehouse: WarehouseResource = defs.resources["warehouse"]
    stale = [shard for shard in stale_cut_shards(warehouse.warehouse()) if shard not in skip]
    return reselect_each(defs, instance, stale, run_config, results, after_each_run)


def cut_request(wh, fraction: float | None, column: str, identity: dict[str, str],
                run_config: dict | None = None) -> dg.RunRequest | None:
    """For the settle sensor: the cut, when the scored pool (``identity``) changed since it was computed, it
    was computed for another fraction or column, or the frozen shards it left out are not those the stored
    dedup_index assumes (the sensor rebuilds that one first when a raw file goes or comes back); with
    keep_fraction off, an "off" record once the stored "on" one is ``turned_off`` (as ``curate run`` records
    it), never while it is a change to keep_fraction on half done by hand. Under ``run_config`` (the policy
    the sensor settles under)."""
    record = read_cut_record(wh) or {}
    manifest = read_manifest(wh)
    # the frozen shards moved: only an index built after the stored cut says so (one older than it, a rebuild
    # that keeps failing, say, would have a new cut asked for on every tick, none of them changing it)
    frozen_moved = (manifest is not None and record.get(INDEX_MARK_KEY) != index_mark(manifest)
                    and sorted(manifest.get("frozen") or ()) != sorted(record.get("frozen") or ()))
    if fraction is None:
        if not turned_off(wh, record or None):
            return None
    elif cut_is_current(wh, fraction, column, identity) and not frozen_moved:
        return None
    stored = record.get("run_id")  # a pool and policy seen before, after another cut: asked anew
    pool_key = hashlib.sha256(json.dumps([identity, fraction, column, stored], sort_keys=True).encode()).hexdigest()[:16]
    return dg.RunRequest(job_name="selection_cut_job", run_key=f"selection_cut:{pool_key}", run_config=run_config or {})


def cut_stale(wh) -> tuple[list[str], str | None]:
    """The shards to re-select under the stored cut (decided with another cut, or not decided: their run
    failed waiting for it), and a key of that cut: its rule digest and the run that stored it."""
    record = read_cut_record(wh)
    if record is None or record.get("status") != "on":
        return [], None
    key = f"{GlobalCut.from_dict(record).rule_digest()}:{record.get('run_id')}"
    return sorted(set(stale_cut_shards(wh)) | set(undecided_shards(wh))), key
