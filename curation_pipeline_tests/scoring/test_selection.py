import numpy as np
import pandas as pd
import pytest

from curation_pipeline.scoring.selection import SelectionError, select, top_fraction


@pytest.fixture
def scores():
    return pd.DataFrame({
        "mlm_itm": [70.0, 60.0, np.nan, 90.0, 66.0],
        "mlm_odf": [30.0, 50.0, 40.0, 10.0, 20.0],
        "clip_score": [0.3, 0.1, 0.5, 0.2, 0.27],
    })


def test_and_combination(scores):
    assert select(scores, "mlm_itm >= 66 and mlm_odf >= 20").tolist() == [True, False, False, False, True]


def test_or_parentheses_and_not(scores):
    assert select(scores, "clip_score >= 0.28 or (mlm_odf > 45)").tolist() == [True, True, True, False, False]
    assert select(scores, "not mlm_itm >= 66").tolist() == [False, True, True, False, False]


def test_nan_compares_false_and_chained_comparison(scores):
    assert select(scores, "mlm_itm != 60").tolist() == [True, False, False, True, True]
    assert select(scores, "10 < mlm_odf <= 40").tolist() == [True, False, True, False, True]
    assert select(scores, "mlm_itm > -1").tolist() == [True, True, False, True, True]


@pytest.mark.parametrize("expr, fragment", [
    ("mlm_itm >= 66 and foo > 1", "unknown column 'foo'"),
    ("__import__('os').system('x')", "__import__('os').system('x')"),
    ("mlm_itm + 1 > 2", "'mlm_itm + 1'"),
    ("mlm_itm >=", "cannot parse"),
    ("mlm_itm", "'mlm_itm' is not allowed"),
    ("mlm_itm > 'a'", "'a'"),
])
def test_rejects_unsafe_or_bad_expressions(scores, expr, fragment):
    with pytest.raises(SelectionError, match="selection") as info:
        select(scores, expr)
    assert fragment in str(info.value)


def test_top_fraction_keeps_exact_count_and_samples_ties():
    values = pd.Series([1, 2, 2, 2, 3, np.nan, 5, 2], index=list("abcdefgh"), dtype=float)
    kept = top_fraction(values, 0.5, seed=0)
    assert kept.sum() == 4
    assert kept[["e", "g"]].all() and not kept[["a", "f"]].any()
    assert kept[["b", "c", "d", "h"]].sum() == 2
    assert kept.equals(top_fraction(values, 0.5, seed=0))
    draws = {tuple(top_fraction(values, 0.5, seed=s)) for s in range(20)}
    assert len(draws) > 1


def test_top_fraction_never_keeps_nan_and_handles_edges():
    values = pd.Series([np.nan, 1.0, np.nan, 2.0])
    assert top_fraction(values, 1.0).tolist() == [False, True, False, True]
    assert not top_fraction(values, 0.0).any()
    assert top_fraction(values, 0.25).tolist() == [False, False, False, True]
    with pytest.raises(ValueError):
        top_fraction(values, 1.5)
