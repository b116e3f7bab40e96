"""Caption rewriting throughput, and what rewriting the weak tail costs a partition.

Model: a random-weight LLaVA of realistic shape (256 image tokens per pair), so the
figures measure the code path (prompting, batched generation, cleaning, re-scoring,
MiniLM similarity, lineage), not caption quality. A random model rarely emits its end
token, so every rewrite runs the full ``max_new_tokens``: a worst case for generation.

Partition cost: score the captions (text quality + DataComp basic rules), then rewrite
the lowest-scoring fraction f through ``rewrite_batches`` (re-scoring, minimality,
acceptance) for f = 0, 0.1, 0.5; reported as seconds and as a ratio to f = 0.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from _common import add_smoke_flag, flickr_batch, parse_args, result_line, timed

from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.attempts import rewrite_batches
from curation_pipeline.rewriting.verify import AcceptanceRules
from curation_pipeline.rewriting.vlm import VlmRewriter
from curation_pipeline.scoring.datacomp import DataCompBasicRules
from curation_pipeline.scoring.signals.embedding import caption_similarity
from curation_pipeline.scoring.text_quality import CaptionTextQuality
from curation_pipeline_tests.tiny_models import make_realistic_vlm

FRACTIONS = (0.0, 0.1, 0.5)
RULES = AcceptanceRules(min_improvement=1.0, max_edit_ratio=0.6, min_length_ratio=0.5, max_length_ratio=2.0,
                        min_similarity=0.7)


def process_partition(batch: PairBatch, fraction: float, rewriter: VlmRewriter, batch_size: int) -> int:
    """Score, pick the weakest ``fraction``, rewrite and verify them; the number rewritten."""
    text, rules = CaptionTextQuality(), DataCompBasicRules()
    scores = text.score(batch)
    rules.score(batch)
    order = scores["text_quality"].sort_values(kind="stable").index[:round(fraction * len(batch))]
    if len(order) == 0:
        return 0
    weak = PairBatch([batch.keys[i] for i in order], [batch.captions[i] for i in order],
                     [batch.images[i] for i in order])
    before = dict(zip(batch.keys, scores["text_quality"]))
    lineage = rewrite_batches(weak.chunks(batch_size), shard="bench", rewriter=rewriter, rescore=text.score,
                              quality_column="text_quality", scores_before=before, rules=RULES, run_id="bench",
                              similarity=caption_similarity)
    return len(lineage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=40, help="pairs in the partition")
    parser.add_argument("--rewrite-pairs", type=int, default=8, help="pairs for the rewrites/s figure")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default=None)
    add_smoke_flag(parser, pairs=6, rewrite_pairs=2, batch_size=2, max_new_tokens=4)
    args = parse_args(parser)
    torch.manual_seed(0)
    batch = flickr_batch(args.pairs, smoke=args.smoke)
    with tempfile.TemporaryDirectory() as tmp:
        rewriter = VlmRewriter(make_realistic_vlm(tmp), max_new_tokens=args.max_new_tokens,
                               batch_size=args.batch_size, device=args.device)
    params = sum(p.numel() for p in rewriter.generator.model.parameters()) / 1e6
    print(f"model: LLaVA shape, {params:.1f}M params, 256 image tokens per pair, "
          f"device {rewriter.generator.device}, max_new_tokens {args.max_new_tokens}, batch {args.batch_size}")
    # Warm-up outside every timing: first generate call, MiniLM and fastText loads, the caption rules' first use
    # and rewrite_batches' (the whole partition path once): else the f0 partition, timed first and every ratio's
    # denominator, paid them (1.5-2.6x its warm time)
    warm = PairBatch(batch.keys[:2], batch.captions[:2], batch.images[:2])
    rewriter.rewrite(warm)
    caption_similarity(["a dog"], ["a cat"])
    DataCompBasicRules().score(warm)
    CaptionTextQuality().score(warm)
    process_partition(warm, 0.5, rewriter, args.batch_size)

    sample = PairBatch(batch.keys[:args.rewrite_pairs], batch.captions[:args.rewrite_pairs],
                       batch.images[:args.rewrite_pairs])
    t_rewrite, _ = timed(rewriter.rewrite, sample)
    figures = {"rewrite_pairs": len(sample), "rewrites_per_s": len(sample) / t_rewrite,
               "partition_pairs": len(batch)}
    print(f"VlmRewriter: {figures['rewrites_per_s']:.2f} rewrites/s ({len(sample)} pairs, {t_rewrite:.1f} s)")

    base = None
    for fraction in FRACTIONS:
        seconds, rewritten = timed(process_partition, batch, fraction, rewriter, args.batch_size)
        base = base or seconds
        tag = f"f{int(fraction * 100)}"
        figures[f"{tag}_rewritten"] = rewritten
        figures[f"{tag}_seconds"] = seconds
        figures[f"{tag}_cost_ratio"] = seconds / base
        marginal = f", {(seconds - base) / rewritten:.2f} s per rewrite" if rewritten else ""
        print(f"partition of {len(batch)}, rewrite {fraction:.0%} ({rewritten} pairs): {seconds:.2f} s "
              f"= {seconds / base:.1f}x the cost without rewriting{marginal}")
    result_line(figures)


if __name__ == "__main__":
    main()
