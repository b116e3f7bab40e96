"""What Dagster's bookkeeping costs a run: the shipped instance storage against Dagster's own.

A run shaped like a shard's (partitioned assets in a chain, each with a check; ``--assets``) whose
steps do no work, materialized in process on a fresh partition, alternately on two homes in the
same folder layout: one with Dagster's ``DagsterSqliteStorage`` and one with the shipped
``PooledSqliteStorage`` (``curation_pipeline.instance``). Every figure is the median over
``--runs`` runs per home:

- ``dagster_run_ms`` and ``shipped_run_ms``: one run, start to end;
- ``shipped_vs_dagster``: how many times faster the shipped storage runs it;
- ``events_per_run``: the events each run writes (Dagster's, the same on both homes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
from _common import add_smoke_flag, parse_args, result_line

SETTINGS = {
    "dagster": "telemetry:\n  enabled: false\n",
    "shipped": ("telemetry:\n  enabled: false\nstorage:\n  custom:\n    module: curation_pipeline.instance\n"
                "    class: PooledSqliteStorage\n    config:\n      base_dir: {home}\n"),
}


def shard_shaped(n_assets: int) -> list:
    shards = dg.DynamicPartitionsDefinition(name="shards")
    definitions, previous = [], None
    for i in range(n_assets):
        deps = [previous] if previous else []

        @dg.asset(name=f"table_{i}", partitions_def=shards, deps=deps)
        def table() -> None:
            return None

        @dg.asset_check(asset=table, name="complete", partitions_def=shards)
        def complete() -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=True)

        definitions += [table, complete]
        previous = table
    return definitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--assets", type=int, default=7, help="assets per run, each with a check")
    add_smoke_flag(parser, runs=3, assets=2)
    args = parse_args(parser)
    definitions = shard_shaped(args.assets)
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="bench-instance-") as folder:
        instances = {}
        for name, settings in SETTINGS.items():
            home = Path(folder, name)
            home.mkdir()
            (home / "dagster.yaml").write_text(settings.format(home=home))
            instances[name] = dg.DagsterInstance.from_config(str(home))
        assert type(instances["shipped"].event_log_storage).__name__ == "PooledSqliteEventLogStorage"
        for i in range(args.runs + 1):  # the first run of each home builds its storage: not counted
            for name, instance in instances.items():
                instance.add_dynamic_partitions("shards", [f"shard-{i}"])
                began = time.perf_counter()
                result = dg.materialize(definitions, instance=instance, partition_key=f"shard-{i}")
                if i:
                    times[name].append(time.perf_counter() - began)
                if not result.success:
                    raise SystemExit(f"the run on the {name} home failed")
        events = len(instances["shipped"].all_logs(result.run_id))
        for instance in instances.values():
            instance.dispose()
    dagster_ms, shipped_ms = (statistics.median(times[name]) * 1000 for name in ("dagster", "shipped"))
    result_line({"runs": args.runs, "assets": args.assets, "events_per_run": events,
                 "dagster_run_ms": dagster_ms, "shipped_run_ms": shipped_ms,
                 "shipped_vs_dagster": dagster_ms / shipped_ms})


if __name__ == "__main__":
    main()
