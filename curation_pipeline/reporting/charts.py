"""Small PNG histograms embedded in Markdown, so Dagster's UI shows them inline.

Drawn with Pillow, in the step that makes them: about 4 ms a chart, where matplotlib took 35-50 ms
(most of it laying out tick text) plus a round trip to the home's helper process, in every shard's
``final_captions`` step. The text is matplotlib's own font, DejaVu Sans, where matplotlib is installed
(the file is read, the package not imported), else Pillow's default font."""

from __future__ import annotations

import base64
import importlib.util
import io
import math
import threading
from pathlib import Path

import numpy as np

SIZE = (336, 192)  # 4.2 x 2.4 in at 80 dpi, as the charts were
PLOT = (44, 23, 326, 154)  # the axes' left, top, right, bottom in pixels
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))  # matplotlib's first four
ALPHA = 140  # of 255: overlaid series stay readable where they overlap
MOST_TICKS = 4  # intervals per axis at most: a few round numbers, not a ruler
MARGIN = 0.05  # of the bins' span, either side of the x axis; above the tallest bar

_LOCK = threading.Lock()  # one FreeType face per size, shared: drawn one chart at a time
_FONTS: dict[int, object] = {}


def histogram_png(series: dict[str, np.ndarray], title: str, xlabel: str, bins: int | np.ndarray = 20) -> bytes:
    """Overlaid histograms (e.g. before/after) on shared bins, as a compact PNG; NaN and infinities are
    left out of the bins (the legend's n counts the finite values)."""
    from PIL import Image, ImageDraw

    finite = [v[np.isfinite(v)] for v in (np.asarray(s, dtype=float) for s in series.values())]
    everything = np.concatenate(finite) if any(len(v) for v in finite) else np.array([0.0])
    edges = np.histogram_bin_edges(everything, bins=bins)
    counts = [np.histogram(v, bins=edges)[0] for v in finite]
    tallest = max((int(c.max()) for c in counts if len(c)), default=0)
    left, top, right, bottom = PLOT
    low, high = float(edges[0]), float(edges[-1])
    pad = (high - low) * MARGIN or 0.5
    x0, span = low - pad, high - low + 2 * pad
    y_span = max(tallest, 1) * (1 + MARGIN)

    def x(value: float) -> int:
        return round(left + (value - x0) / span * (right - left))

    def y(count: float) -> int:
        return round(bottom - count / y_span * (bottom - top))

    bars = [[(x(edges[i]), y(count[i]), max(x(edges[i]), x(edges[i + 1]) - 1), bottom) for i in np.flatnonzero(count)]
            for count in counts]
    with _LOCK:
        image = Image.new("RGBA", SIZE, (255, 255, 255, 255))
        for colour, boxes in zip(_colours(len(bars)), bars):
            layer = Image.new("RGBA", SIZE, (0, 0, 0, 0))
            pen = ImageDraw.Draw(layer)
            for box in boxes:
                pen.rectangle(box, fill=(*colour, ALPHA))
            image.alpha_composite(layer)
        pen = ImageDraw.Draw(image)
        small, ink = _font(8), (0, 0, 0)
        pen.rectangle((left, top, right, bottom), outline=ink)
        values, decimals = ticks(low, high)
        for value in values:
            pen.line((x(value), bottom, x(value), bottom + 3), fill=ink)
            pen.text((x(value), bottom + 4), _label(value, decimals), font=small, fill=ink, anchor="ma")
        values, decimals = ticks(0.0, float(max(tallest, 1)), integer=True)
        for value in values:
            pen.line((left - 3, y(value), left, y(value)), fill=ink)
            pen.text((left - 5, y(value)), _label(value, decimals), font=small, fill=ink, anchor="rm")
        pen.text(((left + right) / 2, top - 3), title, font=_font(10), fill=ink, anchor="md")
        pen.text(((left + right) / 2, bottom + 15), xlabel, font=_font(9), fill=ink, anchor="ma")
        if len(series) > 1:
            _legend(pen, legend_labels(series), small, [box for boxes in bars for box in boxes])
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def ticks(low: float, high: float, integer: bool = False) -> tuple[list[float], int]:
    """Round tick values in [low, high], at most ``MOST_TICKS`` intervals (steps of 1, 2, 2.5 or 5 times a
    power of ten; whole steps only if ``integer``: counts), and the decimals that print them."""
    if not high > low:  # histogram edges always span something; a single value gets a single tick
        return [low], 0 if float(low).is_integer() else 3
    rough = (high - low) / MOST_TICKS
    power = 10.0 ** math.floor(math.log10(rough))
    multiple = next(m for m in (1, 2, 2.5, 5, 10) if m * power >= rough * (1 - 1e-9) and not (integer and m == 2.5))
    step = max(multiple * power, 1.0) if integer else multiple * power
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (multiple == 2.5 and step < 10)
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [round(k * step, decimals + 3) for k in range(first, last + 1)], decimals


def _label(value: float, decimals: int) -> str:
    """A tick's text: fixed decimals, or 4 significant digits where that would be long (1e9 + 0.25)."""
    text = f"{value:.{decimals}f}"
    return text if len(text) <= 8 else f"{value:.4g}"


def legend_labels(series: dict[str, np.ndarray]) -> list[str]:
    """Each series' name and how many of its values are drawn (the finite ones)."""
    return [f"{label} (n={int(np.isfinite(np.asarray(v, dtype=float)).sum())})" for label, v in series.items()]


def _legend(pen, labels: list[str], font, bars: list[tuple[int, int, int, int]]) -> None:
    """In the top corner whose box covers less of the bars (the right one on a tie)."""
    left, top, right, _ = PLOT
    width = max(pen.textlength(text, font=font) for text in labels) + 22
    height = 2 + 11 * len(labels)

    def covered(box: tuple[float, float, float, float]) -> float:
        return sum(max(0.0, min(box[2], b[2]) - max(box[0], b[0])) * max(0.0, min(box[3], b[3]) - max(box[1], b[1]))
                   for b in bars)

    corners = [(right - 4 - width, top + 4, right - 4, top + 4 + height),
               (left + 4, top + 4, left + 4 + width, top + 4 + height)]
    box = min(corners, key=covered)  # min keeps the first (right) of equals
    pen.rounded_rectangle(box, radius=2, fill=(255, 255, 255), outline=(204, 204, 204))
    for i, (colour, text) in enumerate(zip(_colours(len(labels)), labels)):
        row = box[1] + 3 + 11 * i
        swatch = tuple(round(255 - (255 - c) * ALPHA / 255) for c in colour)  # the bars' colour on white
        pen.rectangle((box[0] + 4, row + 1, box[0] + 14, row + 7), fill=swatch)
        pen.text((box[0] + 18, row + 4), text, font=font, fill=(0, 0, 0), anchor="lm")


def _colours(n: int) -> list[tuple[int, int, int]]:
    return [COLOURS[i % len(COLOURS)] for i in range(n)]


def _font(pixels: int):
    if pixels not in _FONTS:
        from PIL import ImageFont

        path = _dejavu()
        _FONTS[pixels] = ImageFont.truetype(str(path), pixels) if path else ImageFont.load_default(size=pixels)
    return _FONTS[pixels]


def _dejavu() -> Path | None:
    """matplotlib's copy of DejaVu Sans (broad Unicode: shard names, dashes), found without importing it."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec and spec.submodule_search_locations) or ():
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return path
    return None


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
