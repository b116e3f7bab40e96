"""What the nightly schedule (``fill_missing_shards``) and ``curate run --only-missing`` spend deciding which
shards need a run: ``automation.refresh_plan`` over N registered shards, against Dagster's own staleness
resolver asked the same per-shard questions (what ``refresh_plan`` used before ``staleness.py``).

The home is a real Dagster home (the shipped dagster.yaml, its SQLite storage) whose shards carry the events
runs record (``curation_pipeline_tests.provenance``), with metadata about as large as a run's: of every 10
shards, 8 are curated and fresh, one has a raw file observed again with new content (stale) and one is
registered but never curated (missing). The warehouse holds an empty file per shard table, so the listing
says every file is there.

- ``refresh_plan_s``, ``per_shard_ms``: one ``refresh_plan`` (the second of two: the first loads the asset
  graph's caches), and per shard;
- ``dagster_statuses_s``: Dagster's ``CachingStaleStatusResolver.get_status`` for every shard asset of every
  shard, the loop ``refresh_plan`` ran with it; ``statuses_vs_dagster`` the same loop with the prefetching
  resolver, as a speed-up; ``same_statuses``: both answered alike for every shard and asset (if not, the
  script exits 1 after the RESULT line);
- ``shards_12800_s``: ``per_shard_ms`` at DataComp medium's ~12,800 shards, against the daemon's 60 s for a
  schedule tick (``DAGSTER_SCHEDULE_GRPC_TIMEOUT_SECONDS``).

Last line: ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from _common import add_smoke_flag, parse_args, result_line

REPO = Path(__file__).resolve().parents[1]
TICK_LIMIT_S = 60.0


def run_metadata() -> dict:
    """What a shard table's materialization carries, about as large as a run's (a final_captions record is
    ~19 KB): its column schema, row count, path, a few figures, a preview and a chart."""
    import dagster as dg

    columns = [dg.TableColumn(f"column_{i}", "string", description="what the column holds, in a sentence")
               for i in range(20)]
    return {"dagster/column_schema": dg.TableSchema(columns=columns), "dagster/row_count": 40,
            "path": dg.MetadataValue.path("/data/warehouse/final_captions/shard-000000.parquet"),
            **{f"figure_{i}": 0.5 for i in range(6)},
            "preview": dg.MetadataValue.md("| key | caption |\n|---|---|\n" + "| 000000001 | a caption |\n" * 60),
            "chart": dg.MetadataValue.md("![chart](data:image/png;base64," + "A" * 9000 + ")")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=2000)
    add_smoke_flag(parser, shards=40)
    args = parse_args(parser)
    tmp = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    home = tmp / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    warnings.filterwarnings("ignore")
    try:
        import dagster as dg
        from dagster._core.definitions.data_version import CachingStaleStatusResolver

        from curation_pipeline.automation import RAW, SHARD_KEYS, TABLE_ASSETS, refresh_plan
        from curation_pipeline.definitions import defs
        from curation_pipeline.partitions import shard_partitions
        from curation_pipeline.resources import WarehouseResource
        from curation_pipeline.staleness import PrefetchedStaleStatusResolver, asset_graph_view
        from curation_pipeline_tests.provenance import GRAPH, Home

        warehouse = tmp / "warehouse"
        resource = WarehouseResource(raw_root=str(tmp / "raw"), root=str(warehouse))
        stored = resource.warehouse()
        shards = [f"shard-{i:06d}" for i in range(args.shards)]
        with dg.DagsterInstance.get() as instance:
            made = Home(instance, run_metadata())
            for i, shard in enumerate(shards):
                if i % 10 == 9:  # registered, never curated
                    instance.add_dynamic_partitions(shard_partitions.name, [shard])
                    continue
                made.shard(shard)
                if i % 10 == 8:
                    made.observe(shard, f"new-{shard}")
                files = [stored.table_path(asset.path[-1], shard) for asset in TABLE_ASSETS]
                for path in [*files, stored.curated_path(shard)]:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    Path(path).touch()
            raw = {shard: str(tmp / "raw" / f"{shard}.tar") for shard in shards}
            repository = defs.get_repository_def()
            for _ in range(2):
                start = time.perf_counter()
                todo, held, _gone = refresh_plan(instance, resource, repository, raw)
                plan_s = time.perf_counter() - start

            def statuses(make) -> tuple[float, dict]:
                start = time.perf_counter()
                resolver = make(asset_graph_view(instance, GRAPH))
                found = {(key, shard): resolver.get_status(key, shard) for shard in shards for key in SHARD_KEYS}
                return time.perf_counter() - start, found

            dagster_s, dagster_found = statuses(lambda view: CachingStaleStatusResolver(
                instance=instance, asset_graph=GRAPH, loading_context=view))
            ours_s, ours_found = statuses(lambda view: PrefetchedStaleStatusResolver(
                instance, GRAPH, view, [RAW, *SHARD_KEYS]))
        per_shard_ms = 1000 * plan_s / len(shards)
        print(f"refresh_plan over {len(shards)} shards: {plan_s:.2f} s ({per_shard_ms:.2f} ms a shard; {len(todo)} to "
              f"run, {len(held)} held); every shard asset's status: Dagster's resolver {dagster_s:.2f} s, the "
              f"prefetching one {ours_s:.2f} s ({dagster_s / ours_s:.1f}x), answers "
              f"{'the same' if ours_found == dagster_found else 'DIFFERENT'}; at 12,800 shards: "
              f"{per_shard_ms * 12.8:.0f} s (a schedule tick has {TICK_LIMIT_S:.0f} s)")
        result_line({"shards": len(shards), "refresh_plan_s": plan_s, "per_shard_ms": per_shard_ms,
                     "to_run": len(todo), "dagster_statuses_s": dagster_s, "prefetched_statuses_s": ours_s,
                     "statuses_vs_dagster": dagster_s / ours_s, "same_statuses": ours_found == dagster_found,
                     "shards_12800_s": per_shard_ms * 12.8})
        if ours_found != dagster_found:  # the speed-up compares unequal answers: a failure, not a figure
            raise SystemExit("the prefetching resolver's statuses differ from Dagster's (same_statuses false)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
