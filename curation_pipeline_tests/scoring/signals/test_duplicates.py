import numpy as np
import pytest
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.signals.duplicates import caption_norm_sha, normalise_caption


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def test_columns_and_fingerprint_types(dup_shard, dup_signals):
    assert list(dup_shard.columns[1:]) == list(dup_signals.columns)
    assert dup_shard["dup_phash"].str.fullmatch(r"[0-9a-f]{16}").iloc[:6].all()
    emb = dup_shard["dup_caption_emb"].iloc[0]
    assert emb.dtype == np.float32 and emb.shape == (384,) and np.linalg.norm(emb) == pytest.approx(1, abs=1e-5)
    missing = dup_shard.iloc[6]
    assert missing["dup_image_sha"] is None and missing["dup_phash"] is None and missing["dup_error"] == "no image"
    assert missing["dup_caption_emb"] is None and missing["dup_caption_norm_sha"] is None


def test_reencoded_and_resized_copies_are_near_not_exact(dup_shard):
    sha, ph = dup_shard["dup_image_sha"], dup_shard["dup_phash"]
    assert sha[0] != sha[1] and sha[0] != sha[2]
    assert hamming(ph[0], ph[1]) <= 6 and hamming(ph[0], ph[2]) <= 6
    assert hamming(ph[0], ph[3]) > 12 and hamming(ph[0], ph[5]) > 12


def test_lossless_copy_has_the_same_pixel_hash(dup_shard):
    assert dup_shard["dup_image_sha"][3] == dup_shard["dup_image_sha"][4]


def test_caption_normalisation():
    assert normalise_caption("  A Dog,  running!! ") == "a dog running"
    assert caption_norm_sha("A dog running .") == caption_norm_sha("a DOG -- running")
    assert caption_norm_sha("...") is None and caption_norm_sha(None) is None


def test_a_caption_with_no_words_gets_no_embedding(dup_signals):
    """Blank captions would all embed alike (cosine 1): loosely alike images would become caption duplicates."""
    captions = ["", "   ", "...", None, "a red car on a street"]
    frame = dup_signals.score(PairBatch(list("abcde"), captions, [Image.new("RGB", (8, 8))] * 5))
    assert [e is None for e in frame["dup_caption_emb"]] == [True, True, True, True, False]
    assert frame["dup_caption_norm_sha"].isna().tolist() == [True, True, True, True, False]
