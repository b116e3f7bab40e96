import math

import pandas as pd
import pytest
from PIL import Image

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.datacomp import DataCompBasicRules

GOOD = "A black dog and a spotted dog are fighting on the road"


@pytest.fixture(scope="module")
def scorer() -> DataCompBasicRules:
    return DataCompBasicRules()


def score_one(scorer, caption, image=None) -> pd.Series:
    return scorer.score(PairBatch(["k"], [caption], [image])).iloc[0]


def rgb(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height))


class SizeOnlyImage(Image.Image):
    """An image whose pixels cannot be read: proves the scorer only looks at .size."""

    def __init__(self, size):
        super().__init__()
        self._size = size

    def load(self):
        raise AssertionError("pixels were read")

    def tobytes(self, *args, **kwargs):
        raise AssertionError("pixels were read")

    def getdata(self, band=None):
        raise AssertionError("pixels were read")


def test_columns_dtypes_and_index(scorer):
    df = scorer.score(PairBatch(["a", "b"], [GOOD, None], [rgb(300, 300), None]))
    assert tuple(df.columns) == scorer.columns
    assert isinstance(df.index, pd.RangeIndex) and list(df.index) == [0, 1]
    for col in ("datacomp_english", "datacomp_words_gt2", "datacomp_chars_gt5",
                "datacomp_min_side_ge200", "datacomp_aspect_le3", "datacomp_pass"):
        assert str(df[col].dtype) == "boolean", col
    assert df["datacomp_lang_score"].dtype == "float64"
    assert scorer.ident == "datacomp@3"
    assert scorer.needs_images is True


def test_good_pair_passes_everything(scorer):
    row = score_one(scorer, GOOD, rgb(500, 375))
    assert row["datacomp_lang"] == "en"
    assert 0.5 < row["datacomp_lang_score"] <= 1.0
    assert bool(row["datacomp_english"]) is True
    for col in ("datacomp_words_gt2", "datacomp_chars_gt5", "datacomp_min_side_ge200",
                "datacomp_aspect_le3", "datacomp_pass"):
        assert bool(row[col]) is True, col


def test_non_english_caption_fails_language_only(scorer):
    row = score_one(scorer, "Ein schwarzer Hund und ein gefleckter Hund spielen auf der Straße", rgb(500, 375))
    assert row["datacomp_lang"] == "de"
    assert not row["datacomp_english"]
    assert bool(row["datacomp_words_gt2"]) and bool(row["datacomp_min_side_ge200"])
    assert not row["datacomp_pass"]


def test_newlines_do_not_change_detection(scorer):
    one_line = score_one(scorer, "A dog runs across the green grass in the park")
    multi_line = score_one(scorer, "A dog runs across\nthe green grass\r\nin the park")
    assert multi_line["datacomp_lang"] == one_line["datacomp_lang"] == "en"
    assert multi_line["datacomp_lang_score"] == pytest.approx(one_line["datacomp_lang_score"], abs=1e-6)


def test_english_min_score_threshold():
    caption = "A dog runs on the grass"  # en, about 0.78 with the lite model
    loose = score_one(DataCompBasicRules(), caption)
    strict = score_one(DataCompBasicRules(english_min_score=0.99), caption)
    assert loose["datacomp_lang"] == strict["datacomp_lang"] == "en"
    assert loose["datacomp_lang_score"] < 0.99
    assert bool(loose["datacomp_english"]) is True
    assert bool(strict["datacomp_english"]) is False


@pytest.mark.parametrize(
    "caption, words_ok",
    [("A brown dog", True), ("Brown dog", False), ("Dog", False), ("  a   b  ", False), ("a b c", True)],
)
def test_more_than_two_words(scorer, caption, words_ok):
    assert bool(score_one(scorer, caption)["datacomp_words_gt2"]) is words_ok


@pytest.mark.parametrize(
    "caption, chars_ok",
    [("a b c", False), ("abcde", False), ("a b cd", True), ("abcdef", True)],
)
def test_more_than_five_characters(scorer, caption, chars_ok):
    assert bool(score_one(scorer, caption)["datacomp_chars_gt5"]) is chars_ok


def test_configurable_text_thresholds_and_version():
    scorer = DataCompBasicRules(min_words=3, min_chars=10)
    row = score_one(scorer, "A brown dog")  # 3 words, 11 chars
    assert bool(row["datacomp_words_gt2"]) is False
    assert bool(row["datacomp_chars_gt5"]) is True
    assert scorer.ident == "datacomp@3+min_words=3+min_chars=10"


@pytest.mark.parametrize(
    "size, min_side_ok, aspect_ok",
    [
        ((200, 200), True, True),
        ((199, 500), False, True),
        ((500, 199), False, True),
        ((200, 600), True, True),  # exactly 3.0
        ((200, 601), True, False),
        ((601, 200), True, False),
        ((1000, 250), True, False),
        ((150, 200), False, True),
    ],
)
def test_image_rules_on_generated_images(scorer, size, min_side_ok, aspect_ok):
    row = score_one(scorer, GOOD, rgb(*size))
    assert bool(row["datacomp_min_side_ge200"]) is min_side_ok
    assert bool(row["datacomp_aspect_le3"]) is aspect_ok
    assert bool(row["datacomp_pass"]) is (min_side_ok and aspect_ok)


def test_configurable_image_thresholds():
    row = score_one(DataCompBasicRules(min_side=100, max_aspect=1.5), GOOD, rgb(150, 200))
    assert bool(row["datacomp_min_side_ge200"]) is True
    assert bool(row["datacomp_aspect_le3"]) is True
    row = score_one(DataCompBasicRules(min_side=100, max_aspect=1.2), GOOD, rgb(150, 200))
    assert bool(row["datacomp_aspect_le3"]) is False


@pytest.mark.parametrize(
    "size",
    [
        (150, 200),  # thumbnail: fails min side
        (200, 200),  # exactly 200: passes
        (200, 66),  # fails both
    ],
)
def test_image_rules_on_real_photos(scorer, flickr_dir, size):
    """On the first photo of each size (Flickr8k, or the repository's own set: both hold all three)."""
    path = next(p for p in sorted((flickr_dir / "images").glob("*.jpg")) if Image.open(p).size == size)
    with Image.open(path) as image:
        assert image.size == size
        row = score_one(scorer, GOOD, image)
    short, long = min(size), max(size)
    assert bool(row["datacomp_min_side_ge200"]) is (short >= 200)
    assert bool(row["datacomp_aspect_le3"]) is (long / short <= 3)


def test_only_image_size_is_read(scorer):
    row = score_one(scorer, GOOD, SizeOnlyImage((640, 480)))
    assert bool(row["datacomp_pass"]) is True


def test_missing_image_is_unknown_not_failure(scorer):
    df = scorer.score(PairBatch(["good", "short"], [GOOD, "Dog"], [None, None]))
    assert df["datacomp_min_side_ge200"].isna().all()
    assert df["datacomp_aspect_le3"].isna().all()
    # Kleene logic: text passes + image unknown -> unknown; text fails -> False.
    assert df.loc[0, "datacomp_pass"] is pd.NA
    assert bool(df.loc[1, "datacomp_pass"]) is False


def test_missing_or_blank_caption(scorer):
    df = scorer.score(PairBatch(["none", "blank"], [None, "   "], [rgb(300, 300), rgb(300, 300)]))
    for i in (0, 1):
        row = df.iloc[i]
        assert row["datacomp_lang"] is None
        assert math.isnan(row["datacomp_lang_score"])
        assert bool(row["datacomp_english"]) is False
        assert bool(row["datacomp_words_gt2"]) is False
        assert bool(row["datacomp_chars_gt5"]) is False
        assert bool(row["datacomp_min_side_ge200"]) is True
        assert bool(row["datacomp_pass"]) is False


def test_empty_batch(scorer):
    df = scorer.score(PairBatch([], []))
    assert len(df) == 0 and tuple(df.columns) == scorer.columns


@pytest.mark.parametrize(
    "kwargs",
    [{"min_words": -1}, {"min_chars": -1}, {"min_side": 0}, {"max_aspect": 0.5},
     {"max_aspect": float("nan")}, {"english_min_score": 1.5}],
)
def test_invalid_thresholds_raise(kwargs):
    with pytest.raises(ValueError):
        DataCompBasicRules(**kwargs)


# --- as DataComp: fastText on the raw caption, image rules on the original size -----------------


@pytest.mark.parametrize("caption", ["TWO CHILDREN PLAY ON THE BEACH", "A DOG RUNS ON THE GRASS IN THE PARK",
                                     "Ein Hund", "A dog runs\non the grass"])
def test_language_id_sees_the_raw_caption(scorer, caption):
    """DataComp: ``model.predict(text.replace("\\n", " "))``, no lower-casing, no truncation."""
    fasttext_model = scorer._detector._get_model(low_memory=True)
    (label,), (probability,) = fasttext_model.predict(caption.replace("\n", " "), k=1)
    row = score_one(scorer, caption)
    assert row["datacomp_lang"] == label.removeprefix("__label__")
    assert row["datacomp_lang_score"] == pytest.approx(min(float(probability), 1.0), abs=1e-6)


def test_upper_case_english_is_not_lower_cased_into_english(scorer):
    # lower-cased, fastText says "en" (0.95); as written it says "fa": DataComp would not keep it
    row = score_one(scorer, "TWO CHILDREN PLAY ON THE BEACH", rgb(300, 300))
    assert row["datacomp_lang"] != "en" and bool(row["datacomp_english"]) is False


@pytest.mark.parametrize(
    "decoded, original, min_side_ok, aspect_ok",
    [
        ((100, 100), (640, 480), True, True),  # img2dataset thumbnail of a large image: passes as in DataComp
        ((640, 480), (150, 600), False, False),  # the json's size decides, not the decoded one
        ((256, 256), (1000, 250), True, False),  # resized to a square: aspect from the original
        ((150, 200), None, False, True),  # no size in the json: the decoded image's size
    ],
)
def test_image_rules_use_the_original_size_from_json(scorer, decoded, original, min_side_ok, aspect_ok):
    row = scorer.score(PairBatch(["k"], [GOOD], [rgb(*decoded)], [original])).iloc[0]
    assert bool(row["datacomp_min_side_ge200"]) is min_side_ok
    assert bool(row["datacomp_aspect_le3"]) is aspect_ok


def test_original_size_without_an_image_stays_unknown(scorer):
    df = scorer.score(PairBatch(["k"], [GOOD], [None], [(640, 480)]))
    assert df["datacomp_min_side_ge200"].isna().all() and df["datacomp_aspect_le3"].isna().all()
