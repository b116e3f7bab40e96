"""Real photos as good pairs, and whole shards built from them (tests and benchmarks).

The photos are Flickr8k's when ``../shared/evaldata`` is there, else the set the repository
makes from scikit-image's bundled photos (``conftest.photo_root``): never required."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from PIL import Image


@lru_cache(maxsize=1)
def flickr_rows() -> tuple[tuple[str, str], ...]:
    """(image path, first caption) for every photo, in the file's order."""
    from curation_pipeline_tests.conftest import photo_root

    root = photo_root()
    with open(root / "captions.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return tuple((str(root / r["image"]), r["captions"][0]) for r in rows)


@lru_cache(maxsize=1)
def large_flickr_rows(min_side: int = 200) -> tuple[tuple[str, str], ...]:
    """Photos at least ``min_side`` px on the short side (clear of DataComp's size rule)."""
    out = []
    for path, caption in flickr_rows():
        with Image.open(path) as im:
            if min(im.size) >= min_side:
                out.append((path, caption))
    return tuple(out)


def flickr_members(n: int, prefix: str = "p", rows=None, start: int = 0) -> list[tuple[str, bytes]]:
    """``n`` samples ``{prefix}{i:06d}.jpg`` + ``.txt``, cycling over the photos."""
    rows = rows or flickr_rows()
    members = []
    for i in range(start, start + n):
        path, caption = rows[i % len(rows)]
        key = f"{prefix}{i:06d}"
        members.append((f"{key}.jpg", Path(path).read_bytes()))
        members.append((f"{key}.txt", caption.strip().encode("utf-8")))
    return members


