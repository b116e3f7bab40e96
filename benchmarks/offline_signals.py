"""Cost of the offline profile's signals, and its throughput against reading alone.

Shards are written to a temp dir from real Flickr photos (JPEG bytes as they ship,
first caption, a few re-encoded copies so duplicate grouping has work). Figures:

- decode: pairs/s of ``iter_pair_batches`` alone (read tar, parse, decode to RGB);
- per scorer: ms per pair, each scorer alone over the same decoded batches (model
  loading and a 4-pair warm-up call are timed apart, as ``scorer_load_s``);
- grouping: ``assign_duplicate_groups`` per shard, the second against the first
  (``dup_grouping_s_per_shard``; the fingerprints are computed once, before the timing);
- full: pairs/s of reading + decoding + every scorer of the offline profile, and
  ``slowdown`` = decode pairs/s / full pairs/s.

Every timed figure is the best of ``--repeats`` passes: on shared cores one pass can
be 2-3x slower than the next. ``cores`` is the cores this process may run on, ``threads`` the
threads each scorer's pools were sized to (``cpu_threads``: ``CURATION_THREADS``, else the cores
divided by ``$DAGSTER_HOME``'s ``max_concurrent_runs``).

Usage: python benchmarks/offline_signals.py [--shards 2] [--pairs 200] [--image-side 0] [--smoke]
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import pandas as pd
import webdataset as wds
from _common import add_smoke_flag, flickr_available, image_rows, parse_args, result_line, timed
from PIL import Image

from curation_pipeline.decisions.duplicate_groups import assign_duplicate_groups
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.profiles import ScoringProfile, build_scorers
from curation_pipeline.scoring.signals import _cores, cpu_threads
from curation_pipeline.shards.reader import iter_pair_batches

BATCH = 64


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _resized(data: bytes, side: int) -> bytes:
    """Web-sized copy (longer side ``side``): the shipped thumbnails flatter per-pixel costs."""
    image = Image.open(io.BytesIO(data))
    scale = side / max(image.size)
    return _jpeg(image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC), 90)


def write_shards(folder: Path, n_shards: int, pairs: int, image_side: int, smoke: bool = False) -> list[Path]:
    """Every 20th pair is a JPEG q60 re-encode of the pair before it (a near duplicate)."""
    rows = image_rows(n_shards * pairs, smoke)
    source = "flickr8k" if flickr_available() else "generated"
    paths = []
    for s in range(n_shards):
        path = folder / f"shard-{s:05d}.tar"
        with wds.TarWriter(str(path), mtime=0) as sink:
            previous = None
            for i, (image, caption) in enumerate(rows[s * pairs:(s + 1) * pairs]):
                data = image.read_bytes()
                if image_side:
                    data = _resized(data, image_side)
                if i % 20 == 19 and previous is not None:
                    data = _jpeg(Image.open(io.BytesIO(previous)), 60)
                sink.write({"__key__": f"{s:05d}{i:05d}", "jpg": data, "txt": caption,
                            "json": {"source": source}})
                previous = data
        paths.append(path)
    return paths


def decode_all(paths: list[Path]) -> list[PairBatch]:
    return [batch for path in paths for batch, _ in iter_pair_batches(str(path), path.stem, BATCH)]


def score_all(paths: list[Path], scorers) -> int:
    n = 0
    for path in paths:
        for batch, _ in iter_pair_batches(str(path), path.stem, BATCH):
            for scorer in scorers:
                scorer.score(batch)
            n += len(batch)
    return n


def grouping_seconds(paths: list[Path], dup_scorer, repeats: int) -> float:
    """Per-shard grouping cost (fingerprints precomputed), shard k against shards < k: the best of
    ``repeats`` passes over every shard."""
    frames = []
    for path in paths:
        parts = []
        for batch, _ in iter_pair_batches(str(path), path.stem, BATCH):
            part = dup_scorer.score(batch)
            part["key"], part["shard"] = batch.keys, path.stem
            parts.append(part)
        frames.append(pd.concat(parts, ignore_index=True))
    priors = [pd.concat(frames[:k], ignore_index=True) if k else None for k in range(len(frames))]

    def one_pass() -> float:
        return sum(timed(assign_duplicate_groups, current, prior, pd.Series(1.0, index=current.index))[0]
                   for current, prior in zip(frames, priors))

    return min(one_pass() for _ in range(repeats)) / len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=200, help="pairs per shard")
    parser.add_argument("--repeats", type=int, default=2,
                        help="passes per figure, the fastest counts (shared cores make single runs noisy)")
    parser.add_argument("--image-side", type=int, default=0,
                        help="resize images so the longer side is this (0: as shipped, mostly 200 px)")
    add_smoke_flag(parser, pairs=20, repeats=1)
    args = parse_args(parser)

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_shards(Path(tmp), args.shards, args.pairs, args.image_side, args.smoke)
        batches = decode_all(paths)  # also warms the page cache, as for the full pass
        n = sum(len(b) for b in batches)
        decode_s = min(timed(decode_all, paths)[0] for _ in range(args.repeats))
        print(f"{n} pairs in {len(paths)} shards, image side {args.image_side or 'as shipped'}, "
              f"{_cores()} cores, {cpu_threads()} thread(s) per scorer pool")
        print(f"decode only            {n / decode_s:8.1f} pairs/s")

        load_s, scorers = timed(build_scorers, ScoringProfile(name="offline"))
        per_scorer = {}
        for scorer in scorers:
            load_s += timed(scorer.score, next(batches[0].chunks(4)))[0]  # lazy loads (MiniLM), first call
            seconds = min(sum(timed(scorer.score, batch)[0] for batch in batches) for _ in range(args.repeats))
            per_scorer[scorer.name] = 1000 * seconds / n
            print(f"{scorer.ident:24s} {per_scorer[scorer.name]:8.2f} ms/pair")
        signals_ms = sum(per_scorer.values())
        print(f"{'all scorers':24s} {signals_ms:8.2f} ms/pair   (load + warm-up {load_s:.1f} s)")

        dup = next(s for s in scorers if s.name == "dup")
        group_s = grouping_seconds(paths, dup, args.repeats)
        print(f"{'dup grouping':24s} {1000 * group_s / args.pairs:8.3f} ms/pair   ({group_s:.3f} s per shard)")

        full_s, scored = min(timed(score_all, paths, scorers) for _ in range(args.repeats))

    decode_pps, full_pps = n / decode_s, scored / full_s
    print(f"read+decode+signals    {full_pps:8.1f} pairs/s")
    print(f"slowdown vs decode     {decode_pps / full_pps:8.1f}x")
    result_line({
        "pairs": n, "image_side": args.image_side, "cores": _cores(), "threads": cpu_threads(),
        "decode_pairs_per_s": decode_pps,
        **{f"ms_per_pair_{name}": ms for name, ms in per_scorer.items()},
        "ms_per_pair_all_scorers": signals_ms, "dup_grouping_s_per_shard": group_s,
        "scorer_load_s": load_s, "full_pairs_per_s": full_pps, "slowdown_vs_decode": decode_pps / full_pps,
    })


if __name__ == "__main__":
    main()
