"""Small PNG histograms embedded in Markdown, so Dagster's UI shows them inline.

Drawn in the home's warm helper process (``helper``) when there is one: importing matplotlib costs
about half a second, which the helper pays once, while a run scores."""

from __future__ import annotations

import base64
import io

import numpy as np

from curation_pipeline import helper


def histogram_png(series: dict[str, np.ndarray], title: str, xlabel: str, bins: int | np.ndarray = 20) -> bytes:
    """Overlaid histograms (e.g. before/after) as a compact PNG."""
    return helper.call(_draw, {k: np.asarray(v, dtype=float) for k, v in series.items()}, title, xlabel, bins)


def warm() -> None:
    """Import matplotlib and draw once (fonts, Agg), so a step's first chart is not the slow one."""
    _draw({"warm": np.arange(3.0)}, "", "")


def _draw(series: dict[str, np.ndarray], title: str, xlabel: str, bins: int | np.ndarray = 20) -> bytes:
    """A bare ``Figure`` on the Agg canvas (no pyplot: no global state, safe in threads) with one
    filled step artist per series and fixed margins: a third of the time of ``plt.hist`` with
    ``tight_layout``, on every shard's steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # import only when a chart is drawn
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 2.4), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.13, right=0.97, top=0.88, bottom=0.2)
    finite = [v[np.isfinite(v)] for v in series.values()]
    everything = np.concatenate(finite) if any(len(v) for v in finite) else np.array([0.0])
    edges = np.histogram_bin_edges(everything, bins=bins)
    for label, v in zip(series.keys(), finite):
        ax.stairs(np.histogram(v, bins=edges)[0], edges, fill=True, alpha=0.55, label=f"{label} (n={len(v)})")
    ax.set_title(title, fontsize=9, y=1.0)  # placed, not fitted above the ticks (which measures them)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.locator_params(nbins=4)  # each tick is an artist built per chart: fewer ticks, ~35% less time
    if len(series) > 1:
        ax.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
