"""The DuckDB report built from a warehouse on S3: its time and the requests it makes.

A real S3-compatible server (s3rver, its own process on 127.0.0.1, as the tests start it: ``make setup-scale``
installs it) holds a warehouse of ``--shards`` shards of small stand-in tables (4 pairs each: the figures are the
requests' cost, not the data's); ``build_report`` runs ``--rounds`` times and each figure is the best round's:

- ``build_s``: one build, start to the report uploaded;
- ``head_requests``, ``get_requests``, ``list_requests``: the S3 requests it made (s3fs's calls, counted by
  operation); ``head_per_shard``: HEAD requests over shards. Until 2026-12-07 DuckDB's look-ups of each file's
  details, at every query reading it, were a HEAD request each: about 190 a shard; the build's listing answers
  them now (``reporting.report.ExactFileSystem``).
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

from _common import add_smoke_flag, parse_args, result_line


def fill(warehouse, shards: int) -> None:
    from curation_pipeline_tests.published import publish
    from curation_pipeline_tests.scale.test_report import _tables

    for i in range(shards):
        shard = f"shard-{i:05d}"
        for table, df in _tables(shard, ["a dog runs", "", "two words", "x"],
                                 ["a dog runs", "a new caption", None, "x"]).items():
            warehouse.write_table(table, shard, df)
        publish(warehouse, shard)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    add_smoke_flag(parser, shards=2, rounds=1)
    args = parse_args(parser)
    if args.shards < 1 or args.rounds < 1:
        parser.error("--shards and --rounds must be at least 1")
    import s3fs

    from curation_pipeline_tests.scale.helpers import S3Server, s3_available

    ok, why = s3_available()
    if not ok:
        raise SystemExit(f"no S3 server to measure against: {why}")
    made = collections.Counter()
    real = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *a, **k):
        made[method] += 1
        return await real(self, method, *a, **k)

    s3fs.S3FileSystem._call_s3 = counted
    with tempfile.TemporaryDirectory(prefix="bench-report-s3-") as tmp, S3Server(Path(tmp)) as server:
        os.environ.update(server.env)
        s3fs.S3FileSystem.clear_instance_cache()
        from curation_pipeline.reporting.report import build_report
        from curation_pipeline.storage.warehouse import Warehouse

        warehouse = Warehouse(f"s3://{server.bucket}/warehouse")
        fill(warehouse, args.shards)
        best = None
        for _ in range(args.rounds):
            made.clear()
            start = time.perf_counter()
            report = build_report(warehouse)
            took = time.perf_counter() - start
            if report.overall["shards"] != args.shards:
                raise SystemExit(f"the report counted {report.overall['shards']} shards of {args.shards}")
            if best is None or took < best[0]:
                best = took, dict(made)
    took, requests = best
    figures = {"shards": args.shards, "rounds": args.rounds, "build_s": took,
               "head_requests": requests.get("head_object", 0), "get_requests": requests.get("get_object", 0),
               "list_requests": requests.get("list_objects_v2", 0),
               "head_per_shard": requests.get("head_object", 0) / args.shards}
    print(f"report of {args.shards} shards on s3rver: {took:.2f} s, {figures['head_requests']} HEAD "
          f"({figures['head_per_shard']:.1f} a shard), {figures['get_requests']} GET, {figures['list_requests']} LIST")
    result_line(figures)


if __name__ == "__main__":
    main()
