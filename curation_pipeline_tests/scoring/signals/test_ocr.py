import pytest
from PIL import Image, ImageDraw, ImageFont

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.signals.ocr import TextInImageScorer


def with_banner(image: Image.Image, text: str = "SUMMER SALE 50% OFF") -> Image.Image:
    """A caption banner across the bottom fifth, as ad and meme images carry."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    height = out.height // 5
    draw.rectangle([0, out.height - height, out.width, out.height], fill=(20, 20, 20))
    font = ImageFont.load_default(size=int(height * 0.6))
    draw.text((8, out.height - height + height // 6), text, font=font, fill=(255, 255, 255))
    return out


def with_watermark(image: Image.Image, text: str = "(c) stockphoto") -> Image.Image:
    """Semi-transparent white text in the middle, as stock-photo previews carry."""
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    font = ImageFont.load_default(size=max(12, base.height // 9))
    ImageDraw.Draw(layer).text((base.width // 10, base.height // 2), text, font=font, fill=(255, 255, 255, 170))
    return Image.alpha_composite(base, layer).convert("RGB")


def _width(path) -> int:
    with Image.open(path) as image:  # reads the header only
        return image.width


@pytest.fixture(scope="module")
def scorer():
    return TextInImageScorer()


@pytest.fixture(scope="module")
def photos(flickr_dir):
    paths = sorted((flickr_dir / "images").glob("*.jpg"))
    large = [p for p in paths if _width(p) >= 500][:2]
    return [Image.open(p).convert("RGB") for p in paths[:6] + large]


def score(scorer, images):
    return scorer.score(PairBatch([str(i) for i in range(len(images))], [None] * len(images), images))


def test_banner_adds_boxes_and_area(scorer, photos):
    clean = score(scorer, photos)
    banner = score(scorer, [with_banner(im) for im in photos])
    assert list(clean.columns) == list(scorer.columns)
    assert (banner["ocr_boxes"] >= 1).all()
    assert (banner["ocr_boxes"] > clean["ocr_boxes"]).mean() >= 0.75
    assert (banner["ocr_area_frac"] > clean["ocr_area_frac"] + 0.03).all()
    assert banner["ocr_area_frac"].between(0, 1).all()


def test_clean_photos_have_little_text(scorer, photos):
    assert score(scorer, photos)["ocr_area_frac"].median() < 0.01


def test_watermark_is_found_on_larger_photos(scorer, photos):
    large = [im for im in photos if im.width >= 500]
    marked = score(scorer, [with_watermark(im) for im in large])
    assert (marked["ocr_boxes"] >= 1).any()


def test_area_is_stable_under_downscaling(scorer, photos):
    """A 2000 px image is detected at max_side, so its area share matches the 500 px original."""
    image = with_banner(next(im for im in photos if im.width >= 500))
    big = image.resize((image.width * 4, image.height * 4))
    a, b = score(scorer, [image, big])["ocr_area_frac"]
    assert abs(a - b) < 0.02


def test_recognition_mode_and_missing_image(photos):
    scorer = TextInImageScorer(det_only=False, max_side=320)
    assert scorer.version == "1+max_side=320+det_only=False"
    assert TextInImageScorer().ident == "ocr@1"
    out = score(scorer, [with_banner(photos[0]), None])
    assert out["ocr_boxes"].iloc[0] >= 1
    assert out["ocr_boxes"].isna().iloc[1] and out["ocr_area_frac"].isna().iloc[1]
    assert out["ocr_error"].tolist() == [None, "no image"]


def test_a_missing_system_library_names_the_packages(monkeypatch):
    """OpenCV's wheel links libGL and GLib, which minimal Debian/Ubuntu images lack: the scorer names the packages
    instead of a bare traceback from deep in rapidocr."""
    import builtins
    import sys

    real = builtins.__import__

    def without_libgl(name, *args, **kwargs):
        if name == "rapidocr_onnxruntime":
            raise ImportError("libGL.so.1: cannot open shared object file: No such file or directory")
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "rapidocr_onnxruntime", raising=False)
    monkeypatch.setattr(builtins, "__import__", without_libgl)
    with pytest.raises(ImportError, match=r"libGL\.so\.1.*apt-get install libgl1 libglib2\.0-0"):
        TextInImageScorer()
