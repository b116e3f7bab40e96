import numpy as np
import pytest
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.signals.nsfw import NsfwScorer


@pytest.fixture(scope="module")
def scorer():
    return NsfwScorer(batch_size=8)


@pytest.fixture(scope="module")
def photos(flickr_dir):
    paths = sorted((flickr_dir / "images").glob("*.jpg"))[:24]
    return [Image.open(p).convert("RGB") for p in paths]


def test_clean_photos_score_low_and_columns_match(scorer, photos):
    out = scorer.score(PairBatch([str(i) for i in range(len(photos))], [None] * len(photos), photos))
    assert list(out.columns) == list(scorer.columns)
    assert out["nsfw_prob"].between(0, 1).all()
    assert out["nsfw_prob"].median() < 0.2
    assert out["nsfw_error"].isna().all()


def test_batching_does_not_change_scores(photos):
    batch = PairBatch([str(i) for i in range(10)], [None] * 10, photos[:10])
    small, large = NsfwScorer(batch_size=3), NsfwScorer(batch_size=16)
    np.testing.assert_allclose(small.score(batch)["nsfw_prob"], large.score(batch)["nsfw_prob"], atol=1e-5)


def test_a_profile_scores_in_small_calls_with_the_bits_of_large_ones(photos):
    """Small ONNX Runtime calls are the faster ones on a CPU; whole calls of 2 give what calls of 32 give."""
    from curation_pipeline.scoring.profiles import ScoringProfile
    from curation_pipeline.scoring.signals.nsfw import CALL_IMAGES

    built = NsfwScorer.from_profile(ScoringProfile("offline", batch_size=32))
    assert built.batch_size == CALL_IMAGES < 32
    batch = PairBatch([str(i) for i in range(12)], [None] * 12, photos[:12])
    np.testing.assert_array_equal(built.score(batch)["nsfw_prob"], NsfwScorer(batch_size=32).score(batch)["nsfw_prob"])


def test_missing_image_is_nan_with_reason(scorer, photos):
    out = scorer.score(PairBatch(["a", "b", "c"], ["x", None, "y"], [None, photos[0], None]))
    assert out["nsfw_prob"].isna().tolist() == [True, False, True]
    assert out["nsfw_error"].tolist() == ["no image", None, "no image"]


def test_a_score_does_not_depend_on_the_other_images_of_its_batch(photos):
    """An odd image count left the last image alone in its call, which gives other bits; so did a
    neighbour that failed to decode."""
    scorer = NsfwScorer()  # the profile's calls of 2
    alone = [scorer.score(PairBatch(["k"], [None], [photo]))["nsfw_prob"].iloc[0] for photo in photos[:5]]
    together = scorer.score(PairBatch([str(i) for i in range(5)], [None] * 5, photos[:5]))["nsfw_prob"]
    np.testing.assert_array_equal(together.to_numpy(), np.array(alone))
    with_gap = scorer.score(PairBatch(["a", "b"], [None, None], [photos[0], None]))["nsfw_prob"]
    assert with_gap.iloc[0] == alone[0]
