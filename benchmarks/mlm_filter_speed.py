"""MLM-Filter scorer throughput on a random-weight model of realistic shape, loaded
through the released LLaVA-1.5 layout (the MLM-Filter 13B checkpoint's config keys,
tensor names, SentencePiece tokenizer, 336 px CLIP tower with 576 image tokens; 45M
parameters instead of 13B). ``--smoke`` builds a far smaller one (about 2M parameters, 112 px
tower): its ratios say nothing about the full model's (RESULT ``params_m``).

One run, the same pairs for every figure: logits mode vs generation mode (the
reference's greedy budget, 2 new tokens per metric), the shared image+caption prefix vs one full prompt
per metric, and the scorer end to end (PairBatch of decoded images -> DataFrame) vs a
bare batched forward pass of the same model over the same, already processed prompts.
The last comparison uses one metric (ITM) on both sides so the work is the same.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from _common import add_smoke_flag, flickr_batch, parse_args, result_line, target, timed

from curation_pipeline.scoring.mlm import MlmFilterScorer
from curation_pipeline_tests.tiny_models import make_released_llava


def bare_forward(scorer: MlmFilterScorer, batch, metric: str) -> float:
    """Seconds for the model alone: inputs are built before the clock starts."""
    size = scorer.batch_size
    chunks = [scorer._full_inputs(batch.images[i:i + size], batch.captions[i:i + size], metric)
              for i in range(0, len(batch), size)]

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
    add_smoke_flag(parser, pairs=2, batch_size=2)
    args = parse_args(parser)
    torch.manual_seed(0)
    batch = flickr_batch(args.pairs, smoke=args.smoke)
    n = len(batch)
    with tempfile.TemporaryDirectory() as tmp:
        shape = dict(hidden=64, layers=2, heads=2, vision_hidden=32, vision_layers=1, image_size=112) \
            if args.smoke else {}
        path, tower = make_released_llava(tmp, **shape)
        common = dict(device=args.device, batch_size=args.batch_size, min_mass=0.0, vision_tower=tower)
        logits = MlmFilterScorer(path, mode="logits", **common)
        generate = MlmFilterScorer(path, mode="generate", **common)
        single = MlmFilterScorer(path, metrics=("itm",), **common)
    tokens = logits._full_inputs(batch.images[:1], batch.captions[:1], "itm")["input_ids"].shape[1]
    params_m = sum(p.numel() for p in logits.model.parameters()) / 1e6
    print(f"model: released LLaVA-1.5 layout, {params_m:.1f}M params, "
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
        "params_m": params_m,
        "prompt_tokens": tokens,
        "logits_pairs_per_s": n / t_logits,
        "generate_pairs_per_s": n / t_generate,
        "logits_vs_generate": t_generate / t_logits,
        "separate_pairs_per_s": n / t_separate,
        "shared_vs_separate": t_separate / t_logits,
        "pipeline_pairs_per_s": n / t_pipeline,
        "bare_forward_pairs_per_s": n / t_bare,
        "pipeline_vs_bare": t_bare / t_pipeline,
    }
    print(f"four metrics, logits + shared prefix: {figures['logits_pairs_per_s']:.2f} pairs/s")
    print(f"four metrics, generation ({generate.max_new_tokens} tokens):  "
          f"{figures['generate_pairs_per_s']:.2f} pairs/s "
          f"-> logits {figures['logits_vs_generate']:.2f}x {target('>= 3')}")
    print(f"four metrics, separate full prompts:  {figures['separate_pairs_per_s']:.2f} pairs/s "
          f"-> shared {figures['shared_vs_separate']:.2f}x {target('>= 2')}")
    print(f"ITM end to end {figures['pipeline_pairs_per_s']:.2f} pairs/s vs bare forward "
          f"{figures['bare_forward_pairs_per_s']:.2f} -> {figures['pipeline_vs_bare']:.2f}x {target('>= 0.8')}")
    result_line(figures)


if __name__ == "__main__":
    main()
