"""Length counts must give the drift check exactly what the lengths themselves give."""

import math

import numpy as np
import pandas as pd
import pytest

from curation_pipeline.validation.drift import DriftThresholds, compare_lengths
from curation_pipeline.validation.lengths import LengthCounts, caption_lengths

LEVELS = [i / 10 for i in range(1, 10)] + [0.25, 0.75] + [i / 7 for i in range(1, 7)] + [i / 20 for i in range(1, 20)]


def test_quantiles_and_mean_from_counts_equal_pandas_over_the_lengths():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        lengths = rng.integers(0, int(rng.integers(1, 40)), int(rng.integers(1, 300))).astype(float)
        counts = LengthCounts.of(lengths)
        expected = pd.Series(lengths).quantile(LEVELS, interpolation="nearest").to_numpy()
        got = counts.quantiles(LEVELS)  # keyed by level: a level listed twice is one key
        assert [got[level] for level in LEVELS] == list(expected)
        assert counts.mean() == lengths.mean()
        assert counts.n == len(lengths)


def test_the_partition_from_counts_is_the_histogram_of_the_lengths():
    from curation_pipeline.validation.drift import reference_partition

    lengths = caption_lengths(pd.Series(["a dog", "two dogs run on grass", "", None, "a cat sleeps"] * 7))
    partition = reference_partition(LengthCounts.of(lengths), 10)
    edges = partition["bins"]
    expected = np.histogram(lengths, edges)[0] / len(lengths)
    assert partition["weights"] == [float(w) for w in expected]
    assert partition == reference_partition(lengths, 10)  # an array still works


def test_counts_add_up_over_shards_and_survive_a_round_trip():
    a = LengthCounts.of(np.array([1, 2, 2, 9.0]))
    b = LengthCounts.of(np.array([2, 3, 0.0]))
    total = LengthCounts.total([a, b], "words")
    assert total.to_dict() == {"unit": "words", "lengths": [0, 1, 2, 3, 9], "counts": [1, 1, 3, 1, 1]}
    assert LengthCounts.from_dict(total.to_dict()).to_dict() == total.to_dict()
    assert LengthCounts.total([], "chars").n == 0
    with pytest.raises(ValueError, match="cannot add caption lengths in chars to lengths in words"):
        LengthCounts.total([a, LengthCounts.of(np.array([3.0]), "chars")], "words")


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError, match="whole numbers"):
        LengthCounts.of(np.array([1.5]))
    with pytest.raises(ValueError, match="whole numbers"):
        LengthCounts.of(np.array([math.nan]))
    with pytest.raises(ValueError, match="length unit"):
        LengthCounts.of(np.array([1.0]), "tokens")
    with pytest.raises(ValueError, match="distinct, ascending"):
        LengthCounts("words", np.array([2, 1]), np.array([1, 1]))


def test_a_reference_in_another_unit_is_refused():
    with pytest.raises(ValueError, match="the reference counts chars, the thresholds words"):
        compare_lengths(LengthCounts.of(np.array([3.0] * 30), "chars"), np.array([3.0] * 30), DriftThresholds())
