"""Builders for hostile shards: every case a scraped shard can throw at the reader."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def jpeg(size=(320, 240), color=(200, 80, 40), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(sum(size))
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype("uint8")
    image = Image.fromarray(pixels).convert(mode)
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A tiny PNG whose header declares 20000 x 10000 pixels (200 MP)."""
    image = Image.new("1", (20000, 10000))
    return png(image)


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (300, 300), (0, 128, 255, 0)).save(buffer, format="JPEG")
    return buffer.getvalue()


def png16() -> bytes:
    data = (np.arange(300 * 300, dtype=np.uint16).reshape(300, 300) * 7)
    return png(Image.fromarray(data))


def palette_alpha_png() -> bytes:
    image = Image.new("P", (300, 300), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    return png(image)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (300, 300), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()
