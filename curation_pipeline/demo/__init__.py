"""Deterministic sample shards: small webdataset tars with alt-text of known quality.

Every sample carries a ground-truth ``kind`` (in its ``.json`` and in :func:`expected_manifest`), so
tests know what each sample is, and the tars are byte-for-byte reproducible (fixed tar headers and
encoder settings, seeded randomness). Regenerate with ``python -m curation_pipeline.demo --out data/raw``.
"""

from curation_pipeline.demo.samples import SAMPLE_KINDS, expected_manifest
from curation_pipeline.demo.subjects import PHOTOS
from curation_pipeline.demo.writer import generate_sample_shards

__all__ = ["PHOTOS", "SAMPLE_KINDS", "expected_manifest", "generate_sample_shards"]
