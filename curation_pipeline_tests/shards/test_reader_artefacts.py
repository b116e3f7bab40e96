"""What the reader takes from how a sample was saved, and the two decodes of one image.

A json written by Python with a missing float (``NaN``) keeps its caption and original size; a caption
file's BOM and final line ending are not the caption; content signals see the image as shown (EXIF
orientation, transparency on white) while CLIP and the released checkpoints see it exactly as their
authors' code loads it, ``Image.open(f).convert("RGB")``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from curation_pipeline.models.released import expand_to_square, load_released
from curation_pipeline.scoring.clip import ClipScorer
from curation_pipeline.scoring.text_quality import caption_rules
from curation_pipeline.shards.reader import (ShardReader, decode_image, iter_pair_batches, model_image, parse_meta,
                                             reference_decode)
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.shards import faults
from curation_pipeline_tests.tiny_models import RELEASED, make_tiny_clip

pytestmark = pytest.mark.faults  # cited in docs/faults.md: runs with -m faults

CAPTION = "A brown dog runs across a green lawn."


def _read(path) -> dict:
    return {s.key: s for s in ShardReader(str(path), "s")}


# --- json ---------------------------------------------------------------------------------------

def test_a_json_with_nan_keeps_its_caption_and_original_size(tmp_path):
    """``json.dumps`` of a row with a missing float writes NaN; webdataset's json.loads reads it."""
    meta = {"caption": CAPTION, "original_width": 640, "original_height": 480, "pwatermark": math.nan,
            "range": [math.inf, -math.inf]}
    path = builders.write_members(tmp_path / "s.tar", [
        ("a.jpg", faults.jpeg()), ("a.json", json.dumps(meta).encode()),
        ("b.jpg", faults.jpeg()), ("b.json", b"\xef\xbb\xbf" + json.dumps({"caption": "A cat."}).encode()),
    ])
    samples = _read(path)
    a = samples["a"]
    assert (a.caption, a.record["caption_source"], a.original_size) == (CAPTION, "json", (640, 480))
    assert json.loads(a.record["meta_json"]) == {**meta, "pwatermark": None, "range": [None, None]}
    assert a.record["meta_error"] == "a.json: 3 non-finite numbers (NaN, Infinity, -Infinity) replaced by null"
    assert samples["b"].caption == "A cat." and samples["b"].record["meta_error"] is None  # a BOM is no error


def test_non_finite_numbers_are_null_beside_other_repairs():
    meta, error = parse_meta(b'{"x": 1e999, "y": 2.5, "note": "a\\ud800b"}', "k.json")
    assert meta == {"x": None, "y": 2.5, "note": "a\ufffdb"}
    assert error == "k.json: lone surrogates in json strings replaced by U+FFFD; 1 non-finite number (1e999) replaced by null"


# --- captions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [CAPTION + "\n", CAPTION + "\r\n", CAPTION + "\r", CAPTION + "\n\n",
                                 "\ufeff" + CAPTION, "\ufeff" + CAPTION + "\r\n"])
def test_how_a_caption_file_was_saved_is_not_the_caption(tmp_path, raw):
    path = builders.write_members(tmp_path / "s.tar", [("a.jpg", faults.jpeg()), ("a.txt", raw.encode())])
    sample = _read(path)["a"]
    assert sample.caption == CAPTION and caption_rules(sample.caption) == []
    assert sample.record["caption_problem"] is None and sample.record["caption_chars"] == len(CAPTION)
    assert sample.record["caption_sha256"] == hashlib.sha256(CAPTION.encode()).hexdigest()[:32]


def test_a_captions_own_whitespace_is_kept_for_the_rules_and_the_cleaner(tmp_path):
    """Only the file's artefacts go: spaces, tabs and inner line breaks are the caption's own (text quality
    flags them, the cleaner's recorded rewrite removes them); a json caption is a string, taken whole."""
    path = builders.write_members(tmp_path / "s.tar", [
        ("a.jpg", faults.jpeg()), ("a.txt", f"  {CAPTION} \n".encode()),
        ("b.jpg", faults.jpeg()), ("b.txt", f"{CAPTION}\n\tA cat.\n".encode()),
        ("c.jpg", faults.jpeg()), ("c.json", json.dumps({"caption": CAPTION + "\n"}).encode()),
        ("d.jpg", faults.jpeg()), ("d.txt", b"\n"),
    ])
    samples = _read(path)
    assert samples["a"].caption == f"  {CAPTION} " and "whitespace" in caption_rules(samples["a"].caption)
    assert samples["b"].caption == f"{CAPTION}\n\tA cat."
    assert samples["c"].caption == CAPTION + "\n"
    assert samples["d"].caption == "" and caption_rules("") == ["empty"]


# --- images -------------------------------------------------------------------------------------

def _rotated_jpeg(orientation: int = 6) -> bytes:
    image = Image.fromarray(np.random.default_rng(orientation).integers(0, 255, (200, 400, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def _alpha_png(mode: str = "RGBA", opaque: bool = False) -> bytes:
    """Coloured pixels under a half-transparent alpha: dropping alpha and compositing on white differ."""
    rng = np.random.default_rng(1)
    alpha = np.full((64, 96), 255, np.uint8) if opaque else rng.integers(0, 256, (64, 96), dtype=np.uint8)
    bands = 3 if mode == "RGBA" else 1
    colour = rng.integers(0, 256, (64, 96, bands), dtype=np.uint8)
    return faults.png(Image.fromarray(np.dstack([colour, alpha]).squeeze(), mode))


def _palette_png(used: bool) -> bytes:
    image = Image.new("P", (40, 30), 1)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    if used:
        image.paste(0, (0, 0, 20, 30))
    image.info["transparency"] = 0
    return faults.png(image)


def _reference(data: bytes) -> Image.Image:
    """MLM_Filter's webdataset ``pilrgb`` (and AITQE's loader)."""
    return Image.open(io.BytesIO(data)).convert("RGB")


def _opened(data: bytes) -> Image.Image:
    """clipscore.py's: ``Image.open``, resized in the file's own mode, converted to RGB after."""
    return Image.open(io.BytesIO(data))


# name -> (bytes, whether the reader's decode differs from the reference's)
IMAGES = {
    **{f"orientation{o}": (_rotated_jpeg(o), o != 1) for o in range(1, 9)},
    "rgba": (_alpha_png(), True), "rgba_opaque": (_alpha_png(opaque=True), False),
    "la": (_alpha_png("LA"), True), "palette_transparent": (_palette_png(True), True),
    "palette_unused_transparency": (_palette_png(False), False), "png16": (faults.png16(), True),
    "cmyk": (faults.cmyk_jpeg(), False), "grey": (faults.jpeg(mode="L"), False),
    "gif": (faults.animated_gif(), False), "rgb": (faults.jpeg(), False),
}


@pytest.mark.parametrize("name", list(IMAGES))
def test_models_get_the_reference_decode_and_a_second_decode_only_where_it_differs(name):
    data, differs = IMAGES[name]
    image, info = decode_image(data)
    reference = _reference(data)
    assert info["decode_status"] == "ok"
    assert np.array_equal(np.asarray(model_image(image)), np.asarray(reference))
    assert (reference_decode(image) is not None) == differs
    assert (reference_decode(image.convert("RGB")) is not None) == differs  # as the MLM scorer hands it on
    assert reference_decode(image.resize((8, 8))) is None  # a resized copy is not the reader's image
    if differs:
        assert not np.array_equal(np.asarray(image), np.asarray(reference))


def test_content_signals_see_the_corrected_image(tmp_path):
    path = builders.write_members(tmp_path / "s.tar", [
        ("r.jpg", IMAGES["orientation6"][0]), ("r.txt", b"rotated"),
        ("t.png", IMAGES["rgba"][0]), ("t.txt", b"transparent"),
    ])
    (batch, _), = iter_pair_batches(str(path), "s")
    rotated, transparent = batch.images
    assert rotated.size == (200, 400) and model_image(rotated).size == (400, 200)
    rgba = Image.open(io.BytesIO(IMAGES["rgba"][0]))
    white = Image.new("RGB", rgba.size, (255, 255, 255))
    white.paste(rgba, mask=rgba.getchannel("A"))
    assert np.array_equal(np.asarray(transparent), np.asarray(white))
    # verify-only decodes (no scorer reads pixels) carry nothing extra
    (verified, _), = iter_pair_batches(str(path), "s", decode="verify")
    assert all(reference_decode(im) is None for im in verified.images)


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    path = tmp_path_factory.mktemp("artefacts") / "s.tar"
    return builders.write_members(path, [
        ("r.jpg", IMAGES["orientation6"][0]), ("r.txt", b"A rotated photo of noise."),
        ("t.png", IMAGES["rgba"][0]), ("t.txt", b"A transparent picture of noise."),
        ("p.jpg", IMAGES["rgb"][0]), ("p.txt", b"A plain photo of noise."),
    ])


def test_clip_scores_the_reference_decode(shard, tmp_path):
    scorer = ClipScorer(make_tiny_clip(tmp_path / "clip"), batch_size=8)
    (batch, _), = iter_pair_batches(str(shard), "s")
    (rows, inputs), = scorer.prepare(batch).chunks
    texts = [scorer._text(c) for c in batch.captions]
    data = [IMAGES[name][0] for name in ("orientation6", "rgba", "rgb")]
    expected = scorer.inputs([_opened(d) for d in data], texts)
    assert rows == [0, 1, 2] and torch.equal(inputs["pixel_values"], expected["pixel_values"])
    corrected = scorer.inputs(batch.images, texts)["pixel_values"]
    assert not torch.equal(corrected[0], expected["pixel_values"][0])
    assert not torch.equal(corrected[1], expected["pixel_values"][1])


def test_released_checkpoints_are_given_the_reference_decode(shard):
    released = load_released(str(RELEASED / "mlm-filter-llava-13b-tiny"),
                             vision_tower=str(RELEASED / "clip-vit-tiny-patch8-32"))
    (batch, _), = iter_pair_batches(str(shard), "s")
    references = [_reference(IMAGES[name][0]) for name in ("orientation6", "rgba", "rgb")]
    fill = tuple(int(x * 255) for x in released.image_processor.image_mean)
    for pad in (False, True):
        want = [expand_to_square(im, fill) for im in references] if pad else references
        expected = released.image_processor(images=want, return_tensors="pt")["pixel_values"]
        # the MLM scorer converts before handing images on; AITQE hands the batch's images as they are
        for images in ([im.convert("RGB") for im in batch.images], batch.images):
            assert torch.equal(released.pixel_values(images, pad=pad), expected)


def test_the_ray_path_hands_the_models_the_same_decode(shard):
    pytest.importorskip("ray")
    from curation_pipeline.compute import ray_data

    (table,) = ray_data.read_shard_batches(str(shard), "s", 16)
    (row,) = ray_data.decode_batches(table).to_pylist()
    images = ray_data._images(row)
    (batch, _), = iter_pair_batches(str(shard), "s")
    for ours, local in zip(images, batch.images):
        assert np.array_equal(np.asarray(ours), np.asarray(local))
        assert np.array_equal(np.asarray(model_image(ours)), np.asarray(model_image(local)))
    assert [reference_decode(im) is not None for im in images] == [True, True, False]


@pytest.mark.parametrize("name, values", [
    ("int32 holding 8-bit values", lambda a: a.astype(np.int32)),
    ("int32 holding 16-bit values", lambda a: (a.astype(np.int64) * 257).astype(np.int32)),
    ("16-bit", lambda a: (a.astype(np.uint32) * 257).astype(np.uint16)),
    ("int32 of the full signed range", lambda a: (a.astype(np.int64) * ((1 << 31) - 1) // 255).astype(np.int32)),
    ("int32 of 24 bits", lambda a: (a.astype(np.int64) * ((1 << 24) - 1) // 255).astype(np.int32)),
    ("float in 0-1", lambda a: (a / 255).astype(np.float32)),
    ("float in 0-255", lambda a: a.astype(np.float32)),
])
def test_wide_and_float_grey_images_decode_to_the_grey_they_show(name, values):
    """A 32-bit TIFF of 8-bit values was divided by 256 (black: dropped as image_underexposed), and a 0-1 float
    TIFF clipped to black: each decodes to the pixels of the same picture as 8-bit grey."""
    grey = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(values(grey)).save(buffer, "TIFF")
    image, info = decode_image(buffer.getvalue())
    assert info["decode_status"] == "ok", info
    assert np.abs(np.asarray(image)[..., 0].astype(int) - grey).max() <= 1, name
