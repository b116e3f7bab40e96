"""Jobs, the new-shard sensor and the fill-missing-or-stale schedule. Both start STOPPED, so opening the UI
never launches work by surprise; turn them on in Automation, or set CURATION_AUTOMATION=on."""


import json
import os
import warnings
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from curation_pipeline.partitions import add_shards, shard_partitions
from curation_pipeline.resources import WarehouseResource
from curation_pipeline.shards.fingerprint import Observed, hash_file, observed_version, raw_stat
from curation_pipeline.storage.warehouse import object_storage_errors

if TYPE_CHECKING:  # imported where it is used: Dagster's staleness module stays out of the definitions' import
    from curation_pipeline.staleness import PrefetchedStaleStatusResolver

# one retry of a run whose process died (OOM, a killed pod); a step that failed (a missing file, a
# blocking check) fails the same way again, so it is not retried
RETRY_CRASHES = {"dagster/max_retries": "1", "dagster/retry_on_asset_or_op_failure": "false"}
RAW = dg.AssetKey("raw_shards")
SHARD_KEYS = [dg.AssetKey(name) for name in ("pairs", "quality_scores", "caption_decisions", "rewritten_captions",
                                             "final_captions", "curated_shards")]
SHARD_ASSETS = dg.AssetSelection.assets(*SHARD_KEYS)
# a shard's two halves: what the models compute, and what is decided from the stored scores
SCORE_KEYS = [RAW, *SHARD_KEYS[:2]]
DECIDE_KEYS = SHARD_KEYS[2:]

curate_shards_job = dg.define_asset_job(
    "curate_shards", selection=SHARD_ASSETS | dg.AssetSelection.assets(RAW), partitions_def=shard_partitions,
    description="Everything for one shard: observe the raw file -> pairs -> scores -> decisions -> rewrites -> final captions -> curated tar.",
    tags=RETRY_CRASHES,
)
RESELECT_ASSETS = dg.AssetSelection.assets(*DECIDE_KEYS)
# the reason given for a shard whose stale tables all come after its scores (another rewriter version or model):
# its stored scores stand, so only its decide half runs again
SCORES_CURRENT = "stale, its scores current: "
reselect_shards_job = dg.define_asset_job(
    "reselect_shards", selection=RESELECT_ASSETS, partitions_def=shard_partitions,
    description="One shard again from its STORED scores (no scoring model runs): decisions -> rewrites -> final "
    "captions -> curated tar. Run after changing a policy threshold, or after materializing selection_cut "
    "when keep_fraction is on.",
    tags=RETRY_CRASHES,
)
def reselectable(instance: dg.DagsterInstance, warehouse: WarehouseResource, shards) -> tuple[list[str], list[str]]:
    """The shards that can be re-selected (a registered partition whose raw file is there), and the rest. A
    pruned shard, or one whose raw file was removed, keeps its stored tables in the pool (``prune_shards``),
    so it can be stale against a new index or cut; re-selecting it fails, and must not fail other shards'
    runs or the sensor over and over."""
    known = set(instance.get_dynamic_partitions(shard_partitions.name))
    shards = list(shards)
    if len(shards) > 1:  # one listing, not a request per shard (the settle sensor asks this every tick)
        # a raw location that is missing raises (FileNotFoundError): an unmounted disk is not a deleted
        # pool, and would make every shard one that cannot be re-selected (as prune_shards refuses to read it)
        exists = set(warehouse.list_raw()[0]).__contains__
    else:
        exists = warehouse.raw_exists
    ok, left = [], []
    for shard in shards:
        (ok if shard in known and exists(shard) else left).append(shard)
    return ok, left


def reselect_each(defs: dg.Definitions, instance: dg.DagsterInstance, shards, run_config: dict | None = None,
                  results: dict | None = None, after_each_run=lambda: None) -> list[str]:
    """In process: a ``reselect_shards`` run for each shard that can be re-selected (``reselectable``; the
    others are passed over with a warning); returns those whose run failed, fills ``results``
    (``reselect:<shard>`` -> execution result) if given, calls ``after_each_run`` after each."""
    shards, left = reselectable(instance, defs.resources["warehouse"], shards)
    if left:
        warnings.warn(f"not re-selected (no registered partition or no raw file; their stored tables stay in the "
                      f"pool): {', '.join(left)}", stacklevel=2)
    failed = []
    for shard in shards:
        result = defs.resolve_job_def("reselect_shards").execute_in_process(
            partition_key=shard, instance=instance, raise_on_error=False, run_config=run_config or {})
        after_each_run()
        if results is not None:
            results[f"reselect:{shard}"] = result
        if not result.success:
            failed.append(shard)
    return failed


observe_raw_job = dg.define_asset_job(
    "observe_raw_shards", selection=dg.AssetSelection.assets("raw_shards"),
    description="Records each registered raw shard's SHA-256 as its data version (re-hashing only files whose "
    "stat changed); a new version marks the shard's assets stale.")
report_job = dg.define_asset_job("quality_report_job", selection=dg.AssetSelection.assets("quality_report"),
                                 description="Rebuild the DuckDB quality report over all curated shards.")

_ON = os.environ.get("CURATION_AUTOMATION") == "on"
DEFAULT_STATUS = dg.DefaultSensorStatus.RUNNING if _ON else dg.DefaultSensorStatus.STOPPED
DEFAULT_SCHEDULE_STATUS = dg.DefaultScheduleStatus.RUNNING if _ON else dg.DefaultScheduleStatus.STOPPED


@dg.sensor(job=curate_shards_job, minimum_interval_seconds=60, default_status=DEFAULT_STATUS,
           description="Registers every new .tar in the raw location as a partition and requests its run, once its "
           "size and modification time are the same on two ticks in a row (a file still being copied waits). "
           "Files whose names are not valid keys, .TAR files and .tar files in subfolders are reported in the "
           "sensor's log and tick, never renamed or moved.")
def new_shards_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    try:
        found, rejected, known, new, listed = _unregistered(context, warehouse)
    except (FileNotFoundError, NotADirectoryError) as exc:
        return dg.SensorResult(skip_reason=str(exc))
    # the file's stat in the run key: a shard pruned, then added again, runs again. An object store's comes with
    # its listing: a request per new file (a HEAD on S3) held a tick with thousands of them past Dagster's 60 s
    # limit, so it saved no cursor and the next tick started over
    stats = {key: _file_run_key(key, found[key], listed.get(key)) for key in new}
    seen = json.loads(context.cursor) if context.cursor else {}
    ready = [key for key in new if seen.get(key) == stats[key]]  # unchanged since the last tick: copied whole
    context.update_cursor(json.dumps({k: v for k, v in stats.items() if k not in ready}, sort_keys=True))
    if not ready:
        waiting = sorted(set(new) - set(ready))
        return dg.SensorResult(skip_reason=(
            f"{len(waiting)} new shard(s) wait a tick for their files to stop changing: {', '.join(waiting[:10])}"
            + (f" ({len(rejected)} rejected names: {_some(rejected, 3)})" if rejected else "")
            if waiting else f"no new shards ({len(found)} in the raw location, {len(known)} registered, "
            f"{len(rejected)} rejected names"
            + (f": {_some(rejected, 3)}" if rejected else "") + ")"))
    # a tick that requests runs carries no message (Dagster takes a skip reason or run requests, never both):
    # the rejected names are in its log (``_unregistered``), as on every tick
    code = shard_code_versions(context.repository_def)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=key, run_key=stats[key], tags={CODE_TAG: code} if code else {})
                      for key in ready],
        dynamic_partitions_requests=[shard_partitions.build_add_request(ready)],
    )


def _file_run_key(key: str, url: str, stat=None) -> str:
    if stat is None:
        try:
            stat = raw_stat(url)
        except OSError:  # gone since the listing: the run reports it
            return f"shard:{key}"
    return f"shard:{key}:{stat.size}:{stat.identity or stat.mtime}"


LOGGED_REJECTS = 20


def _unregistered(context, warehouse: WarehouseResource) -> tuple[dict[str, str], list[str], set[str], list[str],
                                                                  dict]:
    """The raw shards found, the rejected file names (logged), the registered partitions, the new shards, and
    the stats their listing gave (``list_raw_stats``)."""
    found, rejected, listed = warehouse.list_raw_stats()
    for message in rejected[:LOGGED_REJECTS]:  # every tick: a folder of misplaced shards is not a flood
        context.log.warning(message)
    if len(rejected) > LOGGED_REJECTS:
        context.log.warning(f"and {len(rejected) - LOGGED_REJECTS} more raw file(s) rejected")
    known = set(context.instance.get_dynamic_partitions(shard_partitions.name))
    return found, rejected, known, sorted(set(found) - known), listed


def shards_to_refresh(instance: dg.DagsterInstance, warehouse: WarehouseResource,
                      repository: dg.RepositoryDefinition) -> dict[str, str]:
    """Partition -> why it needs a run (``refresh_plan``'s first half: what the schedule requests, before it
    leaves out the shards with a run in flight)."""
    return refresh_plan(instance, warehouse, repository)[0]


class Held(str):
    """Why a shard is held back (``failed_the_same_way``'s text, which the schedule shows), with ``reason``: why
    it needs a run at all (as ``refresh_plan``'s shards to run give it), for a run asked by hand."""

    reason: str

    def __new__(cls, text: str, reason: str) -> "Held":
        held = super().__new__(cls, text)
        held.reason = reason
        return held


def refresh_plan(instance: dg.DagsterInstance, warehouse: WarehouseResource, repository: dg.RepositoryDefinition,
                 raw: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, Held], list[str]]:
    """The shards to run, partition -> why: "missing" (never materialized, by Dagster), "missing (no <asset> file)"
    (its file is not in the warehouse: deleted, or a changed warehouse root), "stale: <root causes>" (new raw
    content, a changed code_version; ``SCORES_CURRENT`` instead of "stale: " where every root cause is a table
    after the scores, such as another rewriter, and the shard is made in order: its decide half alone needs a
    run), or what ``not_made_here_in_order`` finds of a shard Dagster calls fresh (made since into another
    warehouse, or left half made); the shards held back, partition -> why (a ``Held``, whose ``reason`` is why
    the shard needs a run): their last two ``curate_shards`` runs
    failed in a step (``failed_the_same_way``), and neither a new raw version was observed nor the shard assets'
    code versions changed since, so running them again would fail the same way; and the partitions passed over
    because their raw file is gone (nothing to curate from). ``raw`` is ``list_raw``'s shards, listed here if not
    given: a raw location that is itself missing raises (FileNotFoundError, NotADirectoryError), never reads as
    every raw file gone. The raw location is listed once and the warehouse once per table, never a request per
    shard."""
    from curation_pipeline.staleness import paused_gc

    with paused_gc():
        return _refresh_plan(instance, warehouse, repository, raw)


def _refresh_plan(instance: dg.DagsterInstance, warehouse: WarehouseResource, repository: dg.RepositoryDefinition,
                  raw: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, Held], list[str]]:
    from dagster._core.definitions.data_version import StaleCauseCategory, StaleStatus

    from curation_pipeline.staleness import PrefetchedStaleStatusResolver, asset_graph_view

    graph = repository.asset_graph
    resolver = PrefetchedStaleStatusResolver(instance, graph, asset_graph_view(instance, graph), [RAW, *SHARD_KEYS])
    if raw is None:
        raw = warehouse.list_raw()[0]
    stored = stored_shards(warehouse)
    code = shard_code_versions(repository)
    todo: dict[str, str] = {}
    held: dict[str, Held] = {}
    gone: list[str] = []
    needs: dict[str, str] = {}
    fresh: list[str] = []
    for key in instance.get_dynamic_partitions(shard_partitions.name):
        if key not in raw:
            gone.append(key)  # raw file gone: nothing to curate from (prune_shards removes the partition)
            continue
        statuses = {asset: resolver.get_status(asset, key) for asset in SHARD_KEYS}
        no_file = [asset.to_user_string() for asset in SHARD_KEYS if key not in stored[asset]]
        # the score half there and fresh: a decide half alone can run from it
        scores_there = all(statuses[asset] == StaleStatus.FRESH and key in stored[asset] for asset in SHARD_KEYS[:2])
        reason = None
        if StaleStatus.MISSING in statuses.values():
            never = [asset for asset in SHARD_KEYS if statuses[asset] == StaleStatus.MISSING]
            # no record here, but the warehouse has every file: made under another Dagster home (another folder's
            # default data/dagster_home), which this one cannot tell fresh
            reason = ("missing" if no_file else "missing: never made under this Dagster home "
                      f"({instance.root_directory or 'its storage'}), though the warehouse has its files (made "
                      "under another DAGSTER_HOME?)")
            # a first run stopped or held after scoring: its decide half alone, once its scores are checked made
            # here and in order below (what not_made_here_in_order says of it, so said once)
            if all(asset in DECIDE_KEYS for asset in never) and scores_there:
                reason = f"{SCORES_CURRENT}missing ({never[0].to_user_string()} never made)"
        elif no_file:  # materialized by Dagster's record, but the file is not there (any more)
            reason = f"missing (no {', '.join(no_file)} file{'s' if len(no_file) > 1 else ''})"
            # only decide-half files gone, the scores' there and fresh: made again from the stored scores (checked
            # for order below, as any decide half alone)
            if all(dg.AssetKey(name) in DECIDE_KEYS for name in no_file) and scores_there:
                reason = SCORES_CURRENT + reason
        elif StaleStatus.STALE in statuses.values():  # Dagster's staleness is per asset, not transitive
            # a new raw file or changed code re-runs the shard; cross-shard inputs (dedup_index,
            # selection_cut) are settled by their own sensor and jobs, not by re-curating
            roots = [c for asset, status in statuses.items() if status == StaleStatus.STALE
                     for c in resolver.get_stale_root_causes(asset, key)
                     if c.asset_key == RAW or c.category == StaleCauseCategory.CODE]
            if roots:
                decide_only = all(c.asset_key in DECIDE_KEYS for c in roots)
                reason = (SCORES_CURRENT if decide_only else "stale: ") + "; ".join(
                    sorted({f"{c.asset_key.to_user_string()} {c.reason}"
                            + (_code_change(resolver, graph, c.asset_key, key)
                               if c.category == StaleCauseCategory.CODE else "") for c in roots}))
        if reason is None:
            fresh.append(key)
            continue
        needs[key] = reason
    # a decide half alone only over scores made here, in order: Dagster calls a score half fresh that a run left
    # half made (pairs of a new raw file, its scores not), which the decide half would refuse, run after run
    scores_current = [key for key, reason in needs.items() if reason.startswith(SCORES_CURRENT)]
    for key, disorder in not_made_here_in_order(instance, repository, warehouse.root, scores_current,
                                                resolver).items():
        if disorder.startswith(SCORES_CURRENT):  # out of order only in the decide half: still that half alone
            if disorder != needs[key]:
                needs[key] = f"{needs[key]}; {disorder.removeprefix(SCORES_CURRENT)}"
        else:
            needs[key] = f"stale: {needs[key].removeprefix(SCORES_CURRENT)}; {disorder}"
    # those Dagster calls fresh: looked at together, in a few queries
    needs.update(not_made_here_in_order(instance, repository, warehouse.root, fresh, resolver))
    # held: only a shard with a failed run can be (one query for all of them, not one per shard)
    failures = instance.get_run_partition_data(dg.RunsFilter(job_name=curate_shards_job.name,
                                                             statuses=[dg.DagsterRunStatus.FAILURE]))
    ever_failed = {data.partition for data in failures}
    for key, reason in needs.items():
        failed = failed_the_same_way(instance, key, code, warehouse.root) if key in ever_failed else None
        if failed:
            held[key] = Held(failed, reason)
        else:
            todo[key] = reason
    return todo, held, sorted(gone)


def _code_change(resolver, graph, asset: dg.AssetKey, shard: str) -> str:
    """What changed in an asset's code version since the shard's latest materialization (the record the resolver
    read, no query of its own: a version bump makes every shard stale), as `` (scorers a, b -> a, b, c: another
    profile?)`` or `` (text_quality 12 -> 13)``; '' when unrecorded or not of that form. A code version is
    ``<code>+<part>.<version>,...`` (the profile's scorers, a rewriter)."""
    ids, records = resolver.latest_materializations(asset) or ({}, {})
    record = records.get(ids.get(shard))
    stored = record.event_log_entry.asset_materialization.tags.get("dagster/code_version") if record else None
    current = graph.get(asset).code_version

    def parts(version: str) -> tuple[str, dict[str, str]]:
        code, _, rest = version.partition("+")
        return code, dict(p.rsplit(".", 1) for p in rest.split(",") if "." in p)

    if not stored or not current or stored == current:
        return ""
    (old_code, old), (new_code, new) = parts(stored), parts(current)
    changes = []
    if list(old) != list(new):
        changes.append(f"{'scorers' if asset.path[-1] == 'quality_scores' else 'made by'} {', '.join(old) or '-'} -> "
                       f"{', '.join(new) or '-'}: another profile or rewriter?")
    changes += [f"{name} {old[name]} -> {new[name]}" for name in new if name in old and old[name] != new[name]]
    if old_code != new_code:
        changes.append(f"code {old_code} -> {new_code}")
    return f" ({'; '.join(changes)})" if changes else ""


def not_made_here_in_order(instance: dg.DagsterInstance, repository: dg.RepositoryDefinition, root: str,
                           shards: list[str], read: "PrefetchedStaleStatusResolver | None" = None) -> dict[str, str]:
    """Shard -> why it needs a run, for shards Dagster calls fresh (or stale only after their scores, before
    their decide half alone is asked for); ``SCORES_CURRENT`` first where what is wrong comes after the score
    half, which is made here and in order: the decide half alone is run. Dagster's records are the home's, which runs
    into other warehouses share: each shard asset's latest materialization must be one made into this warehouse
    (else this warehouse's copy may be older than what Dagster saw), and none older than one of its inputs in
    the shard (a run that stopped between its steps left new scores under old decisions; Dagster's staleness
    does not look past a table's own inputs' versions). A query per shard asset and one for the runs, whatever
    the number of shards, or none where ``read`` (``refresh_plan``'s resolver) has read those records."""
    from curation_pipeline.assets.failures import run_warehouse, warehouse_id
    from curation_pipeline.staleness import RECORDS_PER_QUERY

    if not shards:
        return {}
    storage = instance.event_log_storage
    wanted = set(shards)
    latest, made_by = {}, {}  # asset -> shard -> latest materialization's storage id; storage id -> run id
    for key in SHARD_KEYS:
        known = read.latest_materializations(key) if read else None
        if known:
            ids, records = known
            latest[key] = {shard: i for shard, i in ids.items() if shard in wanted}
            made_by.update({i: records[i].event_log_entry.run_id for i in latest[key].values() if i in records})
            continue
        latest[key] = ids = storage.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION,
                                                                       wanted)
        found = sorted(ids.values())
        for start in range(0, len(found), RECORDS_PER_QUERY):  # Dagster's limit: 10,000 records a query
            chunk = found[start:start + RECORDS_PER_QUERY]
            records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk),
                                                      limit=len(chunk)).records
            made_by.update({r.storage_id: r.event_log_entry.run_id for r in records})
    ours = warehouse_id(root)
    run_ids = sorted(set(made_by.values()))
    into = ({run.run_id: run_warehouse(run, root) for run in instance.get_runs(dg.RunsFilter(run_ids=run_ids))}
            if run_ids else {})  # (no ids: no filter, every run)
    graph = repository.asset_graph
    out = {}
    for shard in shards:
        for key in SHARD_KEYS:
            # past the score half (pairs, then quality_scores: made here, in order), the decide half alone
            decide = SCORES_CURRENT if key in DECIDE_KEYS else ""
            stored = latest[key].get(shard)
            if stored is None:
                out[shard] = f"{decide}missing ({key.to_user_string()} never made)"
                break
            where = into.get(made_by.get(stored), ours)  # a run deleted since: nothing says otherwise
            if where != ours:
                out[shard] = f"{decide}{key.to_user_string()} last made into another warehouse ({where})"
                break
            older = [parent for parent in SHARD_KEYS if parent in graph.get(key).parent_keys
                     and latest[parent].get(shard, -1) > stored]
            if older:
                out[shard] = (f"{decide}incomplete: {key.to_user_string()} is older than its input "
                              f"{older[0].to_user_string()} (a run stopped between them, or a blocking check "
                              "held the later one)")
                break
    return out


# which shard assets' file each is: a table's Parquet file, or the curated tar
TABLE_ASSETS = SHARD_KEYS[:-1]
CURATED = SHARD_KEYS[-1]


def stored_shards(warehouse: WarehouseResource) -> dict[dg.AssetKey, set[str]]:
    """Shard asset -> the shards whose file is in the warehouse: one listing per table (on object storage
    one request per thousand files), never a request per shard."""
    wh = warehouse.warehouse()
    with object_storage_errors(wh.root):  # unreachable storage fails the tick, it is not "every file gone"
        stored = {asset: set(wh.shard_files(asset.path[-1])) for asset in TABLE_ASSETS}
        stored[CURATED] = wh.curated_shards()
    return stored


# a run records the shard assets' code versions and the code location's settings it was asked with (schedule and
# sensor runs), so a failed run is tried again once either changed; a run launched by hand has none, and waits for
# a new raw file
CODE_TAG = "curation/code_versions"
# the resources whose settings can make a shard fail or pass (a model path, a drift limit, a Ray address)
SETTINGS_RESOURCES = ("scoring", "rewriter", "policy", "compute")
# finished runs in a row, all failed in a step with the same code and raw version, that hold a shard back
HELD_AFTER = 2


def shard_code_versions(repository: dg.RepositoryDefinition | None) -> str | None:
    if repository is None:
        return None
    graph = repository.asset_graph
    code = ",".join(f"{key.to_user_string()}={graph.get(key).code_version}" for key in SHARD_KEYS if graph.has(key))
    return f"{code};settings={location_settings(repository)}"


def location_settings(repository: dg.RepositoryDefinition) -> str:
    """A digest of the settings the code location gives its runs (``SETTINGS_RESOURCES``, as defined there, and
    the compute variables of its environment; a launchpad's run config is not the location's): fixing a model
    path, a policy limit or a Ray address there asks a held shard again. Only a digest is recorded, never the
    values."""
    import hashlib

    from curation_pipeline.resources import COMPUTE_SETTINGS

    resources = repository.get_top_level_resources()
    config = {name: field.default_value for name in SETTINGS_RESOURCES
              if name in resources and (field := resources[name].config_field) is not None and field.default_provided}
    # and what a run's process reads for compute settings left empty (a deployment sets them there, the chart too)
    config["environment"] = {env: os.environ.get(env) for env, _ in COMPUTE_SETTINGS.values()}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def failed_the_same_way(instance: dg.DagsterInstance, key: str, code: str | None,
                        warehouse_root: str | None = None) -> str | None:
    """Why the shard is held back, or None: its last two finished ``curate_shards`` runs both failed in a
    step (a missing or unreadable file, a blocking check: the same inputs and code fail the same way
    again), asked with the same code versions, which are still the shard assets' code versions, and no new
    raw version was observed since the first of them. One failure is not enough: a storage outage or a
    killed worker can surface as a step failure, so the shard is asked once more. A run whose process died
    (OOM, a killed pod) has no failed step, and one stopped by a signal (Ctrl-C, SIGTERM) fails its step as
    interrupted: neither counts, so the shard is asked again and resumes. With ``warehouse_root`` (the code
    location's), only runs in that warehouse count (``assets.failures.run_warehouse``): a ``curate run
    --warehouse elsewhere`` that failed twice says nothing of this warehouse's shard."""
    from curation_pipeline.assets.failures import run_warehouse, warehouse_id

    records = instance.get_run_records(
        dg.RunsFilter(job_name=curate_shards_job.name, tags={"dagster/partition": key},
                      statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]),
        limit=HELD_AFTER if warehouse_root is None else 100)
    if warehouse_root is not None:
        ours = warehouse_id(warehouse_root)
        records = [r for r in records if run_warehouse(r.dagster_run, warehouse_root) == ours][:HELD_AFTER]
    if len(records) < HELD_AFTER or any(r.dagster_run.status != dg.DagsterRunStatus.FAILURE for r in records):
        return None
    tags = {record.dagster_run.tags.get(CODE_TAG) for record in records}
    if len(tags) > 1:
        return None  # asked with other code versions: the later failure is the first of its code
    then = tags.pop()
    if code is not None and then is not None and then != code:
        return None  # changed code or settings: it may not fail any more
    from dagster._core.execution.plan.objects import ErrorSource

    steps = []
    for record in records:
        failures = instance.get_records_for_run(record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE,
                                                limit=1).records
        if not failures:
            return None
        failure = failures[0].event_log_entry.dagster_event.event_specific_data
        if getattr(failure, "error_source", None) == ErrorSource.INTERRUPT:
            return None  # stopped (Ctrl-C, SIGTERM): says nothing of whether it fails again
        steps.append(failures[0].event_log_entry.step_key)
    first = records[-1]
    if _new_raw_version_since(instance, key, first.end_time or first.update_timestamp.timestamp()):
        return None
    runs = " and ".join(f"{r.dagster_run.run_id}{f' (step {step})' if step else ''}" for r, step in zip(records, steps))
    return (f"{key}: failed in {HELD_AFTER} runs in a row, {runs}; fix and re-run it, or materialize it by hand (it "
            "is asked again after a new raw version is observed, or its code or the code location's settings change)")


def _new_raw_version_since(instance: dg.DagsterInstance, key: str, since: float) -> bool:
    """Whether the shard's raw file was observed after ``since`` with another data version than the one
    known then (the failed run's own observation, or an earlier one)."""
    from dagster._core.definitions.data_version import extract_data_version_from_entry

    def last(before: float | None = None):
        found = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=RAW, asset_partitions=[key],
                                                                  before_timestamp=before), limit=1).records
        return found[0] if found else None

    now = last()
    if now is None or now.timestamp <= since:
        return False
    then = last(before=since)
    return then is None or (extract_data_version_from_entry(now.event_log_entry)
                            != extract_data_version_from_entry(then.event_log_entry))


# A run queued, launching, started or being canceled (it may still write its shard's files): its shard is in
# flight, not missing (as for the settle sensor, which waits for every such run). A STARTED run whose process
# died (OOM, SIGKILL) stays STARTED until run monitoring marks it failed (Kubernetes:
# deploy/helm/dagster-values.yaml; the local run launcher cannot check a run's process, so monitoring would
# not) or it is terminated in the UI; asking again before that would launch a second run of the shard beside
# one that may be live.
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def backfill_pending(instance: dg.DagsterInstance) -> set[str]:
    """The partitions that a backfill in progress has yet to launch a run for. The daemon launches a large
    backfill's runs a chunk at a time (minutes for thousands of shards): asked for meanwhile, a shard would
    run twice. A job backfill launches in the order of its partitions, after the last one it recorded; an
    asset backfill's are its targets not yet requested."""
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

    pending: set[str] = set()
    for backfill in instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])):
        if backfill.partition_names is not None:
            names = list(backfill.partition_names)
            last = backfill.last_submitted_partition_name
            pending.update(names[names.index(last) + 1:] if last in names else names)
        elif backfill.asset_backfill_data is not None:
            data = backfill.asset_backfill_data
            # requested, or never to be: below a failed partition
            done = (data.requested_subset.partitions_subsets_by_asset_key,
                    data.failed_and_downstream_subset.partitions_subsets_by_asset_key)
            for key, subset in data.target_subset.partitions_subsets_by_asset_key.items():
                pending.update(set(subset.get_partition_keys()).difference(
                    *(part[key].get_partition_keys() for part in done if key in part)))
    return pending


def runs_in_flight(instance: dg.DagsterInstance) -> dict[str, list[dg.RunRecord]]:
    """Partition -> its runs queued, launching, started or being canceled, of any job (a ``reselect_shards``
    run writes the same files), or failed and about to be retried by Dagster (``workers.waiting_to_retry``); a
    partition a backfill in progress has yet to launch (``backfill_pending``) -> no run. A started (or canceling)
    run whose process on this host is gone is marked failed (canceled) first (``workers``): it holds its shard no
    longer."""
    from curation_pipeline.workers import settle, waiting_to_retry

    flight: dict[str, list[dg.RunRecord]] = {key: [] for key in backfill_pending(instance)}
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        key = record.dagster_run.tags.get("dagster/partition")
        if key is not None and settle(instance, record.dagster_run, asked_again=True) is None:
            flight.setdefault(key, []).append(record)
    for record in waiting_to_retry(instance):  # failed, its retry about to be launched: asked already
        key = record.dagster_run.tags.get("dagster/partition")
        if key is not None:
            flight.setdefault(key, []).append(record)
    return flight


def in_flight_note(flight: dict[str, list[dg.RunRecord]], keys: list[str]) -> str:
    """Says which shards wait on a run: those on a started one by run id and start, so a run whose process
    died (and stays STARTED) is seen, with what to do about it."""
    started = [(key, record) for key in keys for record in flight[key]
               if record.dagster_run.status == dg.DagsterRunStatus.STARTED]
    waiting = [key for key in keys if key not in {k for k, _ in started} and flight[key]]
    backfilled = [key for key in keys if not flight[key]]
    notes = []
    if started:
        named = [f"{key} (run {r.dagster_run.run_id}" + (
            f", started {datetime.fromtimestamp(r.start_time, timezone.utc):%Y-%m-%d %H:%M} UTC" if r.start_time
            else "") + ")" for key, r in started]
        notes.append(f"{len({k for k, _ in started})} shard(s) wait on a started run: {_some(named, 10)}; a run "
                     "whose process died on this machine is marked failed at the next look, elsewhere it stays "
                     "STARTED until run monitoring marks it failed (on Kubernetes) or it is terminated in the UI "
                     "(Runs), and the next tick asks for its shard again")
    if waiting:
        notes.append(f"{len(waiting)} shard(s) with a run waiting to start: {_some(waiting, 10)}")
    if backfilled:
        notes.append(f"{len(backfilled)} shard(s) of a backfill in progress, their runs not launched yet (the "
                     f"daemon launches them; cancel the backfill under Runs > Backfills to have them asked here): "
                     f"{_some(backfilled, 10)}")
    return ". ".join(notes)


@dg.op(description="Adds every valid .tar in the raw location as a shard partition; launches no work.")
def register_raw_shards(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from curation_pipeline.storage.warehouse import READ_THREADS

    found, rejected, known, new, _ = _unregistered(context, warehouse)
    if new:  # a `curate run` registering the same keys meanwhile is retried, not a failed op
        new = add_shards(context.instance, new)
    wh = warehouse.warehouse()

    def observe(key: str) -> Observed | OSError:
        """As raw_shards observes (the stat recorded in the warehouse: the next observation reads it no more).
        The record is a cache: a warehouse that cannot be reached (registering needs only the raw folder) costs
        the next observation a read, never the registration; a raw file gone since the listing is said."""
        try:
            return observed_version(wh, key, found[key], None)
        except OSError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - botocore's own errors when the warehouse's store is down
            try:
                return Observed(hash_file(found[key])[1], hashed=True, unrecorded=f"{type(exc).__name__}: {exc}")
            except OSError as gone:
                return gone

    with ThreadPoolExecutor(READ_THREADS) as pool:  # each file read whole: many at once on object storage
        seen = list(pool.map(observe, new))
    for key, observed in zip(new, seen):  # observed as registered: whatever path materializes pairs later, it
        if isinstance(observed, OSError):  # records the version observed here
            context.log.warning(f"{key}: raw file {found[key]} cannot be observed ({type(observed).__name__}: "
                                f"{observed}); its run will say why, prune_shards removes a partition whose file "
                                "is gone")
            continue
        context.log_event(dg.AssetObservation(
            asset_key="raw_shards", partition=key, tags={"dagster/data_version": observed.sha256}))
        if observed.unrecorded:
            context.log.warning(f"{key}: hashed, its stat not recorded ({observed.unrecorded}): read again when "
                                "raw_shards is next observed")
    context.log.info(f"registered {len(new)} new shard(s): {', '.join(new) or 'none'}; "
                     f"{len(known)} already known, {len(rejected)} file name(s) rejected")


@dg.job(description="First run: registers the raw shards as partitions, so the asset pages can offer them. "
        "Nothing is materialized.")
def register_shards():
    register_raw_shards()


class PruneConfig(dg.Config):
    remove_all: bool = Field(default=False, description="Remove every partition when the raw location lists no "
                             "shard at all (else the op fails: an unmounted disk leaves an empty mount point).")


@dg.op(description="Removes shard partitions whose raw file no longer exists (typos, deleted files).")
def remove_stale_partitions(context: dg.OpExecutionContext, config: PruneConfig, warehouse: WarehouseResource) -> None:
    known = context.instance.get_dynamic_partitions(shard_partitions.name)
    try:  # the location itself missing (unmounted, a typo, an outage) is not "every file deleted"
        found = warehouse.list_raw()[0]
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise dg.Failure(description=f"{exc}; no partition removed") from exc
    if known and not found and not config.remove_all:  # nor is a location that lists nothing (an empty mount point)
        raise dg.Failure(description=(
            f"{warehouse.raw_root} lists no shard at all, and {len(known)} partition(s) are registered: no partition "
            "removed (a disk not mounted leaves its mount point empty; the shards would be curated again from "
            "scratch once it is back). If every shard is truly gone, run prune_shards with config "
            "`ops: {remove_stale_partitions: {config: {remove_all: true}}}`"))
    gone = [key for key in known if key not in found]
    for key in gone:
        context.instance.delete_dynamic_partition(shard_partitions.name, key)
    context.log.info(f"removed {len(gone)} partition(s) without a raw file: {', '.join(gone) or 'none'}")


@dg.job(description="Removes partitions whose raw file is missing; their stored tables stay in the warehouse.")
def prune_shards():
    remove_stale_partitions()


# The report follows shard runs by declarative automation, evaluated only while automation is on.
report_automation = dg.AutomationConditionSensorDefinition(
    "report_automation", target=dg.AssetSelection.assets("quality_report"), default_status=DEFAULT_STATUS,
    description="Refreshes quality_report after curated shards change, once no shard run is in progress (its "
    "automation condition), whether or not every registered shard is curated yet.")


observe_raw_shards_schedule = dg.ScheduleDefinition(
    name="observe_raw_shards_nightly", job=observe_raw_job, cron_schedule="30 1 * * *",
    default_status=DEFAULT_SCHEDULE_STATUS,
    description="Nightly, before fill_missing_shards: observes the raw shards, so replaced files read as stale.")


@dg.schedule(job=curate_shards_job, cron_schedule="0 2 * * *", default_status=DEFAULT_SCHEDULE_STATUS,
             description="Nightly: runs every registered shard whose curated output is missing (never made, or its "
             "file gone from the warehouse) or stale by Dagster's data versions (a raw file observed with new "
             "content, a changed code_version, another model), left half made (a table older than one of its "
             "inputs) or last made into another warehouse; one whose stale tables all come after its scores "
             "(another rewriter version or model) runs its decide half alone, from its stored scores. A shard whose "
             "last run failed in a step is asked once more; one whose last two runs failed in a step is held (named "
             "in the tick, with both runs) until a new raw version is observed or the code or the location's "
             "settings change. A shard with a run queued, launching, started or being canceled, or in a backfill still "
             "launching its runs, is left to that run (one started is "
             "named, with its run id: a run "
             "whose process died stays STARTED until terminated or failed by run monitoring).")
def fill_missing_shards(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
    try:  # listed once for every shard; the location itself missing is not every raw file gone
        raw = warehouse.list_raw()[0]
    except (FileNotFoundError, NotADirectoryError) as exc:
        return dg.SkipReason(f"{exc}; no shard requested")
    todo, held, gone = refresh_plan(context.instance, warehouse, context.repository_def, raw)
    for message in held.values():
        context.log.warning(message)
    flight = runs_in_flight(context.instance)  # its run, waiting or going, is not missing work
    busy = sorted(key for key in todo if key in flight)
    todo = {key: reason for key, reason in todo.items() if key not in flight}
    in_flight = in_flight_note(flight, busy)
    missing_raw = (f"{len(gone)} registered shard(s) passed over, their raw file gone: {_some(gone, 10)} "
                   "(prune_shards removes their partitions; a curated tar such a shard made stays published, its pairs "
                   "each duplicate group's survivor: delete curated/<shard>.tar to withdraw it)" if gone else "")
    # in the log too: a tick that requests runs carries no message
    if in_flight:
        context.log.info(in_flight)
    if missing_raw:
        context.log.warning(missing_raw)
    notes = [note for note in (in_flight, missing_raw) if note]
    if not todo:
        if held:
            notes.insert(0, f"{len(held)} shard(s) held after failed runs: " + _some(sorted(held.values()), 10))
        return dg.SkipReason("nothing to run. " + ". ".join(notes) if notes
                             else "every registered shard is curated and fresh")
    # one run per shard and tick: a later tick may ask again for a shard still missing
    # (the tick's scheduled time: a tick evaluated again, after a daemon restart, asks with the same keys)
    try:
        at = context.scheduled_execution_time
    except Exception:  # evaluated outside a tick (a test, the UI's preview): now
        at = None
    tick = (at or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M")
    code = shard_code_versions(context.repository_def)
    return [dg.RunRequest(partition_key=key, run_key=f"fill:{key}:{tick}",
                          # scores current: the decide half alone, no model scores the shard again
                          asset_selection=DECIDE_KEYS if reason.startswith(SCORES_CURRENT) else None,
                          tags={"curation/reason": reason[:200], **({CODE_TAG: code} if code else {})})
            for key, reason in sorted(todo.items())]


def _some(messages: list[str], most: int) -> str:
    return "; ".join(messages[:most]) + (f"; and {len(messages) - most} more" if len(messages) > most else "")
