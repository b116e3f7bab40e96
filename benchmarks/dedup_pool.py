"""What one new shard's duplicate decision costs as the pool grows.

``caption_decisions`` of a new shard refreshes the pool-wide dedup index (``refresh_index``): it
compares the new shard's fingerprints against every stored shard's, reusing the links among the
others. This builds pools of ``--shards`` sizes (stored ``quality_scores`` of ``--pairs`` pairs each:
random fingerprints and unit caption vectors, ``--dup-share`` (1%) of each shard's images loosely alike
to a pool image with the same caption, so vectors are compared), indexes all but the newest shard, then
times the refresh for that shard in a fresh process:

- ``pool_shards``: the pool sizes;
- ``refresh_s``: seconds of that refresh, per pool size;
- ``peak_rss_mb``: the refreshing process's peak resident memory, per pool size (imports included);
- ``rebuild_s``: then a rebuild of the whole index, every shard compared against the pool (the first
  index of a pool scored in one backfill, or any after the dedup rules change); it must find the same
  groups as the refresh;
- ``decision_s``: then, with that index stored (as the ``dedup_index`` asset leaves it), what the newest
  shard's decision spends finding its duplicate rows in it (``dedup_for_shard``: the index's manifest,
  the listing of the pool's stored scores that tells it the index is current, its rows; best of
  three): it should not grow with the pool;
- ``index_write_s`` and ``index_decision_read_s``: a stored index of ``--index-shards`` x ``--index-rows``
  grouped pairs (synthetic groups and links: a pool too big to score here) over a warehouse holding a
  stored scores file for each of those shards (one row each: the decision lists them, it reads none)
  and the manifest that makes the index current for them; the seconds to write the index, and the same
  look-up as ``decision_s`` for the newest shard (``dedup_for_shard``, best of three);
  ``index_decision_read_s_by_position`` the same for the first, middle and last shard of the index.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from _common import add_smoke_flag, parse_args, result_line

DECISION_REPEATS = 3  # a decision's look-up is timed this many times; the fastest counts

CHILD = """
import json, sys, time
import scipy.sparse.csgraph
from curation_pipeline.decisions.dedup import dedup_for_shard, refresh_index, usability_columns, write_index
from curation_pipeline.decisions.policy import DecisionPolicy
from curation_pipeline.storage.warehouse import Warehouse
wh, policy, repeats = Warehouse(sys.argv[1]), DecisionPolicy(), int(sys.argv[2])
usability_columns()  # imports the scorer modules (a run has them): not part of the refresh
began = time.perf_counter()
index = refresh_index(wh, policy)
seconds = time.perf_counter() - began
# VmHWM, not getrusage's ru_maxrss: that one keeps the parent's peak across fork and exec
hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
write_index(wh, index)  # the dedup_index asset's record: now every shard's decision finds it current
shard = max(index.identity)
scores = wh.read_table("quality_scores", shard)
decisions = []
for _ in range(repeats):
    began = time.perf_counter()
    found = dedup_for_shard(wh, shard, scores, policy)
    decisions.append(time.perf_counter() - began)
assert found.source == "dedup_index", found.source
from curation_pipeline.decisions.dedup import build_index, load_pool, pool_identity, pool_vectors
began = time.perf_counter()  # every shard compared against the pool, as no earlier index covers it
identity = pool_identity(wh)
pool = load_pool(wh, sorted(identity), policy.quality_column)
full = build_index(pool, policy, None, identity, vectors=pool_vectors(wh, pool))
rebuild = time.perf_counter() - began
assert full.groups.equals(index.groups)  # the same groups either way (links may join them by other members)
print(json.dumps({"s": seconds, "rss": hwm, "grouped": len(index.groups), "decision": min(decisions),
                  "rebuild": rebuild}))
"""


def scores(shard: int, pairs: int, rng, pool_hashes: list[str], pool_vectors: list[np.ndarray],
           dup_share: float = 0.01) -> pd.DataFrame:
    """A stored quality_scores table: the columns the dedup index reads, with fingerprints that link
    ``dup_share`` of the pairs to earlier shards' (loosely alike image, same caption vector)."""
    from curation_pipeline.decisions.dedup import usability_columns
    from curation_pipeline.decisions.policy import DecisionPolicy
    from curation_pipeline.scoring.signals.duplicates import CAPTION_EMBEDDING
    from curation_pipeline.scoring.signals.embedding import EMBED_DIM

    vectors = rng.standard_normal((pairs, EMBED_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    df = pd.DataFrame({
        "key": [f"{shard:06d}{i:05d}" for i in range(pairs)],
        "dup_image_sha": [f"{v:064x}" for v in rng.integers(0, 2**62, pairs)],
        "dup_phash": [f"{v:016x}" for v in rng.integers(0, 2**63, pairs, dtype=np.uint64)],
        "dup_caption_norm_sha": [f"{v:032x}" for v in rng.integers(0, 2**62, pairs)],
        CAPTION_EMBEDDING: list(vectors),
        "caption": [f"a photo number {i} of shard {shard}" for i in range(pairs)],
        "decode_status": "ok", "width": 512, "height": 384,
        DecisionPolicy().quality_column: rng.random(pairs) * 100,
    })
    for column in usability_columns():
        if column not in df:
            df[column] = np.nan  # an unknown signal passes its bound
    if pool_hashes:
        for i in rng.choice(pairs, max(1, round(pairs * dup_share)), replace=False):
            j = int(rng.integers(len(pool_hashes)))
            df.at[i, "dup_phash"] = f"{int(pool_hashes[j], 16) ^ 0xFF:016x}"
            df.at[i, CAPTION_EMBEDDING] = pool_vectors[j]
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="10,40,120", help="pool sizes, comma-separated, ascending")
    parser.add_argument("--pairs", type=int, default=1000, help="pairs per shard")
    parser.add_argument("--dup-share", type=float, default=0.01,
                        help="share of each shard's pairs that duplicate an earlier shard's (web pools: 0.1-0.3)")
    parser.add_argument("--index-shards", type=int, default=1280,
                        help="shards of the large stored index (1,280: DataComp medium's 12.8M pairs)")
    parser.add_argument("--index-rows", type=int, default=1000, help="grouped pairs per shard in it")
    add_smoke_flag(parser, shards="3,6", pairs=50, index_shards=20, index_rows=50)
    args = parse_args(parser)
    try:  # each pool grows the one before: a smaller size after a larger one would measure the larger pool
        sizes = [int(s) for s in args.shards.split(",")]
    except ValueError:
        parser.error(f"--shards {args.shards!r}: comma-separated whole numbers")
    if not sizes or sizes[0] < 1 or any(b <= a for a, b in zip(sizes, sizes[1:])):
        parser.error(f"--shards {args.shards!r}: pool sizes of at least 1, strictly ascending")
    from curation_pipeline.storage.warehouse import Warehouse

    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as folder:
        figures = pool_figures(args, Warehouse(folder))
    figures.update(large_index(args.index_shards, args.index_rows))
    result_line(figures)


def pool_figures(args, wh) -> dict:
    """Refresh, decision and rebuild figures for each pool size, in the warehouse ``wh``."""
    from curation_pipeline.decisions.dedup import refresh_index, write_index
    from curation_pipeline.decisions.policy import DecisionPolicy
    from curation_pipeline.scoring.signals.duplicates import CAPTION_EMBEDDING

    sizes = [int(s) for s in args.shards.split(",")]
    rng = np.random.default_rng(0)
    hashes, vectors, made, figures = [], [], 0, {"pairs_per_shard": args.pairs, "pool_shards": sizes,
                                                 "dup_share": args.dup_share,
                                                 "refresh_s": [], "peak_rss_mb": [], "decision_s": [],
                                                 "rebuild_s": []}
    for size in sizes:
        while made < size:
            if made == size - 1:  # the pool before the new shard is indexed, as the pipeline leaves it
                write_index(wh, refresh_index(wh, DecisionPolicy()))
            df = scores(made, args.pairs, rng, hashes, vectors, args.dup_share)
            wh.write_table("quality_scores", f"pool-{made:06d}", df)
            hashes += df["dup_phash"].tolist()[:50]
            vectors += df[CAPTION_EMBEDDING].tolist()[:50]
            made += 1
        out = subprocess.run([sys.executable, "-c", CHILD, wh.root, str(DECISION_REPEATS)], capture_output=True,
                             text=True, check=True)
        child = json.loads(out.stdout.strip().splitlines()[-1])
        figures["refresh_s"].append(round(child["s"], 3))
        figures["peak_rss_mb"].append(round(child["rss"] / 1024))
        figures["decision_s"].append(round(child["decision"], 4))
        figures["rebuild_s"].append(round(child["rebuild"], 3))
        print(f"pool of {size} shards x {args.pairs} pairs: refresh for the new shard {child['s']:.2f} s, "
              f"peak RSS {child['rss'] / 1024:.0f} MB, {child['grouped']} pairs in groups; then a decision's "
              f"look-up in the current index {child['decision'] * 1000:.0f} ms; a whole rebuild {child['rebuild']:.2f} s",
              flush=True)
    return figures


def large_index(n_shards: int, rows: int) -> dict:
    """A stored index of ``n_shards`` x ``rows`` grouped pairs (too big a pool to score here): seconds to
    write it (the dedup_index asset) and for one shard's decision to find its rows in it."""
    from curation_pipeline.storage.warehouse import Warehouse

    with tempfile.TemporaryDirectory(prefix="bench-dedup-index-") as folder:
        return _large_index(Warehouse(folder), n_shards, rows)


def _large_index(wh, n_shards: int, rows: int, repeats: int = DECISION_REPEATS) -> dict:
    """``large_index`` in the warehouse ``wh``: a stored scores file per shard (a decision lists them all:
    ``pool_identity``), then the index and the manifest that makes it current for them, then the same
    look-up ``decision_s`` times (``dedup_for_shard``, best of ``repeats``) for the first, middle and last
    shard; the figure is the last's, the newest shard as in ``decision_s``."""
    from curation_pipeline.decisions import dedup
    from curation_pipeline.decisions.policy import DecisionPolicy

    policy = DecisionPolicy()
    names = [f"pool-{i:06d}" for i in range(n_shards)]
    fingerprints = {c: ["0" * 16] for c in dedup.dup_columns()[:3]}  # what marks scores as carrying them
    first = wh.write_table("quality_scores", names[0], pd.DataFrame({"key": ["00000000"], **fingerprints}))
    for name in names[1:]:  # the content is not read: copies of one small file keep the set-up quick
        wh.fs.cp_file(first, wh.table_path("quality_scores", name))
    shards = np.repeat(names, rows)
    keys = np.tile([f"{j:08d}" for j in range(rows)], n_shards)
    groups = pd.DataFrame({"shard": shards, "key": keys, "dup_group": keys.astype(object), "dup_kind": "near_image",
                           "dup_keep": np.arange(len(keys)) % 2 == 0, "dup_of": None})
    links = pd.DataFrame({"shard_a": shards, "key_a": keys, "shard_b": shards, "key_b": keys, "kind": np.int8(2)})
    index = dedup.DedupIndex(groups, links, dedup.pool_identity(wh), dedup.rules_digest(policy))
    began = time.perf_counter()
    dedup.write_index(wh, index)
    write_s = time.perf_counter() - began
    scores = pd.DataFrame({"key": keys[:rows], **{c: ["0" * 16] * rows for c in dedup.dup_columns()[:3]}})
    positions = (names[0], names[len(names) // 2], names[-1])
    best = []
    for shard in positions:
        seconds = []
        for _ in range(repeats):
            began = time.perf_counter()
            found = dedup.dedup_for_shard(wh, shard, scores, policy)
            seconds.append(time.perf_counter() - began)
            # the stored index answered (not a refresh over the pool), with every row of the shard
            assert found.source == dedup.INDEX_ASSET and found.rows["dup_group"].notna().all(), found.source
        best.append(min(seconds))
    print(f"stored index of {n_shards} shards x {rows} grouped pairs, each shard's scores stored: index written in "
          f"{write_s:.1f} s; the newest shard's decision finds its rows in {best[-1] * 1000:.0f} ms (best of "
          f"{repeats}; first and middle shard {best[0] * 1000:.0f} / {best[1] * 1000:.0f} ms)", flush=True)
    return {"index_shards": n_shards, "index_grouped_rows": n_shards * rows, "index_write_s": round(write_s, 2),
            "index_decision_read_s": round(best[-1], 4),
            "index_decision_read_s_by_position": [round(v, 4) for v in best]}


if __name__ == "__main__":
    main()
