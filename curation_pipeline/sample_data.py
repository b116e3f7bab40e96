"""Deterministic sample shards: small webdataset tars with alt-text of known quality.

The pipeline needs input that exercises every scorer and every failure path without a
download, and tests need to know what each sample *is*. So every sample carries a
ground-truth ``kind`` (in its ``.json`` and in :func:`expected_manifest`), and the tars
are byte-for-byte reproducible: fixed tar headers, fixed encoder settings and all
randomness drawn from seeded generators.

Regenerate with ``python -m curation_pipeline.sample_data --out data/raw``.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

SAMPLE_KINDS = [
    "good",
    "mixed_boilerplate",
    "boilerplate",
    "filename",
    "url",
    "html_entities",
    "hashtags",
    "non_english",
    "empty",
    "one_word",
    "mismatched",
    "all_caps",
    "repeated_words",
    "duplicate",
    "tiny_image",
    "wide_image",
    "corrupt_image",
    "empty_image",
    "missing_caption",
    "missing_image",
]

SAMPLES_PER_SHARD = 40
# Caption kinds every shard gets, so each shard is a realistic mix; the rest are "good".
_SHARD_QUOTA = {
    "mixed_boilerplate": 2,
    "boilerplate": 3,
    "filename": 2,
    "url": 2,
    "html_entities": 2,
    "hashtags": 2,
    "non_english": 3,
    "empty": 1,
    "one_word": 1,
    "mismatched": 2,
    "all_caps": 1,
    "repeated_words": 1,
}
_LANGS = ["de", "es", "fr", "zh"]
_BROKEN_KINDS = ["corrupt_image", "empty_image", "missing_caption", "missing_image"]
_SPECIAL_KINDS = {"tiny_image", "wide_image", *_BROKEN_KINDS}

# Reproducible encodings: the same pixels must always give the same bytes.
_JPEG_QUALITY = 85
_WEBP_QUALITY = 80
_TAR_MTIME = 1_700_000_000
_MIN_SIDE = 224  # Stay clear of the pipeline's minimum-size rule except on purpose.


@dataclass(frozen=True)
class Subject:
    """What an image shows, in words a caption can be built from."""

    name: str
    word: str
    caption: str
    translations: dict[str, str] = field(default_factory=dict)
    mirror: bool = True  # False where a mirrored image would no longer fit the caption.


@dataclass(eq=False)
class _Sample:
    kind: str
    caption: str | None
    image: bytes | None = None
    ext: str = "jpg"
    image_ok: bool = True
    lang: str | None = None
    original: _Sample | None = None  # What a duplicate copies.
    key: str = ""
    meta: dict | None = None


# Photos bundled in the scikit-image wheel (so no download) whose docstrings state CC0,
# public domain or no known copyright restrictions.
PHOTOS = [
    Subject(
        "astronaut",
        "astronaut",
        "Portrait of a smiling astronaut in an orange flight suit, holding a helmet "
        "in front of an American flag.",
        {
            "de": "Porträt einer lächelnden Astronautin im orangefarbenen Raumanzug vor einer amerikanischen Flagge.",
            "es": "Retrato de una astronauta sonriente con traje naranja delante de una bandera estadounidense.",
            "fr": "Portrait d'une astronaute souriante en combinaison orange devant un drapeau américain.",
            "zh": "一位身穿橙色宇航服、面带微笑的宇航员站在美国国旗前的肖像。",
        },
        mirror=False,
    ),
    Subject(
        "coffee",
        "coffee",
        "A red cup of coffee on a matching saucer with a spoon, on a wooden table.",
        {
            "de": "Eine rote Tasse Kaffee mit Untertasse und Löffel auf einem Holztisch.",
            "es": "Una taza roja de café con platillo y cuchara sobre una mesa de madera.",
            "fr": "Une tasse de café rouge avec sa soucoupe et une cuillère sur une table en bois.",
            "zh": "木桌上放着一杯咖啡，红色的杯子配有茶碟和勺子。",
        },
    ),
    Subject(
        "chelsea",
        "cat",
        "Close-up of a tabby cat with green eyes looking at the camera.",
        {
            "de": "Nahaufnahme einer getigerten Katze mit grünen Augen.",
            "es": "Primer plano de un gato atigrado con ojos verdes.",
            "fr": "Gros plan d'un chat tigré aux yeux verts.",
            "zh": "一只绿眼睛的虎斑猫的特写。",
        },
    ),
    Subject(
        "rocket",
        "rocket",
        "A rocket standing on the launch pad between lightning towers at dusk.",
        {
            "de": "Eine Rakete auf der Startrampe zwischen Blitzschutztürmen in der Abenddämmerung.",
            "es": "Un cohete en la plataforma de lanzamiento entre torres pararrayos al anochecer.",
            "fr": "Une fusée sur son pas de tir entre des paratonnerres au crépuscule.",
            "zh": "黄昏时分矗立在发射台上、位于避雷塔之间的火箭。",
        },
    ),
    Subject(
        "camera",
        "photographer",
        "Black-and-white photo of a man in a dark coat looking through a camera on a "
        "tripod in a field.",
    ),
    Subject(
        "coins",
        "coins",
        "Greyscale photo of two dozen old coins arranged in rows on a dark background.",
        {"de": "Zwei Dutzend alte Münzen in Reihen auf dunklem Hintergrund."},
    ),
    Subject(
        "hubble_deep_field",
        "galaxies",
        "Hubble Deep Field image of hundreds of distant galaxies against black space.",
    ),
    Subject(
        "immunohistochemistry",
        "tissue",
        "Microscope image of tissue with brown immunohistochemical staining and blue nuclei.",
    ),
    Subject(
        "text",
        "notes",
        "Handwritten mathematical notes on a sheet of paper, photographed at an angle.",
        mirror=False,
    ),
    Subject(
        "horse",
        "horse",
        "Black silhouette of a horse standing on a white background.",
        {
            "es": "Silueta negra de un caballo de pie sobre un fondo blanco.",
            "fr": "Silhouette noire d'un cheval debout sur un fond blanc.",
        },
    ),
    Subject("brick", "bricks", "Close-up of a grey brick wall seen at an angle."),
    Subject("grass", "grass", "Greyscale close-up of grass blades filling the frame."),
    Subject("gravel", "gravel", "Greyscale close-up of a bed of small gravel stones."),
    Subject(
        "retina",
        "retina",
        "Fundus photograph of a human retina showing the optic disc and blood vessels.",
    ),
]
_PHOTO_BY_NAME = {s.name: s for s in PHOTOS}
_GENERATED = ["shapes", "gradient", "noise", "banner"]

_PALETTE = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "green": (40, 170, 70),
    "yellow": (245, 215, 40),
    "orange": (245, 140, 30),
    "purple": (130, 50, 170),
}
_BANNER_WORDS = ["SUMMER SALE", "GRAND OPENING", "FREE SHIPPING", "HELLO WORLD", "OPEN 24 HOURS"]


@lru_cache(maxsize=None)
def _load_photo(name: str) -> Image.Image:
    """Only the files scikit-image ships in its wheel: the pipeline must build offline."""
    from skimage import data

    array = getattr(data, name)()
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return Image.fromarray(array)


def _fit(img: Image.Image, longer: int) -> Image.Image:
    """Scale to the requested longer side, but never below the minimum shorter side."""
    scale = max(longer / max(img.size), _MIN_SIDE / min(img.size))
    size = (round(img.width * scale), round(img.height * scale))
    return img.resize(size, Image.Resampling.LANCZOS)


def _photo_variant(subject: Subject, rng: random.Random) -> Image.Image:
    """A fresh crop of a photo, so reused photos still give distinct image bytes."""
    img = _load_photo(subject.name)
    w, h = img.size
    cw, ch = int(w * rng.uniform(0.8, 1.0)), int(h * rng.uniform(0.8, 1.0))
    cw, ch = min(cw, 2 * ch), min(ch, 2 * cw)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((x, y, x + cw, y + ch))
    if subject.mirror and rng.random() < 0.5:
        img = ImageOps.mirror(img)
    return _fit(img, rng.randint(256, 400))


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _shapes(rng: random.Random, np_rng: np.random.Generator) -> tuple[Image.Image, Subject]:
    size = rng.randint(256, 400)
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    shapes = rng.sample(["circle", "square", "triangle"], rng.randint(2, 3))
    colours = rng.sample(sorted(_PALETTE), len(shapes))
    slot = size // len(shapes)
    for i, (shape, colour) in enumerate(zip(shapes, colours)):
        r = rng.randint(slot // 4, slot // 2 - 4)
        cx, cy = slot * i + slot // 2, rng.randint(r + 4, size - r - 4)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = _PALETTE[colour]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    parts = [f"{_a(c)} {c} {s}" for s, c in zip(shapes, colours)]
    listed = ", ".join(parts[:-1]) + " and " + parts[-1]
    caption = f"{listed[0].upper()}{listed[1:]} on a white background."
    return img, Subject("shapes", "shapes", caption)


def _gradient(rng: random.Random, np_rng: np.random.Generator) -> tuple[Image.Image, Subject]:
    start, end = rng.sample(sorted(_PALETTE), 2)
    w, h = rng.randint(256, 400), rng.randint(256, 400)
    direction = rng.choice(["horizontal", "vertical"])
    t = np.linspace(0.0, 1.0, w if direction == "horizontal" else h)[:, None]
    ramp = (1 - t) * np.array(_PALETTE[start]) + t * np.array(_PALETTE[end])
    ramp = ramp.round().astype(np.uint8)
    pixels = np.broadcast_to(ramp[None], (h, w, 3)) if direction == "horizontal" else (
        np.broadcast_to(ramp[:, None], (h, w, 3))
    )
    caption = f"A smooth {direction} colour gradient from {start} to {end}."
    return Image.fromarray(np.ascontiguousarray(pixels)), Subject("gradient", "gradient", caption)


def _noise(rng: random.Random, np_rng: np.random.Generator) -> tuple[Image.Image, Subject]:
    """Low-frequency noise: texture-like, yet small as JPEG."""
    a, b = rng.sample(sorted(_PALETTE), 2)
    size = rng.randint(256, 360)
    field_ = Image.fromarray((np_rng.random((6, 6)) * 255).astype(np.uint8))
    t = np.asarray(field_.resize((size, size), Image.Resampling.BICUBIC), dtype=float)[..., None] / 255
    pixels = (1 - t) * np.array(_PALETTE[a]) + t * np.array(_PALETTE[b])
    caption = f"An abstract texture of soft, blurry {a} and {b} blobs."
    return Image.fromarray(pixels.round().astype(np.uint8)), Subject("noise", "texture", caption)


def _banner(rng: random.Random, size: tuple[int, int] | None = None) -> tuple[Image.Image, Subject]:
    """Text on a flat background: the case OCR-based scorers exist for."""
    colour = rng.choice(sorted(_PALETTE))
    words = rng.choice(_BANNER_WORDS)
    ink = "black" if colour in ("yellow", "orange") else "white"
    size = size or (rng.randint(340, 440), rng.randint(230, 280))
    img = Image.new("RGB", size, _PALETTE[colour])
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=int(min(size[1] * 0.3, size[0] / len(words) * 1.4)))
    draw.text((size[0] / 2, size[1] / 2), words, fill=ink, font=font, anchor="mm")
    caption = f'{_a(colour).title()} {colour} banner with the words "{words}" in {ink} letters.'
    return img, Subject("banner", "banner", caption)


_GENERATORS: dict[str, Callable] = {
    "shapes": _shapes,
    "gradient": _gradient,
    "noise": _noise,
    "banner": lambda rng, np_rng: _banner(rng),
}


def _encode(img: Image.Image, ext: str) -> bytes:
    buf = io.BytesIO()
    if ext == "jpg":
        img.convert("L" if img.mode == "L" else "RGB").save(buf, "JPEG", quality=_JPEG_QUALITY)
    elif ext == "webp":
        img.convert("RGB").save(buf, "WEBP", quality=_WEBP_QUALITY, method=4)
    else:
        img.save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def _make_image(name: str, rng: random.Random, np_rng: np.random.Generator) -> tuple[bytes, str, Subject]:
    """Flat graphics go to PNG, a few photos to WebP, the rest to JPEG."""
    if name in _GENERATORS:
        img, subject = _GENERATORS[name](rng, np_rng)
        ext = "jpg" if name == "noise" else "png"
        return _encode(img, ext), ext, subject
    subject = _PHOTO_BY_NAME[name]
    img = _photo_variant(subject, rng)
    ext = "webp" if rng.random() < 0.1 else "jpg"
    return _encode(img, ext), ext, subject


def _lower_first(caption: str) -> str:
    return caption[0].lower() + caption[1:].rstrip(".")


def _caption(kind: str, subject: Subject, rng: random.Random, lang: str | None = None) -> str:
    """Alt-text of one kind, built around what the image actually shows."""
    n = rng.randint(1000, 99999)
    if kind == "good":
        return subject.caption
    if kind == "mixed_boilerplate":
        return rng.choice(
            [
                f"Stock photo of {_lower_first(subject.caption)} - royalty free image {n}",
                f"{subject.caption} Click to enlarge.",
                f"Stock Photo - {subject.caption}",
                f"{subject.caption} | Image {n} | All rights reserved",
            ]
        )
    if kind == "boilerplate":
        return rng.choice(
            [
                "Click to enlarge",
                "Royalty free stock image",
                f"Stock Photo - Image {n}",
                f"image may contain: {subject.word}, indoor",
                "Image may contain: outdoor",
                "No description available.",
                "Untitled",
            ]
        )
    if kind == "filename":
        return rng.choice(
            [
                f"IMG_{n % 10000:04d}.JPG",
                f"DSC{n:05d}.jpg",
                f"DSCN{n % 10000:04d}.JPG",
                f"2019{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}_{rng.randint(0, 235959):06d}.jpg",
                f"P{n:07d}.JPG",
                f"image ({rng.randint(1, 9)}).png",
            ]
        )
    if kind == "url":
        return rng.choice(
            [
                f"https://example.com/img/{n}.jpg",
                f"http://cdn.example.org/photos/2019/{rng.randint(1, 12):02d}/{subject.word}-{n % 100:02d}.jpg",
                f"{subject.caption} https://example.net/p/{n}",
                f"Source: https://www.example.com/gallery/{subject.word}/{n}.html",
            ]
        )
    if kind == "html_entities":
        escaped = html.escape(subject.caption).replace("'", "&#39;").replace(" and ", " &amp; ")
        return rng.choice(
            [f"&quot;{escaped}&quot;", f"{escaped}&nbsp;&ndash;&nbsp;photo &copy; 2019"]
        )
    if kind == "hashtags":
        generic = ["#love", "#instagood", "#photooftheday", "#beautiful", "#picoftheday", "#nofilter"]
        return " ".join([f"#{subject.word}", *rng.sample(generic, 4)])
    if kind == "non_english":
        return subject.translations[lang]
    if kind == "empty":
        return ""
    if kind == "one_word":
        return subject.word
    if kind == "all_caps":
        return subject.caption.upper()
    if kind == "repeated_words":
        return " ".join([subject.word] * rng.randint(4, 7))
    raise ValueError(f"no caption recipe for kind {kind!r}")


def _key(shard: int, index: int) -> str:
    """img2dataset-style: the shard number followed by the index inside the shard."""
    return f"{shard:05d}{index:04d}"


def _meta(sample: _Sample, rng: random.Random) -> dict:
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


def _regular_sample(
    kind: str, name: str, lang: str | None, rng: random.Random, np_rng: np.random.Generator
) -> _Sample:
    if kind == "non_english":
        name = rng.choice([s.name for s in PHOTOS if lang in s.translations])
    image, ext, subject = _make_image(name, rng, np_rng)
    if kind == "mismatched":
        caption = rng.choice([s for s in PHOTOS if s.name != subject.name]).caption
    else:
        caption = _caption(kind, subject, rng, lang)
    return _Sample(kind, caption, image, ext, lang=lang)


def _special_sample(kind: str, rng: random.Random) -> _Sample:
    """Samples that break image rules or the shard format, each with a good caption."""
    if kind == "tiny_image":
        img = ImageOps.fit(_load_photo("chelsea"), (120, 90), Image.Resampling.LANCZOS)
        return _Sample(kind, _PHOTO_BY_NAME["chelsea"].caption, _encode(img, "jpg"))
    if kind == "wide_image":
        img, banner = _banner(rng, size=(900, 200))
        return _Sample(kind, banner.caption, _encode(img, "png"), "png")
    subject = _PHOTO_BY_NAME["coffee"]
    image = _encode(_photo_variant(subject, rng), "jpg")
    if kind == "corrupt_image":  # A valid header, then the scan data stops.
        return _Sample(kind, subject.caption, image[: len(image) * 2 // 5], image_ok=False)
    if kind == "empty_image":
        return _Sample(kind, subject.caption, b"", image_ok=False)
    if kind == "missing_caption":
        return _Sample(kind, None, image)
    return _Sample(kind, subject.caption, None, image_ok=False)  # missing_image


def _duplicate(original: _Sample) -> _Sample:
    return _Sample("duplicate", original.caption, original.image, original.ext, original=original)


def _build_shard(shard: int, n_shards: int, seed: int, first_shard: list[_Sample] | None) -> list[_Sample]:
    rng = random.Random(seed * 1000 + shard)
    np_rng = np.random.default_rng([seed, shard])
    names = [s.name for s in PHOTOS] + _GENERATED
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
def _build(n_shards: int, seed: int) -> tuple[tuple[_Sample, ...], ...]:
    shards: list[list[_Sample]] = []
    for shard in range(n_shards):
        first = shards[0] if shard == n_shards - 1 and shard > 0 else None
        shards.append(_build_shard(shard, n_shards, seed, first))
    return tuple(tuple(s) for s in shards)


def _members(sample: _Sample) -> list[tuple[str, bytes]]:
    members = []
    if sample.image is not None:
        members.append((f"{sample.key}.{sample.ext}", sample.image))
    if sample.caption is not None:
        members.append((f"{sample.key}.txt", sample.caption.encode("utf-8")))
    if sample.meta is not None:
        meta = json.dumps(sample.meta, ensure_ascii=False, sort_keys=True)
        members.append((f"{sample.key}.json", meta.encode("utf-8")))
    return sorted(members)


def _write_tar(path: Path, samples: tuple[_Sample, ...]) -> None:
    """Every header field pinned, so the tar's bytes depend on the content alone."""
    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for name, payload in _members(sample):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(payload), _TAR_MTIME, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(payload))


def generate_sample_shards(out_dir: str | Path, n_shards: int = 3, seed: int = 0) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, samples in enumerate(_build(n_shards, seed)):
        path = out / f"sample-{shard:06d}.tar"
        _write_tar(path, samples)
        paths.append(path)
    return paths


def expected_manifest(n_shards: int = 3, seed: int = 0) -> list[dict]:
    """Ground truth per sample, so tests compare reader output without hard-coding it.

    ``has_image`` means an image member exists (even a zero-byte one); ``image_ok``
    means it also decodes.
    """
    return [
        {
            "shard": f"sample-{shard:06d}.tar",
            "key": s.key,
            "kind": s.kind,
            "has_image": s.image is not None,
            "has_caption": s.caption is not None,
            "image_ok": s.image_ok,
            "caption": s.caption,
            "duplicate_of": s.original.key if s.original else None,
        }
        for shard, samples in enumerate(_build(n_shards, seed))
        for s in samples
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/raw", help="directory for the .tar shards")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in generate_sample_shards(args.out, args.shards, args.seed):
        print(f"{path}  {path.stat().st_size:>9,d} bytes")


if __name__ == "__main__":
    main()
