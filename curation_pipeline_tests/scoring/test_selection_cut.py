"""keep_fraction as one global cut over the pool (MLM-Filter, DataComp), not per shard."""

import json

import numpy as np
import pandas as pd
import pytest

from curation_pipeline.scoring.selection import (
    GlobalCut,
    global_cut,
    in_cut,
    kept_count,
    scores_digest,
    tie_rank,
)


def pool(values_by_shard: dict[str, list[float]], column: str = "q") -> pd.DataFrame:
    rows = [{"shard": shard, "key": f"{i:04d}", column: v}
            for shard, values in values_by_shard.items() for i, v in enumerate(values)]
    return pd.DataFrame(rows)


def brute_force(df: pd.DataFrame, fraction: float, column: str = "q") -> set[tuple[str, str]]:
    """The definition, spelled out: sort by score (desc), then the (shard, key) hash, take floor(N*f)."""
    scored = df[df[column].notna()].copy()
    scored["rank"] = tie_rank(scored["shard"], scored["key"])
    scored = scored.sort_values([column, "rank", "shard", "key"], ascending=[False, True, True, True])
    top = scored.head(kept_count(len(scored), fraction))
    return set(zip(top["shard"], top["key"]))


def kept_set(df: pd.DataFrame, cut: GlobalCut) -> set[tuple[str, str]]:
    mask = in_cut(df, cut)
    return set(zip(df.loc[mask, "shard"], df.loc[mask, "key"]))


def test_ties_at_the_cut_fill_exactly_the_remaining_places():
    df = pool({"a": [100, 90, 90, 90, 50], "b": [90, 90, 90, 100, 10]})
    cut = global_cut(df, 0.5, "q")
    assert (cut.scored, cut.kept, cut.cut_score) == (10, 5, 90.0)
    assert (cut.above, cut.ties_at_cut, cut.ties_kept) == (2, 6, 3)
    kept = kept_set(df, cut)
    assert len(kept) == 5
    assert {("a", "0000"), ("b", "0003")} <= kept  # everything above the cut
    assert not kept & {("a", "0004"), ("b", "0004")}  # nothing below it
    assert kept == brute_force(df, 0.5)
    assert sum(info["kept"] for info in cut.shards.values()) == 5


def test_nan_is_outside_n_and_never_kept():
    df = pool({"a": [np.nan, 1.0, np.nan, 2.0], "b": [3.0, np.nan]})
    cut = global_cut(df, 1.0, "q")
    assert (cut.scored, cut.kept) == (3, 3)
    assert kept_set(df, cut) == {("a", "0001"), ("a", "0003"), ("b", "0000")}
    half = global_cut(df, 0.5, "q")  # floor(3 * 0.5) = 1: N counts scored pairs only
    assert half.kept == 1 and kept_set(df, half) == {("b", "0000")}
    assert cut.shards["a"]["scored"] == 2 and cut.shards["b"]["scored"] == 1


def test_fraction_zero_and_one_and_invalid():
    df = pool({"a": [5.0, 5.0, 1.0], "b": [5.0]})
    none = global_cut(df, 0.0, "q")
    assert none.kept == 0 and none.cut_score is None and not in_cut(df, none).any()
    every = global_cut(df, 1.0, "q")
    assert every.kept == 4 and every.cut_score == 1.0 and in_cut(df, every).all()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="keep_fraction"):
            global_cut(df, bad, "q")
    empty = global_cut(df.assign(q=np.nan), 0.5, "q")
    assert (empty.scored, empty.kept) == (0, 0) and not in_cut(df, empty).any()


def test_kept_count_is_the_floor_of_the_decimal_fraction():
    assert kept_count(100, 0.29) == 29  # 0.29 * 100 == 28.999999999999996 in floating point
    assert kept_count(7, 0.5) == 3
    assert kept_count(10, 0.3) == 3
    assert kept_count(0, 0.7) == 0


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.3, 0.5, 0.77, 1.0])
def test_same_cut_whatever_the_row_or_shard_order(fraction):
    rng = np.random.default_rng(7)
    shards = {f"shard-{s}": list(rng.choice([np.nan, 10.0, 20.0, 30.0, 30.0, 40.0], size=25)) for s in range(4)}
    df = pool(shards)
    cut = global_cut(df, fraction, "q")
    expected = brute_force(df, fraction)
    assert kept_set(df, cut) == expected and len(expected) == cut.kept == kept_count(cut.scored, fraction)
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    reversed_shards = pd.concat([df[df["shard"] == s] for s in sorted(shards, reverse=True)], ignore_index=True)
    for other in (shuffled, reversed_shards):
        assert global_cut(other, fraction, "q").to_dict() == cut.to_dict()
    # applied shard by shard (in any order), the union is the global top set
    per_shard = set()
    for shard in sorted(shards, reverse=True):
        per_shard |= kept_set(df[df["shard"] == shard].iloc[::-1], cut)
    assert per_shard == expected


def test_the_cut_survives_a_json_round_trip():
    df = pool({"a": [0.25, 0.1, 0.25, 0.3], "b": [0.25, 0.25, 0.2]})
    cut = global_cut(df, 0.5, "q")
    again = GlobalCut.from_dict(json.loads(json.dumps(cut.to_dict())))
    assert again == cut
    assert kept_set(df, again) == kept_set(df, cut)


def test_digest_ignores_row_order_but_sees_a_changed_score():
    keys, values = ["k1", "k2", "k3"], [1.0, np.nan, 3.0]
    digest = scores_digest(keys, values)
    assert scores_digest(keys[::-1], values[::-1]) == digest
    assert scores_digest(keys, [1.0, np.nan, 3.5]) != digest
    assert scores_digest(keys, [1.0, 2.0, 3.0]) != digest


def test_tie_rank_is_stable():
    ranks = tie_rank(["a", "a", "b"], ["k", "k", "k"])
    assert ranks[0] == ranks[1] != ranks[2]
    assert (ranks >= 0).all()
    # pinned: BLAKE2b of "shard\0key", so the same ties are kept in every process, version and machine
    assert int(tie_rank(["sample-000000"], ["000000001"])[0]) == 6912456020588000504


def test_duplicate_pairs_and_missing_columns_are_refused():
    df = pd.DataFrame({"shard": ["a", "a"], "key": ["k", "k"], "q": [1.0, 2.0]})
    with pytest.raises(ValueError, match="twice"):
        global_cut(df, 0.5, "q")
    with pytest.raises(KeyError, match="clip_score"):
        global_cut(df, 0.5, "clip_score")
