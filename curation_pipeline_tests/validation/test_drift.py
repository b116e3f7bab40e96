"""Caption length drift on human-style captions (five per photo, written for the repository's own photo
set, ``curation_pipeline_tests/photos.py``: the same numbers on every machine, no ../shared needed):
another caption of the same photo passes, padding and truncation fail."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from curation_pipeline.validation import (
    DriftThresholds,
    caption_lengths,
    check_caption_length_drift,
    reference_partition,
)

# The tolerances these expectations were written for (tighter than the pipeline's defaults).
TIGHT = DriftThresholds(max_kl=0.10, quantile_tolerance=0.25, quantile_abs_floor=2.0)
BOILERPLATE = " This photograph was automatically described by a captioning model for a large scale curation dataset."


@pytest.fixture(scope="module")
def captions() -> pd.DataFrame:
    """1,000 rows (one per photo), one column per caption (5 human-style captions each)."""
    from curation_pipeline_tests.photos import caption_rows

    return pd.DataFrame(caption_rows(1000), columns=[f"c{i}" for i in range(5)])


def test_caption_lengths_count_none_and_empty_as_zero():
    lengths = caption_lengths(pd.Series(["  a dog runs ", "", None, np.nan, "x"]))
    assert lengths.tolist() == [3.0, 0.0, 0.0, 0.0, 1.0]
    assert caption_lengths(pd.Series(["abc", None]), "chars").tolist() == [3.0, 0.0]


def test_words_are_whitespace_tokens_and_each_character_of_a_script_without_spaces(captions):
    """Latin text counts as str.split() does; Chinese, Japanese or Thai captions count a word a character,
    so a rewrite that triples them is drift, as it is in English."""
    english = pd.concat([captions[c] for c in captions.columns], ignore_index=True)
    assert caption_lengths(english).tolist() == english.str.split().str.len().astype(float).tolist()
    assert caption_lengths(pd.Series(["一只狗在海滩上", "東京 tower 2020年", "ภาษาไทย test"])).tolist() == [7.0, 5.0, 8.0]
    rng = np.random.default_rng(0)
    han = [chr(c) for c in range(0x4E00, 0x4E00 + 500)]
    chinese = pd.Series(["".join(rng.choice(han, size=int(rng.integers(5, 15)))) for _ in range(200)])
    assert check_caption_length_drift(chinese, chinese.sample(frac=1, random_state=1)).passed
    tripled = check_caption_length_drift(chinese, chinese * 3)
    assert not tripled.passed and tripled.mean_ratio == pytest.approx(3.0)


def test_boilerplate_is_fifteen_words():
    assert len(BOILERPLATE.split()) == 15


def test_another_human_caption_passes(captions):
    result = check_caption_length_drift(captions["c0"], captions["c1"])
    assert result.passed, result.failures
    assert result.failures == []
    assert (result.n_original, result.n_final) == (1000, 1000)
    assert result.mean_original == pytest.approx(10.622)
    assert result.mean_final == pytest.approx(10.628)
    assert result.mean_ratio == pytest.approx(10.628 / 10.622)
    assert 0 < result.kl < 0.02
    assert result.quantiles_original == {0.1: 8.0, 0.25: 9.0, 0.5: 10.0, 0.75: 12.0, 0.9: 13.0}
    assert [e["type"] for e in result.expectations] == [
        "expect_column_kl_divergence_to_be_less_than",
        "expect_column_mean_to_be_between",
        "expect_column_quantile_values_to_be_between",
    ]
    assert all(e["success"] for e in result.expectations)
    assert result.expectations[0]["observed_value"] == pytest.approx(result.kl)
    assert result.expectations[1]["observed_value"] == pytest.approx(10.628)


@pytest.mark.parametrize("column", ["c2", "c3", "c4"])
def test_every_other_human_caption_passes(captions, column):
    assert check_caption_length_drift(captions["c0"], captions[column]).passed


def test_identical_captions_have_zero_kl(captions):
    result = check_caption_length_drift(captions["c0"], captions["c0"])
    assert result.passed
    assert result.kl == pytest.approx(0.0, abs=1e-12)
    assert result.mean_ratio == 1.0
    assert result.quantiles_final == result.quantiles_original


def test_boilerplate_on_half_the_captions_fails_on_mean_and_kl(captions):
    final = captions["c0"].copy()
    final.iloc[::2] = final.iloc[::2] + BOILERPLATE
    result = check_caption_length_drift(captions["c0"], final, TIGHT)
    assert not result.passed
    assert result.mean_final == pytest.approx(10.622 + 7.5)
    assert result.mean_ratio == pytest.approx(18.122 / 10.622)
    assert "mean caption length grew 1.71x (10.6 -> 18.1 words), allowed 0.80-1.25x" in result.failures
    kl_failures = [f for f in result.failures if f.startswith("caption length distribution drifted")]
    assert kl_failures == [f"caption length distribution drifted: KL divergence {result.kl:.3f} over 7 "
                           "reference-quantile bins, allowed <= 0.1"]
    assert result.kl > 0.3
    assert not result.expectations[0]["success"] and not result.expectations[1]["success"]


def test_truncating_to_two_words_fails(captions):
    final = captions["c0"].str.split().str[:2].str.join(" ")
    result = check_caption_length_drift(captions["c0"], final, TIGHT)
    assert not result.passed
    assert set(result.quantiles_final.values()) == {2.0}
    assert "mean caption length shrank to 0.19x (10.6 -> 2.0 words), allowed 0.80-1.25x" in result.failures
    assert result.failures[-1].startswith("caption length quantiles out of band (words): p10 8 -> 2 (allowed 6-10), p25 9 -> 2 (allowed 6.75-11.25), ")
    assert result.kl > 1.0


def test_too_few_rows_hold_only_the_mean_of_the_same_pairs(captions):
    """Below min_rows a distribution says too little; the same pairs' mean still moves only by what rewriting
    changed, so it is held to its limits (padded rewrites of 16 kept pairs were published)."""
    padded = check_caption_length_drift(captions["c0"][:19], captions["c0"][:19].str.upper() + " extra words here")
    assert not padded.passed and math.isnan(padded.kl) and len(padded.expectations) == 1
    assert padded.note == ("too few rows to compare (original 19, final 19; min_rows 20): the distribution not "
                           "compared, the mean held to its limits")
    (failure,) = padded.failures
    assert failure.startswith("mean caption length grew ") and failure.endswith("allowed 0.80-1.25x")
    assert "| mean (words) |" in padded.to_markdown() and "KL divergence" not in padded.to_markdown()
    same = check_caption_length_drift(captions["c0"][:19], captions["c0"][:19])
    assert same.passed and same.ok == {"mean": True} and same.failures == []
    # two sides of different rows (not the same pairs): nothing compared
    result = check_caption_length_drift(captions["c0"][:19], captions["c0"][:18].str.upper() + " extra words here")
    assert result.passed
    assert result.note == "too few rows to compare (original 19, final 18; min_rows 20)"
    assert math.isnan(result.kl)
    assert result.expectations == []
    meta = result.to_metadata()
    assert "drift_kl" not in meta
    assert "KL divergence" not in result.to_markdown() and "nan" not in result.to_markdown()  # no divergence to show
    # compared, but with no value (GX returned none): an infinite divergence, shown failing
    failing = dataclasses.replace(result, kl=math.inf, ok={"kl": False}, allowed={"kl": (0.0, 0.25)})
    assert "| KL divergence | 0 | inf | 0-0.25 | no |" in failing.to_markdown()
    assert meta["drift_note"] == result.note


def test_all_none_final_fails_clearly(captions):
    result = check_caption_length_drift(captions["c0"], pd.Series([None] * 1000))
    assert not result.passed
    assert result.failures[0] == "all 1000 final captions are empty or None"
    assert result.mean_final == 0.0
    # Every final length falls in the left tail (< 8 words), which holds 4.3% of the reference.
    assert result.kl == pytest.approx(math.log(1 / 0.043))


def test_the_tails_hold_the_shortest_and_the_longest_captions_alike():
    """Bins are [a, b): a first edge at the shortest length left the left tail empty, so captions
    shortened below it cost KL out of all proportion while the same growth past the longest cost nothing."""
    reference = pd.Series(["a b c d e"] * 60 + ["a b c d e f g"] * 40)
    partition = reference_partition(caption_lengths(reference), 10)
    assert partition == {"bins": [-math.inf, 6.0, 7.0, math.inf], "weights": [0.6, 0.0, 0.4]}
    shrunk = check_caption_length_drift(reference, pd.Series(["a"] * 100))
    # finite, and still fails: all in the left tail (0.6; none in the empty bin, so no weight is held out for it)
    assert shrunk.kl == pytest.approx(math.log(1 / 0.6)) and not shrunk.passed
    words = [5] * 8 + list(range(6, 22)) * 2  # 8 of 40 at the shortest length
    original = pd.Series([" ".join(["w"] * n) for n in sorted(words)])
    shorter = check_caption_length_drift(original, pd.Series([" ".join(["w"] * n) for n in [3] * 6 + sorted(words)[6:]]))
    longer = check_caption_length_drift(original, pd.Series([" ".join(["w"] * n) for n in sorted(words)[:-6] + [23] * 6]))
    assert shorter.kl == pytest.approx(0.0, abs=1e-12) and longer.kl == pytest.approx(0.0, abs=1e-12)
    assert shorter.passed and longer.passed
    same = pd.Series(["a b c d e"] * 25)  # one length only: a word more or less costs the same
    assert reference_partition(caption_lengths(same), 10) == {"bins": [-math.inf, 5.0, 6.0, math.inf],
                                                             "weights": [0.0, 1.0, 0.0]}
    grown = check_caption_length_drift(same, pd.Series(["a b c d e f"] * 4 + ["a b c d e"] * 21))
    shrunk = check_caption_length_drift(same, pd.Series(["a b c d"] * 4 + ["a b c d e"] * 21))
    assert grown.kl == pytest.approx(shrunk.kl) and not grown.passed and not shrunk.passed


def test_quantile_floor_absorbs_small_shifts_on_short_captions():
    reference = pd.Series(["a b c"] * 30 + ["a b c d"] * 30)
    final = pd.Series(["a b c d e"] * 30 + ["a b c d"] * 30)
    loose = check_caption_length_drift(reference, final, DriftThresholds(max_kl=10, mean_ratio_max=2))
    assert loose.passed, loose.failures
    strict = check_caption_length_drift(
        reference, final, DriftThresholds(max_kl=10, mean_ratio_max=2, quantile_tolerance=0.25, quantile_abs_floor=0))
    assert strict.failures == ["caption length quantiles out of band (words): p10 3 -> 4 (allowed 2.25-3.75), "
                               "p25 3 -> 4 (allowed 2.25-3.75)"]


def test_chars_unit(captions):
    result = check_caption_length_drift(captions["c0"], captions["c1"], DriftThresholds(length_unit="chars"))
    assert result.passed, result.failures
    assert result.mean_original == pytest.approx(captions["c0"].str.len().mean())
    assert result.to_metadata()["drift_length_unit"] == "chars"


def test_invalid_unit_rejected():
    with pytest.raises(ValueError, match="length_unit"):
        DriftThresholds(length_unit="tokens")


def test_metadata_is_flat_python_scalars(captions):
    meta = check_caption_length_drift(captions["c0"], captions["c1"]).to_metadata()
    assert all(type(v) in (bool, int, float, str) for v in meta.values())
    assert meta["drift_passed"] is True
    assert meta["drift_n_final"] == 1000
    assert meta["drift_p90_original"] == 13.0
    assert meta["drift_p90_final"] == 13.0
    assert "drift_failures" not in meta


def test_markdown_table(captions):
    final = captions["c0"].str.split().str[:2].str.join(" ")
    md = check_caption_length_drift(captions["c0"], final, TIGHT).to_markdown()
    assert "| mean (words) | 10.6 | 2 | 8.5-13.28 | no |" in md
    assert "| p50 (words) | 10 | 2 | 7.5-12.5 | no |" in md
    assert "Caption length drift: **FAILED**" in md
    md = check_caption_length_drift(captions["c0"], captions["c1"]).to_markdown()
    assert "| mean (words) | 10.6 | 10.6 | 8.5-13.28 | yes |" in md



def test_a_ratio_just_outside_its_limit_reads_outside_it():
    """A ratio of 0.9972 against a limit of 0.9975 printed to two decimals read "1.00x, allowed 1.00-1.25x"."""
    original = pd.Series([" ".join(["w"] * n) for n in [10, 12, 14] * 10])  # mean 12 words
    final = original.copy()
    final.iloc[0] = " ".join(["w"] * 9)  # mean 11.967: ratio 0.9972
    result = check_caption_length_drift(original, final, DriftThresholds(mean_ratio_min=0.9975))
    assert not result.passed
    assert "mean caption length shrank to 0.997x (12.00 -> 11.97 words), allowed 0.998-1.250x" in result.failures


def test_a_combining_mark_of_a_script_without_spaces_is_part_of_its_character():
    """Thai, Lao, Myanmar and Khmer vowel signs, tone marks and viramas combine with the character before them:
    counted as words of their own, a Thai caption read a third longer than its characters."""
    from curation_pipeline.validation.lengths import words

    assert words("เด็ก") == ["เ", "ด็", "ก"]  # child: SARA E, DO DEK with MAITAIKHU, KO KAI
    assert words("ខ្មែរ") == ["ខ្", "មែ", "រ"]  # Khmer: KHA with COENG, MO with the vowel sign AE, RO
    assert words("မြန်မာ") == ["မြ", "န်", "မာ"]  # Myanmar
    assert words("ສະບາຍດີ") == ["ສ", "ະ", "ບ", "າ", "ຍ", "ດີ"]  # Lao: SARA A and SARA AA are letters, SARA II a mark
    assert caption_lengths(pd.Series(["เด็กเล่น", "ภาษาไทย test"])).tolist() == [6.0, 8.0]
