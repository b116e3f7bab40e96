"""The pool-wide dedup index reads the pool's hashes, and only the caption vectors of the pairs it
compares: a pool's vectors are most of its bytes (384 floats a pair), so reading them all for every
new shard made each decision grow with the pool."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curation_pipeline.decisions import dedup
from curation_pipeline.decisions.dedup import build_index, load_pool, pool_identity, refresh_index
from curation_pipeline.decisions.policy import DecisionPolicy
from curation_pipeline.scoring.signals.duplicates import CAPTION_EMBEDDING
from curation_pipeline.shards.writer import write_curated
from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
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


def _two_linked_shards(curated, tmp_path) -> Warehouse:
    """pool-a and pool-b with fresh hashes, b's first pair an exact copy of a's first image."""
    scored = Warehouse(str(curated["warehouse"])).read_table("quality_scores", curated["shards"][0])
    rng = np.random.default_rng(5)
    a = _fresh_hashes(scored, rng)
    b = _fresh_hashes(scored, rng).assign(key=lambda df: "b" + df["key"])
    b.at[0, "dup_image_sha"] = a.at[0, "dup_image_sha"]
    wh = Warehouse(str(tmp_path))
    for shard, df in zip(SHARDS, (a, b)):
        wh.write_table("quality_scores", shard, df)
    return wh


def test_a_decision_reads_its_own_shards_rows_of_the_index_and_checks_only_those(curated, tmp_path):
    """A shard's decision reads its slice of the stored index (verified against the manifest's digest of that
    slice), not the whole index: another shard's damaged slice does not concern it, its own does."""
    wh = _two_linked_shards(curated, tmp_path)
    policy = DecisionPolicy()
    index = refresh_index(wh, policy)
    dedup.write_index(wh, index)
    assert set(index.groups["shard"]) == set(SHARDS)

    def decided(shard):
        return dedup.dedup_for_shard(wh, shard, wh.read_table("quality_scores", shard), policy)

    fresh = {shard: decided(shard) for shard in SHARDS}
    for shard, result in fresh.items():
        assert result.source == dedup.INDEX_ASSET
        assert result.digest == dedup.slice_digest(index.for_shard(shard))
        grouped = result.rows[result.rows["dup_group"].notna()]
        assert len(grouped) == len(index.for_shard(shard)) >= 1

    # pool-b's rows in the stored file no longer match the manifest (a writer between its files)
    groups = index.groups.copy()
    groups.loc[groups["shard"].eq("pool-b"), "dup_kind"] = "near_image"
    with wh.atomic_open(dedup.index_paths(wh)["groups"]) as handle:
        pq.write_table(pa.Table.from_pandas(groups, preserve_index=False), handle)
    assert decided("pool-a").source == dedup.INDEX_ASSET  # its own slice still matches
    again = decided("pool-b")
    assert again.source != dedup.INDEX_ASSET  # recomputed over the pool: the same answer as before
    pd.testing.assert_frame_equal(again.rows, fresh["pool-b"].rows)


def test_the_pool_identity_from_the_listing_is_each_files_and_sees_a_rewritten_file(curated, tmp_path):
    """One listing of the folder (on object storage one request per thousand files) gives what a stat of
    each file gives; a shard whose scores were written again reads as changed, the others do not."""
    wh = _two_linked_shards(curated, tmp_path)
    before = pool_identity(wh)
    assert before == {s: dedup.file_identity(wh.fs.info(wh.table_path("quality_scores", s))) for s in SHARDS}
    df = wh.read_table("quality_scores", "pool-a")
    wh.write_table("quality_scores", "pool-a", df.iloc[:-1])
    after = pool_identity(wh)
    assert after["pool-b"] == before["pool-b"] and after["pool-a"] != before["pool-a"]


def test_stale_shards_lists_shards_decided_against_another_index_and_passes_over_a_deleted_one(curated, tmp_path,
                                                                                               monkeypatch):
    """A shard decided before the index (no digest) is stale; one decided against it is not; one whose
    decisions vanish between the listing and the read (a partition wiped meanwhile) is passed over."""
    wh = _two_linked_shards(curated, tmp_path)
    policy = DecisionPolicy()
    index = refresh_index(wh, policy)
    dedup.write_index(wh, index)
    for shard in SHARDS:
        wh.write_table("caption_decisions", shard, pd.DataFrame({"key": ["k"]}))
    digests = index.slice_digests()
    assert dedup.stale_shards(wh) == digests  # both decided without the index's rows
    wh.write_table("caption_decisions", "pool-a", pd.DataFrame({"key": ["k"]}),
                   metadata={dedup.DIGEST_KEY: digests["pool-a"]})
    assert dedup.stale_shards(wh) == {"pool-b": digests["pool-b"]}
    listed = wh.shards("caption_decisions")
    wh.fs.rm(wh.table_path("caption_decisions", "pool-b"))
    monkeypatch.setattr(wh, "shards", lambda table: listed if table == "caption_decisions" else [])
    assert dedup.stale_shards(wh, index) == {}


def _publish(wh: Warehouse, shard: str, keys) -> None:
    """A curated tar of ``keys`` for ``shard``, as curated_shards writes it."""
    with wh.atomic_open(wh.curated_path(shard)) as handle:
        write_curated(handle, [(key, "jpg", b"jpeg bytes", {"key": key, "caption": "a caption"}) for key in keys])


def _kept(index) -> pd.Series:
    return index.groups.set_index(["shard", "key"])["dup_keep"]


def test_a_frozen_shard_keeps_its_published_pairs_is_not_stale_and_is_not_frozen_for_its_own_decision(
        curated, tmp_path):
    """pool-a/a0 and pool-b/b0 are one image; alike in all else, pool-a's copy survives by name. Frozen,
    pool-b publishes b0 (its final_captions, and its tar): b0 survives, in the stored index and in a decision
    that reads it. pool-b is not stale though decided against another index: its pairs are what the index was
    built around. Its own decision (its raw file back) does not take itself for frozen."""
    wh = _two_linked_shards(curated, tmp_path)
    a0, b0 = (wh.read_table("quality_scores", s)["key"].iloc[0] for s in SHARDS)
    policy = DecisionPolicy()
    plain = refresh_index(wh, policy).groups.set_index(["shard", "key"])["dup_keep"]
    assert plain[("pool-a", a0)] and not plain[("pool-b", b0)]

    final = wh.read_table("quality_scores", "pool-b")[["key"]].assign(outcome="kept")
    wh.write_table("final_captions", "pool-b", final)
    # no curated tar (its write failed, or it was removed): it publishes nothing, so pool-a's copy survives
    assert _kept(refresh_index(wh, policy, frozen=["pool-b"]))[("pool-a", a0)]
    _publish(wh, "pool-b", final["key"])
    index = refresh_index(wh, policy, frozen=["pool-b"])
    assert index.frozen == dedup.held_identity(wh, ["pool-b"])[0] != {"pool-b": "none"}
    kept = index.groups.set_index(["shard", "key"])["dup_keep"]
    assert kept[("pool-b", b0)] and not kept[("pool-a", a0)]
    dedup.write_index(wh, index)
    assert dedup.read_index(wh).frozen == index.frozen

    decided_a = dedup.dedup_for_shard(wh, "pool-a", wh.read_table("quality_scores", "pool-a"), policy)
    assert decided_a.source == dedup.INDEX_ASSET
    assert decided_a.rows.loc[0, "dup_of"] == f"pool-b/{b0}" and not decided_a.rows.loc[0, "dup_keep"]
    for shard in SHARDS:  # both decided against an older index
        wh.write_table("caption_decisions", shard, pd.DataFrame({"key": ["k"]}), metadata={dedup.DIGEST_KEY: "old"})
    assert set(dedup.stale_shards(wh)) == {"pool-a"}

    decided_b = dedup.dedup_for_shard(wh, "pool-b", wh.read_table("quality_scores", "pool-b"), policy)
    assert decided_b.source != dedup.INDEX_ASSET  # the stored index took it for frozen
    assert not decided_b.rows.loc[0, "dup_keep"]  # as if re-selectable: pool-a's copy survives

    # both frozen, both publishing the image: one must give way, and it is reported stale (it publishes a
    # pair the index drops; the settle sensor names it as one it cannot re-select)
    wh.write_table("final_captions", "pool-a", wh.read_table("quality_scores", "pool-a")[["key"]].assign(outcome="kept"))
    _publish(wh, "pool-a", [a0])
    both = refresh_index(wh, policy, frozen=SHARDS)
    assert not both.groups.set_index(["shard", "key"]).loc[("pool-b", b0), "dup_keep"]
    assert set(dedup.stale_shards(wh, both)) == {"pool-b"}


def test_scores_that_failed_a_blocking_check_never_keep_a_group_and_clearing_the_mark_is_another_pool(
        curated, tmp_path):
    """pool-a/a0 and pool-b/b0 are one image, a0 the survivor by name. pool-a's quality_scores then fail a
    blocking check: no step reads them, so pool-a publishes nothing, and b0 must be the copy kept (else
    the image is published nowhere), in the stored index and in pool-b's decision. Clearing the mark (the
    check passes again) writes the file again: the pool's identity changes and a0 is the survivor again."""
    wh = _two_linked_shards(curated, tmp_path)
    a0, b0 = (wh.read_table("quality_scores", s)["key"].iloc[0] for s in SHARDS)
    policy = DecisionPolicy()
    assert _kept(refresh_index(wh, policy))[("pool-a", a0)]

    wh.update_table_metadata("quality_scores", "pool-a", {FAILED_CHECKS_KEY: "scores_complete"})
    index = refresh_index(wh, policy)
    assert _kept(index)[("pool-b", b0)] and not _kept(index)[("pool-a", a0)]
    assert list(index.blocked) == ["pool-a"]
    dedup.write_index(wh, index)
    assert dedup.read_index(wh).blocked == index.blocked
    decided_b = dedup.dedup_for_shard(wh, "pool-b", wh.read_table("quality_scores", "pool-b"), policy)
    assert decided_b.source == dedup.INDEX_ASSET and decided_b.rows.loc[0, "dup_keep"]

    marked = pool_identity(wh)
    wh.update_table_metadata("quality_scores", "pool-a", {FAILED_CHECKS_KEY: ""})  # its checks pass again
    assert pool_identity(wh)["pool-a"] != marked["pool-a"]  # so the stored index is not current
    decided_a = dedup.dedup_for_shard(wh, "pool-a", wh.read_table("quality_scores", "pool-a"), policy)
    assert decided_a.source != dedup.INDEX_ASSET and decided_a.rows.loc[0, "dup_keep"]
    cleared = refresh_index(wh, policy, previous=index)  # pool-a compared afresh, the other links reused
    assert _kept(cleared)[("pool-a", a0)] and not _kept(cleared)[("pool-b", b0)] and cleared.blocked == {}
    pd.testing.assert_frame_equal(cleared.groups, refresh_index(wh, policy, previous=None).groups)


def test_a_frozen_shard_whose_tables_failed_a_blocking_check_publishes_what_its_tar_holds(curated, tmp_path):
    """A frozen shard whose final_captions (or quality_scores) failed a blocking check had no tar written
    from them: what it publishes is its tar's pairs (an older final_captions'), or none without a tar. Its
    final_captions' pairs are not incumbents: their copies elsewhere survive."""
    wh = _two_linked_shards(curated, tmp_path)
    a0, b0 = (wh.read_table("quality_scores", s)["key"].iloc[0] for s in SHARDS)
    b1 = wh.read_table("quality_scores", "pool-b")["key"].iloc[1]
    policy = DecisionPolicy()
    final = wh.read_table("quality_scores", "pool-b")[["key"]].assign(outcome="kept")
    wh.write_table("final_captions", "pool-b", final, metadata={FAILED_CHECKS_KEY: "caption_length_drift"})

    assert dedup.read_frozen(wh, ["pool-b"]).published.empty  # no tar: nothing published
    assert _kept(refresh_index(wh, policy, frozen=["pool-b"]))[("pool-a", a0)]

    before = dedup.held_identity(wh, ["pool-b"])[0]
    _publish(wh, "pool-b", [b1])  # an older final_captions' tar: b0 not in it
    assert dedup.held_identity(wh, ["pool-b"])[0] != before  # another tar, another frozen set
    assert dedup.read_frozen(wh, ["pool-b"]).published.values.tolist() == [["pool-b", b1]]
    assert _kept(refresh_index(wh, policy, frozen=["pool-b"]))[("pool-a", a0)]

    _publish(wh, "pool-b", [b0, b1])
    index = refresh_index(wh, policy, frozen=["pool-b"])
    assert _kept(index)[("pool-b", b0)] and not _kept(index)[("pool-a", a0)]
    assert index.frozen == dedup.held_identity(wh, ["pool-b"])[0]

    # final_captions passes, but quality_scores failed: the tar still says (here, b1 alone)
    wh.update_table_metadata("final_captions", "pool-b", {FAILED_CHECKS_KEY: ""})
    wh.update_table_metadata("quality_scores", "pool-b", {FAILED_CHECKS_KEY: "scores_in_range"})
    _publish(wh, "pool-b", [b1])
    assert dedup.read_frozen(wh, ["pool-b"]).published["key"].tolist() == [b1]
    assert _kept(refresh_index(wh, policy, frozen=["pool-b"]))[("pool-a", a0)]
    _publish(wh, "pool-b", [b0])  # its tar's pairs are incumbents though their scores are marked
    assert _kept(refresh_index(wh, policy, frozen=["pool-b"]))[("pool-b", b0)]


def _row(shard, key, phash, seed, quality=80.0):
    vector = np.random.default_rng(seed).normal(size=384).astype(np.float32)
    return {"shard": shard, "key": key, "dup_image_sha": f"sha-{shard}-{key}", "dup_phash": phash,
            "dup_caption_norm_sha": f"cap-{shard}-{key}", CAPTION_EMBEDDING: vector / np.linalg.norm(vector),
            "caption": f"caption {key}", "decode_status": "ok", "width": 500, "height": 500,
            "text_quality": quality}


def _groups(index) -> list:
    return index.groups[["shard", "key", "dup_kind", "dup_keep"]].values.tolist()


def test_a_refresh_after_a_linking_shard_changes_or_leaves_groups_as_a_rebuild():
    """Near links are stored through the first holder of a hash: a1 and b1 are linked only by way of s0's
    pairs. When s0 is re-scored with other content, or leaves the pool, a1 and b1 must still be grouped."""
    near_a = "0123456789abcdef"
    near_b = f"{int(near_a, 16) ^ 0b111:016x}"  # 3 bits away: a near image
    s0 = [_row("s0", "x1", near_a, 1), _row("s0", "x2", near_b, 2)]
    a_b = [_row("s1", "a1", near_a, 3, quality=90), _row("s2", "b1", near_b, 4, quality=70)]
    policy = DecisionPolicy()
    first = build_index(pd.DataFrame(s0 + a_b), policy, None, {"s0": "v1", "s1": "v1", "s2": "v1"})
    assert ["s2", "b1", "near_image", False] in _groups(first)
    rescored = [_row("s0", "x1", "ffff0000ffff0000", 5), _row("s0", "x2", "00ff00ff00ff00ff", 6)]
    for rows, identity in ((a_b, {"s1": "v1", "s2": "v1"}),  # s0 left the pool
                           (rescored + a_b, {"s0": "v2", "s1": "v1", "s2": "v1"})):  # s0 was scored again
        refreshed = build_index(pd.DataFrame(rows), policy, first, identity)
        assert _groups(refreshed) == _groups(build_index(pd.DataFrame(rows), policy, None, identity))
        assert _groups(refreshed) == [["s1", "a1", "near_image", True], ["s2", "b1", "near_image", False]]


def test_a_dropped_copy_is_labelled_by_how_it_is_joined_to_the_copy_kept():
    """s1/a is kept; s2/b is a near image of it, and s3/c is b's exact pair (same image and caption). c's drop
    was labelled exact_pair with dup_of s1/a, as if a were its exact copy: one reviewing near_image drops (the
    colour variants the README warns of) missed it. c is joined to a by a near link only."""
    near_a = "0123456789abcdef"
    near_b = f"{int(near_a, 16) ^ 0b111:016x}"
    b = _row("s2", "b", near_b, 2, quality=70)
    c = {**_row("s3", "c", near_b, 3, quality=60), "dup_image_sha": b["dup_image_sha"],
         "dup_caption_norm_sha": b["dup_caption_norm_sha"]}
    pool = pd.DataFrame([_row("s1", "a", near_a, 1, quality=90), b, c])
    index = build_index(pool, DecisionPolicy(), None, {"s1": "v1", "s2": "v1", "s3": "v1"})
    rows = index.groups.set_index(["shard", "key"])
    assert rows.loc[("s1", "a"), ["dup_kind", "dup_keep"]].tolist() == ["near_image", True]
    assert rows.loc[("s2", "b"), ["dup_kind", "dup_of"]].tolist() == ["near_image", "s1/a"]
    assert rows.loc[("s3", "c"), ["dup_kind", "dup_of"]].tolist() == ["near_image", "s1/a"]
    # with b kept instead, c is its exact pair, and a its near image
    index = build_index(pool.assign(text_quality=[60.0, 90.0, 70.0]), DecisionPolicy(), None,
                        {"s1": "v1", "s2": "v1", "s3": "v1"})
    rows = index.groups.set_index(["shard", "key"])
    assert rows.loc[("s2", "b"), ["dup_kind", "dup_keep"]].tolist() == ["exact_pair", True]
    assert rows.loc[("s3", "c"), "dup_kind"] == "exact_pair" and rows.loc[("s1", "a"), "dup_kind"] == "near_image"
