import io
import subprocess
import sys

import numpy as np
from PIL import Image

from curation_pipeline.reporting.charts import MARGIN, PLOT, _label, histogram_png, legend_labels, markdown_image, ticks


def _image(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _bars(pixels: np.ndarray) -> list[tuple[int, int, int]]:
    """Inside the axes: each run of columns holding coloured (not grey) pixels, as (first column, last
    column, height in pixels of its tallest colour above the x axis)."""
    left, top, right, bottom = PLOT
    inside = pixels[top + 1:bottom, left + 1:right]
    coloured = (inside.max(axis=2) - inside.min(axis=2)) > 30
    columns = coloured.any(axis=0)
    bars, start = [], None
    for i, on in enumerate([*columns, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            height = max(len(coloured) - np.argmax(coloured[:, c]) for c in range(start, i))
            bars.append((start + left + 1, i - 1 + left + 1, height))
            start = None
    return bars


def test_histogram_is_a_png_of_the_chart_size_with_both_series_drawn():
    rng = np.random.default_rng(0)
    png = histogram_png({"before": rng.normal(10, 3, 40), "after": np.r_[rng.normal(14, 3, 39), np.nan]},
                        "caption length", "words")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (336, 192)  # 4.2 x 2.4 in at 80 dpi
    colours = {c for _, c in image.getcolors(maxcolors=1 << 16)}
    assert any(b > r + 40 for r, g, b in colours) and any(r > b + 40 for r, g, b in colours)  # blue and orange bars
    assert markdown_image(png, "lengths").startswith("![lengths](data:image/png;base64,iVBOR")


def test_bar_heights_follow_the_counts_and_non_finite_values_are_left_out():
    """Counts 4, 0 and 2 on three bins: two bars, the first twice as tall; NaN and infinity in no bin."""
    png = histogram_png({"x": np.array([1.0, 1, 1, 1, 3, 3, np.nan, np.inf, -np.inf])}, "t", "x",
                        bins=np.array([0.5, 1.5, 2.5, 3.5]))
    bars = _bars(_image(png))
    assert len(bars) == 2, bars
    (_, end_first, tall), (start_second, _, short) = bars
    assert end_first < start_second
    assert abs(tall - 2 * short) <= 2, bars  # rounded to whole pixels
    left, top, right, bottom = PLOT
    assert tall >= 0.9 * (bottom - top - 1)  # the tallest bar reaches near the top (a 5% margin above)
    pad = 3 * MARGIN  # the bins span 0.5-3.5, a margin either side

    def x(value):
        return left + (value - 0.5 + pad) / (3 + 2 * pad) * (right - left)

    assert abs(bars[0][0] - x(0.5)) <= 2 and abs(bars[0][1] - x(1.5)) <= 2  # each bar on its own bin
    assert abs(bars[1][0] - x(2.5)) <= 2 and abs(bars[1][1] - x(3.5)) <= 2
    automatic = _bars(_image(histogram_png({"x": np.array([1.0, 1, 3, np.inf, -np.inf, np.nan])}, "t", "x", bins=3)))
    assert len(automatic) == 2  # infinities left out of the bins numpy picks too (else it raises)


def test_the_title_and_both_axes_carry_text():
    pixels = _image(histogram_png({"x": np.repeat(np.arange(5.0), [1, 2, 4, 8, 6])}, "a title", "words"))  # y: 0-8
    left, top, right, bottom = PLOT
    dark = (pixels < 100).all(axis=2)
    assert dark[:top - 1, left:right].sum() > 20  # the title, above the axes
    assert dark[top + 2:bottom - 2, :left - 4].sum() > 20  # the y tick labels, left of the axis
    assert dark[bottom + 4:, left:right].sum() > 40  # the x tick labels and the x label, below it


def test_one_series_has_no_legend_two_have_one_naming_their_finite_counts():
    one = _image(histogram_png({"a": np.arange(10.0)}, "t", "x"))
    two = _image(histogram_png({"a": np.arange(10.0), "b": np.r_[np.arange(5.0), np.nan]}, "t", "x"))
    left, top, right, _ = PLOT
    corner = (slice(top + 4, top + 30), slice(right - 120, right - 4))  # where the legend goes
    assert (one[corner] < 100).all(axis=2).sum() == 0  # bars and white only: no text without a legend
    assert (two[corner] < 100).all(axis=2).sum() > 20  # the legend's text
    assert legend_labels({"a": np.arange(3.0), "b": np.array([1.0, np.nan, np.inf])}) == ["a (n=3)", "b (n=1)"]


def test_the_legend_takes_the_top_corner_the_bars_leave_free():
    left, top, right, _ = PLOT
    tall_right = {"a": np.r_[np.full(10, 9.0), 1.0], "b": np.r_[np.full(10, 9.0), 1.0]}
    pixels = _image(histogram_png(tall_right, "t", "x"))
    text_in = {side: int((pixels[top + 4:top + 30, cols] < 100).all(axis=2).sum())
               for side, cols in (("left", slice(left + 4, left + 120)), ("right", slice(right - 120, right - 4)))}
    assert text_in["left"] > 20 and text_in["right"] == 0, text_in


def test_an_empty_series_still_draws():
    assert Image.open(io.BytesIO(histogram_png({"x": np.array([])}, "t", "x"))).size == (336, 192)
    assert not _bars(_image(histogram_png({"x": np.array([np.nan])}, "t", "x")))


def test_ticks_are_round_values_within_the_range():
    assert ticks(3, 20) == ([5.0, 10.0, 15.0, 20.0], 0)
    assert ticks(0.1, 0.93) == ([0.25, 0.5, 0.75], 2)
    assert ticks(0, 1) == ([0.0, 0.25, 0.5, 0.75, 1.0], 2)
    assert ticks(0, 1, integer=True) == ([0.0, 1.0], 0)  # counts: whole steps only
    assert ticks(0, 7, integer=True) == ([0.0, 2.0, 4.0, 6.0], 0)
    assert ticks(0, 0.004) == ([0.0, 0.001, 0.002, 0.003, 0.004], 3)
    assert ticks(0.35, 0.35) == ([0.35], 3)
    tiny = ticks(0.0, 1e-300)[0]
    assert len(tiny) == 5 and len(set(tiny)) == 5  # not rounded to zero
    values, decimals = ticks(1e9, 1e9 + 1)
    assert [_label(v, decimals) for v in values][:2] == ["1e+09", "1e+09"]  # short, not 1000000000.25


def test_charts_never_import_matplotlib():
    """Importing matplotlib costs half a second, and pyplot keeps global figure state (not safe in threads)."""
    code = ("import sys, numpy as np\nfrom curation_pipeline.reporting.charts import histogram_png\n"
            "histogram_png({'a': np.arange(5.0), 'b': np.arange(3.0)}, 't — x', 'x')\n"
            "print('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip() == "False"
