"""Selection over stored scores: model-free and re-runnable ("score once, select later").

Threshold expressions are parsed with ``ast`` against a whitelist, never evaluated as Python; the
keep_fraction cut is one global cut over all scored shards, applied per shard (``global_cut`` / ``in_cut``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import math
import operator
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd

_COMPARE = {
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Eq: operator.eq, ast.NotEq: operator.ne,
}


class SelectionError(ValueError):
    pass


def select(scores: pd.DataFrame, expr: str) -> pd.Series:
    """Rows satisfying a threshold expression such as ``"mlm_itm >= 66 and mlm_odf >= 20"``. A NaN
    operand makes its comparison unknown, and unknown stays unknown through ``not`` (SQL's three-valued
    logic): a row is selected only when the whole expression is known true, so ``not (x < 66)`` never
    selects a pair whose ``x`` is missing, as ``x >= 66`` does not."""
    return _evaluate(_parse(expr).body, scores, expr).fillna(False).astype(bool).rename(None)


def check_expression(expr: str) -> None:
    """Raise ``SelectionError`` for an expression that no scores could pass as valid (syntax, operators,
    a comparison of numbers alone): at configuration, not when the first shard is decided."""
    select(pd.DataFrame({name: [np.nan] for name in columns_used(expr)}), expr)


def columns_used(expr: str | None) -> set[str]:
    """The score columns a selection reads (what a rewrite must re-score to be judged by it)."""
    if not expr:
        return set()
    return {node.id for node in ast.walk(_parse(expr)) if isinstance(node, ast.Name)}


def _parse(expr: str) -> ast.Expression:
    try:
        return ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise SelectionError(f"cannot parse selection {expr!r}: {exc.msg} at column {exc.offset}") from exc


def _evaluate(node: ast.AST, scores: pd.DataFrame, expr: str) -> pd.Series:
    """A nullable boolean Series: NA where a NaN operand leaves the answer unknown (pandas' Kleene logic
    for ``&``, ``|`` and ``~``: ``unknown or True`` is True, ``not unknown`` is unknown)."""
    if isinstance(node, ast.BoolOp):
        parts = [_evaluate(v, scores, expr) for v in node.values]
        return functools.reduce(operator.and_ if isinstance(node.op, ast.And) else operator.or_, parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_evaluate(node.operand, scores, expr)
    if isinstance(node, ast.Compare):
        left = _operand(node.left, scores, expr)
        result = None
        for op, right_node in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE:
                raise SelectionError(f"operator {type(op).__name__} is not allowed in {expr!r}")
            right = _operand(right_node, scores, expr)
            part = _COMPARE[type(op)](left, right)
            if isinstance(part, pd.Series):
                part = part.astype("boolean")
                for side in (left, right):
                    if isinstance(side, pd.Series):
                        part = part.mask(side.isna())  # unknown, not False (nor True for !=)
            result = part if result is None else result & part
            left = right
        if not isinstance(result, pd.Series):
            raise SelectionError(f"{_token(node, expr)!r} compares no column in selection {expr!r}")
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


@dataclass(frozen=True)
class GlobalCut:
    """The target fraction, cut once over the whole pool: floor(N * fraction) of the N non-NaN scores.

    Pairs above ``cut_score`` are kept, and those tied at it whose ``(tie_rank, shard, key)`` sorts at
    or before ``boundary``: a stable hash, so the choice ignores row and shard order and spreads ties
    over shards. ``shards``: per shard scored, kept and a digest, so a re-scored shard reads as stale.
    """

    fraction: float
    quality_column: str
    scored: int
    kept: int
    cut_score: float | None = None
    above: int = 0
    ties_at_cut: int = 0
    ties_kept: int = 0
    boundary: tuple[int, str, str] | None = None
    shards: dict = field(default_factory=dict)

    def rule_digest(self) -> str:
        """What decides whether any pair is inside: two cuts with one digest keep the same pairs."""
        rule = [self.fraction, self.quality_column, self.cut_score, self.boundary]
        return hashlib.sha256(repr(rule).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["boundary"] = (None if self.boundary is None else
                           {"tie_rank": self.boundary[0], "shard": self.boundary[1], "key": self.boundary[2]})
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "GlobalCut":
        b = data.get("boundary")
        return cls(fraction=float(data["fraction"]), quality_column=str(data["quality_column"]),
                   scored=int(data["scored"]), kept=int(data["kept"]),
                   cut_score=None if data.get("cut_score") is None else float(data["cut_score"]),
                   above=int(data.get("above", 0)), ties_at_cut=int(data.get("ties_at_cut", 0)),
                   ties_kept=int(data.get("ties_kept", 0)),
                   boundary=None if b is None else (int(b["tie_rank"]), str(b["shard"]), str(b["key"])),
                   shards={str(k): dict(v) for k, v in (data.get("shards") or {}).items()})


def kept_count(scored: int, fraction: float) -> int:
    """floor(scored * fraction), exact for the decimal the fraction was written as (0.29 * 100 = 29)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {fraction}")
    return math.floor(Fraction(repr(float(fraction))) * scored)


def tie_rank(shards, keys) -> np.ndarray:
    """A stable 63-bit BLAKE2b hash of each (shard, key): the tie-break order at the cut (Python's
    ``hash`` is salted per process, pandas' hashing version-bound)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(f"{s}\x00{k}".encode(), digest_size=8).digest(), "big") >> 1
         for s, k in zip(shards, keys)),
        dtype=np.int64, count=len(keys))


def scores_digest(keys, values) -> str:
    """Digest of a shard's (key, score) pairs, independent of row order; NaN counts as NaN."""
    frame = pd.DataFrame({"key": pd.Series(keys, dtype=object).astype(str).to_numpy(),
                          "value": pd.to_numeric(pd.Series(values), errors="coerce").astype(float).to_numpy()})
    frame = frame.sort_values("key", kind="mergesort")
    h = hashlib.sha256()
    h.update("\x00".join(frame["key"]).encode())
    h.update(b"\x01")
    h.update(np.where(np.isnan(frame["value"].to_numpy()), np.nan, frame["value"].to_numpy()).astype("<f8").tobytes())
    return h.hexdigest()[:32]


def _pool(scores: pd.DataFrame, column: str) -> pd.DataFrame:
    missing = [c for c in ("shard", "key", column) if c not in scores.columns]
    if missing:
        raise KeyError(f"scores lack column(s) {', '.join(missing)} needed for the keep_fraction cut")
    return pd.DataFrame({
        "shard": scores["shard"].astype(str).to_numpy(),
        "key": scores["key"].astype(str).to_numpy(),
        "value": pd.to_numeric(scores[column], errors="coerce").astype(float).to_numpy(),
    })


def global_cut(scores: pd.DataFrame, fraction: float, quality_column: str, shards=()) -> GlobalCut:
    """The cut over every scored pair of every shard (``scores``: shard, key, quality column); NaN
    scores are outside N and never kept. Depends only on the set of rows, not their order. ``shards``
    names every shard of the pool, those without rows included (an empty shard is decided too)."""
    pool = _pool(scores, quality_column)
    if pool.duplicated(["shard", "key"]).any():
        dup = pool.loc[pool.duplicated(["shard", "key"]), ["shard", "key"]].iloc[0]
        raise ValueError(f"pair ({dup['shard']}, {dup['key']}) appears twice in the scores")
    scored = pool[pool["value"].notna()].copy()
    n = len(scored)
    target = kept_count(n, fraction)
    per_shard = {str(shard): {"scored": int(group["value"].notna().sum()), "kept": 0,
                              "digest": scores_digest(group["key"], group["value"])}
                 for shard, group in pool.groupby("shard", sort=True)}
    for shard in shards:
        per_shard.setdefault(str(shard), {"scored": 0, "kept": 0, "digest": scores_digest([], [])})
    per_shard = dict(sorted(per_shard.items()))
    if target == 0:
        return GlobalCut(fraction=float(fraction), quality_column=quality_column, scored=n, kept=0,
                         shards=per_shard)
    scored["rank"] = tie_rank(scored["shard"], scored["key"])
    scored["neg"] = -scored["value"]
    ordered = scored.sort_values(["neg", "rank", "shard", "key"], kind="mergesort")
    last = ordered.iloc[target - 1]
    cut_score = float(last["value"])
    above = int((scored["value"] > cut_score).sum())
    ties = int((scored["value"] == cut_score).sum())
    for shard, count in ordered.iloc[:target]["shard"].value_counts().items():
        per_shard[str(shard)]["kept"] = int(count)
    return GlobalCut(
        fraction=float(fraction), quality_column=quality_column, scored=n, kept=target,
        cut_score=cut_score, above=above, ties_at_cut=ties, ties_kept=target - above,
        boundary=(int(last["rank"]), str(last["shard"]), str(last["key"])), shards=per_shard)


def in_cut(scores: pd.DataFrame, cut: GlobalCut) -> pd.Series:
    """Which rows of ``scores`` (any subset of the pool, e.g. one shard) the cut keeps."""
    pool = _pool(scores, cut.quality_column)
    keep = pd.Series(False, index=scores.index)
    if cut.kept == 0 or cut.cut_score is None or cut.boundary is None:
        return keep
    value = pool["value"].to_numpy()
    above = value > cut.cut_score
    tied = value == cut.cut_score
    if tied.any():
        above = above | (tied & _drawn(pool, cut))
    keep[:] = above
    return keep


def _drawn(pool: pd.DataFrame, cut: GlobalCut) -> np.ndarray:
    """Whether each pair's tie-break place is among those the cut keeps at ``cut_score``."""
    b_rank, b_shard, b_key = cut.boundary
    rank = tie_rank(pool["shard"], pool["key"])
    shard, key = pool["shard"].to_numpy(), pool["key"].to_numpy()
    return (rank < b_rank) | ((rank == b_rank) & ((shard < b_shard) | ((shard == b_shard) & (key <= b_key))))


def cut_needs(scores: pd.DataFrame, cut: GlobalCut) -> pd.Series:
    """Per row, the least score at which the pair would be inside the cut: ``cut_score`` where its tie-break
    place is kept, else just above it; NaN when the cut keeps nothing. What a rewrite of a pair outside the cut
    must score to be published: a pair that lost the draw at the cut score is not saved by a rewrite that only
    ties it, while an untouched twin at that score stays out."""
    pool = _pool(scores, cut.quality_column)
    if cut.kept == 0 or cut.cut_score is None or cut.boundary is None:
        return pd.Series(np.nan, index=scores.index)
    return pd.Series(np.where(_drawn(pool, cut), cut.cut_score, np.nextafter(cut.cut_score, np.inf)),
                     index=scores.index)


def least_passing(scores: pd.DataFrame, expr: str, column: str, low: float = -np.inf,
                  high: float = np.inf) -> pd.Series:
    """Per row, the least value of ``column`` in ``low..high`` from which up to ``high`` the expression holds,
    the row's other columns as they are; NaN where it fails at ``high``. What a rewrite, which re-scores
    ``column`` alone, must score for its pair to pass (a term on the image, or on a score not re-scored, stays
    failed). Exact for any expression: its truth in ``column`` changes only at the numbers and other columns
    ``column`` is compared with, so each of those is tried, and just either side of it."""
    numbers, others = set(), set()
    for node in ast.walk(_parse(expr)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for a, b in zip(operands, operands[1:]):
                for name, other in ((a, b), (b, a)):
                    if isinstance(name, ast.Name) and name.id == column:
                        if isinstance(other, ast.Name):
                            others.add(other.id)
                        else:
                            numbers.add(_number(other, expr))
    rows = len(scores)
    marks = [np.full(rows, float(c)) for c in numbers]
    marks += [pd.to_numeric(scores[name], errors="coerce").to_numpy(dtype=float) for name in others if name in scores]
    points = [np.full(rows, float(high)), np.full(rows, float(low))]
    for mark in marks:  # the truth may change at a mark: on it, and on either side of it
        points += [mark, np.nextafter(mark, -np.inf), np.nextafter(mark, np.inf)]
    grid = np.sort(np.clip(np.nan_to_num(np.column_stack(points), nan=high), low, high), axis=1)[:, ::-1]
    frame = scores[[c for c in columns_used(expr) if c in scores]].copy()
    need = np.full(rows, np.nan)
    holding = np.ones(rows, dtype=bool)
    for j in range(grid.shape[1]):  # from ``high`` down: the lowest point of the unbroken run that passes
        frame[column] = grid[:, j]
        holding &= select(frame, expr).to_numpy(dtype=bool)
        need = np.where(holding, grid[:, j], need)
    return pd.Series(need, index=scores.index)
