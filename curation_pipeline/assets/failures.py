"""Which shard partitions failed in their last run, and why: so the report lists them.

Every ``--warehouse`` shares one Dagster home (and its shard partitions), so a run counts only for the
warehouse it wrote to: the one its ``curation/warehouse`` tag names (``curate`` sets it), else the root in
its run config's warehouse resource, else the code location's own (a run launched with no run config).
"""

from __future__ import annotations

import os

import dagster as dg

from curation_pipeline.partitions import shard_partitions
from curation_pipeline.storage.warehouse import WAREHOUSE_DEFAULTS, Warehouse

WAREHOUSE_TAG = "curation/warehouse"  # the absolute warehouse root a run wrote to (``warehouse_id``)


def warehouse_id(root: str) -> str:
    """One spelling per warehouse: a local folder absolute (against the working folder, as ``Warehouse``
    opens it), a URL as ``s3://bucket/prefix`` without a trailing slash."""
    wh = Warehouse(root)
    return wh.local_path(wh.join())


def default_root() -> str:
    """The warehouse root of a run with no run config: the environment variable, else the default."""
    env, default = WAREHOUSE_DEFAULTS["root"]
    return os.environ.get(env) or default


def run_warehouse(run: dg.DagsterRun, default: str | None = None) -> str:
    """The warehouse (``warehouse_id``) ``run`` wrote to: its tag, else its run config's warehouse root
    (an ``{env: NAME}`` value read here), else ``default`` (``default_root()`` when None)."""
    tagged = run.tags.get(WAREHOUSE_TAG)
    if tagged:
        return warehouse_id(tagged)
    resource = ((run.run_config or {}).get("resources") or {}).get("warehouse")
    root = (resource.get("config") or {}).get("root") if isinstance(resource, dict) else None
    if isinstance(root, dict) and isinstance(root.get("env"), str):
        root = os.environ.get(root["env"])
    return warehouse_id(root if isinstance(root, str) and root else default or default_root())


def _failure_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """The last step failure of a run (``step: message``), else the run failure's message."""
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    for record in reversed(records):
        event = record.dagster_event
        data = event.step_failure_data if event is not None else None
        if data is None:
            continue
        user = getattr(data, "user_failure_data", None)
        if user is not None and user.description:
            return f"{event.step_key}: {user.description.strip()}"
        error = data.error
        while error is not None and error.cause is not None:  # Dagster wraps what the asset raised
            error = error.cause
        return f"{event.step_key}: {(error.message if error is not None else record.user_message).strip()}"
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    if not records:
        return "run failed"
    event = records[-1].dagster_event  # report_run_failed (run monitoring, workers.settle) sets only its message
    return (records[-1].user_message or (event.message if event is not None else "") or "run failed").strip()


def _last_run(instance: dg.DagsterInstance, shard: str, ours: str, default: str) -> dg.DagsterRun | None:
    """The most recent run of ``shard`` in the warehouse ``ours`` (``warehouse_id``), if any."""
    cursor = None
    while True:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": shard}), cursor=cursor, limit=50)
        for run in runs:
            if run_warehouse(run, default) == ours:
                return run
        if len(runs) < 50:
            return None
        cursor = runs[-1].run_id


def shard_failures(instance: dg.DagsterInstance, warehouse_root: str | None = None,
                   location_root: str | None = None) -> dict[str, str]:
    """Shard -> error, for every registered shard whose most recent run in this warehouse (``warehouse_root``)
    failed, was canceled, or was killed outright (``workers``: stopped part-way, its tables may come from two
    runs: re-run it). Runs in other
    warehouses of the same Dagster home say nothing of this one. ``location_root``: the code location's own
    warehouse, where a run with neither tag nor run config wrote; None: ``default_root()``. Either root
    None: the other."""
    default = location_root or default_root()
    ours = warehouse_id(warehouse_root or default)
    from curation_pipeline.workers import settle

    failures = {}
    for shard in instance.get_dynamic_partitions(shard_partitions.name):
        run = _last_run(instance, shard, ours, default)
        why = settle(instance, run) if run is not None else None  # killed outright: marked failed now
        if why is not None:
            failures[shard] = f"run {run.run_id[:8]} did not finish: {why}; re-run the shard"
        elif run is not None and run.status == dg.DagsterRunStatus.FAILURE:
            failures[shard] = _failure_text(instance, run.run_id)
        elif run is not None and run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.CANCELING):
            failures[shard] = f"run {run.run_id[:8]} was canceled before it finished: re-run the shard"
    return failures
