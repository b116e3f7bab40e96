"""Chat VLMs whose processors transformers 5 builds with a video processor (torchvision) load and run here,
where torchvision is not installed: the images-only processor (``loading.IMAGES_ONLY_PROCESSORS``).

Checkpoints are written in the hub layouts (no video processor config). Parity with the standard processor
(torchvision installed, PIL image processor) was checked outside the suite, where torchvision can be
installed: same prompts, input ids, pixels, rewrites and scores. Here the processor's output is checked
against its parts: the tokenizer's rendering of the chat template and the PIL image processor's pixels.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from curation_pipeline.models.loading import load_vlm
from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.vlm import VlmRewriter
from curation_pipeline.scoring.mlm.scorer import MlmFilterScorer
from curation_pipeline_tests import tiny_models

FAMILIES = {
    "smolvlm": tiny_models.make_tiny_smolvlm,
    "llava_onevision": tiny_models.make_tiny_llava_onevision,
    "qwen2vl": tiny_models.make_tiny_qwen2vl,
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def vlm_dir(request, tmp_path_factory):
    return FAMILIES[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def batch(flickr_dir):
    paths = sorted((flickr_dir / "images").glob("*.jpg"))[:2]
    images = [Image.open(p).convert("RGB") for p in paths] + [Image.new("RGB", (50, 20), (200, 30, 30))]
    return PairBatch(["a", "b", "c"], ["A black dog runs through the grass.", "Two children play.", None], images)


def test_loads_with_its_pil_image_processor_and_no_video_processor(vlm_dir):
    from transformers import is_torchvision_available

    model, processor = load_vlm(vlm_dir)
    assert processor.chat_template and not model.training
    if not is_torchvision_available():
        assert type(processor).__name__.endswith("ImagesOnly")
        assert not hasattr(processor, "video_processor")
        assert type(processor.image_processor).__name__.endswith("Pil")


def test_processor_output_is_its_parts(vlm_dir, batch):
    """The chat template renders as the tokenizer renders it; the pixels are the image processor's."""
    _, processor = load_vlm(vlm_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == processor.tokenizer.apply_chat_template(
        messages, chat_template=processor.chat_template, add_generation_prompt=True, tokenize=False)
    images = [[im] for im in batch.images]
    inputs = processor(text=[text] * len(images), images=images, padding=True, padding_side="left",
                       return_tensors="pt")
    pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    assert torch.equal(inputs["pixel_values"], pixels)
    image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert ((inputs["input_ids"] == image_token_id).sum(-1) > 0).all()


def test_rewrites_batched_as_one_by_one(vlm_dir, batch):
    """A batch of prompts gets the replies each prompt gets alone (SmolVLM's processor reads a flat image
    list as one prompt's images: a batch over 1 failed)."""
    together = VlmRewriter(vlm_dir, max_new_tokens=6, batch_size=len(batch)).rewrite(batch)
    alone = VlmRewriter(vlm_dir, max_new_tokens=6, batch_size=1).rewrite(batch)
    assert len(together) == len(batch)
    assert all(isinstance(c.raw, str) and (c.caption is not None or c.error) for c in together)
    assert [(c.raw, c.caption, c.error) for c in together] == [(c.raw, c.caption, c.error) for c in alone]


def test_scores_batched_as_one_by_one(vlm_dir, batch):
    """Both modes score; a batch of two prompts scores as each prompt alone."""
    scored = PairBatch(batch.keys, [c or "A red banner." for c in batch.captions], batch.images)
    for mode in ("logits", "generate"):
        scorer = MlmFilterScorer(vlm_dir, metrics=("itm",), mode=mode, min_mass=0.0, batch_size=2)
        together = scorer.score(scored)
        scorer.batch_size = 1
        alone = scorer.score(scored)
        assert together["mlm_itm_error"].tolist() == alone["mlm_itm_error"].tolist()
        np.testing.assert_allclose(together["mlm_itm"].to_numpy(), alone["mlm_itm"].to_numpy(), equal_nan=True)
        if mode == "logits":
            values = together["mlm_itm_expected"].to_numpy()
            assert np.isfinite(values).all()
            np.testing.assert_allclose(values, alone["mlm_itm_expected"].to_numpy(), atol=1e-3)
