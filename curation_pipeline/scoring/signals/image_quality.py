"""Model-free image quality: sharpness, exposure and entropy of the luma channel.

Measured on a grey copy downscaled to ``IQ_WORKING_SIDE`` so a photo and its thumbnail land on the
same scale (within 5% on Flickr photos); smaller images are not upscaled, which would blur them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import NO_IMAGE, Scorer
from curation_pipeline.scoring.columns import Bound, ScoreColumn, error_column

IQ_WORKING_SIDE = 256
DARK_LEVEL = 10  # luma <= this (of 255) counts as crushed shadow
BRIGHT_LEVEL = 245  # luma >= this counts as blown highlight

def working_gray(image: Image.Image, side: int = IQ_WORKING_SIDE) -> np.ndarray:
    """Luma (ITU-R 601, as PIL's "L") at the working resolution, uint8."""
    gray = image.convert("L")
    scale = side / max(gray.size)
    if scale < 1:
        size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
        gray = gray.resize(size, Image.LANCZOS, reducing_gap=3.0)
    return np.asarray(gray)


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian on 0-255 values (OpenCV ``Laplacian`` ksize=1),
    so the usual "under ~100 is blurry" rule of thumb keeps its scale."""
    g = gray.astype(np.float32)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def gray_entropy(gray: np.ndarray) -> float:
    """Shannon entropy of the 256-bin histogram in bits: 0 for a flat image, 8 at most."""
    p = np.bincount(gray.ravel(), minlength=256) / gray.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: a flat image gives 0.0, not -0.0


class ImageQualityScorer(Scorer):
    """Sharpness, mean brightness, clipped shadow / highlight shares and entropy."""

    name = "image_quality"
    version = "1"
    needs_images = True
    outputs = (ScoreColumn("iq_sharpness", "Sharpness: variance of the Laplacian of the grey image."),
               ScoreColumn("iq_brightness", "Mean brightness, 0 (black) to 1 (white).", range=(0, 1)),
               ScoreColumn("iq_dark_frac", "Share of clipped-dark pixels.", range=(0, 1)),
               ScoreColumn("iq_bright_frac", "Share of clipped-bright pixels.", range=(0, 1)),
               ScoreColumn("iq_entropy", "Entropy of the grey histogram in bits (0 = flat).", range=(0, 8)),
               error_column("iq"))
    bounds = (Bound("iq_sharpness", "<", "min_sharpness", "image_blurry"),
              Bound("iq_brightness", "<", "min_brightness", "image_underexposed"),
              Bound("iq_brightness", ">", "max_brightness", "image_overexposed"),
              Bound("iq_entropy", "<", "min_entropy", "image_flat"))

    def _measure(self, image: Image.Image) -> tuple[list[float], str | None]:
        gray = working_gray(image)
        thin = min(gray.shape) < 3
        values = [np.nan if thin else laplacian_variance(gray), float(gray.mean()) / 255.0,
                  float((gray <= DARK_LEVEL).mean()), float((gray >= BRIGHT_LEVEL).mean()), gray_entropy(gray)]
        return values, ("image too thin for a Laplacian" if thin else None)

    def score(self, batch: PairBatch) -> pd.DataFrame:
        rows, errors = [], []
        for image in batch.images:
            if image is None:
                values, error = [np.nan] * 5, NO_IMAGE
            else:
                try:
                    values, error = self._measure(image)
                except Exception as exc:  # one odd image must not fail the batch
                    values, error = [np.nan] * 5, f"{type(exc).__name__}: {exc}"[:200]
            rows.append(values)
            errors.append(error)
        frame = pd.DataFrame(np.array(rows, dtype=float).reshape(len(rows), 5), columns=list(self.columns[:-1]))
        frame["iq_error"] = pd.Series(errors, dtype=object)
        return frame
