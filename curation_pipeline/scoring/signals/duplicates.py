"""Fingerprints for exact and near duplicates, stored raw; ``decisions.duplicate_groups`` and
``decisions.dedup`` decide which pairs are duplicates and which copy is kept.
"""

from __future__ import annotations

import hashlib
import unicodedata

import numpy as np
import pandas as pd
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import NO_IMAGE, Scorer
from curation_pipeline.scoring.columns import ScoreColumn, error_column
from curation_pipeline.scoring.signals.embedding import caption_embeddings

_PHASH_SIZE = 32
_PHASH_LOW = 8
_FLAT_STD = 1.0  # grey levels, at 32x32


# --- fingerprints -----------------------------------------------------------------------------

# the 8 lowest rows of the 32-point DCT-II basis
_DCT = np.cos(np.pi * (2 * np.arange(_PHASH_SIZE)[None, :] + 1) * np.arange(_PHASH_LOW)[:, None] / (2 * _PHASH_SIZE))


def pixel_sha(image: Image.Image) -> str:
    """128-bit hash of the decoded RGB pixels and size: unlike the inventory's file hash, it catches
    the same pixels in another container or with other metadata."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()[:32]


def phash(image: Image.Image) -> str | None:
    """64-bit DCT perceptual hash as 16 hex digits, like ``imagehash.phash``. None for a flat image:
    with no structure to hash, every flat frame would hash alike (exact hashes still match it)."""
    pixels = np.asarray(image.convert("L").resize((_PHASH_SIZE, _PHASH_SIZE), Image.LANCZOS), dtype=np.float64)
    if pixels.std() < _FLAT_STD:
        return None
    low = _DCT @ pixels @ _DCT.T
    bits = (low > np.median(low)).ravel()
    return f"{int(np.packbits(bits).view('>u8')[0]):016x}"


def normalise_caption(caption: str) -> str:
    """NFKC, lowercased, every run of punctuation / symbols / whitespace (what is not a letter, mark or number)
    collapsed to one space. A mark stays with the letter or number it follows: the vowel signs of Indic and Thai
    scripts tell words apart ("बाल" hair, "बिल" bill), and NFKC leaves them uncomposed; one after anything else
    ("car!\u0336", a strike-through on "!") goes with it, so the caption matches "car!" as before."""
    kept: list[str] = []
    word = False  # whether the last character kept is a letter, number or a mark on one
    for ch in unicodedata.normalize("NFKC", caption).lower():
        kind = unicodedata.category(ch)[0]
        word = kind in "LN" or (kind == "M" and word)
        kept.append(ch if word else " ")
    return " ".join("".join(kept).split())


def caption_norm_sha(caption: str | None) -> str | None:
    """None for no caption and for one with no words left (nothing to match on)."""
    if caption is None:
        return None
    norm = normalise_caption(caption)
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()[:32] if norm else None


CAPTION_EMBEDDING = "dup_caption_emb"  # also what judging a rewrite's similarity reuses for the original


class DuplicateSignals(Scorer):
    """Per-pair fingerprints; ``dup_caption_emb`` is an L2-normalised float32 (384,) array or None
    (no caption, one with no words, or ``embed_captions=False``)."""

    name = "dup"
    # 2: no embedding for a caption with no words
    # 3: the normalised caption keeps combining marks: "लाल बाल" and "लाल बिल" no longer share a caption hash
    version = "3"
    needs_images = True
    outputs = (ScoreColumn("dup_image_sha", "SHA-256 of the decoded pixels (exact image duplicates).", "str"),
               ScoreColumn("dup_phash", "Perceptual hash of the image (near duplicates).", "str"),
               ScoreColumn("dup_caption_norm_sha", "SHA-256 of the normalised caption.", "str"),
               ScoreColumn(CAPTION_EMBEDDING, "MiniLM caption embedding (384 floats, L2-normalised).", "json",
                           sidecar=False),
               error_column("dup"))

    def __init__(self, embed_captions: bool = True):
        self.embed_captions = embed_captions

    def _image_columns(self, images: list[Image.Image | None]) -> tuple[list, list, list]:
        rows = []
        for image in images:
            if image is None:
                rows.append((None, None, NO_IMAGE))
                continue
            try:
                sha, ph = pixel_sha(image), phash(image)
                rows.append((sha, ph, None if ph else "flat image: no perceptual hash"))
            except Exception as exc:  # one odd image must not fail the batch
                rows.append((None, None, f"{type(exc).__name__}: {exc}"[:200]))
        return tuple(map(list, zip(*rows))) if rows else ([], [], [])

    def _embeddings(self, captions: list[str | None]) -> list[np.ndarray | None]:
        embeddings: list[np.ndarray | None] = [None] * len(captions)
        # as caption_norm_sha: a caption with no words has nothing to match on (blank ones would all embed alike)
        present = [i for i, c in enumerate(captions) if c is not None and normalise_caption(c)]
        if self.embed_captions and present:
            vectors = caption_embeddings([captions[i] for i in present])
            for i, vector in zip(present, vectors):
                embeddings[i] = vector
        return embeddings

    def score(self, batch: PairBatch) -> pd.DataFrame:
        shas, hashes, errors = self._image_columns(batch.images)
        return pd.DataFrame({"dup_image_sha": shas, "dup_phash": hashes,
                             "dup_caption_norm_sha": [caption_norm_sha(c) for c in batch.captions],
                             CAPTION_EMBEDDING: self._embeddings(batch.captions), "dup_error": errors}, dtype=object)
