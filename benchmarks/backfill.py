"""Asset backfill vs the job page: the two UI paths for curating shards, timed side by side.

An asset backfill (Lineage or Catalog page: "Materialize all" -> All -> Launch backfill) runs,
per partition, the implicit asset job with the shard assets selected; the job page runs
``curate_shards``. Each run here goes through ``dagster.execute_job`` on a persistent
instance, so the executor each job is configured with is the one that runs it (the thing
that made the two paths differ). Both paths curate the bundled sample shards into fresh
warehouses with the offline profile; the ratio is backfill seconds / job seconds.

Last line: ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import add_smoke_flag, parse_args, result_line, target, timed

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SHARD_ASSETS = ["pairs", "quality_scores", "caption_decisions", "rewritten_captions", "final_captions",
                "curated_shards"]


def asset_job():
    """What an asset backfill runs: an asset job over the shard assets with no executor of its own,
    so the code location's default executor runs it (as for Dagster's implicit asset job)."""
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.partitions import shard_partitions

    base = build_definitions()
    job = dg.define_asset_job("backfill_path", selection=SHARD_ASSETS, partitions_def=shard_partitions)
    defs = dg.Definitions(assets=base.assets, asset_checks=base.asset_checks, jobs=[job],
                          resources=base.resources, executor=base.executor)
    assert defs.resolve_job_def("backfill_path").executor_def is \
        base.resolve_implicit_global_asset_job_def().executor_def
    return defs.resolve_job_def("backfill_path")


def shard_job():
    from curation_pipeline.definitions import build_definitions

    return build_definitions().resolve_job_def("curate_shards")


def run_path(path: str, shards: list[str], home: Path) -> float:
    os.environ["CURATION_WAREHOUSE"] = str(home / f"warehouse-{path}")
    (home / f"instance-{path}").mkdir()
    with dg.DagsterInstance.local_temp(str(home / f"instance-{path}")) as instance:
        instance.add_dynamic_partitions("shards", shards)

        def run_all():
            for shard in shards:
                if path in ("backfill", "warm-up"):
                    result = dg.execute_job(dg.reconstructable(asset_job), instance,
                                            tags={"dagster/partition": shard}, run_config=QUIET)
                else:
                    result = dg.execute_job(dg.reconstructable(shard_job), instance,
                                            tags={"dagster/partition": shard}, run_config=QUIET)
                if not result.success:
                    raise SystemExit(f"{path} run of {shard} failed")

        seconds, _ = timed(run_all)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=3, help="sample shards to curate on each path")
    add_smoke_flag(parser, shards=1)
    args = parse_args(parser)
    shards = sorted(p.stem for p in (REPO / "data" / "raw").glob("*.tar"))[:args.shards]
    os.environ["CURATION_RAW"] = str(REPO / "data" / "raw")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        run_path("warm-up", shards[:1], home)  # imports and lazy models load once per process, before timing
        job_s = run_path("job", shards, home)
        backfill_s = run_path("backfill", shards, home)
    figures = {"shards": len(shards), "job_s": job_s, "backfill_s": backfill_s,
               "backfill_vs_job": backfill_s / job_s, "executor": shard_job().executor_def.name}
    print(f"{len(shards)} shards: job path {job_s:.1f} s, asset backfill path {backfill_s:.1f} s "
          f"-> {figures['backfill_vs_job']:.2f}x {target('<= 1.5')}")
    result_line(figures)


if __name__ == "__main__":
    main()
