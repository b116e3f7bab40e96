"""Text in the image (banners, watermarks, screenshots) from the PP-OCR models in ``rapidocr-onnxruntime``.

Only boxes are used: the recognised strings drop spaces, and detection alone is several times cheaper.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import NO_IMAGE, Scorer
from curation_pipeline.scoring.columns import Bound, ScoreColumn, error_column
from curation_pipeline.scoring.signals import cpu_threads

OCR_MAX_SIDE = 640


def _working_image(image: Image.Image, max_side: int) -> np.ndarray:
    """Downscaled BGR array: detection cost grows with pixels, text that matters stays legible."""
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.BILINEAR, reducing_gap=2.0)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _area_fraction(boxes: list, height: int, width: int) -> float:
    """Share of the image covered by the union of the box quadrilaterals (overlaps count once)."""
    import cv2  # loaded with the OCR engine; declarations alone never need it

    mask = np.zeros((height, width), dtype=np.uint8)
    polygons = [np.round(np.asarray(box, dtype=np.float32)).astype(np.int32) for box in boxes]
    cv2.fillPoly(mask, polygons, 1)
    return min(1.0, float(mask.mean()))


class TextInImageScorer(Scorer):
    """``ocr_boxes`` and ``ocr_area_frac``, detected with the longer side at most ``max_side`` (RapidOCR's
    default would upscale). ``det_only=False`` also drops boxes read under ``text_score`` (fewer false
    boxes, 3-4x the cost); non-default settings are appended to ``version``."""

    name = "ocr"
    version = "1"
    needs_images = True
    outputs = (ScoreColumn("ocr_boxes", "Text boxes RapidOCR found in the image.", "int"),
               ScoreColumn("ocr_area_frac", "Share of the image the text boxes cover.", range=(0, 1)),
               error_column("ocr"))
    bounds = (Bound("ocr_area_frac", ">", "max_text_area", "text_heavy_image"),)

    def __init__(self, max_side: int = OCR_MAX_SIDE, det_only: bool = True,
                 box_thresh: float = 0.5, text_score: float = 0.5, intra_op_threads: int | None = None):
        self.max_side, self.det_only = max_side, det_only
        settings = {"max_side": max_side, "det_only": det_only, "box_thresh": box_thresh}
        if not det_only:
            settings["text_score"] = text_score
        defaults = {"max_side": OCR_MAX_SIDE, "det_only": True, "box_thresh": 0.5, "text_score": 0.5}
        self.version = "+".join([type(self).version, *(f"{k}={v}" for k, v in settings.items() if v != defaults[k])])
        try:
            from rapidocr_onnxruntime import RapidOCR  # the engine's runtime and OpenCV: only when built
        except ImportError as exc:  # OpenCV's wheel links the system's libGL and GLib, absent from minimal images
            if ".so" not in str(exc):
                raise
            raise ImportError(f"the OCR scorer's OpenCV cannot load a system library ({exc}): install libGL and GLib "
                              "(Debian/Ubuntu: apt-get install libgl1 libglib2.0-0)") from exc
        self._engine = RapidOCR(det_limit_type="max", det_limit_side_len=max_side, det_box_thresh=box_thresh,
                                text_score=text_score, intra_op_num_threads=intra_op_threads or cpu_threads(),
                                inter_op_num_threads=1)

    def _boxes(self, array: np.ndarray) -> list:
        result, _ = self._engine(array, use_det=True, use_cls=False, use_rec=not self.det_only)
        if result is None:
            return []
        return result if self.det_only else [item[0] for item in result]

    def score(self, batch: PairBatch) -> pd.DataFrame:
        n = len(batch)
        counts = pd.array([pd.NA] * n, dtype="Int64")
        areas = np.full(n, np.nan)
        errors: list[str | None] = [None] * n
        for i, image in enumerate(batch.images):
            if image is None:
                errors[i] = NO_IMAGE
                continue
            try:
                array = _working_image(image, self.max_side)
                boxes = self._boxes(array)
                area = _area_fraction(boxes, *array.shape[:2]) if boxes else 0.0
            except Exception as exc:  # one odd image must not fail the batch
                errors[i] = f"ocr: {type(exc).__name__}: {exc}"[:200]
                continue
            counts[i] = len(boxes)
            areas[i] = area
        return pd.DataFrame({"ocr_boxes": counts, "ocr_area_frac": areas, "ocr_error": pd.Series(errors, dtype=object)})
