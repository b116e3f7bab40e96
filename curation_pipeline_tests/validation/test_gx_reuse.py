"""What the checks reuse between validations must not change a result: an expectation's configuration
built once (``_gx._expectation_class``), the first table pass over the checked columns only, and the
drift check's caption lengths counted once."""

import numpy as np
import pandas as pd
import pytest

from curation_pipeline.validation import _gx, check_table
from curation_pipeline.validation.drift import (
    DriftThresholds,
    check_caption_length_drift,
    check_final_captions_drift,
    compare_lengths,
    drift_pairs,
)
from curation_pipeline.validation.lengths import LengthCounts


@pytest.fixture(autouse=True)
def _here(monkeypatch):
    monkeypatch.setenv("CURATE_HELPER", "off")  # GX in this process, where the test can watch it


def test_a_changed_expectation_builds_a_new_configuration():
    cls = _gx._expectation_class("ExpectColumnValuesToBeBetween")
    expectation = cls(column="x", min_value=0, max_value=1)
    built = expectation.configuration
    assert expectation.configuration is built  # built once while nothing changes
    assert built.type == "expect_column_values_to_be_between_memo"  # GX's type prefix kept (domain heuristics)
    expectation.max_value = 5
    assert expectation.configuration.kwargs["max_value"] == 5
    copied = expectation.copy(update={"min_value": -1})
    assert copied.configuration.kwargs["min_value"] == -1
    assert expectation.configuration.kwargs["min_value"] == 0
    assert cls(column="y", min_value=2, max_value=3).configuration.kwargs == {"column": "y", "min_value": 2,
                                                                             "max_value": 3}


def _between(df: pd.DataFrame, lo: float, hi: float) -> _gx.Outcome:
    return _gx._validate_here(df, [("ExpectColumnValuesToBeBetween", {"column": "v", "min_value": lo,
                                                                      "max_value": hi})], "SUMMARY")[0]


def test_one_partitions_bounds_never_reach_anothers_result():
    """Shards validated one after another in one (helper) process, each with its own bounds."""
    a, b = pd.DataFrame({"v": [0.1, 0.5, 0.9]}), pd.DataFrame({"v": [11.0, 15.0, 30.0]})
    for _ in range(2):
        first, second, third = _between(a, 0, 1), _between(b, 10, 20), _between(a, 10, 20)
        assert first.success and first.kwargs["max_value"] == 1
        assert not second.success and second.result["unexpected_count"] == 1
        assert second.result["partial_unexpected_list"] == [30.0]
        assert not third.success and third.result["unexpected_count"] == 3
        assert first.type == second.type == "expect_column_values_to_be_between"  # GX's own name, as before


def test_drift_against_two_references_in_turn():
    t = DriftThresholds()
    short, long = LengthCounts.of(np.arange(40) % 5 + 1), LengthCounts.of(np.arange(40) % 5 + 20)
    lengths = np.arange(40) % 5 + 1.0
    alone = compare_lengths(short, lengths, t)
    for _ in range(2):
        assert not compare_lengths(long, lengths, t).passed
        assert compare_lengths(short, lengths, t) == alone
    assert alone.passed


def test_configuration_is_built_far_fewer_times_than_plain_gx_builds_it(monkeypatch):
    """The point of ``_expectation_class``: GX rebuilds a plain expectation's configuration on every read."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    built = []
    init = ExpectationConfiguration.__init__
    monkeypatch.setattr(ExpectationConfiguration, "__init__",
                        lambda self, *args, **kwargs: (built.append(1), init(self, *args, **kwargs))[1])
    df = pd.DataFrame({"v": [0.1, 0.5, 0.9]})
    specs = [("ExpectColumnValuesToBeBetween", {"column": "v", "min_value": 0, "max_value": 1}),
             ("ExpectColumnMeanToBeBetween", {"column": "v", "min_value": 0, "max_value": 1})]
    _gx._validate_here(df, specs, "SUMMARY")  # warm
    built.clear()
    _gx._validate_here(df, specs, "SUMMARY")
    ours = len(built)
    built.clear()
    suite = gx.ExpectationSuite(name="plain", expectations=[getattr(gx.expectations, n)(**kw) for n, kw in specs])
    _gx._batch_definition().get_batch(batch_parameters={"dataframe": df}).validate(suite, result_format="SUMMARY")
    plain = len(built)
    if plain <= 4 * len(specs):
        pytest.skip(f"this GX builds a configuration {plain} times for {len(specs)} expectations: nothing to save")
    assert ours * 3 <= plain, (ours, plain)


def test_first_table_pass_sees_the_checked_columns_and_a_failure_the_whole_table(monkeypatch):
    seen = []
    validate = _gx.validate
    monkeypatch.setattr(_gx, "validate", lambda df, specs, fmt="SUMMARY": (seen.append(list(df.columns)),
                                                                           validate(df, specs, fmt))[1])
    df = pd.DataFrame({"key": ["a", "b", "b"], "extra": [1, 2, 3], "score": [0.5, 2.0, 0.1], "note": list("xyz")})
    result = check_table(df, required_columns=["key", "score", "missing"], unique=["key"], ranges={"score": (0, 1)})
    assert seen[0] == ["key", "score"]
    assert seen[1:] == [list(df.columns)]  # the failures again, over the whole table
    assert result.failures == ["missing columns: ['missing']", "2 rows with duplicate values in key: ['b']",
                               "1 value of score outside [0, 1]: [2.0] (key: ['b'])"]
    columns_check = result.expectations[0]
    assert columns_check["type"] == "expect_table_columns_to_match_set" and not columns_check["success"]
    assert sorted(columns_check["observed_value"]) == sorted(df.columns)  # the table's, not the checked ones


def test_final_captions_drift_counts_each_length_once_with_the_same_result():
    rng = np.random.default_rng(3)
    words = [" ".join(["w"] * int(n)) for n in rng.integers(1, 15, 120)]
    final = pd.DataFrame({"outcome": rng.choice(["kept", "rewritten", "dropped"], 120),
                          "original_caption": words, "final_caption": [w + " more" * (i % 3) for i, w in enumerate(words)]})
    final.loc[[1, 5, 9], "original_caption"] = None
    final.loc[[2, 6], "original_caption"] = ""
    compared = drift_pairs(final, "words")
    for t in (DriftThresholds(), DriftThresholds(length_unit="chars"), DriftThresholds(max_kl=0.01)):
        result = check_final_captions_drift(final, t)
        assert result == check_caption_length_drift(drift_pairs(final, t.length_unit)["original_caption"],
                                                     drift_pairs(final, t.length_unit)["final_caption"], t)
        assert result.n_original == len(drift_pairs(final, t.length_unit))
    assert 0 < len(compared) < (final["outcome"] != "dropped").sum()


def test_the_drift_pairs_are_the_same_pairs_in_characters_and_in_words():
    """A caption of only whitespace has characters but no word: no caption in either unit, as the report and
    the rewriter count it, so a length_unit of chars compares the pairs the report shows."""
    final = pd.DataFrame({"outcome": ["kept", "kept", "rewritten", "dropped"],
                          "original_caption": ["a dog", " \t ", "\u3000", "a cat"],
                          "final_caption": ["a dog", " \t ", "a bird on a wire", None]})
    assert drift_pairs(final, "chars").index.tolist() == drift_pairs(final, "words").index.tolist() == [0]


def test_first_table_pass_sends_a_column_no_expectation_reads_as_zeros(monkeypatch):
    """A required column only the column-set expectation names (a pairs table's captions and source json)
    goes as zeros: GX fingerprints and the helper is sent what the first pass sees. Duplicate column names
    (a frame the constructor cannot rebuild) go as they are."""
    seen = []
    validate = _gx.validate
    monkeypatch.setattr(_gx, "validate", lambda df, specs, fmt="SUMMARY": (seen.append(df.copy()),
                                                                           validate(df, specs, fmt))[1])
    df = pd.DataFrame({"key": ["a", "b"], "caption": ["x", None], "score": [0.5, 0.7], "extra": [1, 2]}, index=[5, 5])
    result = check_table(df, required_columns=["key", "caption", "score"], unique=["key"], ranges={"score": (0, 1)})
    assert result.passed and len(seen) == 1
    assert list(seen[0].columns) == ["key", "caption", "score"] and seen[0].index.tolist() == [5, 5]
    assert seen[0]["caption"].tolist() == [0, 0] and seen[0]["key"].tolist() == ["a", "b"]
    assert seen[0]["score"].tolist() == [0.5, 0.7]
    seen.clear()
    dup = pd.DataFrame([["a", 1, 2]], columns=["key", "n", "n"])
    result = check_table(dup, required_columns=["key", "n"], unique=["key"])
    assert result.passed and list(seen[0].columns) == ["key", "n", "n"] and seen[0].iloc[0].tolist() == ["a", 1, 2]
