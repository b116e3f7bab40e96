"""Deterministic sample shards: small webdataset tars with alt-text of known quality.

The pipeline needs input that exercises every scorer and every failure path without a
download, and tests need to know what each sample *is*. So every sample carries a
ground-truth ``kind`` (in its ``.json`` and in :func:`expected_manifest`), and the tars
are byte-for-byte reproducible: fixed tar headers, fixed encoder settings and all
randomness drawn from seeded generators.

``subjects`` (what the images show), ``images`` (photo crops and generated graphics),
``captions`` (alt-text of each kind), ``samples`` (what each shard holds) and ``writer``
(the tars). Regenerate with ``python -m curation_pipeline.demo --out data/raw``.
"""

from curation_pipeline.demo.samples import SAMPLE_KINDS, expected_manifest
from curation_pipeline.demo.subjects import PHOTOS
from curation_pipeline.demo.writer import generate_sample_shards

__all__ = ["PHOTOS", "SAMPLE_KINDS", "expected_manifest", "generate_sample_shards"]
