"""Demo images: crops of bundled photos and generated graphics, encoded reproducibly."""

from __future__ import annotations

import io
import random
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from curation_pipeline.demo.subjects import PHOTO_BY_NAME, Subject

GENERATED = ["shapes", "gradient", "noise", "banner"]

# Reproducible encodings: the same pixels must always give the same bytes.
_JPEG_QUALITY = 85
_WEBP_QUALITY = 80
_MIN_SIDE = 224  # Stay clear of the pipeline's minimum-size rule except on purpose.

_PALETTE = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 70), "yellow": (245, 215, 40),
            "orange": (245, 140, 30), "purple": (130, 50, 170)}
_BANNER_WORDS = ["SUMMER SALE", "GRAND OPENING", "FREE SHIPPING", "HELLO WORLD", "OPEN 24 HOURS"]


@lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
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


def photo_variant(subject: Subject, rng: random.Random) -> Image.Image:
    """A fresh crop of a photo, so reused photos still give distinct image bytes."""
    img = load_photo(subject.name)
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
    ramp = ((1 - t) * np.array(_PALETTE[start]) + t * np.array(_PALETTE[end])).round().astype(np.uint8)
    pixels = np.broadcast_to(ramp[None] if direction == "horizontal" else ramp[:, None], (h, w, 3))
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


def banner_image(rng: random.Random, size: tuple[int, int] | None = None) -> tuple[Image.Image, Subject]:
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


_GENERATORS: dict[str, Callable] = {"shapes": _shapes, "gradient": _gradient, "noise": _noise,
                                    "banner": lambda rng, np_rng: banner_image(rng)}


def encode(img: Image.Image, ext: str) -> bytes:
    buf = io.BytesIO()
    if ext == "jpg":
        img.convert("L" if img.mode == "L" else "RGB").save(buf, "JPEG", quality=_JPEG_QUALITY)
    elif ext == "webp":
        img.convert("RGB").save(buf, "WEBP", quality=_WEBP_QUALITY, method=4)
    else:
        img.save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def make_image(name: str, rng: random.Random, np_rng: np.random.Generator) -> tuple[bytes, str, Subject]:
    """Flat graphics go to PNG, a few photos to WebP, the rest to JPEG."""
    if name in _GENERATORS:
        img, subject = _GENERATORS[name](rng, np_rng)
        ext = "jpg" if name == "noise" else "png"
    else:
        subject = PHOTO_BY_NAME[name]
        img = photo_variant(subject, rng)
        ext = "webp" if rng.random() < 0.1 else "jpg"
    return encode(img, ext), ext, subject
