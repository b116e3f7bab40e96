"""An AITQE (``mm``) checkpoint is run only with the config values its reference runs and the goldens pin: any other
is refused, naming the key and the value supported, not silently run otherwise. Generation suppresses only the
image placeholder (the reference keeps every vocab_size row), from one list, the loader's generation_config."""

from __future__ import annotations

import json
import shutil

import pytest

from curation_pipeline.models.released import UnknownLayoutError, load_released
from curation_pipeline_tests.tiny_models import RELEASED

MODEL, TOWER = RELEASED / "aitqe-tiny", str(RELEASED / "siglip-tiny-patch8-32")


def _with(tmp_path, **changes):
    copy = shutil.copytree(MODEL, tmp_path / "aitqe")
    config = json.loads((copy / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    return str(copy)


@pytest.mark.parametrize("changes, message", [
    ({"image_tile_tokens": 9}, "image_tile_tokens is 9; only 16 is supported"),
    ({"image_tile_tokens": None}, "image_tile_tokens is None; only 16 is supported"),
    ({"pooling_kernel": 2}, "pooling_kernel is 2; only 1 is supported"),
    ({"pooling_kernel": None}, "pooling_kernel is None; only 1 is supported"),
    ({"image_aspect_ratio": "pad"}, "image_aspect_ratio is 'pad'; only 'square' is supported"),
    ({"image_aspect_ratio": "anyres"}, "image_aspect_ratio is 'anyres'; only 'square' is supported"),
    ({"mm_projector_type": "mlp2x_gelu"}, "mm_projector_type is 'mlp2x_gelu'; only 'mlp' is supported"),
    ({"vision_model_name_or_path": "some/vit-tower"}, "has no 'siglip' in it"),
])
def test_a_config_the_reference_would_run_otherwise_is_refused(tmp_path, changes, message):
    with pytest.raises(UnknownLayoutError, match=message):
        load_released(_with(tmp_path, **changes), vision_tower=TOWER, device="cpu")


def test_a_clip_tower_is_refused(tmp_path):
    with pytest.raises(UnknownLayoutError, match="only a SigLIP tower"):
        load_released(_with(tmp_path, vision_model_name_or_path="siglip-named-clip"),
                      vision_tower=str(RELEASED / "clip-vit-tiny-patch8-32"), device="cpu")


def test_the_reference_defaults_load(tmp_path):
    """Keys the reference defaults (MMConfig: image_aspect_ratio and mm_projector_type) may be absent."""
    released = load_released(_with(tmp_path, image_aspect_ratio=None, mm_projector_type=None), vision_tower=TOWER,
                             device="cpu")
    assert released.image_tokens == 16 and not released.pad_to_square


def test_only_the_image_placeholder_is_suppressed_and_generate_keeps_that_list():
    from curation_pipeline.rewriting.aitqe import AitqeGenerator

    released = load_released(str(MODEL), vision_tower=TOWER, device="cpu")
    assert len(released.tokenizer) < released.model.config.text_config.vocab_size  # padding rows exist here
    assert released.model.generation_config.suppress_tokens == released.suppressed == [released.image_token_id]
    generator = AitqeGenerator(released, max_new_tokens=2, stop_strings=None)
    seen = {}
    real = released.model.generate
    released.model.generate = lambda **kwargs: seen.update(kwargs) or real(**kwargs)
    from PIL import Image

    generator.generate([Image.open(RELEASED / "images" / "wide_48x32.png").convert("RGB")], ["x"])
    assert "suppress_tokens" not in seen  # a call's list would replace the generation_config's


def test_mlm_filter_still_suppresses_its_padding_rows():
    released = load_released(str(RELEASED / "mlm-filter-qwen2.5-1.5b-tiny"), device="cpu",
                             vision_tower=str(RELEASED / "siglip-tiny-patch8-32"))
    rows = released.model.config.text_config.vocab_size
    assert released.suppressed == list(range(len(released.tokenizer), rows)) and len(released.suppressed) > 1
    assert released.model.generation_config.suppress_tokens == released.suppressed


def test_a_converted_aitqe_directory_is_refused_naming_the_original(tmp_path):
    """convert-model writes a directory transformers runs; this project asks the original checkpoint as its
    reference does, and the converted one (no chat template) would otherwise fail as a chat VLM."""
    from curation_pipeline.models.loading import ModelUnavailableError
    from curation_pipeline.models.released import convert_released
    from curation_pipeline.rewriting.aitqe import AitqeRewriter

    out = convert_released(str(MODEL), tmp_path / "out", vision_tower=TOWER)
    with pytest.raises(ModelUnavailableError, match=f"give the original checkpoint \\({MODEL}\\)"):
        AitqeRewriter(str(out), device="cpu")
