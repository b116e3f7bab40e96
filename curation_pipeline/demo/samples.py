"""Which samples each demo shard holds: caption kinds per shard, broken samples, duplicates."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps

from curation_pipeline.demo.captions import caption_for
from curation_pipeline.demo.images import GENERATED, banner_image, encode, load_photo, make_image, photo_variant
from curation_pipeline.demo.subjects import PHOTO_BY_NAME, PHOTOS

SAMPLE_KINDS = [
    "good", "mixed_boilerplate", "boilerplate", "filename", "url", "html_entities", "hashtags", "non_english",
    "empty", "one_word", "mismatched", "all_caps", "repeated_words", "duplicate", "tiny_image", "wide_image",
    "corrupt_image", "empty_image", "missing_caption", "missing_image",
]

SAMPLES_PER_SHARD = 40
# Caption kinds every shard gets, so each shard is a realistic mix; the rest are "good".
_SHARD_QUOTA = {"mixed_boilerplate": 2, "boilerplate": 3, "filename": 2, "url": 2, "html_entities": 2, "hashtags": 2,
                "non_english": 3, "empty": 1, "one_word": 1, "mismatched": 2, "all_caps": 1, "repeated_words": 1}
_LANGS = ["de", "es", "fr", "zh"]
_BROKEN_KINDS = ["corrupt_image", "empty_image", "missing_caption", "missing_image"]
_SPECIAL_KINDS = {"tiny_image", "wide_image", *_BROKEN_KINDS}


@dataclass(eq=False)
class Sample:
    kind: str
    caption: str | None
    image: bytes | None = None
    ext: str = "jpg"
    image_ok: bool = True
    lang: str | None = None
    original: Sample | None = None  # What a duplicate copies.
    key: str = ""
    meta: dict | None = None


def _key(shard: int, index: int) -> str:
    """img2dataset-style: the shard number followed by the index inside the shard."""
    return f"{shard:05d}{index:04d}"


def _meta(sample: Sample, rng: random.Random) -> dict:
    """Some samples carry a source URL, as scraped data does; all carry their ground truth."""
    meta = {"kind": sample.kind, "source": "sample"}
    if sample.original is not None:
        meta["duplicate_of"] = sample.original.key
    if sample.lang:
        meta["lang"] = sample.lang
    if rng.random() < 0.5:
        meta["url"] = f"https://example.com/images/{sample.key}.{sample.ext}"
    return meta


def _shard_kinds(shard: int, n_shards: int, rng: random.Random) -> list[str]:
    """This shard's kinds in a shuffled order; duplicates are placed afterwards."""
    kinds = [k for k, count in _SHARD_QUOTA.items() for _ in range(count)]
    if shard == 0:
        kinds += ["tiny_image", "wide_image"]
    if shard == min(1, n_shards - 1):
        kinds += _BROKEN_KINDS
    n_duplicates = 1 + (shard == n_shards - 1 and n_shards > 1)
    kinds += ["good"] * (SAMPLES_PER_SHARD - len(kinds) - n_duplicates)
    rng.shuffle(kinds)
    return kinds


def _regular_sample(kind: str, name: str, lang: str | None, rng: random.Random,
                    np_rng: np.random.Generator) -> Sample:
    if kind == "non_english":
        name = rng.choice([s.name for s in PHOTOS if lang in s.translations])
    image, ext, subject = make_image(name, rng, np_rng)
    if kind == "mismatched":
        caption = rng.choice([s for s in PHOTOS if s.name != subject.name]).caption
    else:
        caption = caption_for(kind, subject, rng, lang)
    return Sample(kind, caption, image, ext, lang=lang)


def _special_sample(kind: str, rng: random.Random) -> Sample:
    """Samples that break image rules or the shard format, each with a good caption."""
    if kind == "tiny_image":
        img = ImageOps.fit(load_photo("chelsea"), (120, 90), Image.Resampling.LANCZOS)
        return Sample(kind, PHOTO_BY_NAME["chelsea"].caption, encode(img, "jpg"))
    if kind == "wide_image":
        img, banner = banner_image(rng, size=(900, 200))
        return Sample(kind, banner.caption, encode(img, "png"), "png")
    subject = PHOTO_BY_NAME["coffee"]
    image = encode(photo_variant(subject, rng), "jpg")
    if kind == "corrupt_image":  # A valid header, then the scan data stops.
        return Sample(kind, subject.caption, image[: len(image) * 2 // 5], image_ok=False)
    if kind == "empty_image":
        return Sample(kind, subject.caption, b"", image_ok=False)
    if kind == "missing_caption":
        return Sample(kind, None, image)
    return Sample(kind, subject.caption, None, image_ok=False)  # missing_image


def _duplicate(original: Sample) -> Sample:
    return Sample("duplicate", original.caption, original.image, original.ext, original=original)


def _build_shard(shard: int, n_shards: int, seed: int, first_shard: list[Sample] | None) -> list[Sample]:
    rng = random.Random(seed * 1000 + shard)
    np_rng = np.random.default_rng([seed, shard])
    names = [s.name for s in PHOTOS] + GENERATED
    rng.shuffle(names)
    langs = iter(_LANGS[(shard + j) % len(_LANGS)] for j in range(_SHARD_QUOTA["non_english"]))
    samples = []
    for i, kind in enumerate(_shard_kinds(shard, n_shards, rng)):
        if kind in _SPECIAL_KINDS:
            samples.append(_special_sample(kind, rng))
        else:
            lang = next(langs) if kind == "non_english" else None
            samples.append(_regular_sample(kind, names[i % len(names)], lang, rng, np_rng))

    # The copy comes after its original so "keep the first" dedup has one right answer.
    original = next(s for s in samples if s.kind == "good")
    samples.insert(rng.randint(samples.index(original) + 1, len(samples)), _duplicate(original))
    if first_shard is not None:
        original = next(s for s in first_shard if s.kind == "good")
        samples.insert(rng.randint(0, len(samples)), _duplicate(original))

    for i, sample in enumerate(samples):
        sample.key = _key(shard, i)
    for sample in samples:
        if sample.kind != "missing_image":  # That one is a lone .txt, as in the wild.
            sample.meta = _meta(sample, rng)
    return samples


@lru_cache(maxsize=4)
def build(n_shards: int, seed: int) -> tuple[tuple[Sample, ...], ...]:
    shards: list[list[Sample]] = []
    for shard in range(n_shards):
        first = shards[0] if shard == n_shards - 1 and shard > 0 else None
        shards.append(_build_shard(shard, n_shards, seed, first))
    return tuple(tuple(s) for s in shards)


def expected_manifest(n_shards: int = 3, seed: int = 0) -> list[dict]:
    """Ground truth per sample, so tests need not hard-code it. ``has_image``: an image member exists
    (even a zero-byte one); ``image_ok``: it also decodes."""
    return [{"shard": f"sample-{shard:06d}.tar", "key": s.key, "kind": s.kind, "has_image": s.image is not None,
             "has_caption": s.caption is not None, "image_ok": s.image_ok, "caption": s.caption,
             "duplicate_of": s.original.key if s.original else None}
            for shard, samples in enumerate(build(n_shards, seed)) for s in samples]
