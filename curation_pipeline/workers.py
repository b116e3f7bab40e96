"""Which process runs a Dagster run, and whether it is gone.

A run whose process is killed outright (SIGKILL, the OOM killer, a closed terminal's ``curate run``) never
writes its end: Dagster leaves it STARTED for good, so the schedule waits on it and the report takes its
half-written shard for curated. Dagster's own run monitoring detects that only for run launchers that can
ask a worker's health (Kubernetes, ECS), not for local processes. So ``CurationInstance`` tags each run
with the process that started it (host, pid and the process's start time, so a reused pid is no alibi),
and a STARTED run whose process on this host is gone is marked failed where it matters (``settle``).
A run its own process starts (``execute_in_process``: ``curate run``'s) is also tagged with the process that
creates it: one still NOT_STARTED whose creator is gone never starts (interrupted between its creation and its
start), and is marked failed the same way; a run a daemon or the web UI launches is not (a daemon that died
submits its own again when it resumes). Runs on another host (a Kubernetes pod) are never judged here: their
launcher's monitoring does that.
"""

from __future__ import annotations

import os
import socket

import dagster as dg

WORKER_TAG = "curation/worker"  # host:pid:start of the process that started the run
CREATOR_TAG = "curation/creator"  # host:pid:start of the process that created a run it starts itself


ZOMBIE = "zombie"  # _start_time of a process that has ended, not yet reaped


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), ``ZOMBIE`` for an ended one not
    yet reaped, None where it cannot be read (no ``/proc``, as on macOS; ``hidepid``; no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return ZOMBIE if fields[0] == b"Z" else fields[19].decode()  # state, ..., starttime (field 22)
    except (OSError, IndexError):
        return None


def identity(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    start = _start_time(pid)
    return f"{socket.gethostname()}:{pid}:{start if start not in (None, ZOMBIE) else ''}"


def gone(run: dg.DagsterRun) -> str | None:
    """Why a STARTED (or CANCELING) run's process, or a NOT_STARTED run's creator, is known to be gone, or None
    (alive, elsewhere, untagged, in another status)."""
    # a run being canceled before it started has no worker yet: its creator stands for it
    started = run.status == dg.DagsterRunStatus.STARTED or (
        run.status == dg.DagsterRunStatus.CANCELING and WORKER_TAG in run.tags)
    if not started and run.status not in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.CANCELING):
        return None
    parts = run.tags.get(WORKER_TAG if started else CREATOR_TAG, "").rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or parts[0] != socket.gethostname():
        return None
    host, pid, since = parts[0], int(parts[1]), parts[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        alive = False
    except PermissionError:  # the pid is held, by another user's process: who it is is told below, if it can be
        alive = True
    else:
        alive = True
    if alive:
        now = _start_time(pid)
        # ended (a zombie), or the pid reused by a process started later; what cannot be read proves nothing
        alive = now != ZOMBIE and (now is None or not since or now == since)
    if alive:
        return None
    if started:
        return f"its process (pid {pid} on {host}) ended without finishing the run (killed?)"
    return f"the process that created it (pid {pid} on {host}) ended before starting it (interrupted?)"


def waiting_to_retry(instance: dg.DagsterInstance, limit: int = 100) -> list[dg.RunRecord]:
    """Failed runs Dagster's run retries will launch again and have not yet (a few seconds, between the failure
    and the retry daemon's next pass): in flight as much as a queued run. Only runs launched from a code location
    (a daemon's, the UI's): Dagster cannot re-launch an in-process run (``curate run``'s), which would wait for
    ever."""
    from dagster._core.storage.tags import WILL_RETRY_TAG

    records = instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE],
                                                             tags={WILL_RETRY_TAG: "true"}), limit=limit)
    return [r for r in records if r.dagster_run.is_complete_and_waiting_to_retry
            and r.dagster_run.remote_job_origin is not None]


def settle(instance: dg.DagsterInstance, run: dg.DagsterRun, asked_again: bool = False) -> str | None:
    """Mark ``run`` failed if its process is gone (what Dagster's run monitoring does for a worker it can
    ask); returns why, or None when the run stands as it is. ``asked_again``: the caller requests its shard anew
    (the schedule, ``curate run --only-missing``), so Dagster's run retries must not also queue it (a second run
    of the same shard at once)."""
    why = gone(run)
    if why is None:
        return None
    current = instance.get_run_by_id(run.run_id)  # it may have started or ended since it was read
    why = gone(current) if current is not None else None
    if why is None:
        return None
    if current.status == dg.DagsterRunStatus.CANCELING:  # what was asked of it, done
        instance.report_run_canceled(current, f"Run marked canceled: {why}; re-run its shard.")
        return why
    instance.report_run_failed(current, f"Run marked failed: {why}; re-run its shard.")
    if asked_again:  # after the failure, which sets Dagster's own verdict
        from dagster._core.storage.tags import WILL_RETRY_TAG

        instance.add_run_tags(current.run_id, {WILL_RETRY_TAG: "false"})
    return why
