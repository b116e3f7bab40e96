"""Each rule-based scorer's and the cleaner's outputs over fixed inputs, pinned to its code version: a version
bumped, then its rules edited in the same way again, left warehouses scored between the two reading current with
other rules (text_quality 13 read ads two ways). Outputs changed under an unchanged version fail here; bump the
version (stored rows made the old way then read stale), then set the pin this test prints."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from curation_pipeline.shards.reader import iter_pair_batches
from curation_pipeline_tests.conftest import RAW_SAMPLES

# name -> (the version its outputs below were made by, their digest)
PINS = {
    "text_quality": ("14", "c96b70d5dff919df"),
    "cleaner": ("19", "e788c883417b7001"),
    "dup": ("3", "f583efe1c4abfb00"),
    "image_quality": ("2", "be48da6dd05a7af2"),
}
# captions the bundled shards lack: ads, credits, non-Latin scripts, combining marks, markup, links
PROBES = [
    "Offering free shipping worldwide.", "A store window that offers 50% off everything",
    "Poster which shows Buy now in red letters", "A market stall advertises free delivery today",
    "Biden and Macron | AFP", "Stock Photo - dog on beach - 123456 | Getty Images", "a dog - \u0301 runs",
    "लाल बाल", "日本の猫の写真です | All rights reserved", "Café au lait sur une table, photo: Jean Dupont",
    "<b>A red barn</b> at dusk", "Visit www.shop.com for deals #sale #deal", "IMG_2044.JPG",
    "A bottle of Chanel No. 5", "", "   ", "Zwei Kinder am Strand © dpa",
]


def _value(v):
    if isinstance(v, float):
        return None if math.isnan(v) else round(v, 6)
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    return v


def _digest(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def samples():
    """The bundled shards' captions and decoded images, in shard order, and the probes."""
    captions, batches = list(PROBES), []
    for tar in sorted(RAW_SAMPLES.glob("*.tar")):
        for batch, _ in iter_pair_batches(str(tar), tar.stem, batch_size=16):
            captions += [c or "" for c in batch.captions]
            batches.append(batch)
    return captions, batches


def _outputs(name: str, samples) -> tuple[str, list]:
    captions, batches = samples
    if name == "text_quality":
        from curation_pipeline.scoring.text_quality import CaptionTextQuality, caption_rules, caption_score

        return CaptionTextQuality.version, [(caption_score(caption_rules(c)), caption_rules(c)) for c in captions]
    if name == "cleaner":
        from curation_pipeline.rewriting.base import CODE_VERSIONS
        from curation_pipeline.rewriting.cleaner import clean_caption

        return CODE_VERSIONS["cleaner"], [clean_caption(c) for c in captions]
    if name == "dup":
        from curation_pipeline.scoring.signals.duplicates import DuplicateSignals, caption_norm_sha, phash, pixel_sha

        images = [(pixel_sha(i), phash(i)) if i is not None else None for b in batches for i in b.images]
        return DuplicateSignals.version, [[caption_norm_sha(c) for c in captions], images]
    from curation_pipeline.scoring.signals.image_quality import ImageQualityScorer

    scorer = ImageQualityScorer()
    rows = [scorer.score(b).astype(object).where(lambda f: f.notna(), None).to_dict("records") for b in batches]
    return ImageQualityScorer.version, rows


@pytest.mark.parametrize("name", sorted(PINS))
def test_outputs_change_only_with_the_version(name, samples):
    version, outputs = _outputs(name, samples)
    digest = _digest(_value(json.loads(json.dumps(outputs, default=str))))
    pinned_version, pinned = PINS[name]
    assert (version, digest) == (pinned_version, pinned), (
        f"{name}: its outputs changed under version {version}: bump its version, then pin it"
        if version == pinned_version else f"{name}: version {version} (pinned {pinned_version}): pin it")\
        + f' as PINS["{name}"] = ("{version}", "{digest}")'
