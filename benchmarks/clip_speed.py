"""CLIPScore stage throughput, from JPEG bytes in a webdataset shard to the score table.

Three ways over the same photos, the same model and the same prompt:

- ``pipeline``: what the ``quality_scores`` asset runs: ``score_stream`` over
  ``iter_pair_batches`` (tar read, decode, hashing) with the prefetch thread decoding and
  preprocessing the next batches while the model runs;
- ``model_only``: the forward passes alone, over inputs processed before the clock starts:
  the rate the stage cannot beat;
- ``serial``: a bare loop that reads, decodes, preprocesses and runs the model one batch after
  another, with the same prompt ("A photo depicts ..." unless ``--no-prompt``).

``<shape>_ceiling_vs_serial`` is model-only over serial: the most any overlap of input work with
the model can gain over the serial loop (the pipeline running at the model-only rate). On a CPU
whose cores the forward pass already fills, the input work competes for them, so the pipeline
stays below even that.

Models: ``--model PATH`` (any local CLIP / SigLIP directory), else random weights built from
configs at two shapes (``--shape``): ``b32`` (ViT-B/32: 224 px, patch 32, 12+12 layers, 768/512
wide) and ``small`` (23M parameters: 6+6 layers, 384 wide). Torch's threads follow the run's
thread budget in all three: ``--threads``, else ``CURATION_THREADS`` where set, else every core this
process may run on, set explicitly (as scale.py does): left unset, the budget would be the cores divided
by ``$DAGSTER_HOME/dagster.yaml``'s ``max_concurrent_runs``, one thread on two cores under the Makefile's
home. RESULT ``threads`` is the budget used.
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from _common import add_smoke_flag, image_rows, parse_args, result_line

from curation_pipeline.scoring.clip import CLIPSCORE_PREFIX, ClipScorer
from curation_pipeline.scoring.run import score_stream
from curation_pipeline.scoring.signals import THREADS_ENV, _cores, cpu_threads, limit_torch_threads
from curation_pipeline.shards.reader import iter_pair_batches

SHAPES = {
    "b32": dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
                text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                projection_dim=512),
    "small": dict(vision=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6),
                  text=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6),
                  projection_dim=384),
}


def make_clip(directory: str, shape: str) -> str:
    """A random-weight CLIP of ``shape`` (224 px, patch 32, 77 text positions), with the tiny
    test tokenizer and the slow (PIL) image processor the released checkpoints ship with."""
    from transformers import AutoProcessor, CLIPConfig, CLIPModel

    from curation_pipeline_tests import tiny_models

    path = tiny_models.make_tiny_clip(directory)
    spec = SHAPES[shape]
    config = CLIPConfig.from_pretrained(path)
    config.vision_config.update(dict(spec["vision"], image_size=224, patch_size=32, projection_dim=spec["projection_dim"]))
    config.text_config.update(dict(spec["text"], max_position_embeddings=77, projection_dim=spec["projection_dim"]))
    config.projection_dim = spec["projection_dim"]
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    processor.image_processor.size = {"shortest_edge": 224}
    processor.image_processor.crop_size = {"height": 224, "width": 224}
    processor.save_pretrained(path)
    return path


def write_shard(directory: Path, rows) -> Path:
    """The photos and captions as a webdataset tar: the bytes a raw shard holds."""
    path = directory / "bench-000000.tar"
    with tarfile.open(path, "w") as tar:
        for i, (image, caption) in enumerate(rows):
            for name, payload in ((f"{i:09d}.jpg", Path(image).read_bytes()), (f"{i:09d}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def best_of(repeats: int, modes: dict) -> dict[str, float]:
    """Per mode, the fastest of ``repeats`` timed calls, the modes taking turns: on a shared
    machine the load changes over time, and taking turns lets every mode see the same load."""
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(repeats):
        for name, fn in modes.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def measure(model_path: str, shard: Path, args) -> dict:
    prefix = CLIPSCORE_PREFIX if args.prompt else None
    scorer = ClipScorer(model_path, device=args.device, batch_size=args.batch_size, prefix=prefix)
    limit_torch_threads()

    def pipeline(depth: int):
        batches = iter_pair_batches(str(shard), shard.stem, batch_size=args.batch_size)
        return score_stream([scorer], batches, prefetch_depth=depth)

    # model only: the forward passes over inputs made before the clock starts
    with tarfile.open(shard) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    keys = sorted({name.rsplit(".", 1)[0] for name in members})
    from PIL import Image

    def decode(key):
        return Image.open(io.BytesIO(members[f"{key}.jpg"])).convert("RGB")

    def text(key):
        caption = members[f"{key}.txt"].decode().strip()
        return f"{prefix} {caption}" if prefix else caption

    def process(images, texts):
        return scorer.inputs(images, texts)  # the processor call, as the scorer makes it

    def forward(inputs):
        image, texts = scorer.forward(inputs)  # to the device, both towers, normalised
        return (image * texts).sum(-1).cpu().numpy()

    chunks = [keys[i:i + args.batch_size] for i in range(0, len(keys), args.batch_size)]
    ready = [process([decode(k) for k in chunk], [text(k) for k in chunk]) for chunk in chunks]
    parts = {"decode": 0.0, "preprocess": 0.0, "forward": 0.0}

    def serial():
        for chunk in chunks:
            t0 = time.perf_counter()
            images = [decode(k) for k in chunk]
            t1 = time.perf_counter()
            inputs = process(images, [text(k) for k in chunk])
            t2 = time.perf_counter()
            forward(inputs)
            t3 = time.perf_counter()
            parts["decode"] += t1 - t0
            parts["preprocess"] += t2 - t1
            parts["forward"] += t3 - t2

    def model_only():
        for inputs in ready:
            forward(inputs)

    pipeline(2)  # warm-up (first-call allocations, the processor's caches)
    model_only()
    serial()
    for part in parts:
        parts[part] = 0.0
    n = len(keys)
    best = best_of(args.repeats, {"model": model_only, "pipeline": lambda: pipeline(args.prefetch),
                                  "no_prefetch": lambda: pipeline(0), "serial": serial})
    t_model, t_pipeline, t_no_prefetch, t_serial = (best[k] for k in ("model", "pipeline", "no_prefetch", "serial"))
    per_pair = {part: 1000 * value / (args.repeats * n) for part, value in parts.items()}
    return {
        "params_m": sum(p.numel() for p in scorer.model.parameters()) / 1e6,
        "pipeline_pairs_per_s": n / t_pipeline,
        "no_prefetch_pairs_per_s": n / t_no_prefetch,
        "model_only_pairs_per_s": n / t_model,
        "serial_pairs_per_s": n / t_serial,
        "pipeline_vs_model_only": t_model / t_pipeline,
        "pipeline_vs_serial": t_serial / t_pipeline,
        # what hiding every input step could gain at most: the pipeline at the model-only rate
        "ceiling_vs_serial": t_serial / t_model,
        "serial_ms_per_pair_decode": per_pair["decode"],
        "serial_ms_per_pair_preprocess": per_pair["preprocess"],
        "serial_ms_per_pair_forward": per_pair["forward"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a local CLIP / SigLIP directory (default: random weights)")
    parser.add_argument("--shape", default="both", choices=["both", *SHAPES],
                        help="random-weight model shape(s) when no --model is given")
    parser.add_argument("--prompt", action=argparse.BooleanOptionalAction, default=True,
                        help=f"put {CLIPSCORE_PREFIX!r} before each caption (CLIPScore's prompt)")
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prefetch", type=int, default=2, help="batches decoded ahead (the pipeline's default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each mode; the fastest counts")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=0,
                        help="model threads (default: CURATION_THREADS where set, else every core)")
    add_smoke_flag(parser, pairs=8, batch_size=4, repeats=1, shape="small")
    args = parse_args(parser)
    if args.threads < 0:
        parser.error("--threads must be 0 (the default) or more")
    if args.threads:
        os.environ[THREADS_ENV] = str(args.threads)
    elif os.environ.get(THREADS_ENV, "").strip() in ("", "0"):  # unset: the Dagster home's share, not every core
        os.environ[THREADS_ENV] = str(_cores())
    rows = image_rows(args.pairs, smoke=args.smoke)
    figures = {"pairs": len(rows), "threads": cpu_threads(), "prompt": bool(args.prompt)}
    with tempfile.TemporaryDirectory() as tmp:
        shard = write_shard(Path(tmp), rows)
        if args.model:
            runs = {"model": args.model}
        else:
            runs = {shape: make_clip(tempfile.mkdtemp(dir=tmp), shape)
                    for shape in (SHAPES if args.shape == "both" else [args.shape])}
        for name, path in runs.items():
            result = measure(path, shard, args)
            print(f"{name} ({result['params_m']:.0f}M params): pipeline {result['pipeline_pairs_per_s']:.1f} pairs/s, "
                  f"without prefetch {result['no_prefetch_pairs_per_s']:.1f}, model only "
                  f"{result['model_only_pairs_per_s']:.1f}, bare serial {result['serial_pairs_per_s']:.1f} -> "
                  f"{result['pipeline_vs_model_only']:.2f}x model only, {result['pipeline_vs_serial']:.2f}x serial "
                  f"(ceiling {result['ceiling_vs_serial']:.2f}x) "
                  f"(serial ms/pair: decode {result['serial_ms_per_pair_decode']:.1f}, preprocess "
                  f"{result['serial_ms_per_pair_preprocess']:.1f}, forward {result['serial_ms_per_pair_forward']:.1f})")
            figures.update({f"{name}_{key}": value for key, value in result.items()})
    result_line(figures)


if __name__ == "__main__":
    main()
