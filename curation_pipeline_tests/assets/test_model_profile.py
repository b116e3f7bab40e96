"""A partition materialized with model profiles: CLIPScore and MLM-Filter metrics from tiny local models."""

import math

import pytest

from curation_pipeline.resources import PolicyResource, ScoringResource
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline
from curation_pipeline_tests.tiny_models import make_tiny_clip, make_tiny_llava


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"clip": make_tiny_clip(root / "clip"), "mlm": make_tiny_llava(root / "llava")}


def test_full_profile_scores_and_selects_with_model_columns(tmp_path, models):
    shard = "sample-000002"
    scoring = ScoringResource(profile="full", clip_model=models["clip"], mlm_model=models["mlm"],
                              mlm_metrics=["itm", "odf"], mlm_min_mass=0.0, batch_size=8)
    # selection over the model columns: scores are random, so the expression decides who is rewritten
    policy = PolicyResource(keep_expression="mlm_itm >= 0 and clip_score >= 0", drift_max_kl=10,
                            drift_mean_ratio_min=0, drift_mean_ratio_max=10, drift_quantile_tolerance=10)
    _, results = run_pipeline(RAW_SAMPLES, tmp_path, [shard], report=False, scoring=scoring, policy=policy)
    assert results[shard].success
    wh = Warehouse(str(tmp_path))
    scores = wh.read_table("quality_scores", shard)
    decoded = scores["decode_status"].eq("ok") & scores["caption"].fillna("").str.strip().ne("")
    for column, (low, high) in {"clip_score": (0, 2.5), "clip_cosine": (-1, 1), "mlm_itm": (0, 100),
                                "mlm_odf": (0, 100)}.items():
        values = scores.loc[decoded, column]
        assert values.notna().all(), column
        assert values.between(low, high).all(), column
    assert (scores.loc[decoded, "clip_score"] - 2.5 * scores.loc[decoded, "clip_cosine"].clip(lower=0)).abs().max() < 1e-5
    # pairs without an image get NaN with a reason, never a made-up score
    missing = scores[scores["decode_status"].ne("ok")]
    assert missing.empty or (missing["clip_score"].isna().all() and missing["clip_error"].notna().all())
    versions = wh.table_metadata("quality_scores", shard)["scorers"]
    assert models["clip"] in versions and "mlm" in versions
    assert not math.isnan(scores.loc[decoded, "mlm_itm"].mean())
