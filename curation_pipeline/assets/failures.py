"""Which shard partitions failed in their last run, and why: so the report lists them."""

from __future__ import annotations

import dagster as dg

from curation_pipeline.partitions import shard_partitions


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
    return records[-1].user_message.strip() if records else "run failed"


def shard_failures(instance: dg.DagsterInstance) -> dict[str, str]:
    """Shard -> error, for every registered shard whose most recent run failed or was canceled (stopped
    part-way, its tables may come from two runs: re-run it)."""
    failures = {}
    for shard in instance.get_dynamic_partitions(shard_partitions.name):
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": shard}), limit=1)
        if runs and runs[0].status == dg.DagsterRunStatus.FAILURE:
            failures[shard] = _failure_text(instance, runs[0].run_id)
        elif runs and runs[0].status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.CANCELING):
            failures[shard] = f"run {runs[0].run_id[:8]} was canceled before it finished: re-run the shard"
    return failures
