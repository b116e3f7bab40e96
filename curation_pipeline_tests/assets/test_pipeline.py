"""Two real partitions through every asset and check, in process, on the bundled shards."""

import json
import tarfile

import duckdb
import numpy as np
import pandas as pd
import pytest

from curation_pipeline.demo import expected_manifest
from curation_pipeline.storage.warehouse import Warehouse


def test_every_step_and_check_succeeds(curated):
    for name, result in curated["results"].items():
        assert result.success, name
    for shard in curated["shards"]:
        checks = {c.check_name: c.passed for c in curated["results"][shard].get_asset_check_evaluations()}
        assert checks == {"pairs_schema": True, "caption_length_vs_reference": True, "pairs_read_whole": True,
                          "scores_in_range": True, "scores_complete": True, "rewrites_complete": True,
                          "final_captions_complete": True, "caption_length_drift": True, "kept_share": True}


def test_pairs_inventory_matches_the_shard(curated):
    wh = Warehouse(str(curated["warehouse"]))
    truth = pd.DataFrame(expected_manifest())
    truth["shard"] = truth["shard"].str.removesuffix(".tar")
    for shard in curated["shards"]:
        pairs = wh.read_table("pairs", shard)
        expected = truth[truth["shard"] == shard]
        assert sorted(pairs["key"]) == sorted(expected["key"])
        header = pairs.set_index("key")["decode_status"]  # the inventory reads image headers only
        decoded = wh.read_table("quality_scores", shard).set_index("key")["decode_status"]  # the one full decode
        for row in expected.itertuples():
            assert (decoded[row.key] == "ok") == bool(row.image_ok), row.key
            # a truncated body behind a valid header shows only in the full decode
            assert (header[row.key] == "ok") == (bool(row.image_ok) or row.kind == "corrupt_image"), row.key


def test_a_full_inventory_flags_what_the_full_decode_flags(curated, tmp_path):
    """``inventory_decode: full`` verifies every image (reduced-scale decode): pairs then has the decode
    statuses of quality_scores' full decode, the truncated body included."""
    import dagster as dg

    from curation_pipeline.assets.ingest import pairs
    from curation_pipeline.definitions import build_resources
    from curation_pipeline.resources import WarehouseResource
    from curation_pipeline_tests.conftest import RAW_SAMPLES

    warehouse = WarehouseResource(raw_root=str(RAW_SAMPLES), root=str(tmp_path / "wh"), inventory_decode="full")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", curated["shards"])
    full_ok = header_ok = 0
    for shard in curated["shards"]:
        result = dg.materialize([pairs], partition_key=shard, instance=instance,
                                resources=build_resources(warehouse=warehouse))
        assert result.success
        full = Warehouse(str(tmp_path / "wh")).read_table("pairs", shard).set_index("key")["decode_status"]
        decoded = Warehouse(str(curated["warehouse"])).read_table("quality_scores", shard).set_index("key")
        assert full.to_dict() == decoded["decode_status"].to_dict()
        full_ok += int(full.eq("ok").sum())
        meta = result.asset_materializations_for_node("pairs")[0].metadata  # here a decode did happen
        assert (meta["decoded"].value, meta["undecodable"].value) == (int(full.eq("ok").sum()),
                                                                      int(full.ne("ok").sum()))
        header_ok += int(Warehouse(str(curated["warehouse"])).read_table("pairs", shard)["decode_status"].eq("ok").sum())
    assert full_ok < header_ok  # the truncated body a header read lets through


def test_broken_samples_are_dropped_with_named_reasons(curated):
    wh = Warehouse(str(curated["warehouse"]))
    final = wh.read_table("final_captions", "sample-000001").set_index("key")
    truth = pd.DataFrame(expected_manifest()).assign(shard=lambda d: d["shard"].str.removesuffix(".tar")).set_index("key")
    reasons = {kind: final.loc[truth.index[(truth["kind"] == kind) & (truth["shard"] == "sample-000001")], "reason"]
               for kind in ("corrupt_image", "empty_image", "missing_image")}
    assert set(reasons["corrupt_image"]) == {"image_corrupt"}
    assert set(reasons["empty_image"]) == {"image_missing"}
    assert set(reasons["missing_image"]) == {"image_missing"}
    # the image-rule cases live in sample-000000 (one of each): each is dropped, naming the rule
    first = wh.read_table("final_captions", "sample-000000").set_index("key")
    for kind, reason in (("tiny_image", "image_too_small"), ("wide_image", "image_aspect_ratio")):
        keys = truth.index[(truth["kind"] == kind) & (truth["shard"] == "sample-000000")]
        assert len(keys) == 1, kind
        assert first.loc[keys, ["outcome", "reason"]].values.tolist() == [["dropped", reason]], kind


def test_weak_captions_are_rewritten_and_recorded_in_lineage(curated):
    wh = Warehouse(str(curated["warehouse"]))
    lineage = wh.read_all("rewritten_captions")
    final = wh.read_all("final_captions")
    accepted = lineage[lineage["accepted"]]
    assert len(accepted) >= 4
    # every rewritten pair has exactly the accepted attempt's caption, and the attempt improved the score
    merged = final[final["rewritten"]].merge(
        accepted[["shard", "key", "candidate_caption", "quality_before", "quality_after"]], on=["shard", "key"],
        suffixes=("", "_attempt"))
    assert len(merged) == final["rewritten"].sum()
    assert (merged["final_caption"] == merged["candidate_caption"]).all()
    assert (merged["quality_after"] > merged["quality_before"]).all()
    # one name, one value: the attempt's quality_before is the decision's, its quality_after the final's
    assert (merged["quality_before"] == merged["quality_before_attempt"]).all()
    assert (merged["quality_final"] == merged["quality_after"]).all()
    assert merged["rewriter"].eq("cleaner").all()
    assert lineage["run_id"].notna().all() and lineage["prompt_hash"].isna().all()
    # boilerplate is gone from a rewritten caption, the rest kept
    stock = final[final["original_caption"].str.startswith("Stock Photo - ", na=False)]
    assert len(stock) and stock["final_caption"].str.contains("Stock", case=False).sum() == 0
    assert (stock["outcome"] == "rewritten").all()


def test_rewriting_reuses_the_stored_original_vectors_with_the_same_similarities(curated, tmp_path, monkeypatch):
    """The offline profile stores each caption's MiniLM vector (duplicate signals). Re-materialized, the
    rewrite step encodes only the candidates, and writes the lineage a fresh encoding of both gave."""
    import shutil

    import dagster as dg

    from curation_pipeline.definitions import ASSETS, build_resources
    from curation_pipeline.scoring.signals import embedding
    from curation_pipeline_tests.conftest import RAW_SAMPLES

    shard = curated["shards"][0]
    warehouse = tmp_path / "warehouse"
    shutil.copytree(curated["warehouse"], warehouse)
    before = Warehouse(str(warehouse)).read_table("rewritten_captions", shard)
    originals = set(before["original_caption"].dropna())
    assert len(before) and before["candidate_caption"].notna().any()
    encoded, real = [], embedding.caption_embeddings
    monkeypatch.setattr(embedding, "caption_embeddings", lambda texts, **kw: encoded.extend(texts) or real(texts))
    # an instance of its own: the shared one's latest rewritten_captions must stay the shared warehouse's
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [shard])
    result = dg.materialize(ASSETS, selection=["rewritten_captions"], partition_key=shard, instance=instance,
                            resources=build_resources(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse)))
    assert result.success
    after = Warehouse(str(warehouse)).read_table("rewritten_captions", shard)
    assert encoded and sorted(encoded) == sorted(before["candidate_caption"].dropna())
    assert not originals & set(encoded) - set(before["candidate_caption"])
    same = [c for c in before.columns if c not in ("run_id", "created_at", "semantic_similarity")]
    pd.testing.assert_frame_equal(after[same], before[same])
    np.testing.assert_allclose(after["semantic_similarity"], before["semantic_similarity"], atol=1e-6)


def test_curated_tar_holds_kept_pairs_with_sidecars(curated):
    wh = Warehouse(str(curated["warehouse"]))
    for shard in curated["shards"]:
        final = wh.read_table("final_captions", shard)
        lineage = wh.read_table("rewritten_captions", shard)
        kept = final[final["outcome"] != "dropped"].set_index("key")
        with tarfile.open(wh.curated_path(shard)) as tar:
            names = tar.getnames()
            sidecars = {n.split(".")[0]: json.loads(tar.extractfile(n).read()) for n in names if n.endswith(".json")}
            texts = {n.split(".")[0]: tar.extractfile(n).read().decode() for n in names if n.endswith(".txt")}
        assert set(sidecars) == set(kept.index)
        for key, meta in sidecars.items():
            assert meta["source_shard"] == shard
            assert texts[key] == meta["caption"] == kept.loc[key, "final_caption"]
            assert meta["original_caption"] == kept.loc[key, "original_caption"]
            assert meta["rewritten"] == bool(kept.loc[key, "rewritten"])
            assert "text_quality" in meta["scores"]
            if meta["rewritten"]:  # from a curated sample back to its accepted attempt (and its run)
                attempt = lineage[(lineage["key"] == key) & lineage["accepted"]]
                assert meta["rewriter"] == attempt["rewriter"].iloc[-1] == "cleaner"
                assert attempt["run_id"].iloc[-1] and attempt["candidate_caption"].iloc[-1] == meta["caption"]


def test_report_counts_add_up(curated):
    wh = Warehouse(str(curated["warehouse"]))
    con = duckdb.connect(wh.report_db_path, read_only=True)
    summary = con.execute("SELECT * FROM shard_summary ORDER BY shard").df()
    overall = con.execute("SELECT * FROM overall").df().iloc[0]
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    n_rewrites = con.execute("SELECT count(*) FROM rewritten_captions WHERE accepted").fetchone()[0]
    con.close()
    assert list(summary["shard"]) == curated["shards"]
    assert (summary["kept_as_is"] + summary["rewritten"] + summary["dropped"] == summary["pairs_read"]).all()
    assert int(overall["pairs_read"]) == 80
    assert {"pairs", "quality_scores", "caption_decisions", "rewritten_captions", "final_captions"} <= views
    assert n_rewrites >= int(overall["rewritten"])


def test_decoded_counts_full_decodes_and_pairs_metadata_names_its_header_read(curated):
    """The bundled truncated JPEG has a readable header: pairs (header read, the default) says ok, the full
    decode corrupt. The report's ``decoded`` counts the full decode; pairs' UI metadata counts headers and
    says so, never ``decoded``."""
    import dagster as dg

    wh = Warehouse(str(curated["warehouse"]))
    with duckdb.connect(wh.report_db_path, read_only=True) as con:
        reported = dict(con.execute("SELECT shard, decoded FROM shard_summary").fetchall())
        overall = con.execute("SELECT decoded FROM overall").fetchone()[0]
    header_ok = {}
    for shard in curated["shards"]:
        full_ok = int(wh.read_table("quality_scores", shard)["decode_status"].eq("ok").sum())
        assert reported[shard] == full_ok, shard
        header = wh.read_table("pairs", shard)["decode_status"]
        header_ok[shard] = int(header.eq("ok").sum())
        meta = curated["instance"].fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("pairs"), asset_partitions=[shard]),
            limit=1).records[0].event_log_entry.asset_materialization.metadata
        assert {"decoded", "undecodable"}.isdisjoint(meta), shard  # no decode happened in pairs
        assert meta["headers_ok"].value == header_ok[shard]
        assert meta["headers_not_ok"].value == len(header) - header_ok[shard]
        assert "from the image header" in meta["decode_status"].value
    assert overall == sum(reported.values()) < sum(header_ok.values())  # the truncated body counts once only


def test_rerunning_a_partition_replaces_it(curated, tmp_path):
    from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline

    wh = Warehouse(str(curated["warehouse"]))
    before = wh.read_table("final_captions", "sample-000000")
    _, results = run_pipeline(RAW_SAMPLES, curated["warehouse"], ["sample-000000"], instance=curated["instance"],
                              report=False)
    assert results["sample-000000"].success
    after = wh.read_table("final_captions", "sample-000000")
    pd.testing.assert_frame_equal(before, after)
    leftovers = [p for p in curated["warehouse"].rglob(".tmp-*")]
    assert leftovers == []


@pytest.mark.parametrize("table", ["pairs", "quality_scores", "caption_decisions", "final_captions"])
def test_tables_have_one_row_per_pair(curated, table):
    wh = Warehouse(str(curated["warehouse"]))
    for shard in curated["shards"]:
        df = wh.read_table(table, shard)
        assert len(df) == 40 and df["key"].is_unique
