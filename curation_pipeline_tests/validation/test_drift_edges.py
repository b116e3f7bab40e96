"""The drift check at its edges: a mean exactly on its ratio limit, the table against GX's own verdict,
identical one-length shards, and the words of scripts without spaces (half-width kana, the Han
extensions, the punctuation written against them)."""

import math

import pandas as pd
import pytest

from curation_pipeline.rewriting.verify import edit_ratio, length_ratio
from curation_pipeline.validation.drift import DriftThresholds, check_caption_length_drift
from curation_pipeline.validation.lengths import caption_lengths, words


def _captions(lengths: list[int]) -> pd.Series:
    return pd.Series([" ".join(["w"] * n) for n in lengths])


def _ok_column(markdown: str) -> dict[str, str]:
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): cells[-1].strip() for cells in rows[1:]}


@pytest.mark.parametrize("final, passes", [
    ([8, 9, 10, 10, 11] * 4, True),  # 192 of 240 words: exactly 0.8x (0.8 * 12.0 is 9.600000000000001)
    ([8, 9, 10, 10, 10] * 4, False),  # 188: 0.783x
    ([8, 9, 9, 10, 11] * 3 + [8, 9, 10, 10, 11], False),  # 189: 0.7875x
    ([13, 14, 15, 16, 17] * 4, True),  # 300: exactly 1.25x
    ([13, 14, 15, 16, 17] * 3 + [13, 14, 15, 16, 18], False),  # 301: 1.254x
])
def test_a_mean_exactly_on_its_ratio_limit_passes_and_one_past_it_fails(final, passes):
    result = check_caption_length_drift(_captions([10, 11, 12, 13, 14] * 4), _captions(final),
                                        DriftThresholds(max_kl=100, quantile_tolerance=1))
    assert result.passed is passes, result.failures
    assert _ok_column(result.to_markdown())["mean (words)"] == ("yes" if passes else "no")


def test_the_drift_table_shows_the_verdict_of_gx():
    """GX's quantile expectation takes a value within 1e-4 of a band's edge (90 - 0.7 * 90 is
    27.000000000000007): the check passed while its table said "no" on every quantile."""
    result = check_caption_length_drift(pd.Series(["x" * 90] * 20), pd.Series(["x" * 27] * 20),
                                        DriftThresholds(length_unit="chars", quantile_tolerance=0.7, max_kl=100,
                                                        mean_ratio_min=0.3))
    assert result.passed, result.failures
    ok = _ok_column(result.to_markdown())
    assert {ok[f"{p} (chars)"] for p in ("p10", "p25", "p50", "p75", "p90")} == {"yes"}
    assert ok["mean (chars)"] == ok["KL divergence"] == "yes"
    failed = check_caption_length_drift(pd.Series(["x" * 90] * 20), pd.Series(["x" * 26] * 20),
                                        DriftThresholds(length_unit="chars", quantile_tolerance=0.7, max_kl=100,
                                                        mean_ratio_min=0.1))
    assert not failed.passed and _ok_column(failed.to_markdown())["p50 (chars)"] == "no"
    assert _ok_column(failed.to_markdown())["mean (chars)"] == "yes"


@pytest.mark.parametrize("reference", [[3] * 50, [5] * 30 + [7] * 20])
def test_an_unchanged_shard_has_zero_kl_even_with_empty_reference_bins(reference):
    """One length L has the bin [L, L+1) between two empty tails ({5, 7}: an empty [6, 7)); the weight GX
    held out for empty bins cost identical captions log(1/0.99) = 0.01, failing max_kl=0."""
    result = check_caption_length_drift(_captions(reference), _captions(reference), DriftThresholds(max_kl=0))
    assert result.kl == 0.0 and result.passed, result.failures


def test_drift_into_an_empty_reference_bin_still_costs_kl():
    result = check_caption_length_drift(_captions([3] * 50), _captions([3] * 45 + [4] * 5),
                                        DriftThresholds(max_kl=0.2))
    # the holdout (0.01) spread over the two empty tails, as before
    assert result.kl == pytest.approx(0.9 * math.log(0.9 / 0.99) + 0.1 * math.log(0.1 / 0.005))
    assert not result.passed


@pytest.mark.parametrize("text, expected", [
    ("ｶﾀｶﾅﾉﾈｺ", 7),  # half-width katakana count as full-width do
    ("カタカナノネコ", 7),
    ("ｶﾞｲﾄﾞ", 3),  # a half-width voiced mark is part of its kana, as in "ガイド"
    ("𠮷𠮷𠮷", 3),  # CJK Extension B
    ("\U00030000\U0003134a", 2),  # Extension G
    ("\U00031350\U000323af", 2),  # Extension H
    ("我爱你，中国。", 5),  # punctuation against a character is part of its word, as in "dog."
    ("「東京タワー」の夜景", 8),
    ("中国(北京)", 4),
    ("ジョン・スミス", 6),
    ("一只狗在草地上跑 。", 9),  # a mark set apart by spaces is still a word, as " - " is
    ("dog, cat - a pet", 5),
    ("東京 tower 2020年", 5),
])
def test_words_of_scripts_without_spaces(text, expected):
    assert len(words(text)) == expected
    assert caption_lengths(pd.Series([text])).tolist() == [float(expected)]


def test_glued_punctuation_is_neither_a_word_nor_an_edit_to_the_rewrite_measures():
    assert length_ratio("我爱你，中国。", "我爱你中国") == 1.0
    assert edit_ratio("我爱你，中国。", "我爱你中国") == 0.0
    assert length_ratio("ｶﾀｶﾅ", "カタカナノネコ") == 7 / 4
