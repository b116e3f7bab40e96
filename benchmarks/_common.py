"""Shared helpers for the benchmark scripts: images, timing, the RESULT line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from curation_pipeline.pairs import PairBatch  # noqa: E402

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "evaldata" / "flickr8k_1k_small"


def flickr_batch(n: int) -> PairBatch:
    """Real photos with their first caption (decoded once, outside every timing)."""
    with open(FLICKR / "captions.jsonl") as handle:
        rows = [json.loads(line) for line in handle][:n]
    return PairBatch([Path(r["image"]).stem for r in rows], [r["captions"][0] for r in rows],
                     [Image.open(FLICKR / r["image"]).convert("RGB") for r in rows])


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def result_line(figures: dict) -> None:
    print("RESULT " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()}))
