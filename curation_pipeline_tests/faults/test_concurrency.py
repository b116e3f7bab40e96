"""Shard partitions in parallel processes (Dagster's multiprocess executor) while the report
is rebuilt and read: no lost rows, no DuckDB lock error reaches anyone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time

import dagster as dg
import duckdb
import pytest

from curation_pipeline.reporting.report import build_report
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES, REPO_ROOT

pytestmark = pytest.mark.faults

SHARDS = ["sample-000000", "sample-000001"]  # two runs at once, each with two step processes
RUN_CONFIG = {
    "execution": {"config": {
        "max_concurrent": 2,
        # steps fork from a server that imported the definitions once (a plain spawn per step is slow)
        "start_method": {"forkserver": {"preload_modules": ["curation_pipeline.definitions"]}},
    }},
    "resources": {"scoring": {"config": {"profile": "text"}}},
    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
}


def curate_shards_job():
    """Module level, so ``dg.reconstructable`` can rebuild it in every step process (roots from env)."""
    from curation_pipeline.definitions import build_definitions

    # every step in its own process, the harshest case for writers (the shipped executor is in-process)
    return build_definitions().resolve_job_def("curate_shards").with_executor_def(dg.multiprocess_executor)


def launch(shard: str) -> None:
    """One run launcher process (as Dagster's run launcher would start): the shard's run with the
    multiprocess executor, on the persistent instance in $DAGSTER_HOME. Exits 1 if the run failed.

    Runs are launched from separate processes, not threads: ``dg.execute_job`` from several threads
    of one process deadlocks inside Dagster's logging setup (dagster 1.13).
    """
    with dg.DagsterInstance.get() as instance, dg.execute_job(
            dg.reconstructable(curate_shards_job), instance=instance, tags={"dagster/partition": shard},
            run_config=RUN_CONFIG, raise_on_error=False) as result:
        for event in result.all_events:
            if event.is_failure:
                print(f"FAILURE {shard}: {event.message}", flush=True)
        raise SystemExit(0 if result.success else 1)


def test_parallel_partitions_while_the_report_is_rebuilt_and_read(tmp_path, monkeypatch):
    raw, warehouse, home = tmp_path / "raw", tmp_path / "wh", tmp_path / "home"
    raw.mkdir()
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    for shard in SHARDS:
        shutil.copy(RAW_SAMPLES / f"{shard}.tar", raw)
    env = dict(os.environ, CURATION_RAW=str(raw), CURATION_WAREHOUSE=str(warehouse), DAGSTER_HOME=str(home),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("shards", SHARDS)
    wh = Warehouse(str(warehouse))
    errors: list[str] = []
    stop = threading.Event()
    reads = {"ok": 0}

    def read_report() -> None:
        while not stop.is_set():
            path = warehouse / "quality.duckdb"
            if path.exists():
                try:
                    con = duckdb.connect(str(path), read_only=True)
                    con.execute("SELECT count(*) FROM shard_summary").fetchone()
                    con.close()
                    reads["ok"] += 1
                except Exception as exc:  # noqa: BLE001
                    if "No such file" not in str(exc):  # renamed between exists() and connect()
                        errors.append(f"reader: {type(exc).__name__}: {exc}")
            time.sleep(0.01)

    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-c", f"from {__name__} import launch; launch({s!r})"], env=env,
                              cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for s in SHARDS]
    reader = threading.Thread(target=read_report, daemon=True)
    reader.start()
    builds = 0
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() - start < 400:
            try:
                build_report(wh)
                builds += 1
            except FileNotFoundError as exc:  # before the first shard's tables exist
                if "materialize at least one shard" not in str(exc):
                    errors.append(f"build_report: {type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"build_report: {type(exc).__name__}: {exc}")
            time.sleep(0.05)
    finally:
        stop.set()
        reader.join(timeout=10)
        for p in procs:
            if p.poll() is None:
                p.kill()
    outputs = {s: p.communicate()[0] for s, p in zip(SHARDS, procs)}
    elapsed = time.monotonic() - start
    # a lock error ("database is locked", a LockError), not a word that contains it (a warning quoting "blocking=")
    locks = [line for e in [*errors, *outputs.values()] for line in str(e).splitlines()
             if re.search(r"\block", line, re.IGNORECASE)]
    assert not locks, locks
    assert not errors, "\n".join(errors)
    for shard, p in zip(SHARDS, procs):
        assert p.returncode == 0, outputs[shard][-3000:]
    report = build_report(wh)
    expected = sum(len(wh.read_table("pairs", s)) for s in SHARDS)
    assert report.overall["pairs_read"] == expected == 80
    assert sorted(report.shards["shard"]) == SHARDS
    assert builds > 0 and reads["ok"] > 0
    print(f"{len(SHARDS)} partitions in {elapsed:.0f} s; {builds} report builds, {reads['ok']} reads meanwhile")
