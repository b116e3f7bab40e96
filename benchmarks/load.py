"""Load benchmark: many Flickr8k shards through the whole offline job in one process.

Builds ``--shards`` webdataset shards of ``--pairs`` real photos each in a temporary folder,
materializes every shard partition with the ``offline`` scoring profile in ONE process, and
reports pairs/s and peak RSS. Then one 10,000-pair shard and one 1,000-pair shard each run in a
FRESH subprocess, so the peak memory is per shard: their ratio shows that memory is bounded by the
batch size, not by the shard size (target <= 1.3).

Every pair goes through every step, so a shard's size is what its later steps see: the shards
cycle over the Flickr photos that DataComp's size rule keeps (329 of the 1,000; RESULT
``photos``), with their first caption; each pass after the first is a distinct copy
(``faults.flickr.distinct_copy``: re-encoded with marked pixels, the caption ending ``(copy N)``),
so no pair is an exact duplicate. The copies are still near duplicates (pHash), so the policy
runs with ``drop_duplicates=false`` (RESULT ``drop_duplicates``): duplicates are grouped and
marked, not dropped. ``kept_pairs`` counts the pairs published. Before 2026-12-07 the copies
were byte-identical and dropped, and two thirds of the photos were too small: most pairs left
after scoring.

    python benchmarks/load.py                       # 50 shards x 1,000 pairs (long)
    python benchmarks/load.py --shards 4 --pairs 250  # quick
    python benchmarks/load.py --shards 0            # only the 10,000 vs 1,000 memory ratio
    python benchmarks/load.py --smoke               # seconds: 1 x 8 pairs, then 16 vs 8 pairs

Last line: ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_smoke_flag, image_rows, parse_args, result_line, target, verdict

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


MIN_SIDE = 200  # DataComp's size rule (scoring.datacomp): a photo with a shorter side is dropped after scoring


def kept_photos(smoke: bool = False) -> tuple[tuple[str, str], ...]:
    """The photos DataComp's size rule keeps (329 of the 1,000 Flickr ones; every generated one): with the rest,
    two thirds of the pairs would leave after scoring, and a shard's later steps would see a varying share."""
    from PIL import Image

    rows = []
    for path, caption in image_rows(None, smoke):
        with Image.open(path) as image:
            if min(image.size) >= MIN_SIDE:
                rows.append((str(path), caption))
    if not rows:
        raise SystemExit(f"no photo of at least {MIN_SIDE} px on its shorter side")
    return tuple(rows)


def build_shards(raw: Path, shards: int, pairs: int, prefix: str = "load", smoke: bool = False) -> list[str]:
    """Each shard written a member at a time (a 10,000-pair shard's photos are never held at once)."""
    from curation_pipeline_tests.faults import builders, flickr

    rows = kept_photos(smoke)
    raw.mkdir(parents=True, exist_ok=True)
    names = []
    for s in range(shards):
        name = f"{prefix}-{s:06d}"
        members = flickr.iter_flickr_members(pairs, prefix=f"{s:04d}", rows=rows, start=s * pairs, distinct=True)
        builders.write_members(raw / f"{name}.tar", members)
        names.append(name)
    return names


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux's ``VmHWM`` belongs to the process's own address space, unlike ``ru_maxrss``, which
    an exec'd child inherits from the parent that spawned it (so a small shard run from a
    big parent would report the parent's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort


def run(raw: Path, warehouse: Path, shards: list[str], report: bool = True) -> tuple[float, int]:
    """Seconds to curate ``shards`` and the pairs kept. Duplicates are marked but kept: the copies are near
    duplicates by construction, and dropping them would leave the steps after scoring ~1,000 pairs."""
    from curation_pipeline.resources import PolicyResource, ScoringResource
    from curation_pipeline.storage.warehouse import Warehouse
    from curation_pipeline_tests.conftest import run_pipeline

    start = time.perf_counter()
    _, results = run_pipeline(raw, warehouse, shards, report=report, scoring=ScoringResource(profile="offline"),
                              policy=PolicyResource(drop_duplicates=False))
    elapsed = time.perf_counter() - start
    failed = [name for name, r in results.items() if not r.success]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")
    wh = Warehouse(str(warehouse))
    outcomes = (wh.read_table("final_captions", shard, columns=["outcome"], keep=False)["outcome"] for shard in shards)
    kept = sum(int(outcome.ne("dropped").sum()) for outcome in outcomes)
    return elapsed, kept


def single(pairs: int, raw: Path) -> None:
    """Child mode: the one shard in ``raw`` (``pairs`` pairs); prints a JSON line with its peak RSS: the
    pipeline's alone, the shard built by the parent (until 2026-12-07 the child built it, holding every photo
    of it at once: its peak grew with the shard by itself)."""
    [name] = [p.stem for p in raw.glob("*.tar")]
    with tempfile.TemporaryDirectory(prefix="load-single-") as tmp:
        elapsed, kept = run(raw, Path(tmp) / "wh", [name], report=False)
    print("SINGLE " + json.dumps({"pairs": pairs, "kept": kept, "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}))


def single_in_subprocess(pairs: int, smoke: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="load-single-raw-") as tmp:
        build_shards(Path(tmp), 1, pairs, prefix="single", smoke=smoke)
        command = [sys.executable, __file__, "--single", str(pairs), "--single-raw", tmp]
        out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"single-shard run of {pairs} pairs failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    line = next(line for line in out.stdout.splitlines()[::-1] if line.startswith("SINGLE "))
    return json.loads(line[len("SINGLE "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--big", type=int, default=10_000, help="pairs in the large single shard")
    parser.add_argument("--small", type=int, default=1_000, help="pairs in the small single shard")
    parser.add_argument("--single", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--single-raw", default=None, help=argparse.SUPPRESS)
    add_smoke_flag(parser, shards=1, pairs=8, big=16, small=8)
    args = parse_args(parser)
    if args.single:
        single(args.single, Path(args.single_raw))
        return
    figures = {}
    if args.shards:
        print(f"load benchmark: {args.shards} shards x {args.pairs} pairs, offline profile, "
              f"{os.cpu_count()} CPUs, one process", flush=True)
        with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
            raw = Path(tmp) / "raw"
            t = time.perf_counter()
            names = build_shards(raw, args.shards, args.pairs, smoke=args.smoke)
            print(f"built {len(names)} shards in {time.perf_counter() - t:.1f} s", flush=True)
            elapsed, kept = run(raw, Path(tmp) / "wh", names)
        total = args.shards * args.pairs
        figures = {"shards": args.shards, "pairs_per_shard": args.pairs, "pairs": total, "kept_pairs": kept,
                   "seconds": elapsed, "pairs_per_s": total / elapsed, "peak_rss_mb": peak_rss_mb()}
        print(f"{total} pairs in {elapsed:.1f} s: {total / elapsed:.1f} pairs/s ({elapsed / args.shards:.1f} s "
              f"per shard, report included); {kept} kept (duplicates marked, not dropped); "
              f"peak RSS {figures['peak_rss_mb']:.0f} MB", flush=True)
    small = single_in_subprocess(args.small, args.smoke)
    print(f"single {args.small}-pair shard: peak RSS {small['peak_rss_mb']:.0f} MB ({small['seconds']:.1f} s, "
          f"{small['kept']} kept)", flush=True)
    big = single_in_subprocess(args.big, args.smoke)
    print(f"single {args.big}-pair shard: peak RSS {big['peak_rss_mb']:.0f} MB ({big['seconds']:.1f} s, "
          f"{big['kept']} kept)", flush=True)
    ratio = big["peak_rss_mb"] / small["peak_rss_mb"]
    print(f"peak-memory ratio {args.big}/{args.small} pairs: {ratio:.2f} {target('<= 1.3')}")
    result_line({
        "drop_duplicates": False, "photos": len(kept_photos(args.smoke)), **figures,
        "small_shard_pairs": args.small, "small_shard_kept": small["kept"],
        "small_shard_peak_rss_mb": small["peak_rss_mb"],
        "big_shard_pairs": args.big, "big_shard_kept": big["kept"], "big_shard_peak_rss_mb": big["peak_rss_mb"],
        "peak_rss_ratio_big_small": ratio, "ratio_target": 1.3, "ratio_ok": verdict(ratio <= 1.3),
    })


if __name__ == "__main__":
    main()
