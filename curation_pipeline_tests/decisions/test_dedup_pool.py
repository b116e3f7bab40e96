"""The pool-wide dedup index reads the pool's hashes, and only the caption vectors of the pairs it
compares: a pool's vectors are most of its bytes (384 floats a pair), so reading them all for every
new shard made each decision grow with the pool."""

import numpy as np
import pandas as pd

from curation_pipeline.decisions import dedup
from curation_pipeline.decisions.dedup import build_index, load_pool, pool_identity, refresh_index
from curation_pipeline.decisions.policy import DecisionPolicy
from curation_pipeline.scoring.signals.duplicates import CAPTION_EMBEDDING
from curation_pipeline.storage.warehouse import Warehouse

SHARDS = ["pool-a", "pool-b"]


def _fresh_hashes(df: pd.DataFrame, rng) -> pd.DataFrame:
    n = len(df)
    return df.assign(dup_image_sha=[f"{v:032x}" for v in rng.integers(0, 2**62, n)],
                     dup_phash=[f"{v:016x}" for v in rng.integers(0, 2**63, n, dtype=np.uint64)],
                     dup_caption_norm_sha=[f"{v:032x}" for v in rng.integers(0, 2**62, n)])


def test_the_index_reads_only_the_vectors_it_compares_and_groups_as_with_all_in_memory(curated, tmp_path,
                                                                                       monkeypatch):
    scored = Warehouse(str(curated["warehouse"])).read_table("quality_scores", curated["shards"][0])
    rng = np.random.default_rng(3)
    a = _fresh_hashes(scored, rng)
    b = _fresh_hashes(scored, rng).assign(key=lambda df: "b" + df["key"])
    # b0 is a0's caption on a loosely similar image (8 bits apart): a near-caption pair across shards;
    # b1 is as near a1's image but has no caption vector, so it is no pair
    for row in (0, 1):
        b.at[row, "dup_phash"] = f"{int(a.at[row, 'dup_phash'], 16) ^ 0xFF:016x}"
    b.at[0, CAPTION_EMBEDDING] = a.at[0, CAPTION_EMBEDDING]
    b.at[1, CAPTION_EMBEDDING] = None
    wh = Warehouse(str(tmp_path))
    for shard, df in zip(SHARDS, (a, b)):
        wh.write_table("quality_scores", shard, df)

    asked, real = [], dedup.pool_vectors
    monkeypatch.setattr(dedup, "pool_vectors", lambda wh, pool: (
        lambda rows, read=real(wh, pool): asked.extend(pool.iloc[rows]["key"]) or read(rows)))
    index = refresh_index(wh, DecisionPolicy())

    assert CAPTION_EMBEDDING not in load_pool(wh, SHARDS, "text_quality").columns
    assert sorted(asked) == sorted([a.at[0, "key"], a.at[1, "key"], b.at[0, "key"], b.at[1, "key"]])
    grouped = index.groups.set_index(["shard", "key"])
    assert grouped.loc[("pool-b", b.at[0, "key"]), "dup_kind"] == "near_caption"
    assert grouped.loc[("pool-a", a.at[0, "key"]), "dup_kind"] == "near_caption"
    assert ("pool-b", b.at[1, "key"]) not in grouped.index
    everything = pd.concat([df.assign(shard=s) for s, df in zip(SHARDS, (a, b))], ignore_index=True)
    in_memory = build_index(everything.sort_values(["shard", "key"]).reset_index(drop=True), DecisionPolicy(),
                            None, pool_identity(wh))
    pd.testing.assert_frame_equal(index.groups, in_memory.groups)
    pd.testing.assert_frame_equal(index.links, in_memory.links)
