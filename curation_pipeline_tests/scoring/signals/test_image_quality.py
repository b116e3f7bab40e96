import numpy as np
import pytest
from PIL import Image, ImageFilter

from curation_pipeline.pairs import PairBatch
from curation_pipeline.decisions.policy import DecisionPolicy
from curation_pipeline.scoring.signals.image_quality import ImageQualityScorer


def score(images):
    return ImageQualityScorer().score(PairBatch([str(i) for i in range(len(images))], [None] * len(images), images))


def _width(path) -> int:
    with Image.open(path) as image:
        return image.width


@pytest.fixture(scope="module")
def photos(flickr_dir):
    paths = sorted((flickr_dir / "images").glob("*.jpg"))
    large = [p for p in paths if _width(p) >= 500][:4]
    return [Image.open(p).convert("RGB") for p in paths[:8] + large]


def test_blurred_copy_is_less_sharp(photos):
    """A blur of 1% of the image side (2 px on a 200 px thumbnail) fails the bound."""
    sharp = score(photos)["iq_sharpness"]
    blurred = score([im.filter(ImageFilter.GaussianBlur(max(im.size) / 100)) for im in photos])["iq_sharpness"]
    assert (blurred < sharp / 5).all()
    low = 100.0  # a sharpness bound (policy.min_sharpness) that tells the two apart
    assert (sharp >= low).all() and (blurred < low).all()


def test_sharpness_is_comparable_across_sizes(photos):
    """Thumbnails of a 500 px photo score close to it; the raw variance would not."""
    large = [im for im in photos if im.width >= 500]
    full = score(large)["iq_sharpness"].to_numpy()
    for factor in (1.3, 2, 3):
        small = [im.resize((int(im.width / factor), int(im.height / factor)), Image.LANCZOS) for im in large]
        ratio = score(small)["iq_sharpness"].to_numpy() / full
        assert np.all((ratio > 0.7) & (ratio < 1.4)), (factor, ratio)


def test_black_and_white_frames():
    out = score([Image.new("RGB", (320, 240), (0, 0, 0)), Image.new("RGB", (320, 240), (255, 255, 255))])
    black, white = out.iloc[0], out.iloc[1]
    assert black["iq_brightness"] == 0 and black["iq_dark_frac"] == 1 and black["iq_bright_frac"] == 0
    assert white["iq_brightness"] == 1 and white["iq_bright_frac"] == 1 and white["iq_dark_frac"] == 0
    assert (out["iq_entropy"] == 0).all() and (out["iq_sharpness"] == 0).all()


def test_real_photos_pass_the_policy_default_bounds(photos):
    """The policy holds the only image-quality bounds; clean photos must pass its defaults."""
    out, policy = score(photos), DecisionPolicy()
    assert (out["iq_brightness"] >= policy.min_brightness).all() and (out["iq_brightness"] <= policy.max_brightness).all()
    assert (out["iq_contrast"] >= policy.min_contrast).all() and policy.min_entropy is None
    assert out["iq_error"].isna().all()


def test_a_flat_image_is_told_by_its_contrast_not_its_entropy():
    """A two-tone logo at thumbnail size has under 1 bit of entropy and is as sharp as images get: not flat. A blank
    frame with a little noise has over 2 bits and nothing in it: flat. So is a placeholder with a line of text."""
    from PIL import ImageDraw

    from curation_pipeline.decisions.policy import image_drop_reasons

    logo = np.full((164, 200), 255, dtype=np.uint8)
    logo[40:120, 50:150] = 0  # black on white, bilevel
    noise = np.clip(128 + np.random.default_rng(0).normal(0, 1.5, (240, 320)), 0, 255).astype(np.uint8)
    placeholder = Image.new("RGB", (320, 240), (230, 230, 230))
    ImageDraw.Draw(placeholder).text((100, 110), "No image available", fill=(120, 120, 120))
    out = score([Image.fromarray(logo).convert("RGB"), Image.fromarray(noise).convert("RGB"), placeholder])
    assert out["iq_entropy"].iloc[0] < 1.0 < out["iq_entropy"].iloc[1]  # entropy would judge them the other way
    reasons = image_drop_reasons(out.assign(decode_status="ok"), DecisionPolicy())
    assert reasons.isna().tolist() == [True, False, False] and reasons.iloc[1:].tolist() == ["image_flat"] * 2


def test_entropy_of_a_two_level_image_is_one_bit():
    half = np.zeros((64, 64), dtype=np.uint8)
    half[:, 32:] = 200
    assert score([Image.fromarray(half).convert("RGB")])["iq_entropy"].iloc[0] == pytest.approx(1.0)


def test_missing_and_degenerate_images():
    out = score([None, Image.new("RGB", (1000, 2), (90, 90, 90))])
    scorer = ImageQualityScorer()
    assert list(out.columns) == list(scorer.columns)
    assert out.iloc[0][list(scorer.columns[:-1])].isna().all() and out["iq_error"].iloc[0] == "no image"
    assert np.isnan(out["iq_sharpness"].iloc[1]) and out["iq_brightness"].iloc[1] == pytest.approx(90 / 255)
    assert "thin" in out["iq_error"].iloc[1]


def test_cpu_threads_counts_the_cores_this_process_may_use(monkeypatch):
    import os

    import curation_pipeline.scoring.signals as signals

    monkeypatch.delenv("CURATION_THREADS", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # no instance: one run at a time
    assert signals.cpu_threads() == len(os.sched_getaffinity(0))
