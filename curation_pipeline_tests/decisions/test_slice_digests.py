"""``DedupIndex.slice_digests`` (what the settle sensor compares each tick) makes, for the whole index at once, the
digest ``slice_digest`` makes of one shard's rows: any other text would re-select every shard."""

from types import SimpleNamespace

import numpy as np
import pandas as pd

from curation_pipeline.decisions.dedup import DedupIndex, slice_digest


def test_the_whole_index_digests_each_shard_as_its_own_rows_do():
    rng = np.random.default_rng(7)
    n = 4000
    shards = rng.choice([f"s{i:03d}" for i in range(60)], n)
    keys = np.array([f"k{int(k)}" for k in rng.integers(0, 10**6, n)])
    groups = pd.DataFrame({
        "shard": shards, "key": keys,
        "dup_group": np.where(rng.random(n) < 0.2, keys, np.char.add("s001/", keys)).astype(object),
        "dup_kind": rng.choice(["exact_pair", "exact_image", "near_image", "near_caption"], n).astype(object),
        "dup_keep": rng.random(n) < 0.5,
    }).drop_duplicates(["shard", "key"]).sample(frac=1, random_state=3)  # the index's own order is no sort
    groups.loc[groups.index[:5], "dup_group"] = None
    identity = {s: "v" for s in [*sorted(set(shards)), "s-without-groups"]}
    digests = DedupIndex.slice_digests(SimpleNamespace(groups=groups, identity=identity))
    expected = {shard: slice_digest(rows) for shard, rows in groups.groupby("shard")}
    assert digests == {**expected, "s-without-groups": "none"}
    assert DedupIndex.slice_digests(SimpleNamespace(groups=groups.iloc[:0], identity={"a": "v"})) == {"a": "none"}
