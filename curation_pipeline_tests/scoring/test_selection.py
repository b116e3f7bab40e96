import numpy as np
import pandas as pd
import pytest

from curation_pipeline.scoring.selection import SelectionError, check_expression, select


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
    assert select(scores, "not mlm_itm >= 66").tolist() == [False, True, False, False, False]


def test_a_missing_score_stays_unknown_through_not(scores):
    """Three-valued, as SQL: only a known true expression selects; ``unknown or true`` is true."""
    for expr in ("not mlm_itm < 66", "not (mlm_itm == 60)", "not (mlm_itm < 66 or mlm_odf > 100)"):
        assert not select(scores, expr)[2], expr  # mlm_itm is NaN: as unknown as ``mlm_itm >= 66``
    assert select(scores, "not (mlm_itm < 66 and clip_score < 0.4)")[2]  # clip_score alone decides
    assert select(scores, "mlm_itm >= 66 or clip_score > 0.4")[2]
    assert not select(scores, "mlm_itm >= 66 or clip_score > 0.6")[2]


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
    ("1 < 2", "'1 < 2' compares no column"),
    ("clip_score > 0 and 1 > 0", "'1 > 0' compares no column"),
])
def test_rejects_unsafe_or_bad_expressions(scores, expr, fragment):
    with pytest.raises(SelectionError, match="selection") as info:
        select(scores, expr)
    assert fragment in str(info.value)


@pytest.mark.parametrize("expr", ["1 < 2", "mlm_itm >=", "mlm_itm + 1 > 2", "not 3 > 2"])
def test_a_keep_expression_is_checked_when_the_policy_is_made_not_when_a_shard_is_decided(expr):
    from curation_pipeline.decisions.policy import DecisionPolicy

    with pytest.raises(SelectionError, match="selection"):
        check_expression(expr)
    with pytest.raises(ValueError, match="selection"):
        DecisionPolicy(keep_expression=expr)
    assert DecisionPolicy(keep_expression="mlm_itm >= 66 and not clip_score < 0.2").keep_expression
