"""Correlation figures and their bootstrap intervals, checked against scipy and by construction."""

import math

import numpy as np
import pytest
from scipy import stats

from curation_pipeline.evaluation.agreement import STATISTICS, correlations, format_correlations


def test_point_values_are_scipys():
    rng = np.random.default_rng(0)
    human = rng.integers(1, 5, 200).astype(float)  # ties, as expert scores have
    metric = human + rng.normal(0, 1.5, 200)
    result = correlations(human, metric, n_boot=50)
    assert result["kendall_tau_c"]["value"] == pytest.approx(stats.kendalltau(metric, human, variant="c").statistic)
    assert result["kendall_tau_b"]["value"] == pytest.approx(stats.kendalltau(metric, human, variant="b").statistic)
    assert result["kendall_tau_b"]["value"] != pytest.approx(result["kendall_tau_c"]["value"])
    assert result["spearman"]["value"] == pytest.approx(stats.spearmanr(metric, human).statistic)
    assert result["pearson"]["value"] == pytest.approx(stats.pearsonr(metric, human).statistic)
    for name in STATISTICS:
        r = result[name]
        assert r["ci_low"] < r["value"] < r["ci_high"]
    assert result["n"] == result["n_groups"] == 200


def test_perfect_and_reversed_agreement():
    x = np.arange(30, dtype=float)
    perfect = correlations(x, x * 2, n_boot=20)["spearman"]
    assert perfect == pytest.approx({"value": 1.0, "ci_low": 1.0, "ci_high": 1.0})
    assert correlations(x, -x, n_boot=20)["pearson"]["value"] == pytest.approx(-1.0)


def test_nan_rows_are_left_out_and_groups_resample_together():
    human = np.array([1, 2, 3, 4, np.nan, 2, 3, 1, 4, 2.0])
    metric = np.array([1, 2, 3, 4, 5, np.nan, 3, 1, 4, 2.0])
    assert correlations(human, metric, n_boot=10)["n"] == 8
    rng = np.random.default_rng(1)
    pairs = rng.normal(size=300)
    ratings = np.repeat(pairs, 3) + rng.normal(0, 0.5, 900)
    grouped = correlations(ratings, np.repeat(pairs, 3), groups=np.repeat(np.arange(300), 3), n_boot=200)
    naive = correlations(ratings, np.repeat(pairs, 3), n_boot=200)
    assert grouped["n"] == 900 and grouped["n_groups"] == 300
    width = lambda r: r["pearson"]["ci_high"] - r["pearson"]["ci_low"]  # noqa: E731
    assert width(grouped) > 1.3 * width(naive)  # a pair counted three times is not three pairs


def test_infinite_rows_are_left_out_like_nan_ones():
    result = correlations([1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, np.inf, 7], n_boot=20)
    assert result["n"] == 6
    assert result["pearson"] == pytest.approx({"value": 1.0, "ci_low": 1.0, "ci_high": 1.0})
    assert correlations([1, 2, 3, -np.inf, 5], [1, 2, 3, 4, 5], n_boot=5)["n"] == 4


def test_constant_scores_give_nan():
    result = correlations([1, 2, 3, 4], [5, 5, 5, 5], n_boot=10)
    assert math.isnan(result["spearman"]["value"])


def test_table():
    x = np.arange(10, dtype=float)
    text = format_correlations([("pair", correlations(x, x, n_boot=5))], "title")
    assert text.startswith("title") and "100.0 [100.0,100.0]" in text


def test_an_interval_over_few_varying_pairs_is_left_undefined():
    """A score nonzero on one pair of 30: a third of the resamples miss that pair and have no correlation; the
    interval of the rest would look tight and exclude 0, so it is not given, and the table says why."""
    human = np.linspace(1, 4, 30)
    metric = np.zeros(30)
    metric[7] = 1.0
    result = correlations(human, metric, n_boot=400)
    assert not math.isnan(result["kendall_tau_c"]["value"])
    assert 0.2 * 400 < result["bootstrap_undefined"] < 0.5 * 400
    assert all(math.isnan(result[name]["ci_low"]) and math.isnan(result[name]["ci_high"]) for name in STATISTICS)
    text = format_correlations([("pair", result)])
    assert f"pair: {result['bootstrap_undefined']} of 400 bootstrap resamples" in text and "no interval" in text
    varied = correlations(human, human + np.sin(np.arange(30)), n_boot=100)  # every resample has a value
    assert varied["bootstrap_undefined"] == 0 and varied["spearman"]["ci_low"] < varied["spearman"]["ci_high"]
    assert "no interval" not in format_correlations([("pair", varied)])
    constant = correlations(human, np.zeros(30), n_boot=50)  # every resample undefined: constant_cause tells why
    assert constant["bootstrap_undefined"] == 50 and "no interval" not in format_correlations([("pair", constant)])
