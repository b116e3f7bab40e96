"""A partition materialized with model profiles: CLIPScore and MLM-Filter metrics from tiny local models."""

import dataclasses
import math

import pytest

from curation_pipeline.resources import (
    AcceptanceConfig,
    ClipConfig,
    DriftConfig,
    MlmConfig,
    PolicyResource,
    ScoringResource,
)
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline
from curation_pipeline_tests.tiny_models import RELEASED, make_tiny_clip, make_tiny_llava

# drift limits no tiny random model can break (these tests are about the model path, not drift)
LOOSE_DRIFT = DriftConfig(max_kl=10, mean_ratio_min=0, mean_ratio_max=10, quantile_tolerance=10)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"clip": make_tiny_clip(root / "clip"), "mlm": make_tiny_llava(root / "llava")}


def test_full_profile_scores_and_selects_with_model_columns(tmp_path, models):
    shard = "sample-000001"  # the sample shard with a corrupt, an empty and a missing image
    # the released MLM-Filter layout (LLaVA-1.5), as a user with the real checkpoint runs it
    released = str(RELEASED / "mlm-filter-llava-13b-tiny")
    scoring = ScoringResource(profile="full", clip=ClipConfig(model=models["clip"]), batch_size=8,
                              mlm=MlmConfig(model=released, vision_tower=str(RELEASED / "clip-vit-tiny-patch8-32"),
                                            metrics=["itm", "odf"], min_mass=0.0))
    # selection over the model columns: scores are random, so the expression decides who is rewritten
    policy = PolicyResource(keep_expression="mlm_itm >= 0 and clip_score >= 0", drift=LOOSE_DRIFT)
    _, results = run_pipeline(RAW_SAMPLES, tmp_path, [shard], report=False, scoring=scoring, policy=policy)
    assert results[shard].success
    wh = Warehouse(str(tmp_path))
    scores = wh.read_table("quality_scores", shard)
    decoded = scores["decode_status"].eq("ok") & scores["caption"].fillna("").str.strip().ne("")
    for column, (low, high) in {"clip_score": (0, 2.5), "clip_cosine": (-1, 1), "mlm_itm": (0, 100),
                                "mlm_odf": (0, 100), "mlm_itm_expected": (0, 100)}.items():
        values = scores.loc[decoded, column]
        assert values.notna().all(), column
        assert values.between(low, high).all(), column
    assert (scores.loc[decoded, "clip_score"] - 2.5 * scores.loc[decoded, "clip_cosine"].clip(lower=0)).abs().max() < 1e-5
    # pairs without an image get NaN with a reason, never a made-up score
    missing = scores[scores["decode_status"].ne("ok")]
    assert sorted(missing["decode_status"]) == ["corrupt", "empty", "missing"]
    assert missing["clip_score"].isna().all() and missing["clip_error"].eq("no image").all()
    assert missing["mlm_itm"].isna().all() and missing["mlm_itm_error"].eq("no image").all()
    versions = wh.table_metadata("quality_scores", shard)["scorers"]
    assert models["clip"] in versions and released in versions and "llava_v1" in versions
    assert not math.isnan(scores.loc[decoded, "mlm_itm"].mean())


def test_vlm_rewriter_partition_records_verified_lineage(tmp_path, models, monkeypatch):
    from curation_pipeline.resources import RewriterResource
    from curation_pipeline.rewriting.vlm import ChatGenerator
    from curation_pipeline.pairs import PairBatch
    from curation_pipeline.rewriting.verify import AcceptanceRules, judge
    from curation_pipeline.scoring.profiles import caption_scorers
    from curation_pipeline.scoring.run import score_batch
    from curation_pipeline_tests.rewriting.test_rewrite_end_to_end import finished

    # The tiny random VLM never emits an end token, so every reply would be cut off at max_new_tokens
    # (no candidate); taken as finished, its random replies reach the rules.
    monkeypatch.setattr(ChatGenerator, "generate", finished(ChatGenerator.generate))
    import curation_pipeline.assets.rewriting as step

    real, given = step.rewrite_batches, []

    def recorded(*args, rules, **kwargs):  # the rules the step judged with
        given.append(rules)
        return real(*args, rules=rules, **kwargs)

    monkeypatch.setattr(step, "rewrite_batches", recorded)
    shard = "sample-000001"
    rewriter = RewriterResource(kind="vlm", model=models["mlm"], max_new_tokens=12, batch_size=8)
    policy = PolicyResource(acceptance=AcceptanceConfig(min_similarity=0.2, max_edit_ratio=0.95), drift=LOOSE_DRIFT)
    _, results = run_pipeline(RAW_SAMPLES, tmp_path, [shard], report=True, scoring=ScoringResource(profile="text"),
                              rewriter=rewriter, policy=policy)
    assert results[shard].success and results["quality_report"].success
    wh = Warehouse(str(tmp_path))
    lineage = wh.read_table("rewritten_captions", shard)
    decisions = wh.read_table("caption_decisions", shard)
    assert set(lineage["key"]) == set(decisions.loc[decisions["action"].eq("rewrite"), "key"])
    assert lineage["rewriter"].eq("vlm").all() and lineage["prompt_hash"].str.len().eq(16).all()
    assert lineage["rewriter_version"].str.contains(models["mlm"], regex=False).all()
    # the rules the partition ran with: the policy's bounds, its default margin and drop threshold
    rules = AcceptanceRules(min_improvement=1.0, max_edit_ratio=0.95, min_similarity=0.2, min_quality=65.0)
    assert policy.acceptance_rules() == rules
    # judged by text_quality, blind to the image: a number added or a negation dropped is refused too
    rules = dataclasses.replace(rules, keep_facts=True)
    assert given == [rules]
    candidates = lineage["candidate_caption"].notna()
    assert candidates.sum() >= len(lineage) // 2, lineage[["key", "reason"]]
    scorers = caption_scorers()
    for row in lineage.itertuples():
        if row.candidate_caption is None:
            assert not row.accepted and row.reason.startswith("no candidate: "), row.reason
            continue
        # a candidate still weak by the decision's caption rules (the tiny model's random text is no English)
        (weak,) = given[0].still_weak(score_batch(scorers, PairBatch([row.key], [row.candidate_caption])))
        expected = judge(row.quality_before, row.quality_after, row.edit_ratio, row.length_ratio,
                         row.semantic_similarity, rules, original=row.original_caption, candidate=row.candidate_caption,
                         weak=weak)
        assert (row.accepted, row.reason) == expected, row.key
    # random text shares no word with a caption (edit bound), but is accepted as a fresh caption where none was
    accepted = lineage[lineage["accepted"]]
    assert not accepted.empty and lineage["reason"].str.startswith("edit ratio").any()
    # every accepted rewrite is the published caption; every VLM-rewritten caption was an accepted one
    final = wh.read_table("final_captions", shard).set_index("key")
    for row in accepted.itertuples():
        assert final.loc[row.key, "outcome"] == "rewritten", (row.key, final.loc[row.key, "reason"])
        assert final.loc[row.key, "final_caption"] == row.candidate_caption
    assert set(final.index[final["outcome"].eq("rewritten") & final["rewriter"].eq("vlm")]) == set(accepted["key"])
