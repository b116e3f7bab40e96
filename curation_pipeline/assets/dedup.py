"""Stage 3, decisions: the cross-shard duplicate index (not partitioned), and keeping shards in step with it.

Groups and survivors are resolved once over every shard's stored fingerprints, so dedup does not depend
on which shard ran first; ``settle_duplicates`` (``curate run``) or ``dedup_settle_sensor`` then
re-selects every shard decided against an older pool, so the published set depends on the pool alone.
A shard that cannot be re-selected (``reselectable``) is frozen, one with a table that failed a blocking check
is blocked: either publishes its curated tar, whose pairs survive their groups.
"""


import functools
import hashlib
import json
import os
from dataclasses import replace

import dagster as dg
import pandas as pd
from dagster._core.storage.tags import RUN_KEY_TAG

from curation_pipeline.assets.metadata import OWNERS, numbers, shown, table
from curation_pipeline.assets.scoring import quality_scores
from curation_pipeline.assets.selection import cut_request, cut_stale, selection_cut_job
from curation_pipeline.automation import (DEFAULT_STATUS, IN_FLIGHT, backfill_pending, reselect_each, reselectable,
                                          reselect_shards_job)
from curation_pipeline.decisions.cut_store import other_cut
from curation_pipeline.decisions.dedup import (INDEX_ASSET, DedupIndex, cut_mismatch, dropped_for_another_shard,
                                               held_identity, OTHER_RULES, POLICY_DIGEST_IGNORES, pool_has_signals,
                                               pool_identity, read_index, refresh_index, rules_digest,
                                               stale_reasons, write_index)
from curation_pipeline.resources import PolicyResource, WarehouseResource


@dg.asset(
    name=INDEX_ASSET, group_name="decisions", owners=OWNERS, tags={"stage": "decisions"},
    code_version="11",  # bump when the same inputs give different output (2: the survivor is a copy decide()
    # keeps: checked by every enabled image rule, a caption kept or safely rewritten under the policy; 3: a
    # frozen shard's published pairs survive; 4: a copy in quality_scores that failed a blocking check ranks last,
    # and a frozen shard publishes what its curated tar holds; 5: so does a shard with a blocking mark on
    # quality_scores or final_captions; 6: with keep_fraction on, a copy outside the cut is not safe; 7: a held
    # shard's tar pair its stored scores no longer hold is grouped by the tar's sidecar; 8: built before
    # selection_cut, the cut it picks under leaves frozen shards out, as the stored one does; 9: a copy failing
    # keep_expression is not safe either; 10: a dropped copy's dup_kind is how it is joined to the copy kept;
    # 11: a copy whose weak-caption check failed on it, its scorer's error set, is weak)
    deps=[dg.AssetDep(quality_scores, partition_mapping=dg.AllPartitionMapping())],
    kinds={"parquet"},
    description="Duplicate groups over ALL shards (exact pixels, exact pairs, near images by pHash, near captions "
    "on loosely similar images), each with ONE survivor chosen among the members the policy would publish (image "
    "rules passed and checked, caption kept or rewritten with a safe fallback): the largest usable image, then "
    "the best caption, then (shard, key), so the published set does not "
    "depend on the order or parallelism of shard runs. A shard that cannot be re-selected (no registered "
    "partition or no raw file) is frozen: the pairs its curated tar holds are kept, their copies elsewhere "
    "dropped. So is a shard whose quality_scores or final_captions failed a blocking check (no tar is written "
    "from them): it publishes its earlier curated tar, or nothing. Reads only fingerprints and rule columns of "
    "the stored quality_scores (no model runs); a new shard is compared against the pool once. "
    "caption_decisions reads it; shards decided against an older pool are listed as stale (re-select them: "
    "reselect_shards).",
)
def dedup_index(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                policy: PolicyResource) -> dg.MaterializeResult:
    wh = warehouse.warehouse()
    index = refresh_index(wh, policy.decision_policy(), frozen=frozen_shards(context.instance, warehouse))
    # the policy it was built under is the one the settle sensor keeps the pool decided with, until the code
    # location's own policy changes
    index = replace(index, policy=policy_config(policy), location_policy=location_policy_digest())
    paths = write_index(wh, index, run_id=context.run_id)
    stale = stale_reasons(wh, index)
    groups = index.groups
    survivors = groups[groups["dup_keep"]]
    counts = groups.assign(dropped=~groups["dup_keep"].astype(bool)).groupby("shard").agg(
        in_groups=("key", "size"), dropped_as_duplicate=("dropped", "sum"))  # one pass, not one per shard
    per_shard = pd.DataFrame([{"shard": s, "in_groups": int(counts["in_groups"].get(s, 0)),
                               "dropped_as_duplicate": int(counts["dropped_as_duplicate"].get(s, 0)),
                               "stale": s in stale, "frozen": s in index.frozen, "blocked": s in index.blocked}
                              for s in sorted(index.identity)])
    for why in sorted({s.why for s in stale.values()}):
        context.log.info(f"shards stale ({why}; re-select them under this policy): "
                         f"{', '.join(s for s, stale_why in stale.items() if stale_why.why == why)}")
    if index.unindexed:
        context.log.warning(
            "curated tars hold pairs their shard's stored scores do not (made from an earlier raw file; the shard is "
            "blocked or frozen, so no new tar replaced them) and whose sidecars store no fingerprints: copies of "
            "those elsewhere are not dropped and may be published twice. Re-run or remove those tars: "
            + ", ".join(f"{shard} ({n})" for shard, n in index.unindexed.items()))
    return dg.MaterializeResult(metadata={
        **numbers({"shards": len(index.identity), "pairs_in_groups": len(groups), "groups": len(survivors),
                   "dropped_as_duplicate": int((~groups["dup_keep"]).sum()), "links": len(index.links),
                   "stale_shards": len(stale), "frozen_shards": len(index.frozen),
                   "blocked_shards": len(index.blocked),
                   "published_pairs_not_in_the_pool": sum(index.unindexed.values()),
                   "published_pairs_grouped_from_their_tar": sum(index.from_tar.values()),
                   "pairs_dropped_for_a_copy_in_another_shard": dropped_for_another_shard(groups)}),
        "stale": dg.MetadataValue.json(sorted(stale)),
        "frozen": dg.MetadataValue.json(sorted(index.frozen)),
        # a table of theirs failed a blocking check: they publish their curated tar (or nothing)
        "blocked": dg.MetadataValue.json(sorted(index.blocked)),
        "unindexed": dg.MetadataValue.json(index.unindexed),
        "per_shard": table(per_shard, limit=200),
        "per_shard_shown": shown(per_shard, 200, "shards", "the stale, frozen and blocked lists above; the index at path"),
        "rules": dg.MetadataValue.text(index.rules),
        "policy": dg.MetadataValue.json(index.policy),
        "path": dg.MetadataValue.path(wh.local_path(paths["manifest"]) if wh.is_local else paths["manifest"]),
    })


dedup_index_job = dg.define_asset_job(
    "dedup_index_job", selection=dg.AssetSelection.assets(INDEX_ASSET),
    description="Rebuild the cross-shard duplicate index from the stored scores (no model runs).")


def frozen_shards(instance: dg.DagsterInstance, warehouse: WarehouseResource, identity=None) -> list[str]:
    """The scored shards that cannot be re-selected (``reselectable``): the index keeps what they publish."""
    shards = pool_identity(warehouse.warehouse()) if identity is None else identity
    return reselectable(instance, warehouse, sorted(shards))[1]


def policy_config(policy: PolicyResource) -> dict:
    """The ``policy`` resource's config as plain JSON: what a run config's ``resources: policy: config`` takes."""
    return policy.model_dump(mode="json")


def location_policy_digest() -> str:
    """A digest of the code location's own policy (its settings file's, else the defaults), as the settle sensor is
    given it: read from the file, whatever policy a run was given (``curate run --set``, a launchpad)."""
    from curation_pipeline.resources import SETTINGS_FILE_ENV, location_resources

    path = os.environ.get(SETTINGS_FILE_ENV, "").strip()
    policy = (location_resources(path) if path else {}).get("policy") or PolicyResource()
    text = json.dumps(policy_config(policy), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settle_policy(stored: DedupIndex | None, policy: PolicyResource) -> tuple[PolicyResource, dict | None, str]:
    """The policy to settle under: the one the stored dedup_index was built with (the rules the pool was last
    decided with on purpose, e.g. a launchpad's keep_fraction), else the code location's ``policy``, and so where
    the location's own policy changed since the index was built (its settings file edited: the newer intent). With
    the run config that asks for it (None: the code location's own) and a note saying how they differ (none
    where only settings that decide nothing do: those are settled under as stored, unreported). A stored
    config this code no longer accepts raises a ValueError."""
    if stored is None or stored.policy is None:
        return policy, None, ""
    if stored.location_policy is not None and stored.location_policy != location_policy_digest():
        differs = _policy_differences(stored.policy, policy_config(policy), "code location")
        return policy, None, ("" if not differs else
                              f"settling under the code location's policy, changed since dedup_index was built "
                              f"({stored.computed_at or 'unknown time'}) with {', '.join(differs)}")
    how = "materialize dedup_index with the policy to settle under"
    try:
        settled = PolicyResource(**stored.policy)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the policy dedup_index was built with is no longer valid ({exc}); {how}") from exc
    config = policy_config(settled)  # a field added since gets its default
    unknown = sorted(set(_flat(stored.policy)) - set(_flat(config)))
    if unknown:
        raise ValueError(f"the policy dedup_index was built with sets {', '.join(unknown)}, which the policy no "
                         f"longer has; {how}")
    if config == policy_config(policy):
        return policy, None, ""
    differs = _policy_differences(config, policy_config(policy), "code location")
    note = "" if not differs else (
        f"settling under the policy dedup_index was last built with ({stored.computed_at or 'unknown time'}): "
        f"{', '.join(differs)}; materialize dedup_index with another policy to settle under that")
    return settled, {"resources": {"policy": {"config": config}}}, note


def _policy_differences(stored: dict, ours: dict, whose: str) -> list[str]:
    """The settings in which a stored policy config differs from ``ours``, each as ``key=stored (whose: ours)``:
    only those ``policy_digest`` covers, since one that decides nothing (``POLICY_DIGEST_IGNORES``) changes no
    shard's decisions and is no difference to report."""
    theirs, mine = (_flat({k: v for k, v in config.items() if k not in POLICY_DIGEST_IGNORES})
                    for config in (stored, ours))
    def said(value) -> str:  # an unset setting (keep_fraction, keep_expression) is off, as the README says it
        return "off" if value is None else repr(value)

    return [f"{key}={said(theirs.get(key))} ({whose}: {said(mine.get(key))})" for key in sorted(set(mine) | set(theirs))
            if theirs.get(key) != mine.get(key)]


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def settle_requests(instance: dg.DagsterInstance, warehouse: WarehouseResource,
                    policy: PolicyResource, warn=lambda message: None,
                    info=lambda message: None) -> list[dg.RunRequest] | str:
    """What to run so that every shard's decisions match the current pool: the duplicate index (and,
    with keep_fraction on, the selection cut) when stale (another pool, rules, or set of frozen or blocked
    shards; for the index also a stored cut other than the one its survivors were picked under), else a
    re-selection of each shard decided against an older index or another cut, or under other rules. All
    under the policy the stored index was built with (``settle_policy``; ``info`` says when it is not the
    code location's ``policy``), never the reverse. A string says why nothing is requested."""
    from curation_pipeline.workers import settle, waiting_to_retry

    # a run killed outright (OOM, SIGKILL) stays STARTED: one whose process on this machine is gone is marked
    # failed here (workers.settle); one elsewhere stays until its launcher's run monitoring or the UI ends it
    active = [run for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=20)
              if settle(instance, run) is None][:5]  # (its shard is the schedule's to ask again, or the retries')
    active += [record.dagster_run for record in waiting_to_retry(instance, limit=5)]  # about to change the pool
    if active:
        return (f"runs in progress ({', '.join(r.run_id[:8] for r in active)}): the pool is still changing. A run "
                "whose process died on another machine stays STARTED until run monitoring marks it failed: else "
                "terminate it in the UI (Runs) and settling resumes.")
    launching = backfill_pending(instance)
    if launching:
        return (f"a backfill in progress has yet to launch the runs of {len(launching)} shard(s): the pool is still "
                "changing")
    wh = warehouse.warehouse()
    identity = pool_identity(wh)
    if not identity:
        return "no scored shards"
    stored = read_index(wh)
    code_policy = policy
    try:
        policy, run_config, note = settle_policy(stored, policy)
    except ValueError as exc:
        return str(exc)
    assumed = policy_config(code_policy)  # what a decision that records no policy ran under: a plain run's
    decision_rules = policy.decision_policy()
    rules = rules_digest(decision_rules)
    if decision_rules.keep_fraction is not None:
        other = other_cut(wh, decision_rules.keep_fraction, decision_rules.quality_column)
        if other:  # mid-change (selection_cut materialized with new rules first): neither undone nor half applied
            source = "the policy dedup_index was built with" if run_config else "the code location's policy"
            return (f"selection_cut was computed with {other}, but the pool settles under keep_fraction="
                    f"{decision_rules.keep_fraction:g} by {decision_rules.quality_column!r} ({source}): materialize "
                    "dedup_index with the policy selection_cut used (the sensor then settles under it), or "
                    "selection_cut with this one; nothing requested meanwhile")
    if note:
        info(note)
    try:
        # a raw file back: not frozen; a blocking mark set or cleared: another blocked set
        frozen, blocked = held_identity(wh, frozen_shards(instance, warehouse, identity))
    except (FileNotFoundError, NotADirectoryError) as exc:  # not a pool of frozen shards: wait for it
        return f"the raw location cannot be listed ({exc}): which shards can be re-selected is unknown"
    # picked under another keep_fraction cut than the stored one it would read now (by older code, or as the pool
    # changed meanwhile): rebuilt, so a group's survivor is one decide() keeps under the stored cut
    other_cut_of_index = stored is not None and cut_mismatch(wh, stored.cut, stored.frozen, decision_rules, identity)
    # a policy stored as an older code wrote it (a field added since): rebuilt, so that it records the config
    # its shards will be decided under, which they compare their own with (``stale_reasons``)
    index_stale = (stored is None or stored.identity != identity or stored.rules != rules or stored.frozen != frozen
                   or stored.blocked != blocked or bool(other_cut_of_index)
                   or (stored.policy is not None and stored.policy != policy_config(policy)))
    rebuild = {"dedup_index": None, "selection_cut": cut_request(wh, decision_rules.keep_fraction,
                                                                 decision_rules.quality_column, identity, run_config)}
    if index_stale:
        pool_key = hashlib.sha256(json.dumps([identity, frozen, blocked, rules, stored.computed_at if stored else None,
                                              other_cut_of_index or None],  # a cut stored anew: asked anew
                                             sort_keys=True).encode()).hexdigest()[:16]
        rebuild["dedup_index"] = dg.RunRequest(job_name="dedup_index_job", run_key=f"dedup_index:{pool_key}",
                                               run_config=run_config or {})
    # a request whose run_key ran already (and failed, or it would be current) is skipped by Dagster: not
    # asked again, and it holds off only what depends on it
    failed = {name: request.run_key for name, request in rebuild.items()
              if request is not None and instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key}), limit=1)}
    pending = [r for name, r in rebuild.items() if r is not None and name not in failed]
    if pending:
        return pending
    stale = {} if index_stale else stale_reasons(wh, stored, assumed)
    dedup = {s: f"{why.digest}@{stored.computed_at}" for s, why in stale.items()}
    cut, cut_key = ([], None) if decision_rules.keep_fraction is None or rebuild["selection_cut"] else cut_stale(wh)
    if not dedup and not cut:
        if failed:
            return _noted(f"{' and '.join(failed)} still stale after the run requested for it "
                          f"({', '.join(failed.values())}: see it in Runs); nothing else is stale", note)
        return _noted(f"duplicate index{' and selection cut' if cut_key else ''} current for {len(identity)} shards; "
                      "no shard is stale", note)
    shards, left = reselectable(instance, warehouse, sorted(set(dedup) | set(cut)))
    passed_over = (f"stale, but cannot be re-selected (no registered partition or no raw file; their stored tables "
                   f"stay in the pool): {', '.join(left)}")
    if not shards:
        return _noted(passed_over, note)
    if left:
        warn(passed_over)
    return [dg.RunRequest(job_name="reselect_shards", partition_key=s,
                          # a shard launched again under other rules after it was settled is asked anew
                          run_key=f"settle:{s}:{dedup.get(s, '-')}:{cut_key if s in cut else '-'}"
                                  + (f":{stale[s].decided_by}" if s in stale and stale[s].why == OTHER_RULES else ""),
                          run_config=run_config or {},
                          tags={"curation/reason": " and ".join(
                              why for why, is_stale in (
                                  ("dedup_index changed", s in stale and stale[s].why != OTHER_RULES),
                                  ("decided under other rules than dedup_index's",
                                   s in stale and stale[s].why == OTHER_RULES),
                                  ("selection_cut changed", s in cut)) if is_stale)})
            for s in shards]


def _noted(reason: str, note: str) -> str:
    return f"{reason}; {note}" if note else reason


def no_pool_to_settle(wh, stored: DedupIndex | None) -> bool:
    """Fewer than two scored shards, or none scored with duplicate signals, and no index stored: no duplicate
    spans shards, and ``curate run`` builds no index for them (the sensor's would settle nothing)."""
    return (len(wh.shards("quality_scores")) < 2 or not pool_has_signals(wh)) and stored is None


def settle_duplicates(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict | None = None,
                      results: dict | None = None, after_each_run=lambda: None, say=lambda message: None,
                      own=()) -> list[str]:
    """In process: materialize dedup_index, then re-select every stale shard. Returns what failed;
    fills ``results`` (name -> execution result) if given; calls ``after_each_run`` after each run (the
    CLI's stop on a signal). Nothing to do for fewer than two shards, or when no shard was scored with
    duplicate signals, unless a dedup_index is stored: the settle sensor keeps the policy it records, so it
    is rebuilt under this run's, and shards decided under another are re-selected. Where the stored one
    decides otherwise, ``say`` is told so before any shard is re-selected: the settings that differ and the
    shards (other than ``own``, this run's) re-selected under this run's."""
    warehouse: WarehouseResource = defs.resources["warehouse"]
    wh = warehouse.warehouse()
    stored = read_index(wh)
    if no_pool_to_settle(wh, stored):
        return []
    run_config = run_config or {}
    ours = policy_config(defs.resources["policy"])  # also what a decision that records no policy ran under
    changed = policy_change(stored.policy if stored else None, ours)
    result = defs.resolve_job_def("dedup_index_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config=run_config)
    after_each_run()
    if results is not None:
        results[INDEX_ASSET] = result
    if not result.success:
        return [INDEX_ASSET]
    stale = stale_reasons(wh, assumed=ours)
    if changed:
        others = sorted(s for s, why in stale.items() if why.why == OTHER_RULES and s not in own)
        say(f"the pool was decided under another policy (dedup_index's: {', '.join(changed)}); this run's settings "
            f"replace it: {len(others)} other shard{'s' if len(others) != 1 else ''} re-selected under them"
            + (f": {', '.join(others)}" if others else ""))
    return reselect_each(defs, instance, list(stale), run_config, results, after_each_run)


def policy_change(stored: dict | None, ours: dict) -> list[str]:
    """The settings (``policy_digest``'s) in which a stored policy config differs from ``ours``, each as
    ``key=stored (this run: ours)``; a field the stored one lacks (added since) is taken at its default."""
    if stored is None:
        return []
    return _policy_differences(_normalized(json.dumps(stored, sort_keys=True, default=str)), ours, "this run")


@functools.lru_cache(maxsize=32)
def _normalized(stored: str) -> dict:
    """A stored policy config with this code's defaults filled in, by its canonical JSON: asked by every
    re-selected shard's rewrite and final steps of the same few configs, where building the resource (its
    config schema) cost about 5 ms each time. A config no longer valid is compared as it is. Only
    ``_policy_differences`` reads the cached dict, which changes nothing in it."""
    config = json.loads(stored)
    try:
        return policy_config(PolicyResource(**config))
    except (ValueError, TypeError):  # no longer valid: compared as it is
        return config


@dg.sensor(name="dedup_settle_sensor", jobs=[dedup_index_job, selection_cut_job, reselect_shards_job],
           minimum_interval_seconds=60, default_status=DEFAULT_STATUS,
           description="When no run is in progress: rebuilds dedup_index (and, with keep_fraction on, "
           "selection_cut) if the pool of scored shards changed, then re-selects every shard decided against an "
           "older pool, so cross-shard dedup and the keep_fraction cut publish the same set whatever order the "
           "shard runs took. It settles under the policy the last dedup_index was materialized with (the code "
           "location's before there is one): materialize dedup_index with another policy to change it.")
def dedup_settle_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource, policy: PolicyResource):
    requests = settle_requests(context.instance, warehouse, policy, warn=context.log.warning, info=context.log.info)
    return dg.SkipReason(requests) if isinstance(requests, str) else requests
