"""A duplicate group's kept copy is one the policy itself publishes: picking a copy that ``decide`` then
drops (a failed check, or a caption the policy drops) dropped every other copy as its duplicate, and
nothing of the group was published."""

import numpy as np
import pandas as pd
import pytest

from curation_pipeline.decisions.dedup import (Frozen, build_index, dropped_for_another_shard, mark_duplicates,
                                               refresh_index, rules_digest, write_index)
from curation_pipeline.decisions.policy import DecisionPolicy, decide
from curation_pipeline.scoring.selection import global_cut
from curation_pipeline.scoring.signals.duplicates import CAPTION_EMBEDDING
from curation_pipeline.storage.warehouse import Warehouse

PHASH = "0123456789abcdef"


def _row(shard, key, quality, side, phash=PHASH, image_sha=None, **extra):
    vector = np.random.default_rng(len(key) + ord(key[-1])).normal(size=384).astype(np.float32)
    return {"shard": shard, "key": key, "dup_image_sha": image_sha or f"sha-{shard}-{key}", "dup_phash": phash,
            "dup_caption_norm_sha": f"cap-{shard}-{key}", CAPTION_EMBEDDING: vector / np.linalg.norm(vector),
            "caption": f"a photo of a dog, copy {key}", "decode_status": "ok", "width": side, "height": side,
            "text_quality": quality, "text_quality_rules": "", "datacomp_min_side_ge200": True,
            "datacomp_aspect_le3": True, "datacomp_english": True, "datacomp_words_gt2": True,
            "datacomp_chars_gt5": True, "nsfw_prob": 0.01, "nsfw_error": None, "iq_brightness": 0.5,
            "iq_entropy": 5.0, **extra}


def _near_pair() -> pd.DataFrame:
    """s1/a: the larger image with a mediocre caption (80); s2/b: a smaller (>= 200 px) near copy with
    a perfect one (100)."""
    return pd.DataFrame([_row("s1", "a", 80.0, 1000),
                         _row("s2", "b", 100.0, 400, phash=f"{int(PHASH, 16) ^ 1:016x}")])


def _decide_with_index(pool: pd.DataFrame, policy: DecisionPolicy, index) -> pd.DataFrame:
    grouped = index.groups.set_index(["shard", "key"])
    scores = pool.copy()
    for column in ("dup_group", "dup_kind", "dup_keep", "dup_of"):
        scores[column] = [grouped.loc[(s, k), column] for s, k in zip(pool["shard"], pool["key"])]
    cut = (global_cut(pool, policy.keep_fraction, policy.quality_column) if policy.keep_fraction is not None
           else None)
    return decide(scores, policy, cut=cut).set_index(["shard", "key"])


@pytest.mark.parametrize("policy", [
    DecisionPolicy(rewrite=False),  # a plain filter: 80 < keep_threshold is dropped
    DecisionPolicy(rewrite=False, keep_expression="text_quality >= 90"),
    DecisionPolicy(fallback="drop"),  # a's rewrite may be rejected, and then a is dropped
    DecisionPolicy(rewrite=False, keep_threshold=70.0, keep_fraction=0.5),  # a is outside the top half
], ids=["rewrite-off", "keep-expression", "fallback-drop", "keep-fraction"])
def test_the_survivor_is_a_copy_the_policy_keeps(policy):
    pool = _near_pair()
    decisions = _decide_with_index(pool, policy, build_index(pool, policy, None, {"s1": "v", "s2": "v"}))
    assert decisions.loc[("s2", "b"), "action"] == "keep"
    assert decisions.loc[("s1", "a"), "reason"] == "duplicate:near_image"
    assert decisions.loc[("s1", "a"), "dup_of"] == "s2/b"


def test_with_a_safe_fallback_the_largest_image_still_wins():
    """rewrite on and fallback keep_original: a caption over drop_threshold is published either way
    (rewritten, or kept as it was), so the larger image is kept, as before."""
    pool = _near_pair()
    policy = DecisionPolicy()
    decisions = _decide_with_index(pool, policy, build_index(pool, policy, None, {"s1": "v", "s2": "v"}))
    assert decisions.loc[("s1", "a"), "action"] == "rewrite"
    assert decisions.loc[("s2", "b"), "reason"] == "duplicate:near_image"


def test_the_index_rules_cover_what_decides_whether_a_caption_is_published():
    base = rules_digest(DecisionPolicy())
    for change in ({"rewrite": False}, {"fallback": "drop"}, {"keep_threshold": 90.0},
                   {"keep_expression": "text_quality >= 90"}, {"keep_fraction": 0.5},
                   {"caption_rules_mark_weak": False}):
        assert rules_digest(DecisionPolicy(**change)) != base, change


def test_the_keep_fraction_cut_of_the_whole_scored_pool_decides_the_survivor(tmp_path):
    """The cut is over every scored shard, those scored without duplicate signals (the ``text``
    profile) included: over the grouped shards alone (100, 85, 50, 50) keep_fraction=0.5 would keep
    a's 85, but s4's four 95s push it outside, so decide() drops a, and b must be the one kept."""
    wh = Warehouse(str(tmp_path))
    rows = [_row("s1", "a", 85.0, 1000), _row("s2", "b", 100.0, 400, phash=f"{int(PHASH, 16) ^ 1:016x}"),
            _row("s3", "c", 50.0, 400, phash="fedcba9876543210"), _row("s3", "d", 50.0, 400, phash="00ff00ff00ff00ff")]
    for shard, frame in pd.DataFrame(rows).groupby("shard"):
        wh.write_table("quality_scores", shard, frame.reset_index(drop=True))
    text_only = pd.DataFrame([_row("s4", f"t{i}", 95.0, 400) for i in range(4)])
    wh.write_table("quality_scores", "s4", text_only.drop(columns=[c for c in text_only if c.startswith("dup_")]))
    policy = DecisionPolicy(rewrite=False, keep_threshold=70.0, keep_fraction=0.5)
    kept = refresh_index(wh, policy).groups.set_index(["shard", "key"])["dup_keep"]
    assert kept[("s2", "b")] and not kept[("s1", "a")]


def test_a_copy_whose_check_failed_is_not_the_survivor(tmp_path):
    """The NSFW model failed on the larger copy (nsfw_prob missing, nsfw_error set): decide() drops it as
    unchecked:nsfw_prob, so the other copy must be the one kept. The pool reads the error columns."""
    wh = Warehouse(str(tmp_path))
    big = _row("s1", "a", 100.0, 1000, image_sha="same", nsfw_prob=np.nan, nsfw_error="RuntimeError: batch failed")
    small = _row("s2", "b", 100.0, 400, image_sha="same")
    for row in (big, small):
        wh.write_table("quality_scores", row["shard"], pd.DataFrame([row]))
    policy = DecisionPolicy()
    write_index(wh, refresh_index(wh, policy))
    actions = {}
    for shard in ("s1", "s2"):
        marked, _ = mark_duplicates(wh.read_table("quality_scores", shard), wh, shard, policy)
        for row in decide(marked, policy).itertuples():
            actions[(row.shard, row.key)] = (row.action, row.reason)
    assert actions[("s1", "a")] == ("drop", "unchecked:nsfw_prob")
    assert actions[("s2", "b")][0] == "keep"


def test_copies_dropped_for_another_shard_are_counted_from_the_survivors_shard():
    """Keys may hold "/": s1's sub/y gives way to sub/x of its own shard (labelled "sub/x", as key x of a
    shard named "sub" would be); only key x of shard "sub" gives way to a copy in another shard (s2/z)."""
    def row(shard, key, sha):
        return {"shard": shard, "key": key, "dup_image_sha": sha, "dup_phash": None, "dup_caption_norm_sha": "c" + key,
                CAPTION_EMBEDDING: None, "caption": "a dog on grass", "decode_status": "ok", "width": 400,
                "height": 400, "text_quality": 100.0}
    pool = pd.DataFrame([row("s1", "sub/x", "A"), row("s1", "sub/y", "A"), row("sub", "x", "B"), row("s2", "z", "B")])
    groups = build_index(pool, DecisionPolicy(), None, {"s1": "v", "sub": "v", "s2": "v"}).groups
    by_pair = groups.set_index(["shard", "key"])
    assert by_pair.loc[("s1", "sub/y"), "survivor_shard"] == "s1"
    assert by_pair.loc[("sub", "x"), "survivor_shard"] == "s2"
    assert dropped_for_another_shard(groups) == 1


def _frozen(published: dict[str, list[str]]) -> Frozen:
    return Frozen({shard: "v" for shard in published},
                  pd.DataFrame([(s, k) for s, keys in published.items() for k in keys], columns=["shard", "key"]))


def _kept(index) -> dict:
    return index.groups.set_index(["shard", "key"])["dup_keep"].to_dict()


def test_a_frozen_shards_published_pair_survives_and_a_pair_it_does_not_publish_gives_way():
    """A shard that cannot be re-selected goes on publishing what it published: its copy survives even
    against a larger image (else its tar and the larger copy's both publish the pair), and a copy it does
    not publish never survives (else no copy is published); the result does not depend on row order."""
    pool, policy, identity = _near_pair(), DecisionPolicy(), {"s1": "v", "s2": "v"}
    assert _kept(build_index(pool, policy, None, identity)) == {("s1", "a"): True, ("s2", "b"): False}

    incumbent = build_index(pool, policy, None, identity, frozen=_frozen({"s2": ["b"]}))
    assert _kept(incumbent) == {("s1", "a"): False, ("s2", "b"): True}
    assert incumbent.groups.set_index(["shard", "key"]).loc[("s1", "a"), "dup_of"] == "s2/b"
    assert incumbent.frozen == {"s2": "v"}  # recorded: another frozen set is another index
    reversed_pool = build_index(pool.iloc[::-1], policy, None, identity, frozen=_frozen({"s2": ["b"]}))
    pd.testing.assert_frame_equal(reversed_pool.groups.sort_values(["shard", "key"], ignore_index=True),
                                  incumbent.groups.sort_values(["shard", "key"], ignore_index=True))

    unpublished = build_index(pool, policy, None, identity, frozen=_frozen({"s1": []}))
    assert _kept(unpublished) == {("s1", "a"): False, ("s2", "b"): True}
