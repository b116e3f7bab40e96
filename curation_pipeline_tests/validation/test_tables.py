"""Table contracts on a pairs-like table built from Flickr8k captions."""

import json

import numpy as np
import pandas as pd
import pytest

from curation_pipeline.validation import check_table

CONTRACT = dict(
    required_columns=["key", "caption", "text_quality", "clip_score"],
    non_null=["key", "caption"],
    unique=["key"],
    ranges={"text_quality": (0, 100), "clip_score": (0, 2.5)},
)


@pytest.fixture()
def pairs(flickr_dir) -> pd.DataFrame:
    rows = [json.loads(line) for line in (flickr_dir / "captions.jsonl").read_text().splitlines()[:50]]
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "key": [r["image"].split("/")[-1].removesuffix(".jpg") for r in rows],
        "caption": [r["captions"][0] for r in rows],
        "text_quality": rng.uniform(0, 100, len(rows)),
        "clip_score": rng.uniform(0, 2.5, len(rows)),
    })
    df.loc[[3, 7], "text_quality"] = np.nan  # unknown scores are allowed
    return df


def test_clean_table_passes(pairs):
    result = check_table(pairs, **CONTRACT)
    assert result.passed, result.failures
    assert result.failures == []
    assert result.n_rows == 50
    assert len(result.expectations) == 6
    assert all(e["success"] for e in result.expectations)
    assert result.to_metadata() == {
        "table_check_passed": True,
        "table_check_rows": 50,
        "table_check_expectations": 6,
        "table_check_failed_expectations": 0,
    }


def test_missing_column_is_reported_once_and_other_checks_still_run(pairs):
    df = pairs.drop(columns=["clip_score"])
    df.loc[0, "caption"] = None
    result = check_table(df, **CONTRACT)
    assert not result.passed
    assert result.failures == ["missing columns: ['clip_score']",
                               f"1 null value in caption (key: ['{df.loc[0, 'key']}'])"]
    assert result.expectations[0]["type"] == "expect_table_columns_to_match_set"
    assert result.expectations[0]["success"] is False


def test_nulls_name_their_keys(pairs):
    pairs.loc[[4, 9], "caption"] = None
    result = check_table(pairs, **CONTRACT)
    keys = pairs.loc[[4, 9], "key"].tolist()
    assert result.failures == [f"2 null values in caption (key: {keys})"]
    null_check = next(e for e in result.expectations if e["column"] == "caption")
    assert null_check["unexpected_count"] == 2


def test_duplicate_keys(pairs):
    pairs.loc[1, "key"] = pairs.loc[0, "key"]
    pairs.loc[11, "key"] = pairs.loc[10, "key"]
    result = check_table(pairs, **CONTRACT)
    assert result.failures == [f"4 rows with duplicate values in key: {[pairs.loc[0, 'key'], pairs.loc[10, 'key']]}"]
    assert result.to_metadata()["table_check_failed_expectations"] == 1


def test_out_of_range_ignores_nan(pairs):
    pairs.loc[5, "text_quality"] = 150.0
    pairs.loc[6, "text_quality"] = -3.0
    pairs.loc[8, "clip_score"] = 3.1
    result = check_table(pairs, **CONTRACT)
    k = pairs["key"]
    assert result.failures == [
        f"2 values of text_quality outside [0, 100]: [150.0, -3.0] (key: {[k[5], k[6]]})",
        f"1 value of clip_score outside [0, 2.5]: [3.1] (key: {[k[8]]})",
    ]
    meta = result.to_metadata()
    assert meta["table_check_passed"] is False
    assert meta["table_check_failures"] == "; ".join(result.failures)


def test_one_sided_range_and_index_examples_without_key():
    df = pd.DataFrame({"n_pairs": [10, 0, -1, 5]}, index=["s0", "s1", "s2", "s3"])
    result = check_table(df, required_columns=["n_pairs"], ranges={"n_pairs": (0, None)})
    assert result.failures == ["1 value of n_pairs outside [0, inf]: [-1] (index: ['s2'])"]


def test_uncheckable_column_fails_instead_of_raising(pairs):
    result = check_table(pairs, required_columns=["caption"], ranges={"caption": (0, 1)})
    assert not result.passed
    assert result.failures == ["expect_column_values_to_be_between on caption could not be evaluated: "
                               "Column values, min_value, and max_value must either be None or of the same type."]
