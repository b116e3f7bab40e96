"""Images of extreme aspect ratio cost the CLIP and MLM-Filter scorers bounded memory.

A CLIP processor resizes the SHORT side to its size before its centre crop, and padding to a square
(LLaVA) makes a canvas of the long side squared: a 100-byte 1x8000 PNG became 224 x 1,792,000
pixels (4 GB) and at 1x40000 the OOM killer ended the shard. Here the real tiny models' processors
are watched (what each resize takes and makes) while the real scorers run; ordinary images must reach
them untouched.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from curation_pipeline.models.aspect import MAX_ASPECT
from curation_pipeline.models.released import expand_to_square, load_released
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.clip import ClipScorer
from curation_pipeline.scoring.mlm import MlmFilterScorer
from curation_pipeline.shards.reader import decode_image
from curation_pipeline_tests.tiny_models import RELEASED, make_tiny_clip, make_tiny_siglip

THIN = [(1, 8000), (8000, 1)]  # width, height


def _png(width: int, height: int) -> Image.Image:
    """A banner as the pipeline gets it: a ~100-byte PNG, decoded by the reader."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 160, 40)).save(buffer, "PNG")
    image, info = decode_image(buffer.getvalue())
    assert info["decode_status"] == "ok" and image.size == (width, height)
    return image


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def resized(monkeypatch):
    """Watch an image processor: the largest image (pixels) any of its resizes took or made."""
    seen: list[int] = []

    def watch(image_processor):
        original = image_processor.resize

        def resize(*args, **kwargs):
            image = kwargs["image"] if "image" in kwargs else args[0]
            out = original(*args, **kwargs)
            seen.append(max(image.shape[-2] * image.shape[-1], out.shape[-2] * out.shape[-1]))
            return out

        monkeypatch.setattr(image_processor, "resize", resize)
        return seen

    return watch


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


def _side(image_processor) -> int:
    return image_processor.size["shortest_edge"]


@pytest.fixture
def clip_resized(monkeypatch):
    """Watch CLIPScore's own transform (``clipscore_pixels``): the largest image (pixels) a resize took or made."""
    import curation_pipeline.scoring.clip as clip

    seen: list[int] = []
    original = clip.clipscore_pixels

    def transform(image, n_px, *args, **kwargs):
        short, long = min(image.size), max(image.size)
        seen.append(max(short * long, n_px * int(n_px * long / short)))
        return original(image, n_px, *args, **kwargs)

    monkeypatch.setattr(clip, "clipscore_pixels", transform)
    return seen


@pytest.mark.parametrize("width,height", THIN)
def test_clip_scores_a_thin_banner_with_a_bounded_resize(clip_dir, clip_resized, width, height):
    scorer = ClipScorer(clip_dir)
    image_processor = scorer.processor.image_processor
    seen = clip_resized
    batch = PairBatch(["k"], ["a thin banner"], [_png(width, height)])
    prepared = scorer.prepare(batch)
    side = _side(image_processor)
    assert max(seen) <= 2 * MAX_ASPECT * side * side  # was side * 8000 * side
    assert prepared.chunks[0][1]["pixel_values"].shape == (1, 3, side, side)
    frame = scorer.score(batch, prepared)
    assert np.isfinite(frame["clip_cosine"][0]) and frame["clip_error"][0] is None


def test_clip_keeps_ordinary_images_exact_and_the_centre_of_extreme_ones(clip_dir):
    """The processor applied directly is the reference: ordinary images (photos, a 728x90 banner, 16:1)
    give its pixels exactly; a 3x500 strip, reduced, gives the same centre crop (within a level or two)."""
    scorer = ClipScorer(clip_dir)
    image_processor = scorer.processor.image_processor
    ordinary = [_noise(64, 48, 1), _noise(48, 64, 2), _noise(728, 90, 3), _noise(3, 48, 4), _noise(160, 10, 5)]
    extreme = [_noise(3, 500, 6), _noise(700, 9, 7)]
    batch = PairBatch([str(i) for i in range(7)], ["a caption"] * 7, ordinary + extreme)
    scorer.batch_size = 1
    ours = [inputs["pixel_values"] for _, inputs in scorer.prepare(batch).chunks]
    direct = [image_processor(images=[im], return_tensors="pt")["pixel_values"] for im in ordinary + extreme]
    for k in range(len(ordinary)):
        assert torch.equal(ours[k], direct[k]), k
    level = 2 / 255 / min(image_processor.image_std)  # two uint8 levels after normalising
    for k in range(len(ordinary), len(direct)):
        assert (ours[k] - direct[k]).abs().max() <= level + 1e-6, k


def test_siglip_resizes_the_whole_image_so_it_is_untouched(tmp_path, resized):
    """SigLIP squashes the image to its fixed size (bounded already): every pixel row still counts."""
    scorer = ClipScorer(make_tiny_siglip(tmp_path))
    image_processor = scorer.processor.image_processor
    image = _noise(1, 8000)
    seen = resized(image_processor)
    ours = scorer.prepare(PairBatch(["k"], ["a caption"], [image])).chunks[0][1]["pixel_values"]
    assert torch.equal(ours, image_processor(images=[image], return_tensors="pt")["pixel_values"])
    assert max(seen) <= 8000


@pytest.fixture(scope="module", params=[("mlm-filter-llava-13b-tiny", "clip-vit-tiny-patch8-32"),
                                        ("mlm-filter-qwen2.5-1.5b-tiny", "siglip-tiny-patch8-32")])
def released(request):
    name, tower = request.param
    return load_released(str(RELEASED / name), vision_tower=str(RELEASED / tower), device="cpu")


@pytest.mark.parametrize("pad", [False, True])
@pytest.mark.parametrize("width,height", THIN)
def test_released_pixel_values_of_a_thin_banner_are_bounded(released, resized, pad, width, height):
    image_processor = released.image_processor
    seen = resized(image_processor)
    pixels = released.pixel_values([_png(width, height)], pad=pad)
    size = image_processor.crop_size if "shortest_edge" in image_processor.size else image_processor.size
    assert pixels.shape == (1, 3, size["height"], size["width"])
    side = max(size["height"], size["width"], image_processor.size.get("shortest_edge") or 0)
    # padded: a canvas of at most MAX_ASPECT sides squared (was 8000 x 8000); else as CLIP's
    assert max(seen) <= ((MAX_ASPECT * side) ** 2 if pad else 2 * MAX_ASPECT * side * side)


@pytest.mark.parametrize("pad", [False, True])
def test_released_pixel_values_of_ordinary_images_are_the_processors(released, pad):
    image_processor = released.image_processor
    fill = tuple(int(x * 255) for x in image_processor.image_mean)
    for k, (width, height) in enumerate([(64, 48), (48, 64), (728, 90), (10, 160)]):
        image = _noise(width, height, k)
        direct = image_processor(images=[expand_to_square(image, fill) if pad else image],
                                 return_tensors="pt")["pixel_values"]
        assert torch.equal(released.pixel_values([image], pad=pad), direct), (width, height)


def test_mlm_filter_scores_a_thin_banner(resized):
    scorer = MlmFilterScorer(str(RELEASED / "mlm-filter-llava-13b-tiny"),
                             vision_tower=str(RELEASED / "clip-vit-tiny-patch8-32"), metrics=("itm",), min_mass=0.0)
    seen = resized(scorer.released.image_processor)
    frame = scorer.score(PairBatch(["a", "b"], ["a thin banner", "a thin banner"], [_png(*size) for size in THIN]))
    side = _side(scorer.released.image_processor)
    assert max(seen) <= 2 * MAX_ASPECT * side * side
    assert frame["mlm_itm_expected"].notna().all() and frame["mlm_itm_error"].isna().all()
