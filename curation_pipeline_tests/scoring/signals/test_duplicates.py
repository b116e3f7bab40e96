import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.signals.duplicates import (
    DuplicateSignals,
    assign_duplicate_groups,
    caption_norm_sha,
    normalise_caption,
)


def reencode(image: Image.Image, fmt: str = "JPEG", **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@pytest.fixture(scope="module")
def photos(flickr_dir):
    paths = sorted((flickr_dir / "images").glob("*.jpg"))[:4]
    return [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture(scope="module")
def signals():
    return DuplicateSignals()


@pytest.fixture(scope="module")
def shard(photos, signals):
    """Real photos, a re-encoded and a resized copy of the first, a lossless copy of the
    second with another caption, the third with the first's caption, a missing image."""
    a, b, c, _ = photos
    images = [a, reencode(a, quality=60), a.resize((a.width // 2, a.height // 2)), b, reencode(b, "PNG"), c, None]
    captions = [
        "A girl climbs the stairs of a wooden playhouse .",
        "a girl climbs the stairs of a wooden playhouse",
        "A little girl going into a wooden building .",
        "Two dogs on the road .",
        "Two dogs stare at each other in the street !",
        "A girl climbs the stairs of a wooden playhouse .",
        None,
    ]
    keys = [f"k{i}" for i in range(len(images))]
    frame = signals.score(PairBatch(keys, captions, images))
    frame.insert(0, "key", keys)
    return frame


def test_columns_and_fingerprint_types(shard, signals):
    assert list(shard.columns[1:]) == list(signals.columns)
    assert shard["dup_phash"].str.fullmatch(r"[0-9a-f]{16}").iloc[:6].all()
    emb = shard["dup_caption_emb"].iloc[0]
    assert emb.dtype == np.float32 and emb.shape == (384,) and np.linalg.norm(emb) == pytest.approx(1, abs=1e-5)
    missing = shard.iloc[6]
    assert missing["dup_image_sha"] is None and missing["dup_phash"] is None and missing["dup_error"] == "no image"
    assert missing["dup_caption_emb"] is None and missing["dup_caption_norm_sha"] is None


def test_reencoded_and_resized_copies_are_near_not_exact(shard):
    sha, ph = shard["dup_image_sha"], shard["dup_phash"]
    assert sha[0] != sha[1] and sha[0] != sha[2]
    assert hamming(ph[0], ph[1]) <= 6 and hamming(ph[0], ph[2]) <= 6
    assert hamming(ph[0], ph[3]) > 12 and hamming(ph[0], ph[5]) > 12


def test_lossless_copy_has_the_same_pixel_hash(shard):
    assert shard["dup_image_sha"][3] == shard["dup_image_sha"][4]


def test_flat_frames_have_no_phash_but_exact_copies_still_match(signals):
    black, white = Image.new("RGB", (64, 48)), Image.new("RGB", (64, 48), (255, 255, 255))
    frame = signals.score(PairBatch(["a", "b", "c"], ["x", "y", "z"], [black, white, black.copy()]))
    assert frame["dup_phash"].isna().all()
    assert frame["dup_error"].str.startswith("flat image").all()
    frame["key"] = ["a", "b", "c"]
    out = assign_duplicate_groups(frame, None, pd.Series([0.1, 0.2, 0.3]))
    assert out["dup_kind"].tolist() == ["exact_image", None, "exact_image"]
    assert out["dup_keep"].tolist() == [False, True, True]


def test_caption_normalisation():
    assert normalise_caption("  A Dog,  running!! ") == "a dog running"
    assert caption_norm_sha("A dog running .") == caption_norm_sha("a DOG -- running")
    assert caption_norm_sha("...") is None and caption_norm_sha(None) is None


def test_groups_keep_the_best_by_quality(shard):
    quality = pd.Series([0.5, 0.9, 0.1, 0.2, 0.7, 0.3, np.nan])
    out = assign_duplicate_groups(shard, None, quality)
    assert out.index.equals(shard.index)
    assert out["dup_kind"].tolist() == ["near_image"] * 3 + ["exact_image"] * 2 + [None, None]
    assert out["dup_keep"].tolist() == [False, True, False, False, True, True, True]
    assert out["dup_group"].tolist() == ["k1", "k1", "k1", "k4", "k4", None, None]
    assert out["dup_of"].tolist() == ["k1", None, "k1", "k4", None, None, None]


def test_same_caption_on_another_image_is_not_a_duplicate_unless_configured(shard):
    quality = pd.Series(0.5, index=shard.index)
    assert assign_duplicate_groups(shard, None, quality)["dup_kind"][5] is None
    loose = assign_duplicate_groups(shard, None, quality, near_caption_requires_near_image=False)
    assert loose["dup_kind"][5] == "near_caption"
    assert loose["dup_group"][5] == loose["dup_group"][0]


def test_ties_break_on_key_and_exact_pair_outranks(shard):
    rows = shard.iloc[[3, 4]].copy()
    rows["dup_caption_norm_sha"] = rows["dup_caption_norm_sha"].iloc[0]
    rows["key"] = ["b", "a"]
    out = assign_duplicate_groups(rows, None, pd.Series(1.0, index=rows.index))
    assert out["dup_kind"].tolist() == ["exact_pair", "exact_pair"]
    assert out["dup_keep"].tolist() == [False, True]


def test_copy_of_a_curated_pair_is_never_kept(shard, photos, signals):
    prior = signals.score(PairBatch(["old"], ["An older caption ."], [photos[0].filter(ImageFilter.SHARPEN)]))
    prior["key"], prior["shard"] = ["old"], ["shard-00000"]
    out = assign_duplicate_groups(shard, prior, pd.Series(np.arange(7.0)))
    assert not out["dup_keep"][:3].any()
    assert out["dup_group"][:3].tolist() == ["shard-00000/old"] * 3
    assert out["dup_of"][:3].tolist() == ["shard-00000/old"] * 3
    assert out["dup_keep"][3:].tolist() == [False, True, True, True]


def synthetic(n: int, rng: np.random.Generator, prefix: str) -> pd.DataFrame:
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return pd.DataFrame({
        "key": [f"{prefix}{i:06d}" for i in range(n)],
        "dup_image_sha": [f"{v:032x}" for v in rng.integers(0, 2**62, n)],
        "dup_phash": [f"{v:016x}" for v in rng.integers(0, 2**63, n, dtype=np.uint64)],
        "dup_caption_norm_sha": [f"{v:032x}" for v in rng.integers(0, 2**62, n)],
        "dup_caption_emb": list(vectors),
    })


def test_near_caption_with_loosely_similar_images():
    rng = np.random.default_rng(1)
    rows = synthetic(3, rng, "k")
    base = int(rows["dup_phash"][0], 16)
    rows.loc[1, "dup_phash"] = f"{base ^ 0xFF:016x}"  # 8 bits apart: beyond near_image
    rows.loc[2, "dup_phash"] = f"{base ^ 0xFF00:016x}"
    rows.at[1, "dup_caption_emb"] = rows["dup_caption_emb"][0]  # same caption meaning
    out = assign_duplicate_groups(rows, None, pd.Series([0.1, 0.2, 0.3]))
    assert out["dup_kind"].tolist() == ["near_caption", "near_caption", None]
    assert out["dup_keep"].tolist() == [False, True, True]
    strict = assign_duplicate_groups(rows, None, pd.Series([0.1, 0.2, 0.3]), near_caption_phash_max_distance=6)
    assert strict["dup_kind"].isna().all()


def test_scales_to_a_shard_against_a_large_prior():
    rng = np.random.default_rng(0)
    current, prior = synthetic(10_000, rng, "c"), synthetic(100_000, rng, "p")
    prior["shard"] = "s0"
    current.loc[10, "dup_image_sha"] = prior.loc[99_999, "dup_image_sha"]
    current.loc[20, "dup_phash"] = f"{int(prior.loc[5, 'dup_phash'], 16) ^ 0b111:016x}"
    out = assign_duplicate_groups(current, prior, pd.Series(rng.random(10_000)))
    assert out.loc[10, "dup_of"] == "s0/p099999" and out.loc[20, "dup_of"] == "s0/p000005"
    assert out["dup_keep"].sum() == 10_000 - 2
