"""AITQE's vision tower can be named in the pipeline's settings (``scoring.aitqe_vision_tower``,
``rewriter.vision_tower``), as MLM-Filter's (``scoring.mlm.vision_tower``), and reaches the scorer and the rewriter;
the rewriter's version names the precision and the tower as the scorer's does, so lineage identifies the model."""

from __future__ import annotations

import pytest

from curation_pipeline.models.loading import ModelUnavailableError
from curation_pipeline.rewriting.aitqe import AitqeRewriter
from curation_pipeline.scoring.aitqe import AitqeScorer
from curation_pipeline.scoring.profiles import ScoringProfile
from curation_pipeline_tests.tiny_models import RELEASED

# its config names the tower "siglip-tiny-patch8-32", a hub id that is not here: the tower must be given
MODEL, TOWER = str(RELEASED / "aitqe-tiny"), str(RELEASED / "siglip-tiny-patch8-32")


@pytest.fixture(autouse=True)
def fresh_rewriters():
    from curation_pipeline import resources

    resources._rewriter.cache_clear()
    yield
    resources._rewriter.cache_clear()


def test_the_scoring_setting_reaches_the_scorer():
    from curation_pipeline.resources import ScoringResource

    scoring = ScoringResource(profile="offline", aitqe_model=MODEL, aitqe_vision_tower=TOWER, device="cpu")
    scorer = AitqeScorer.from_profile(scoring.as_profile())
    assert scorer.version.endswith(f":dtype=float32:tower={TOWER}")
    assert scoring.output_settings()["aitqe"] == {"model": MODEL, "vision_tower": TOWER}
    # without a tower the setting is the model alone, as before it existed: earlier scores do not read stale
    assert ScoringResource(profile="offline", aitqe_model=MODEL).output_settings()["aitqe"] == MODEL
    with pytest.raises(ModelUnavailableError, match="scoring.aitqe_vision_tower"):
        AitqeScorer.from_profile(ScoringResource(profile="offline", aitqe_model=MODEL, device="cpu").as_profile())


def test_a_tower_without_the_model_is_refused():
    with pytest.raises(ValueError, match="scoring.aitqe_vision_tower is set but scoring.aitqe_model is not"):
        ScoringProfile(aitqe_vision_tower=TOWER)


def test_the_rewriter_setting_reaches_the_rewriter_and_its_version():
    from curation_pipeline.resources import RewriterResource

    settings = {"kind": "aitqe", "model": MODEL, "vision_tower": TOWER, "device": "cpu"}
    loaded = RewriterResource(**settings).rewriter()
    assert loaded.version == f"10:{MODEL}:max_new=384:stop=1:dtype=float32:tower={TOWER}"
    assert RewriterResource(**settings).rewriter(load_model=False).version == loaded.version
    assert RewriterResource(**settings).output_settings()["vision_tower"] == TOWER
    with pytest.raises(ModelUnavailableError, match="rewriter.vision_tower"):
        RewriterResource(kind="aitqe", model=MODEL, device="cpu").rewriter()
    with pytest.raises(ValueError, match="rewriter.vision_tower is set but rewriter 'vlm' reads none"):
        RewriterResource(kind="vlm", model=MODEL, vision_tower=TOWER).rewriter()


def test_the_rewriter_version_tells_precisions_apart():
    half = AitqeRewriter(MODEL, vision_tower=TOWER, device="cpu", dtype="bfloat16")
    assert ":dtype=bfloat16:" in half.version
    assert AitqeRewriter(MODEL, vision_tower=TOWER, device="cpu", dtype="bfloat16", load_model=False).version \
        == half.version
    assert half.version != AitqeRewriter(MODEL, vision_tower=TOWER, device="cpu").version


def test_the_aitqe_scorer_and_rewriter_of_one_process_share_one_loaded_model():
    """Each loaded its own copy of the checkpoint (about 16 GB in bf16): two did not fit where one did. Settings
    given at each call (the scorer stops at <Overall>, its own budget) stay each one's own."""
    scorer = AitqeScorer(MODEL, vision_tower=TOWER, batch_size=1, max_new_tokens=8)
    rewriter = AitqeRewriter(MODEL, vision_tower=TOWER, batch_size=1, max_new_tokens=12)
    assert rewriter.generator.released is scorer.generator.released
    assert (scorer.generator.max_new_tokens, rewriter.generator.max_new_tokens) == (8, 12)
    other = AitqeRewriter(MODEL, batch_size=1, max_new_tokens=8, vision_tower=TOWER, dtype="float16")
    assert other.generator.released is not scorer.generator.released  # loaded another way: its own
