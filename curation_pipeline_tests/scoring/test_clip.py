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
    sigmoid = ["clip_sigmoid"] if "siglip" in scorer.model.config.model_type else []
    assert list(frame.columns) == ["clip_score", "clip_cosine", *sigmoid, "clip_error"] == list(scorer.columns)
    assert scorer.version == f"{3 if 'siglip' in str(model_dir) else 4}:{model_dir}" and scorer.needs_images
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


def test_long_text_is_cut_to_the_model_context_ending_in_its_end_token(model_dir, images):
    """As ``clip.tokenize(truncate=True)`` in clipscore.py: the row is the full context, its last token the
    end-of-text one, and the score is that of the cut text."""
    scorer = ClipScorer(model_dir)
    caption = "a dog runs " * 200
    ids = scorer.inputs(images[:1], [scorer._text(caption)])["input_ids"][0].tolist()
    assert len(ids) == scorer.model.config.text_config.max_position_embeddings == 16
    if "siglip" not in scorer.model.config.model_type:  # SigLIP pads to the context and has no end token there
        assert ids[-1] == scorer.processor.tokenizer.eos_token_id and ids.count(ids[-1]) == 1
    frame = scorer.score(PairBatch(["a"], [caption], images[:1]))
    assert frame["clip_error"][0] is None
    np.testing.assert_allclose(frame["clip_cosine"], _hand_cosines(scorer, images[:1], [f"A photo depicts {caption}"]),
                               atol=1e-5)


def test_missing_image_or_caption_is_nan_with_reason(model_dir, images):
    frame = ClipScorer(model_dir, name="c").score(
        PairBatch(["a", "b", "c"], ["a dog", None, "a dog"], [None, images[0], images[1]]))
    assert frame["c_score"].isna().tolist() == [True, True, False]
    assert frame["c_error"].tolist()[:2] == ["no image", "no caption"]


# --- CLIPScore details: prefix switch, precision, SigLIP's sigmoid, SigLIP2 NaFlex ---------------


def test_prefix_text_matches_the_reference(model_dir):
    """clipscore.py: ``prefix + ' ' + caption`` with prefix "A photo depicts"."""
    assert ClipScorer(model_dir)._text("a dog runs") == "A photo depicts a dog runs"
    assert ClipScorer(model_dir, prefix=None)._text(" a dog runs ") == "a dog runs"
    assert ClipScorer(model_dir, prefix=None).version == f"{3 if 'siglip' in str(model_dir) else 4}:{model_dir}:prefix=none"


def test_prefix_and_dtype_switches_reach_the_scorer(model_dir, monkeypatch):
    from curation_pipeline.resources import ScoringResource
    from curation_pipeline.scoring.clip import ClipScorer

    default = ScoringResource(profile="clip", clip={"model": model_dir}).as_profile()
    assert default.clip_prefix is True and default.clip_dtype == "auto"
    on = ClipScorer.from_profile(default)  # what build_scorers makes for the profile
    assert on.prefix == "A photo depicts" and on.model.dtype == torch.float32
    off = ClipScorer.from_profile(
        ScoringResource(profile="clip", clip={"model": model_dir, "prefix": False, "dtype": "bfloat16"}).as_profile())
    assert off.prefix is None and off.model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype"):
        ScoringResource(profile="clip", clip={"model": model_dir, "dtype": "int8"}).as_profile()


def test_auto_dtype_is_fp32_on_cpu_fp16_on_gpu():
    from curation_pipeline.scoring.clip import DTYPES, resolve_dtype

    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype(None, "cpu") is torch.float32
    assert resolve_dtype("auto", "cuda") is torch.float16
    assert resolve_dtype("auto", "cuda:1") is torch.float16
    assert resolve_dtype("fp32", "cuda") is torch.float32
    assert resolve_dtype("BF16", "cpu") is torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") is torch.float16
    assert all(resolve_dtype(name, "cpu") is getattr(torch, DTYPES[name]) for name in DTYPES)
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8", "cpu")


def test_dtype_switch_loads_and_scores_in_that_precision(model_dir, images):
    captions = ["A dog runs on the grass.", "Two children play."]
    batch = PairBatch(["a", "b"], captions, images[:2])
    fp32 = ClipScorer(model_dir)
    assert fp32.model.dtype == torch.float32 and fp32.version == f"{3 if 'siglip' in str(model_dir) else 4}:{model_dir}"
    bf16 = ClipScorer(model_dir, dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16 and bf16.version == f"{3 if 'siglip' in str(model_dir) else 4}:{model_dir}:bfloat16"
    low, high = bf16.score(batch)["clip_cosine"], fp32.score(batch)["clip_cosine"]
    assert low.dtype == np.float64
    np.testing.assert_allclose(low, high, atol=0.05)
    assert not np.allclose(low, high, atol=1e-7, rtol=0)  # really computed in bf16


def test_siglip_sigmoid_is_the_models_own_probability(tmp_path, images):
    """sigmoid(logits_per_image) as SiglipModel computes it, with a non-trivial scale and bias."""
    scorer = ClipScorer(make_tiny_siglip(tmp_path / "siglip"))
    with torch.no_grad():  # random init leaves scale 0 and bias 0, which would hide a missing term
        scorer.model.logit_scale.fill_(np.log(7.0))
        scorer.model.logit_bias.fill_(-0.5)
    captions = ["A dog runs on the grass.", "Two children play.", "A man climbs."]
    frame = scorer.score(PairBatch(["a", "b", "c"], captions, images))
    inputs = scorer.processor(text=[f"A photo depicts {c}" for c in captions], images=images, return_tensors="pt",
                              padding="max_length", truncation=True, max_length=16)
    with torch.no_grad():
        expected = torch.sigmoid(scorer.model(**inputs).logits_per_image.diagonal()).numpy()
    np.testing.assert_allclose(frame["clip_sigmoid"], expected, atol=1e-5)
    np.testing.assert_allclose(frame["clip_sigmoid"], 1 / (1 + np.exp(-(7.0 * frame["clip_cosine"] - 0.5))), atol=1e-6)
    assert frame["clip_sigmoid"].between(0, 1).all()
    missing = scorer.score(PairBatch(["a"], ["a dog"], [None]))
    assert np.isnan(missing["clip_sigmoid"][0]) and missing["clip_error"][0] == "no image"


def test_clip_has_no_sigmoid_column(tmp_path):
    scorer = ClipScorer(make_tiny_clip(tmp_path / "clip"))
    assert scorer.columns == ("clip_score", "clip_cosine", "clip_error") and not scorer.has_sigmoid


def make_tiny_siglip2(directory) -> str:
    """SigLIP2 NaFlex: patch 8, at most 16 patches, aspect ratio kept (spatial_shapes vary per image)."""
    from transformers import Siglip2Config, Siglip2Model, Siglip2Processor
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    from curation_pipeline_tests.tiny_models import _add_markers, _save, _seed, _train_tokenizer, _wrap

    _seed()
    tokenizer = _wrap(_add_markers(_train_tokenizer(["</s>", "<unk>", "<pad>"], digit_split=True), "$A </s>", "</s>"),
                      eos_token="</s>", unk_token="<unk>", pad_token="<pad>", model_max_length=16)
    config = Siglip2Config(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           num_patches=16, patch_size=8),
    )
    processor = Siglip2Processor(image_processor=Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16),
                                 tokenizer=tokenizer)
    return _save(Siglip2Model(config), processor, directory)


def test_siglip2_naflex_inputs_reach_the_model(tmp_path):
    scorer = ClipScorer(make_tiny_siglip2(tmp_path / "siglip2"))
    assert scorer.model.config.model_type == "siglip2" and scorer.has_sigmoid
    with torch.no_grad():
        scorer.model.logit_scale.fill_(np.log(5.0))
        scorer.model.logit_bias.fill_(0.3)
    rng = np.random.default_rng(0)
    shots = [Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")) for w, h in ((96, 32), (32, 96), (64, 64))]
    captions = ["A wide red barn.", "A tall tower.", "A square window."]
    frame = scorer.score(PairBatch(["a", "b", "c"], captions, shots))
    assert frame["clip_error"].isna().all()
    inputs = scorer.processor(text=[f"A photo depicts {c}" for c in captions], images=shots, return_tensors="pt",
                              padding="max_length", truncation=True, max_length=16, patch_size=8,
                              max_num_patches=16)
    # NaFlex keeps each image's aspect ratio: the grid differs per image, padding is masked
    assert inputs["spatial_shapes"].tolist() != [inputs["spatial_shapes"][0].tolist()] * 3
    assert not inputs["pixel_attention_mask"].bool().all()
    with torch.no_grad():
        out = scorer.model(**inputs)
    image = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
    text = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
    np.testing.assert_allclose(frame["clip_cosine"], (image * text).sum(-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(frame["clip_sigmoid"], torch.sigmoid(out.logits_per_image.diagonal()).numpy(),
                               atol=1e-5)
