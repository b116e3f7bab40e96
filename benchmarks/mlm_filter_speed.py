"""MLM-Filter scorer throughput on a random-weight model of realistic shape.

One run, the same pairs for every figure: logits mode vs generation mode (4 new
tokens, as MLM-Filter decodes), the shared image+caption prefix vs one full prompt
per metric, and the scorer end to end (PairBatch of decoded images -> DataFrame) vs a
bare batched forward pass of the same model over the same, already processed prompts.
The last comparison uses one metric (ITM) on both sides so the work is the same.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from _common import flickr_batch, result_line, timed

from curation_pipeline.scoring.mlm_filter import MlmFilterScorer
from curation_pipeline_tests.tiny_models import make_realistic_vlm


def bare_forward(scorer: MlmFilterScorer, batch, metric: str) -> float:
    """Seconds for the model alone: inputs are built before the clock starts."""
    prompts = [scorer.prefix_text(c) + scorer.suffix_text(metric) for c in batch.captions]
    chunks = [scorer._inputs(prompts[i:i + scorer.batch_size], batch.images[i:i + scorer.batch_size])
              for i in range(0, len(batch), scorer.batch_size)]

    def run():
        with torch.inference_mode():
            for inputs in chunks:
                scorer.model(**inputs, logits_to_keep=1)

    seconds, _ = timed(run)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    batch = flickr_batch(args.pairs)
    n = len(batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_realistic_vlm(tmp)
        common = dict(device=args.device, batch_size=args.batch_size, min_mass=0.0)
        logits = MlmFilterScorer(path, mode="logits", **common)
        generate = MlmFilterScorer(path, mode="generate", max_new_tokens=4, **common)
        single = MlmFilterScorer(path, metrics=("itm",), **common)
    tokens = logits._inputs([logits.prefix_text(batch.captions[0]) + logits.suffix_text("itm")],
                            batch.images[:1])["input_ids"].shape[1]
    print(f"model: LLaVA shape, {sum(p.numel() for p in logits.model.parameters()) / 1e6:.1f}M params, "
          f"{tokens} prompt tokens per pair, device {logits.device}, {n} pairs, batch {args.batch_size}")
    warm = type(batch)(batch.keys[:2], batch.captions[:2], batch.images[:2])
    for scorer in (logits, generate, single):
        scorer.score(warm)
    logits.score_separate(warm)

    t_logits, _ = timed(logits.score, batch)
    t_generate, _ = timed(generate.score, batch)
    t_separate, _ = timed(logits.score_separate, batch)
    t_pipeline, _ = timed(single.score, batch)
    t_bare = bare_forward(single, batch, "itm")
    figures = {
        "pairs": n,
        "prompt_tokens": tokens,
        "logits_pairs_per_s": n / t_logits,
        "generate_pairs_per_s": n / t_generate,
        "logits_vs_generate": t_generate / t_logits,
        "shared_prefix_pairs_per_s": n / t_logits,
        "separate_pairs_per_s": n / t_separate,
        "shared_vs_separate": t_separate / t_logits,
        "pipeline_pairs_per_s": n / t_pipeline,
        "bare_forward_pairs_per_s": n / t_bare,
        "pipeline_vs_bare": t_bare / t_pipeline,
    }
    print(f"four metrics, logits + shared prefix: {figures['logits_pairs_per_s']:.2f} pairs/s")
    print(f"four metrics, generation (4 tokens):  {figures['generate_pairs_per_s']:.2f} pairs/s "
          f"-> logits {figures['logits_vs_generate']:.2f}x (target >= 3)")
    print(f"four metrics, separate full prompts:  {figures['separate_pairs_per_s']:.2f} pairs/s "
          f"-> shared {figures['shared_vs_separate']:.2f}x (target >= 2)")
    print(f"ITM end to end {figures['pipeline_pairs_per_s']:.2f} pairs/s vs bare forward "
          f"{figures['bare_forward_pairs_per_s']:.2f} -> {figures['pipeline_vs_bare']:.2f}x (target >= 0.8)")
    result_line(figures)


if __name__ == "__main__":
    main()
