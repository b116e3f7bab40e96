"""CLIPScore's pixels are clipscore.py's: ``Resize(n_px, BICUBIC)``, ``CenterCrop(n_px)``, ``convert("RGB")``,
``ToTensor()``, ``Normalize`` on ``Image.open(path)``, as torchvision does them.

The expected tensors follow torchvision's documented rules with PIL and numpy (no torchvision here):
short side to n_px and long side ``int(n_px * long / short)``, resized by PIL in the file's own mode;
crop offset ``int(round((size - n_px) / 2.0))``; RGB after; ``/ 255`` and normalised in float32. The
same comparison against torchvision 0.28 itself (108 files: 12 sizes, RGB/P/L/LA/RGBA/1/I;16 PNG,
RGB/CMYK JPEG, n_px 32 and 224) was bit-for-bit equal.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.clip import ClipScorer, normalising_table
from curation_pipeline.shards.reader import decode_image, model_image
from curation_pipeline_tests.tiny_models import make_tiny_clip


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return ClipScorer(make_tiny_clip(tmp_path_factory.mktemp("clip")), device="cpu")


def _file(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _noise(width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _expected(data: bytes, n_px: int, image_processor) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if width <= height:
        size = (n_px, int(n_px * height / width))
    else:
        size = (int(n_px * width / height), n_px)
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = int(round((size[0] - n_px) / 2.0)), int(round((size[1] - n_px) / 2.0))
    rgb = np.array(image.crop((left, top, left + n_px, top + n_px)).convert("RGB"), dtype=np.uint8)
    pixels = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean = np.array(image_processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.array(image_processor.image_std, dtype=np.float32)[:, None, None]
    return (pixels - mean) / std


def _ours(scorer: ClipScorer, data: bytes) -> np.ndarray:
    image, info = decode_image(data)
    assert info["decode_status"] == "ok"
    prepared = scorer.prepare(PairBatch(["k"], ["a caption"], [image]))
    return prepared.chunks[0][1]["pixel_values"].numpy()[0]


@pytest.mark.parametrize("mode", ["RGB", "P", "RGBA", "L"])
@pytest.mark.parametrize("width,height", [(48, 35), (35, 48), (64, 48)])
def test_clip_pixels_are_clipscores(scorer, mode, width, height):
    """48x35 resizes to 43x32, whose crop starts at round(5.5) = 6, not transformers' 5; a P file is
    resized nearest by PIL and an RGBA one premultiplied, before the RGB conversion."""
    image = _noise(width, height)
    image = {"RGB": image, "P": image.quantize(64), "L": image.convert("L"),
             "RGBA": Image.merge("RGBA", [*image.split(), image.convert("L")])}[mode]
    data = _file(image)
    ours = _ours(scorer, data)
    expected = _expected(data, 32, scorer.processor.image_processor)
    assert ours.dtype == np.float32 and np.array_equal(ours, expected)


def test_the_released_models_still_get_the_rgb_decode():
    """The stored decode kept for CLIP leaves what MLM-Filter and AITQE are given as it was."""
    image = _noise(48, 35).quantize(64)
    data = _file(image)
    decoded, _ = decode_image(data)
    assert model_image(decoded) is decoded
    assert np.array_equal(np.array(model_image(decoded)), np.array(Image.open(io.BytesIO(data)).convert("RGB")))


def test_captions_are_cleaned_as_clip_tokenize_cleans_them(scorer, tmp_path):
    """clip.tokenize repairs mojibake and curly quotes (ftfy) and decodes HTML entities twice before its BPE;
    transformers' CLIP tokenizer does neither, so "Tom &amp; Jerry" became the tokens of '& amp ;'."""
    from curation_pipeline.scoring.clip import ClipScorer
    from curation_pipeline_tests.tiny_models import make_tiny_siglip

    assert scorer._text("Tom &amp;amp; Jerry") == "A photo depicts Tom & Jerry"
    assert scorer._text("“Happy Birthday” at the Caf\u00c3\u00a9") == 'A photo depicts "Happy Birthday" at the Caf\u00e9'
    tokens = scorer.processor.tokenizer([scorer._text("Tom &amp; Jerry")])["input_ids"][0]
    assert tokens == scorer.processor.tokenizer(["A photo depicts Tom & Jerry"])["input_ids"][0]
    siglip = ClipScorer(make_tiny_siglip(tmp_path / "siglip"), device="cpu")  # not CLIP: its own tokenizer's text
    assert siglip._text("Tom &amp; Jerry") == "A photo depicts Tom &amp; Jerry"


@pytest.mark.parametrize("mean,std", [((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
                                      ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), ((0.5,), (0.25,))])
def test_the_normalising_table_is_the_per_pixel_arithmetic(mean, std):
    """Every byte value, per channel, as ``/ 255`` then normalised in float32 (CLIP's and SigLIP's constants; one
    value for all channels broadcasts, as it did over the pixels)."""
    values = np.arange(256, dtype=np.uint8)
    pixels = np.stack([values] * 3).astype(np.float32) / np.float32(255)
    expected = (pixels - np.array(mean, dtype=np.float32)[:, None]) / np.array(std, dtype=np.float32)[:, None]
    table = normalising_table(mean, std)
    assert table.dtype == np.float32 and table.shape == (3, 256) and np.array_equal(table, expected)


def test_a_scalar_mean_and_std_broadcast_as_they_did_over_the_pixels():
    image = _noise(40, 30)
    from curation_pipeline.scoring.clip import clipscore_pixels

    assert np.array_equal(clipscore_pixels(image, 32, 0.5, np.float32(0.25)),
                          clipscore_pixels(image, 32, [0.5] * 3, (0.25, 0.25, 0.25)))


def test_a_mean_of_another_channel_count_is_refused():
    with pytest.raises(ValueError, match="image_mean has 4 values; RGB pixels need 1 or 3"):
        normalising_table((0.5, 0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_a_batch_of_images_gets_each_its_own_pixels(scorer):
    """The batch's rows are written in place: each must be its own image's, in order."""
    images = [_noise(48, 35), _noise(35, 48).convert("L"), _noise(40, 40).quantize(16)]
    datas = [_file(image) for image in images]
    decoded = [decode_image(data)[0] for data in datas]
    prepared = scorer.prepare(PairBatch(["a", "b", "c"], ["x", "y", "z"], decoded))
    pixels = prepared.chunks[0][1]["pixel_values"].numpy()
    assert pixels.shape == (3, 3, 32, 32)
    for row, data in enumerate(datas):
        assert np.array_equal(pixels[row], _expected(data, 32, scorer.processor.image_processor))
