"""``drop_duplicates`` is on by default, but the ``text`` profile computes no duplicate fingerprints: its
decisions must say the pool was not deduplicated instead of passing for deduplicated (the sample shard
holds exact duplicate pairs, published as they are)."""

import dagster as dg
import pytest

from curation_pipeline.assets.decisions import NOT_DEDUPLICATED
from curation_pipeline.definitions import ASSETS, build_resources
from curation_pipeline.resources import PolicyResource, ScoringResource
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES

SHARD = "sample-000000"


@pytest.mark.parametrize("drop_duplicates", [True, False])
def test_text_profile_decisions_say_duplicates_were_not_checked(tmp_path, drop_duplicates):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [SHARD])
    resources = build_resources(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path),
                                scoring=ScoringResource(profile="text"),
                                policy=PolicyResource(drop_duplicates=drop_duplicates))
    result = dg.materialize(ASSETS, selection=["pairs", "quality_scores", "caption_decisions"], partition_key=SHARD,
                            instance=instance, resources=resources, run_config=QUIET)
    scores = Warehouse(str(tmp_path)).read_table("quality_scores", SHARD)
    duplicated = scores.duplicated(["image_sha256", "caption_sha256"], keep=False)
    assert duplicated.sum() >= 2  # the shard does hold exact duplicate pairs, none of them dropped as such
    decisions = Warehouse(str(tmp_path)).read_table("caption_decisions", SHARD)
    assert not decisions["reason"].fillna("").str.startswith("duplicate").any()

    meta = result.asset_materializations_for_node("caption_decisions")[0].metadata
    warnings = [e.message for e in instance.all_logs(result.run_id) if e.level == 30]
    if drop_duplicates:
        assert meta["duplicates"].value == f"not checked: {NOT_DEDUPLICATED}"
        assert any(NOT_DEDUPLICATED in message for message in warnings)
    else:  # asked for no dedup: nothing to warn about
        assert "duplicates" not in meta
        assert not any(NOT_DEDUPLICATED in message for message in warnings)


def test_text_profile_decisions_say_which_bounds_no_pair_is_held_to(tmp_path):
    """The NSFW drop and the image-quality bounds are on by default; the text profile computes none of their
    columns, so a black or flat image passed them unseen, silently. Said now, as for duplicates; off, nothing."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [SHARD])
    for policy, said in ((PolicyResource(), True),
                         (PolicyResource(nsfw={"drop": None}, image={"min_brightness": None, "max_brightness": None,
                                                                     "min_contrast": None,
                                                                     "require_datacomp_rules": False}), False)):
        resources = build_resources(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path),
                                    scoring=ScoringResource(profile="text"), policy=policy)
        result = dg.materialize(ASSETS, selection=["pairs", "quality_scores", "caption_decisions"],
                                partition_key=SHARD, instance=instance, resources=resources, run_config=QUIET)
        meta = result.asset_materializations_for_node("caption_decisions")[0].metadata
        warnings = [e.message for e in instance.all_logs(result.run_id) if e.level == 30]
        if said:
            text = meta["bounds_not_checked"].value
            assert "policy.nsfw.drop (nsfw_prob)" in text and "policy.image.min_brightness (iq_brightness)" in text
            assert any("no pair is held to them" in message for message in warnings)
        else:
            assert "bounds_not_checked" not in meta, meta["bounds_not_checked"].value
