"""Selection over stored scores: cheap, model-free, re-runnable ("score once, select later").

Threshold expressions are parsed with ``ast`` against a whitelist (comparisons, and /
or / not, column names, numbers), never evaluated as Python.
"""

from __future__ import annotations

import ast
import math
import operator

import numpy as np
import pandas as pd

_COMPARE = {
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Eq: operator.eq, ast.NotEq: operator.ne,
}


class SelectionError(ValueError):
    pass


def select(scores: pd.DataFrame, expr: str) -> pd.Series:
    """Rows satisfying a boolean threshold expression such as
    ``"mlm_itm >= 66 and mlm_odf >= 20"``.

    A NaN operand makes its comparison False; ``not`` negates that result, so
    ``not (x >= 66)`` keeps NaN rows where ``x < 66`` does not.
    """
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise SelectionError(f"cannot parse selection {expr!r}: {exc.msg} at column {exc.offset}") from exc
    return _evaluate(tree.body, scores, expr).astype(bool).rename(None)


def _evaluate(node: ast.AST, scores: pd.DataFrame, expr: str):
    if isinstance(node, ast.BoolOp):
        parts = [_evaluate(v, scores, expr).fillna(False).astype(bool) for v in node.values]
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        result = parts[0]
        for part in parts[1:]:
            result = combine(result, part)
        return result
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_evaluate(node.operand, scores, expr).fillna(False).astype(bool)
    if isinstance(node, ast.Compare):
        left = _operand(node.left, scores, expr)
        result = None
        for op, right_node in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE:
                raise SelectionError(f"operator {type(op).__name__} is not allowed in {expr!r}")
            right = _operand(right_node, scores, expr)
            part = _COMPARE[type(op)](left, right)  # NaN compares False (except !=, masked below)
            for side in (left, right):
                if isinstance(side, pd.Series):
                    part = part & side.notna()
            result = part if result is None else result & part
            left = right
        return result
    raise SelectionError(f"{_token(node, expr)!r} is not allowed in selection {expr!r}")


def _operand(node: ast.AST, scores: pd.DataFrame, expr: str):
    if isinstance(node, ast.Name):
        if node.id not in scores.columns:
            raise SelectionError(f"unknown column {node.id!r} in selection {expr!r}; "
                                 f"columns: {', '.join(map(str, scores.columns))}")
        return pd.to_numeric(scores[node.id], errors="coerce")
    return _number(node, expr)


def _number(node: ast.AST, expr: str) -> float:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_number(node.operand, expr)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    raise SelectionError(f"{_token(node, expr)!r} is not a column or a number in selection {expr!r}")


def _token(node: ast.AST, expr: str) -> str:
    return ast.get_source_segment(expr, node) or type(node).__name__


def top_fraction(scores: pd.Series, fraction: float, seed: int = 0) -> pd.Series:
    """MLM-Filter's target fraction: keep the best ``round(N * fraction)`` pairs.

    N counts every pair, NaN included (a NaN is never kept, so fewer may survive when
    scores are missing). The score at the cut rank is the threshold; pairs above it are
    kept and the remaining places are drawn among the ties at the cut, seeded, so the
    result is deterministic and exactly sized.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    values = pd.to_numeric(scores, errors="coerce")
    keep = pd.Series(False, index=scores.index)
    target = min(int(math.floor(len(values) * fraction + 0.5)), int(values.notna().sum()))
    if target == 0:
        return keep
    cut = values.dropna().sort_values(ascending=False, kind="mergesort").iloc[target - 1]
    above = values > cut
    keep[above] = True
    ties = values.index[values == cut]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ties), size=target - int(above.sum()), replace=False)
    keep[ties[np.sort(chosen)]] = True
    return keep
