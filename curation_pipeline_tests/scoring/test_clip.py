import numpy as np
import pytest
import torch
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.clip import ClipScorer
from curation_pipeline_tests.tiny_models import make_tiny_clip, make_tiny_siglip

BUILDERS = {"clip": make_tiny_clip, "siglip": make_tiny_siglip}


@pytest.fixture(scope="module", params=list(BUILDERS))
def model_dir(request, tmp_path_factory):
    return BUILDERS[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def images(flickr_dir):
    return [Image.open(p).convert("RGB") for p in sorted((flickr_dir / "images").glob("*.jpg"))[:3]]


def _hand_cosines(scorer, images, texts):
    """Independent of the scorer's code path: the model's own embeddings, normalised."""
    padding = "max_length" if "siglip" in scorer.model.config.model_type else True
    inputs = scorer.processor(text=texts, images=images, return_tensors="pt", padding=padding,
                              truncation=True, max_length=16)
    with torch.no_grad():
        out = scorer.model(**inputs)
    image = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
    text = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
    return (image * text).sum(-1).numpy()


def test_columns_range_and_hand_computation(model_dir, images):
    scorer = ClipScorer(model_dir, name="clip", batch_size=2)
    captions = ["A dog runs on the grass.", "Two children play.", "A man climbs."]
    frame = scorer.score(PairBatch(["a", "b", "c"], captions, images))
    assert list(frame.columns) == ["clip_score", "clip_cosine", "clip_error"] == list(scorer.columns)
    assert scorer.version == f"1:{model_dir}" and scorer.needs_images
    expected = _hand_cosines(scorer, images, [f"A photo depicts {c}" for c in captions])
    np.testing.assert_allclose(frame["clip_cosine"], expected, atol=1e-5)
    np.testing.assert_allclose(frame["clip_score"], 2.5 * np.maximum(expected, 0), atol=1e-5)
    assert frame["clip_score"].between(0, 2.5).all() and frame["clip_error"].isna().all()


def test_prefix_is_applied_and_optional(model_dir, images):
    caption = "A dog runs on the grass."
    batch = PairBatch(["a"], [caption], images[:1])
    with_prefix = ClipScorer(model_dir).score(batch)["clip_cosine"][0]
    no_prefix = ClipScorer(model_dir, prefix=None)
    manual = no_prefix.score(PairBatch(["a"], [f"A photo depicts {caption}"], images[:1]))["clip_cosine"][0]
    assert with_prefix == pytest.approx(manual, abs=1e-6)
    assert no_prefix.score(batch)["clip_cosine"][0] != pytest.approx(with_prefix, abs=1e-6)


def test_long_text_is_truncated(model_dir, images):
    frame = ClipScorer(model_dir).score(PairBatch(["a"], ["a dog runs " * 200], images[:1]))
    assert np.isfinite(frame["clip_cosine"][0]) and frame["clip_error"][0] is None


def test_missing_image_or_caption_is_nan_with_reason(model_dir, images):
    frame = ClipScorer(model_dir, name="c").score(
        PairBatch(["a", "b", "c"], ["a dog", None, "a dog"], [None, images[0], images[1]]))
    assert frame["c_score"].isna().tolist() == [True, True, False]
    assert frame["c_error"].tolist()[:2] == ["no image", "no caption"]
