"""Model-free image quality: sharpness, exposure and entropy of the luma channel, and colour contrast.

Measured on a grey copy downscaled to ``IQ_WORKING_SIDE`` so a photo and its thumbnail land on about the same
scale (on 500 px Flickr photos, sharpness of a LANCZOS thumbnail within 5% of the original's from 350 px on,
15% lower at 270 px, 30% at 200 px: a thumbnail just above the working side is read as blurrier than its
original); smaller images are not upscaled, which would blur them.

A flat image (a blank, a placeholder) is told by its contrast, not its entropy: a two-tone logo or line drawing
has at most 1 bit of entropy at thumbnail size yet is as sharp as an image gets, while a blank frame with a
little sensor or JPEG noise has over 2 bits and nothing in it. Contrast is taken per colour channel: a gradient
from blue to red varies little in luma and a lot in colour.
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


def colour_contrast(image: Image.Image, side: int = IQ_WORKING_SIDE) -> float:
    """The largest standard deviation of the R, G and B channels at the working side, 0 (one colour) to 0.5. A
    larger image is box-averaged down to it, which also averages its pixel noise away; a small one keeps its
    noise (a 256 px blank with strong sensor noise can measure over 0.02). Reduced by whole factors first
    (``Image.reduce``): a full-size copy of a 4000 px photo cost more than every other measure."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    factor = max(rgb.size) // side
    if factor >= 2:
        rgb = rgb.reduce(factor)
    scale = side / max(rgb.size)
    if scale < 1:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BOX)
    pixels = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)
    return float(pixels.std(axis=0).max()) / 255.0


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian on 0-255 values (OpenCV ``Laplacian`` ksize=1). At the working
    side, so it sees blur visible at 256 px: the "under ~100 is blurry" rule of thumb, made for full-size
    images, catches only blur of about 1% of the image's side here."""
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
    version = "2"  # 2: iq_contrast, the colour channels' largest standard deviation, which tells a flat image
    needs_images = True
    outputs = (ScoreColumn("iq_sharpness", "Sharpness: variance of the Laplacian of the grey image."),
               ScoreColumn("iq_brightness", "Mean brightness, 0 (black) to 1 (white).", range=(0, 1)),
               ScoreColumn("iq_dark_frac", "Share of clipped-dark pixels.", range=(0, 1)),
               ScoreColumn("iq_bright_frac", "Share of clipped-bright pixels.", range=(0, 1)),
               ScoreColumn("iq_entropy", "Entropy of the grey histogram in bits (0 = one grey level).", range=(0, 8)),
               ScoreColumn("iq_contrast", "Contrast: the largest standard deviation of the R, G and B channels, "
                           "0 (one colour) to 0.5.", range=(0, 0.5)),
               error_column("iq"))
    bounds = (Bound("iq_sharpness", "<", "min_sharpness", "image_blurry"),
              Bound("iq_brightness", "<", "min_brightness", "image_underexposed"),
              Bound("iq_brightness", ">", "max_brightness", "image_overexposed"),
              Bound("iq_entropy", "<", "min_entropy", "image_flat"),
              Bound("iq_contrast", "<", "min_contrast", "image_flat"))
    measures = len(outputs) - 1  # the value columns, in ``outputs`` order (the last is the error column)

    def _measure(self, image: Image.Image) -> tuple[list[float], str | None]:
        gray = working_gray(image)
        thin = min(gray.shape) < 3
        values = [np.nan if thin else laplacian_variance(gray), float(gray.mean()) / 255.0,
                  float((gray <= DARK_LEVEL).mean()), float((gray >= BRIGHT_LEVEL).mean()), gray_entropy(gray),
                  colour_contrast(image)]
        return values, ("image too thin for a Laplacian" if thin else None)

    def score(self, batch: PairBatch) -> pd.DataFrame:
        rows, errors = [], []
        for image in batch.images:
            if image is None:
                values, error = [np.nan] * self.measures, NO_IMAGE
            else:
                try:
                    values, error = self._measure(image)
                except Exception as exc:  # one odd image must not fail the batch
                    values, error = [np.nan] * self.measures, f"{type(exc).__name__}: {exc}"[:200]
            rows.append(values)
            errors.append(error)
        frame = pd.DataFrame(np.array(rows, dtype=float).reshape(len(rows), self.measures),
                             columns=list(self.columns[:-1]))
        frame["iq_error"] = pd.Series(errors, dtype=object)
        return frame
