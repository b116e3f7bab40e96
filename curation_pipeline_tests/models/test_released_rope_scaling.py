"""A released checkpoint built on Llama-3.1 / 3.2 carries ``rope_scaling`` (``rope_type: llama3``) in its
config; mlm-filter-llama-3.2-3b is one. transformers does not know ``llava_llama``, so the tokenizer's look-up
fell back to a bare config that fails on ``rope_scaling`` with an AttributeError: such a checkpoint never
loaded. It loads now, with its text model's RoPE scaled as Llama-3.1 scales it."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from curation_pipeline.models.released import load_released
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.mlm import MlmFilterScorer
from curation_pipeline_tests.tiny_models import RELEASED

SCALING = {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
           "original_max_position_embeddings": 8192, "rope_type": "llama3"}


@pytest.fixture()
def scaled(tmp_path):
    """The tiny Llama-3 MLM-Filter checkpoint with a Llama-3.2 config's rope_scaling."""
    directory = tmp_path / "mlm-filter-llama-3.2-tiny"
    shutil.copytree(RELEASED / "mlm-filter-llama-3-8b-tiny", directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "rope_scaling": SCALING}))
    return directory


def _llama3_inv_freq(dim: int, base: float) -> torch.Tensor:
    """Llama-3.1's frequency scaling (Meta's ``apply_scaling``), written out from its definition."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    factor, low, high, old = (SCALING[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                                   "original_max_position_embeddings"))
    out = []
    for f in inv.tolist():
        wavelength = 2 * math.pi / f
        if wavelength < old / high:
            out.append(f)
        elif wavelength > old / low:
            out.append(f / factor)
        else:
            smooth = (old / wavelength - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return torch.tensor(out, dtype=torch.float64)


def test_a_checkpoint_with_llama3_rope_scaling_loads_and_scores(scaled):
    tower = str(RELEASED / "clip-vit-tiny-patch8-32")
    released = load_released(str(scaled), vision_tower=tower, device="cpu")
    text = released.model.config.text_config
    rotary = next(m for m in released.model.modules() if hasattr(m, "inv_freq"))
    dim = text.hidden_size // text.num_attention_heads
    base = text.rope_parameters["rope_theta"] if hasattr(text, "rope_parameters") else text.rope_theta
    expected = _llama3_inv_freq(dim, base)
    unscaled = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    assert not torch.allclose(expected, unscaled)  # the scaling changes some frequencies
    torch.testing.assert_close(rotary.inv_freq.double(), expected, rtol=1e-5, atol=0)

    scorer = MlmFilterScorer(str(scaled), vision_tower=tower, device="cpu")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    scores = scorer.score(PairBatch(["a", "b"], ["a dog on a beach", "two cats"], [image, image]))
    assert len(scores) == 2 and scores.notna().any().any()
