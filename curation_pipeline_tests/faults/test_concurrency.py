"""Shard partitions in parallel processes (Dagster's multiprocess executor) while the report
is rebuilt and read: no lost rows, no DuckDB lock error reaches anyone.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import dagster as dg
import duckdb
import pytest

from curation_pipeline.reporting.report import build_report
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES

pytestmark = pytest.mark.faults

SHARDS = ["sample-000000", "sample-000001", "sample-000002"]
RUN_CONFIG = {
    "execution": {"config": {"multiprocess": {
        "max_concurrent": 2,
        # steps fork from a server that imported the definitions once (a plain spawn per step is slow)
        "start_method": {"forkserver": {"preload_modules": ["curation_pipeline.definitions"]}},
    }}},
    "resources": {"scoring": {"config": {"profile": "text"}}},
    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
}


def curate_shards_job():
    """Module level, so ``dg.reconstructable`` can rebuild it in every step process (roots from env)."""
    from curation_pipeline.definitions import build_definitions

    return build_definitions().resolve_job_def("curate_shards")


def test_parallel_partitions_while_the_report_is_rebuilt_and_read(tmp_path, monkeypatch):
    raw, warehouse = tmp_path / "raw", tmp_path / "wh"
    raw.mkdir()
    for shard in SHARDS:
        shutil.copy(RAW_SAMPLES / f"{shard}.tar", raw)
    monkeypatch.setenv("CURATION_RAW", str(raw))
    monkeypatch.setenv("CURATION_WAREHOUSE", str(warehouse))
    wh = Warehouse(str(warehouse))
    errors: list[BaseException] = []
    results: dict[str, dg.ExecutionResult] = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", SHARDS)

        def materialize(shard: str) -> None:
            try:
                with dg.execute_job(dg.reconstructable(curate_shards_job), instance=instance,
                                    tags={"dagster/partition": shard}, run_config=RUN_CONFIG,
                                    raise_on_error=False) as result:
                    results[shard] = result
                    if not result.success:
                        errors.extend(RuntimeError(e.message) for e in result.all_events if e.is_failure)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

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
                            errors.append(exc)
                time.sleep(0.01)

        workers = [threading.Thread(target=materialize, args=(s,), daemon=True) for s in SHARDS]
        reader = threading.Thread(target=read_report, daemon=True)
        start = time.monotonic()
        builds = 0
        try:
            for t in [*workers, reader]:
                t.start()
            while any(t.is_alive() for t in workers) and time.monotonic() - start < 300:
                try:
                    build_report(wh)
                    builds += 1
                except FileNotFoundError as exc:  # before the first shard's tables exist
                    if "materialize at least one shard" not in str(exc):
                        errors.append(exc)
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
                time.sleep(0.05)
            for t in workers:
                t.join(timeout=60)
            report = build_report(wh)
        finally:
            stop.set()
            reader.join(timeout=10)
        elapsed = time.monotonic() - start
        assert not [e for e in errors if "lock" in str(e).lower()], errors
        assert not errors, errors
        assert sorted(results) == SHARDS and all(r.success for r in results.values())
        expected = sum(len(wh.read_table("pairs", s)) for s in SHARDS)
        assert report.overall["pairs_read"] == expected == 120
        assert sorted(report.shards["shard"]) == SHARDS
        assert builds > 0 and reads["ok"] > 0
        print(f"3 partitions in {elapsed:.0f} s; {builds} report builds, {reads['ok']} reads meanwhile")
