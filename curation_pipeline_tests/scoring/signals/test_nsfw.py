import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.signals.nsfw import NsfwScorer, nsfw_verdict


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


def test_missing_image_is_nan_with_reason(scorer, photos):
    out = scorer.score(PairBatch(["a", "b", "c"], ["x", None, "y"], [None, photos[0], None]))
    assert out["nsfw_prob"].isna().tolist() == [True, False, True]
    assert out["nsfw_error"].tolist() == ["no image", None, "no image"]


def test_verdict_bands():
    probs = pd.Series([0.05, 0.2, 0.5, 0.8, 0.99, np.nan])
    assert nsfw_verdict(probs).tolist() == ["ok", "review", "review", "drop", "drop", None]
    assert nsfw_verdict(probs, drop_at=0.9, review_at=0.6).tolist() == ["ok", "ok", "ok", "review", "drop", None]
    with pytest.raises(ValueError):
        nsfw_verdict(probs, drop_at=0.3, review_at=0.5)
