import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from curation_pipeline.decisions.duplicate_groups import assign_duplicate_groups
from curation_pipeline.pairs import PairBatch


def test_flat_frames_have_no_phash_but_exact_copies_still_match(dup_signals):
    black, white = Image.new("RGB", (64, 48)), Image.new("RGB", (64, 48), (255, 255, 255))
    frame = dup_signals.score(PairBatch(["a", "b", "c"], ["x", "y", "z"], [black, white, black.copy()]))
    assert frame["dup_phash"].isna().all()
    assert frame["dup_error"].str.startswith("flat image").all()
    frame["key"] = ["a", "b", "c"]
    out = assign_duplicate_groups(frame, None, pd.Series([0.1, 0.2, 0.3]))
    assert out["dup_kind"].tolist() == ["exact_image", None, "exact_image"]
    assert out["dup_keep"].tolist() == [False, True, True]


def test_groups_keep_the_best_by_quality(dup_shard):
    quality = pd.Series([0.5, 0.9, 0.1, 0.2, 0.7, 0.3, np.nan])
    out = assign_duplicate_groups(dup_shard, None, quality)
    assert out.index.equals(dup_shard.index)
    assert out["dup_kind"].tolist() == ["near_image"] * 3 + ["exact_image"] * 2 + [None, None]
    assert out["dup_keep"].tolist() == [False, True, False, False, True, True, True]
    assert out["dup_group"].tolist() == ["k1", "k1", "k1", "k4", "k4", None, None]
    assert out["dup_of"].tolist() == ["k1", None, "k1", "k4", None, None, None]


def test_same_caption_on_another_image_is_not_a_duplicate_unless_configured(dup_shard):
    quality = pd.Series(0.5, index=dup_shard.index)
    assert assign_duplicate_groups(dup_shard, None, quality)["dup_kind"][5] is None
    loose = assign_duplicate_groups(dup_shard, None, quality, near_caption_requires_near_image=False)
    assert loose["dup_kind"][5] == "near_caption"
    assert loose["dup_group"][5] == loose["dup_group"][0]


def test_ties_break_on_key_and_exact_pair_outranks(dup_shard):
    rows = dup_shard.iloc[[3, 4]].copy()
    rows["dup_caption_norm_sha"] = rows["dup_caption_norm_sha"].iloc[0]
    rows["key"] = ["b", "a"]
    out = assign_duplicate_groups(rows, None, pd.Series(1.0, index=rows.index))
    assert out["dup_kind"].tolist() == ["exact_pair", "exact_pair"]
    assert out["dup_keep"].tolist() == [False, True]


def test_copy_of_a_curated_pair_is_never_kept(dup_shard, dup_photos, dup_signals):
    prior = dup_signals.score(PairBatch(["old"], ["An older caption ."], [dup_photos[0].filter(ImageFilter.SHARPEN)]))
    prior["key"], prior["shard"] = ["old"], ["shard-00000"]
    out = assign_duplicate_groups(dup_shard, prior, pd.Series(np.arange(7.0)))
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


def test_near_hashes_finds_every_pair_within_the_distance_and_no_other():
    """The range search against every pair's XOR-and-count, with hashes at exactly the distance, one bit
    beyond, equal (0: not a near pair, equal values are linked apart) and the top bit set; in more than one
    query block."""
    from curation_pipeline.decisions import duplicate_groups

    rng = np.random.default_rng(7)
    pool = rng.integers(0, 2**64, 3_000, dtype=np.uint64, endpoint=False)
    queries = pool[:700].copy()
    bits = [np.uint64(1) << np.uint64(b) for b in range(64)]
    for i, d in enumerate([0, 1, 5, 6, 7, 12, 13, 64]):
        flip = np.uint64(0)
        for b in rng.choice(64, size=d, replace=False):
            flip |= bits[b]
        pool[1_000 + i] = queries[i] ^ flip
    queries[8] |= bits[63]
    pool[1_008] = queries[8] ^ bits[0]
    dist = np.bitwise_count(queries[:, None] ^ pool[None, :])
    for max_distance in (6, 12):
        want = set(zip(*np.nonzero((dist <= max_distance) & (dist > 0))))
        original = duplicate_groups._QUERY_BLOCK
        try:
            duplicate_groups._QUERY_BLOCK = 256
            q, p, d = duplicate_groups._near_hashes(queries, pool, max_distance)
        finally:
            duplicate_groups._QUERY_BLOCK = original
        assert set(zip(q.tolist(), p.tolist())) == {(int(a), int(b)) for a, b in want}
        assert len(q) == len(want) and (d == dist[q, p]).all()
        assert {(1, 1_001), (3, 1_003), (8, 1_008)} <= set(zip(q.tolist(), p.tolist()))
    assert (5, 1_005) in want and (6, 1_006) not in want  # 12 bits in, 13 out
    empty = duplicate_groups._near_hashes(queries[:0], pool, 6)
    assert all(len(a) == 0 for a in empty)
