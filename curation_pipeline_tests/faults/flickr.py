"""Real photos as good pairs, and whole shards built from them (tests and benchmarks).

The photos are Flickr8k's when ``../shared/evaldata`` is there, else the set the repository
makes from scikit-image's bundled photos (``conftest.photo_root``): never required."""

from __future__ import annotations

import json
from collections.abc import Iterator
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


def flickr_members(n: int, prefix: str = "p", rows=None, start: int = 0,
                   distinct: bool = False) -> list[tuple[str, bytes]]:
    """``n`` samples ``{prefix}{i:06d}.jpg`` + ``.txt``, cycling over the photos. With ``distinct``, each pass
    after the first (copy ``c`` of a photo) is no byte, pixel or caption copy of another: the photo re-encoded
    with one pixel inverted where no other copy has it, the caption ending ``(copy c)`` (``distinct_copy``)."""
    return list(iter_flickr_members(n, prefix, rows, start, distinct))


def iter_flickr_members(n: int, prefix: str = "p", rows=None, start: int = 0,
                        distinct: bool = False) -> Iterator[tuple[str, bytes]]:
    """``flickr_members`` one member at a time: a shard of 10,000 photos written without holding them all."""
    rows = rows or flickr_rows()
    for i in range(start, start + n):
        path, caption = rows[i % len(rows)]
        key = f"{prefix}{i:06d}"
        copy = i // len(rows) if distinct else 0
        image, caption = distinct_copy(Path(path).read_bytes(), caption.strip(), copy)
        yield f"{key}.jpg", image
        yield f"{key}.txt", caption.encode("utf-8")


def distinct_copy(image: bytes, caption: str, copy: int) -> tuple[bytes, str]:
    """Copy ``copy`` of a pair (0: the pair as is). The image is re-encoded with the 8x8 blocks of its top row
    inverted where ``copy``'s bits are set: a whole inverted block survives JPEG's quantization (one pixel may
    not), so no two copies share their pixels, and no exact duplicate is made. It stays a near duplicate (pHash)
    of the photo, which the perceptual hash is there to catch."""
    if copy == 0:
        return image, caption
    import io

    from PIL import ImageOps

    with Image.open(io.BytesIO(image)) as im:
        rgb = im.convert("RGB")
    if copy >= 2 ** (rgb.width // 8):
        raise ValueError(f"copy {copy} of a {rgb.width} px wide photo: its top row has too few 8x8 blocks to mark it")
    for bit in range(rgb.width // 8):
        if copy >> bit & 1:
            box = (8 * bit, 0, 8 * bit + 8, min(8, rgb.height))
            rgb.paste(ImageOps.invert(rgb.crop(box)), box)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=95)
    return out.getvalue(), f"{caption} (copy {copy})"
