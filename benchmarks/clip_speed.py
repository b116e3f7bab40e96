"""ClipScorer throughput (PairBatch of decoded images -> DataFrame) vs a bare batched
forward pass of the same random-weight CLIP (ViT-B/32-like input: 224 px, patch 32)
over inputs processed before the clock starts."""

from __future__ import annotations

import argparse
import tempfile

import torch

from _common import add_smoke_flag, flickr_batch, parse_args, result_line, timed

from curation_pipeline.scoring.clip import ClipScorer


def make_clip(directory: str) -> str:
    from transformers import CLIPConfig, CLIPModel

    from curation_pipeline_tests import tiny_models

    path = tiny_models.make_tiny_clip(directory)
    config = CLIPConfig.from_pretrained(path)
    config.vision_config.update(dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                     num_attention_heads=4, image_size=224, patch_size=32))
    config.text_config.update(dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                   num_attention_heads=4, max_position_embeddings=77))
    CLIPModel(config).save_pretrained(path)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    processor.image_processor.size = {"shortest_edge": 224}
    processor.image_processor.crop_size = {"height": 224, "width": 224}
    processor.save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None)
    add_smoke_flag(parser, pairs=8, batch_size=4)
    args = parse_args(parser)
    torch.manual_seed(0)
    batch = flickr_batch(args.pairs, smoke=args.smoke)
    with tempfile.TemporaryDirectory() as tmp:
        scorer = ClipScorer(make_clip(tmp), device=args.device, batch_size=args.batch_size)
    scorer.score(batch)  # warm-up
    t_pipeline, _ = timed(scorer.score, batch)
    texts = [f"A photo depicts {c}" for c in batch.captions]
    chunks = [scorer.processor(text=texts[i:i + args.batch_size], images=batch.images[i:i + args.batch_size],
                               return_tensors="pt", padding=True, truncation=True, max_length=77).to(scorer.device)
              for i in range(0, len(batch), args.batch_size)]

    def bare():
        with torch.inference_mode():
            for inputs in chunks:
                scorer.model(**inputs)

    t_bare, _ = timed(bare)
    n = len(batch)
    figures = {"pairs": n, "pipeline_pairs_per_s": n / t_pipeline, "bare_forward_pairs_per_s": n / t_bare,
               "pipeline_vs_bare": t_bare / t_pipeline}
    print(f"ClipScorer {figures['pipeline_pairs_per_s']:.1f} pairs/s, bare forward "
          f"{figures['bare_forward_pairs_per_s']:.1f} pairs/s -> {figures['pipeline_vs_bare']:.2f}x "
          f"(the scorer's time includes image preprocessing)")
    result_line(figures)


if __name__ == "__main__":
    main()
