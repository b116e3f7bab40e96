import io
import subprocess
import sys

import numpy as np
from PIL import Image

from curation_pipeline.reporting.charts import histogram_png, markdown_image


def test_histogram_is_a_png_of_the_chart_size_with_both_series_drawn():
    rng = np.random.default_rng(0)
    png = histogram_png({"before": rng.normal(10, 3, 40), "after": np.r_[rng.normal(14, 3, 39), np.nan]},
                        "caption length", "words")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (336, 192)  # 4.2 x 2.4 in at 80 dpi
    colours = {c for _, c in image.getcolors(maxcolors=1 << 16)}
    assert any(b > r + 40 for r, g, b in colours) and any(r > b + 40 for r, g, b in colours)  # blue and orange bars
    assert markdown_image(png, "lengths").startswith("![lengths](data:image/png;base64,iVBOR")


def test_an_empty_series_still_draws():
    assert Image.open(io.BytesIO(histogram_png({"x": np.array([])}, "t", "x"))).size == (336, 192)


def test_charts_never_import_pyplot():
    """pyplot keeps global figure state (not safe in a step's threads) and costs import time."""
    code = ("import sys, numpy as np\nfrom curation_pipeline.reporting.charts import histogram_png\n"
            "histogram_png({'a': np.arange(5.0)}, 't', 'x')\nprint('matplotlib.pyplot' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip() == "False"
