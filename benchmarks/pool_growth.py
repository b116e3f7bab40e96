"""What a shard's per-shard bookkeeping costs as the pool grows.

A pool of N shards is a warehouse holding a file per shard in each table folder. This times, for pools of
``--shards`` sizes (empty stand-in files; nothing is scored), what every shard's run does once per write or
what the settle sensor does once per tick:

- ``write_ms``: one ``Warehouse.write_table`` into a folder of N shards' files (a one-row table: the time is the
  write's bookkeeping and its fsync, which swings 2-8 ms from run to run whatever N);
- ``orphan_lookup_ms``: finding the orphaned temp files of the file written (``remove_orphans`` of one file: its
  folder's ``.tmp`` folder, by the name's prefix), best of ``--repeats``;
- ``folder_listing_ms``: the listing of the whole folder, with each file's details, that the look-up used to be
  (``Warehouse._files``): what a write cost per write before, for comparison;
- ``slice_digests_s``: ``DedupIndex.slice_digests`` over an index of N shards of ``--rows`` grouped pairs each (the
  settle sensor, each tick), and ``slice_digests_per_shard_frames_s``, the same digests one frame a shard (the way
  it was made before): both grow with N (once per tick), the first ~15x less steeply.

``*_growth``: the figure at the largest pool over the one at the smallest (whatever order ``--shards`` gives them
in), while the pool grew ``shards_growth``-fold: the look-up's stays near 1 (it reads the ``.tmp`` folder, which
holds only writes in flight and orphans).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
from _common import add_smoke_flag, parse_args, result_line

from curation_pipeline.decisions.dedup import DedupIndex, slice_digest
from curation_pipeline.storage.warehouse import Warehouse


def best_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def pool(root: str, shards: int) -> Warehouse:
    """A warehouse whose ``pairs`` folder holds ``shards`` stand-in files (names only matter to a listing)."""
    wh = Warehouse(root)
    folder = os.path.dirname(wh.table_path("pairs", "x"))
    os.makedirs(folder, exist_ok=True)
    for i in range(shards):
        open(os.path.join(folder, f"s{i:07d}.parquet"), "wb").close()
    return wh


def index_groups(shards: int, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    n = shards * rows
    keys = np.array([f"k{i:09d}" for i in range(n)])
    return pd.DataFrame({"shard": np.repeat([f"s{i:07d}" for i in range(shards)], rows), "key": keys,
                         "dup_group": keys.astype(object),
                         "dup_kind": rng.choice(["exact_pair", "near_image", "near_caption"], n).astype(object),
                         "dup_keep": rng.random(n) < 0.5})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="2000,8000", help="pool sizes, comma-separated")
    parser.add_argument("--rows", type=int, default=10, help="grouped pairs per shard in the index")
    parser.add_argument("--repeats", type=int, default=5)
    add_smoke_flag(parser, shards="50,200", repeats=2)
    args = parse_args(parser)
    sizes = [int(s) for s in args.shards.split(",")]
    if min(sizes) < 1:
        parser.error(f"--shards {args.shards}: every pool size must be at least 1")
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"key": ["a"]})
    figures: dict = {"shards": sizes, "rows": args.rows, "write_ms": [], "orphan_lookup_ms": [],
                     "folder_listing_ms": [], "slice_digests_s": [], "slice_digests_per_shard_frames_s": []}
    for size in sizes:
        root = tempfile.mkdtemp(prefix="bench-pool-")
        try:
            wh = pool(root, size)
            folder = os.path.dirname(wh.table_path("pairs", "x"))
            figures["write_ms"].append(best_ms(lambda: wh.write_table("pairs", "s0000001", table), args.repeats))
            figures["orphan_lookup_ms"].append(best_ms(lambda: wh.remove_orphans(folder, "s0000001.parquet"),
                                                       args.repeats))
            figures["folder_listing_ms"].append(best_ms(lambda: wh._files(folder), args.repeats))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        groups = index_groups(size, args.rows, rng)
        index = SimpleNamespace(groups=groups, identity={s: "v" for s in groups["shard"].unique()})
        start = time.perf_counter()
        digests = DedupIndex.slice_digests(index)
        figures["slice_digests_s"].append(time.perf_counter() - start)
        start = time.perf_counter()
        one_by_one = {shard: slice_digest(rows) for shard, rows in groups.groupby("shard", sort=False)}
        figures["slice_digests_per_shard_frames_s"].append(time.perf_counter() - start)
        if digests != one_by_one:
            raise SystemExit("slice_digests differ from slice_digest's: the benchmark compares unequal work")
        print(f"{size} shards: a write {figures['write_ms'][-1]:.2f} ms, its orphan look-up "
              f"{figures['orphan_lookup_ms'][-1]:.2f} ms (a listing of the folder: "
              f"{figures['folder_listing_ms'][-1]:.1f} ms); slice digests {figures['slice_digests_s'][-1]:.3f} s (one frame a shard: "
              f"{figures['slice_digests_per_shard_frames_s'][-1]:.3f} s)")
    # the smallest and the largest pool, not the first and the last given: "8000,2000,8000" grew 4-fold
    small, large = sizes.index(min(sizes)), sizes.index(max(sizes))
    figures["shards_growth"] = sizes[large] / sizes[small]
    for key in ("write_ms", "orphan_lookup_ms", "folder_listing_ms", "slice_digests_s"):
        figures[f"{key.rsplit('_', 1)[0]}_growth"] = figures[key][large] / max(figures[key][small], 1e-9)
    figures = {k: ([round(x, 3) for x in v] if isinstance(v, list) and k != "shards" else v)
               for k, v in figures.items()}
    result_line(figures)


if __name__ == "__main__":
    main()
