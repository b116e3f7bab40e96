"""Keep, rewrite or drop: AITQE's adaptive answer instead of a plain filter.

Good pairs are kept as they are. A weak caption on a usable image is rewritten,
because the image is worth keeping. Only what cannot be saved is dropped: an image
that is missing, broken, too small, unsafe or a duplicate, or a caption that stays
bad after rewriting. Every decision carries a reason that names the signal.
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from curation_pipeline.rewriting.verify import MIN_IMPROVEMENT_SHARE, default_min_improvement, need_text
from curation_pipeline.scoring.columns import OPERATORS, Bound
from curation_pipeline.scoring.registry import bounds, error_columns_of, score_columns, score_scales
from curation_pipeline.scoring.selection import (GlobalCut, check_expression, columns_used, cut_needs, in_cut,
                                                 least_passing)


KEEP, REWRITE, DROP = "keep", "rewrite", "drop"
# set by decide with keep_fraction on: whether the pair is inside the global cut. Outside it a pair is
# published only through an accepted rewrite (``outcome.resolve_outcomes``), never by the fallback
IN_CUT = "in_keep_fraction"
# caption_decisions' column, with keep_expression set: the pair meets it (a filter's reject has one chance)
IN_EXPRESSION = "passes_keep_expression"
EXPRESSION_FAILED = "fails: "  # a pair's reason when policy.keep_expression fails: the expression follows, whole
# caption_decisions' column: the least quality_column score a rewrite of the pair must reach to be published:
# drop_threshold, or more outside the filters (``rewrite_needs``); empty where no score can publish it
REWRITE_NEEDS = "rewrite_needs"
DUPLICATE_COLUMNS = ("dup_group", "dup_kind", "dup_of")  # set on the scores by dedup, kept in the decisions
KEPT, REWRITTEN, DROPPED = "kept", "rewritten", "dropped"


@dataclass
class DecisionPolicy:
    """Thresholds and switches; the Dagster resource ``policy`` fills these from config."""

    quality_column: str = "text_quality"
    keep_threshold: float = 95.0
    drop_threshold: float = 65.0
    rewrite: bool = True
    keep_expression: str | None = None  # extra condition to keep as is, e.g. "mlm_itm >= 66 and mlm_odf >= 20"
    keep_fraction: float | None = None  # keep as is only the global top fraction by quality (one cut over all shards)
    require_image_rules: bool = True  # DataComp's image rules (min side, aspect) make an image unusable
    caption_rules_mark_weak: bool = True  # failing DataComp's caption rules sends a caption to rewriting
    fallback: str = "keep_original"  # when a rewrite is rejected: "keep_original" (if above drop) or "drop"
    # a rewrite must raise the quality score by at least this many points on quality_column's scale;
    # None: MIN_IMPROVEMENT_SHARE of its declared range width (1 on 0-100, 0.025 on clip_score), set at init
    min_improvement: float | None = None
    nsfw_drop: float | None = 0.8
    nsfw_review: float = 0.2
    max_text_area: float | None = None  # drop images whose OCR boxes cover more than this share
    min_sharpness: float | None = None
    min_brightness: float | None = 0.03
    max_brightness: float | None = 0.97
    min_entropy: float | None = None  # off: a two-tone logo has under 1 bit at thumbnail size (min_contrast tells)
    min_contrast: float | None = 0.02  # a blank or placeholder: every colour's std under 5 of 255 (Flickr: 0.081+)
    drop_duplicates: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fallback not in ("keep_original", "drop"):
            raise ValueError(f"fallback must be 'keep_original' or 'drop', not {self.fallback!r}")
        if self.drop_threshold > self.keep_threshold:
            raise ValueError(f"drop_threshold ({self.drop_threshold}) must not exceed keep_threshold "
                             f"({self.keep_threshold})")
        if self.keep_fraction is not None and not 0.0 <= self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in [0, 1] (or off), not {self.keep_fraction}")
        if self.keep_expression:
            check_expression(self.keep_expression)  # a SelectionError (a ValueError) names what is wrong
        if self.min_improvement is None:
            self.min_improvement = _default_margin(self.quality_column)
        self._check_scales()

    def _check_scales(self) -> None:
        """Thresholds on the scales the scorers declare: 95 on AITQE's 1-10 or an NSFW bound of 80 (a
        percentage) would run, and quietly rewrite or keep everything."""
        ranges, declared = score_scales(), score_columns()
        if self.quality_column in declared and not declared[self.quality_column].numeric:
            # else every shard is scored first, then fails ranking a text or a True/False as a quality
            raise ValueError(f"quality_column {self.quality_column!r} is a {declared[self.quality_column].kind} "
                             "column: pick a numeric score (" + ", ".join(
                                 c for c, d in declared.items() if d.numeric and c in ranges) + ")")
        scale = ranges.get(self.quality_column)
        if scale is not None:
            for name in ("keep_threshold", "drop_threshold"):
                value = getattr(self, name)
                if not scale[0] <= value <= scale[1]:
                    raise ValueError(f"{name}={value:g} is outside {self.quality_column}'s declared range "
                                     f"{scale[0]:g}..{scale[1]:g}: set keep_threshold and drop_threshold on that scale")
        for bound in bounds():
            value = getattr(self, bound.setting, None)
            scale = ranges.get(bound.column)
            if bound.op != "false" and isinstance(value, (int, float)) and scale is not None \
                    and not scale[0] <= value <= scale[1]:
                raise ValueError(f"{bound.setting}={value:g} is outside {bound.column}'s declared range "
                                 f"{scale[0]:g}..{scale[1]:g} (off: leave it empty)")
        scale = _closed(ranges.get(self.quality_column))
        if scale is not None and not 0 <= self.min_improvement <= scale[1] - scale[0]:
            raise ValueError(f"min_improvement={self.min_improvement:g} is outside 0..{scale[1] - scale[0]:g}, the width "
                             f"of {self.quality_column}'s declared range {scale[0]:g}..{scale[1]:g}: set it in points "
                             f"on that scale (empty = {MIN_IMPROVEMENT_SHARE:.0%} of the width, "
                             f"{default_min_improvement(scale):g})")
        scale = ranges.get(_REVIEW_COLUMN)  # the review band is on the NSFW drop bound's scale
        if scale is not None and not scale[0] <= self.nsfw_review <= scale[1]:
            raise ValueError(f"nsfw_review={self.nsfw_review:g} is outside {_REVIEW_COLUMN}'s declared range "
                             f"{scale[0]:g}..{scale[1]:g}")
        for column in sorted(columns_used(self.keep_expression)):
            if column in declared and declared[column].kind in ("str", "json"):  # a bool reads as 0 / 1
                raise ValueError(f"keep_expression compares {column!r}, a {declared[column].kind} column, "
                                 "with numbers: only numeric scores can be compared")
        for column, value in _compared_constants(self.keep_expression):
            scale = _closed(ranges.get(column))
            if scale is not None and not scale[0] <= value <= scale[1]:
                raise ValueError(f"keep_expression compares {column} with {value:g}, outside its declared range "
                                 f"{scale[0]:g}..{scale[1]:g}: write the threshold on that scale")


_REVIEW_COLUMN = "nsfw_prob"  # what nsfw_review bands (decide)


def _closed(scale: tuple[float, float] | None) -> tuple[float, float] | None:
    """A declared range with both ends finite, else None (nothing to check against)."""
    return scale if scale is not None and all(math.isfinite(v) for v in scale) else None


def _default_margin(quality_column: str) -> float:
    """``min_improvement`` when none is set, on the quality column's declared range; a column that declares
    none (or an open one) gets the default quality column's."""
    scale = _closed(score_scales().get(quality_column)) or score_scales()[DecisionPolicy.quality_column]
    return default_min_improvement(scale)


def _number(node: ast.AST) -> float | None:
    """A number as a selection reads one (``scoring.selection``: a constant, maybe negated), else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _number(node.operand)
        return None if value is None else -value
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    return None


def _compared_constants(expr: str | None) -> list[tuple[str, float]]:
    """(column, number) for every comparison of a column with a number in a selection expression, both ways
    round and along chains (``60 <= mlm_itm < 90`` gives two)."""
    if not expr:
        return []
    found = []
    for node in ast.walk(ast.parse(expr, mode="eval")):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for a, b in zip(operands, operands[1:]):
                for name, other in ((a, b), (b, a)):
                    if isinstance(name, ast.Name) and _number(other) is not None:
                        found.append((name.id, _number(other)))
    return found


def _flag(df: pd.DataFrame, column: str, predicate) -> pd.Series:
    """Rows where ``predicate(column)`` holds; False where the column is absent or unknown."""
    if column not in df.columns:
        return pd.Series(False, index=df.index)
    values = df[column]
    known = values.notna()
    hits = predicate(values[known].astype(float if values.dtype.kind in "fiu" else object)).astype(bool)
    return hits.reindex(df.index, fill_value=False).astype(bool)


def image_drop_reasons(df: pd.DataFrame, policy: DecisionPolicy) -> pd.Series:
    """The first reason, in a fixed order, that makes a pair's image unusable."""
    status = df.get("decode_status", pd.Series("ok", index=df.index)).fillna("missing")
    missing, corrupt, too_large = IMAGE_STATUS_REASONS
    checks: list[tuple[str, pd.Series]] = [
        (missing, status.isin(["missing", "empty"])),
        (corrupt, status.eq("corrupt")),
        (too_large, status.eq("too_large")),
    ]
    drop_bounds = [b for b in bounds() if b.effect == "drop"]
    checks += [(b.reason, _bound_hits(df, b, policy)) for b in drop_bounds]
    # a rule that is on but whose scorer failed on this pair (no value, its error column says why): the
    # image was not checked (an NSFW model's failed batch, say), so it is not published as if it passed
    checks += [(f"unchecked:{b.column}", _unchecked(df, b, policy)) for b in drop_bounds]
    if policy.drop_duplicates and "dup_keep" in df.columns:
        kind = df.get("dup_kind", pd.Series(None, index=df.index)).fillna("duplicate")
        checks.append(("duplicate:" + kind, ~df["dup_keep"].fillna(True).astype(bool)))
    return _first_reason(df.index, checks)


IMAGE_STATUS_REASONS = ("image_missing", "image_corrupt", "image_too_large")


def is_image_drop(reason: str | None) -> bool:
    """Whether a decision's reason is one ``image_drop_reasons`` gives: the pair was dropped for its image (or as a
    duplicate), whatever its caption, so the drop says nothing about the caption."""
    if not isinstance(reason, str):
        return False
    first = reason.split(";", 1)[0].strip()
    return first in _image_reasons() or first.startswith(("unchecked:", "duplicate:"))


@functools.lru_cache(maxsize=1)
def _image_reasons() -> frozenset[str]:
    """The fixed labels of ``image_drop_reasons``: the image statuses and every drop bound's reason."""
    return frozenset(IMAGE_STATUS_REASONS) | {b.reason for b in bounds() if b.effect == "drop"}


def _first_reason(index: pd.Index, checks: list[tuple[str | pd.Series, pd.Series]]) -> pd.Series:
    """Per row, the label of the first check whose mask holds (a label Series gives each row its own), else
    NaN (as ``Series.mask`` left it): in arrays, as some twenty ``mask`` calls cost more than the rest of ``decide``."""
    reasons = np.full(len(index), np.nan, dtype=object)
    unset = np.ones(len(index), dtype=bool)
    for label, mask in checks:
        hit = unset & np.asarray(mask, dtype=bool)
        if hit.any():
            reasons[hit] = label if isinstance(label, str) else np.asarray(label, dtype=object)[hit]
            unset &= ~hit
    return pd.Series(reasons, index=index, dtype=object)


def _enabled(bound: Bound, policy: DecisionPolicy) -> bool:
    """The policy turns a bound off with None (a threshold) or False (a switch)."""
    setting = getattr(policy, bound.setting)
    return setting is not None and setting is not False


def unjudged_bounds(columns, policy: DecisionPolicy) -> list[Bound]:
    """The bounds the policy turns on whose column the scores lack (their profile runs no scorer of it, as
    ``text`` reads no image): they judge no pair, and a pair passes them unseen."""
    return [b for b in bounds() if _enabled(b, policy) and b.column not in columns]


def _bound_hits(df: pd.DataFrame, bound: Bound, policy: DecisionPolicy) -> pd.Series:
    """Rows a scorer's declared bound fires on; never where the policy turns it off (None / False)."""
    if not _enabled(bound, policy):
        return pd.Series(False, index=df.index)
    setting = getattr(policy, bound.setting)
    if bound.op == "false":
        return _flag(df, bound.column, lambda s: ~s.astype(bool))
    compare = OPERATORS[bound.op]
    return _flag(df, bound.column, lambda s: compare(s, setting))


def _unchecked(df: pd.DataFrame, bound: Bound, policy: DecisionPolicy) -> pd.Series:
    """Rows an enabled bound could not judge: the value is missing and its scorer recorded an error."""
    if not _enabled(bound, policy) or bound.column not in df.columns:
        return pd.Series(False, index=df.index)
    failed = pd.Series(False, index=df.index)
    for column in error_columns_of().get(bound.column, ()):
        if column in df.columns:
            failed |= df[column].notna() & df[column].astype(str).ne("")
    return df[bound.column].isna() & failed


def shown_below(values: pd.Series, threshold: float) -> pd.Series:
    """Scores as a reason shows them, to one decimal (three under a threshold below 10: 0.66 and 0.74 both read
    0.7 on a 0-1 scale); one below ``threshold`` that would round onto it or past
    it (94.96 under 95, 0.76 under a clip_score 0.8) with the digits that keep it below, so that a reason
    never shows a value the threshold passes."""
    shown = values.round(1 if abs(threshold) >= 10 else 3)  # a 0-1 score (clip_score) needs its thousandths
    near = values.lt(threshold) & shown.ge(threshold)
    text = shown.astype(str)
    if near.any():
        text[near] = values[near].map(lambda v: repr(float(v)))  # the shortest exact form: never rounds up
    return text


def _weak_caption_reasons(df: pd.DataFrame, policy: DecisionPolicy, cut: GlobalCut | None = None) -> pd.Series:
    """Why a caption is weak (semicolon-joined), or None when it is good enough to keep."""
    if policy.quality_column not in df:
        raise KeyError(f"decision column {policy.quality_column!r} is not among the scores "
                       f"({', '.join(c for c in df.columns if not c.endswith('_error'))}); "
                       "pick a column the active scoring profile produces")
    quality = pd.to_numeric(df[policy.quality_column], errors="coerce")
    parts: list[pd.Series] = []
    rules = df.get("text_quality_rules", pd.Series("", index=df.index)).fillna("")
    low = quality.isna() | (quality < policy.keep_threshold)
    label = "low_" + policy.quality_column + "=" + shown_below(quality, policy.keep_threshold)
    if policy.quality_column == "text_quality":  # its rules say why that score is low, not why another is
        label = label.where(rules.eq(""), label + " (" + rules + ")")
    parts.append(label.where(low))
    for bound in (b for b in bounds() if b.effect == "weak"):
        parts.append(pd.Series(_weak_hits(df, bound, policy), index=df.index))
    if policy.keep_expression:
        passed = passes_keep_expression(df, policy)
        parts.append(pd.Series(np.where(passed, None, EXPRESSION_FAILED + policy.keep_expression), index=df.index))
    if policy.keep_fraction is not None:
        top = in_top_fraction(df, policy, cut).to_numpy(dtype=bool)
        outside = f"outside top {policy.keep_fraction * 100:g}% by {policy.quality_column}"
        if cut.cut_score is not None:  # a pair at the cut score lost the draw among its ties: not below the cut
            tied = (quality == cut.cut_score).to_numpy(dtype=bool)
            outside = np.where(tied, f"{outside} (tied at the cut score {cut.cut_score:g}, not drawn: "
                                     f"{cut.ties_kept} of {cut.ties_at_cut} ties kept)", outside)
        parts.append(pd.Series(np.where(top, None, outside), index=df.index))
    # row by row over arrays: a DataFrame's apply(axis=1) built a Series per row
    joined = ["; ".join(v for v in row if isinstance(v, str)) for row in zip(*(p.to_numpy(dtype=object) for p in parts))]
    return pd.Series([v or None for v in joined], index=df.index, dtype=object)


WEAK_UNCHECKED = "caption_unchecked:"  # not "unchecked:", which names an image drop (``is_image_drop``)


def _weak_hits(df: pd.DataFrame, bound: Bound, policy: DecisionPolicy) -> np.ndarray:
    """Per row, the weak bound's reason where it fires, or where its scorer failed on the pair (no value, its
    error says why: a caption whose language check raised is not English-checked), else None."""
    return np.where(_bound_hits(df, bound, policy), bound.reason,
                    np.where(_unchecked(df, bound, policy), WEAK_UNCHECKED + bound.column, None))


@dataclass(frozen=True, eq=False)
class StillWeak:
    """The weak-caption bounds (``effect="weak"``: not English, too few words) a rewrite's scores still hit, as the
    decision reads them, where the policy publishes no original failing one (``fallback: drop``): there a candidate
    failing one is no fix, whatever its quality score (the cleaner takes a credit off a French caption, text_quality
    rises, and it was published while its twin without the credit was dropped). With ``keep_original`` a weak
    original above drop_threshold is published, so a better-scoring candidate that is weak the same way is too:
    nothing is checked."""

    policy: DecisionPolicy

    @property
    def columns(self) -> frozenset[str]:
        """The columns those bounds read (those the policy switches on): re-scored on each candidate."""
        if self.policy.fallback == "keep_original":
            return frozenset()
        return frozenset(b.column for b in bounds() if b.effect == "weak" and _enabled(b, self.policy))

    def __call__(self, scores: pd.DataFrame) -> list[str | None]:
        """Per row, the bounds hit ("; "-joined), or None; a column the scores lack is no hit (as for the decision)."""
        checked = self.columns
        hits = [_weak_hits(scores, b, self.policy) for b in bounds() if b.effect == "weak" and b.column in checked]
        return ["; ".join(v for v in row if isinstance(v, str)) or None for row in zip(*hits)] if hits \
            else [None] * len(scores)


def passes_keep_expression(scores: pd.DataFrame, policy: DecisionPolicy) -> pd.Series:
    """Pairs meeting ``keep_expression`` (all True without one): only a known true condition passes."""
    if not policy.keep_expression:
        return pd.Series(True, index=scores.index)
    from curation_pipeline.scoring.selection import select

    return pd.Series(select(scores, policy.keep_expression).to_numpy(dtype=bool), index=scores.index)


def caption_published(df: pd.DataFrame, policy: DecisionPolicy, cut: GlobalCut | None = None) -> pd.Series:
    """Whether ``decide`` and the outcome publish a pair's caption whatever the rewriter does (its image
    aside): kept as is, or marked for rewriting where a rejected rewrite falls back to an original that
    clears ``drop_threshold`` (rewrite on, ``fallback: keep_original``, inside the keep_fraction cut and
    meeting keep_expression). With rewrite off or ``fallback: drop`` a weak caption is not, nor one outside
    those filters: it is dropped, or kept only if a rewrite is accepted. ``cut``: as for ``decide`` (needed
    with keep_fraction on)."""
    quality = pd.to_numeric(df[policy.quality_column], errors="coerce") if policy.quality_column in df \
        else pd.Series(np.nan, index=df.index)
    clears_drop = (quality >= policy.drop_threshold).fillna(False).astype(bool)
    if policy.rewrite and policy.fallback == "keep_original":
        # not weak implies >= keep_threshold >= drop_threshold; outside the filters only a rewrite publishes
        return clears_drop & in_top_fraction(df, policy, cut) & passes_keep_expression(df, policy)
    if policy.quality_column not in df:
        return pd.Series(False, index=df.index)
    return _weak_caption_reasons(df, policy, cut).isna() & clears_drop


def in_top_fraction(scores: pd.DataFrame, policy: DecisionPolicy, cut: GlobalCut | None) -> pd.Series:
    """Pairs inside the global keep_fraction cut (all True when it is off). The cut is made once over
    every shard (``scoring.selection.global_cut``): MLM-Filter and DataComp cut the whole pool."""
    if policy.keep_fraction is None:
        return pd.Series(True, index=scores.index)
    if cut is None:
        raise ValueError(f"keep_fraction={policy.keep_fraction:g} is one cut over all shards: compute it with "
                         "global_cut over the whole pool and pass it as cut=")
    if cut.fraction != float(policy.keep_fraction) or cut.quality_column != policy.quality_column:
        raise ValueError(f"the cut is for keep_fraction={cut.fraction:g} by {cut.quality_column!r}, the policy asks "
                         f"keep_fraction={policy.keep_fraction:g} by {policy.quality_column!r}")
    return in_cut(scores, cut)


def _quality_scale(policy: DecisionPolicy) -> tuple[float, float]:
    """The quality column's declared range, open where it declares none."""
    return score_scales().get(policy.quality_column) or (-np.inf, np.inf)


def rewrite_needs(df: pd.DataFrame, policy: DecisionPolicy, cut: GlobalCut | None, inside: pd.Series,
                  passed: pd.Series) -> pd.Series:
    """Per pair, the least ``quality_column`` score its rewrite must reach to be published: ``drop_threshold``;
    outside the keep_fraction cut (``inside`` False), a score that puts it inside (``cut_needs``: its tie-break place
    counts); failing keep_expression (``passed`` False), one at which the expression holds with the pair's other
    scores as stored (``least_passing``: a rewrite re-scores the quality column alone). NaN where no score would (a
    failing term on the image)."""
    needs = pd.Series(float(policy.drop_threshold), index=df.index)
    if not inside.all():
        needs = needs.where(inside, np.maximum(needs, cut_needs(df, cut)))  # NaN (nothing kept) stays NaN
    if not passed.all():
        low, high = _quality_scale(policy)
        failing = ~passed
        reach = least_passing(df[failing], policy.keep_expression, policy.quality_column, low, high)
        needs[failing] = np.maximum(needs[failing], reach)
    return needs


def _not_rewritten(need: float, fails_expression: bool, policy: DecisionPolicy) -> str:
    """Why a pair outside the filters is dropped unrewritten: the score it would need, or that none would do."""
    column = policy.quality_column
    if not math.isnan(need):
        return f"; not rewritten: it would need {column} {need_text(need)}, past the top of its scale"
    why = ("keep_expression fails on its other scores as stored" if fails_expression
           else "the keep_fraction cut keeps nothing")
    return f"; not rewritten: no {column} score would publish it ({why})"


def decide(scores: pd.DataFrame, policy: DecisionPolicy, cut: GlobalCut | None = None) -> pd.DataFrame:
    """One decision per pair of the quality_scores table: ``action`` (keep/rewrite/drop), ``reason`` and
    the quality used; with keep_fraction on, ``in_keep_fraction`` too, and with keep_expression set,
    ``passes_keep_expression``. ``cut``: the global keep_fraction cut, required when keep_fraction is on."""
    df = scores.reset_index(drop=True)
    image_reason = image_drop_reasons(df, policy)
    weak = _weak_caption_reasons(df, policy, cut)
    quality = pd.to_numeric(df[policy.quality_column], errors="coerce")
    action = np.where(image_reason.notna(), DROP, np.where(weak.isna(), KEEP, REWRITE if policy.rewrite else DROP))
    good = f"{policy.quality_column}>={policy.keep_threshold:g}"
    reason = np.where(image_reason.notna(), image_reason, np.where(weak.isna(), good, weak))
    inside, passed = in_top_fraction(df, policy, cut), passes_keep_expression(df, policy)
    needs = rewrite_needs(df, policy, cut, inside, passed)
    # outside the filters and no score a rewrite could reach publishes it (a term on the image fails, or it lost
    # the draw at the top of the scale): dropped now, not rewritten to be dropped
    hopeless = (action == REWRITE) & (needs.isna() | (needs > _quality_scale(policy)[1])).to_numpy(dtype=bool)
    action = np.where(hopeless, DROP, action)
    reason = np.array([f"{r}{_not_rewritten(n, not p, policy)}" if h else r
                       for r, h, n, p in zip(reason, hopeless, needs.to_numpy(dtype=float), passed)], dtype=object)
    drop_at = np.inf if policy.nsfw_drop is None else policy.nsfw_drop
    review = _flag(df, "nsfw_prob", lambda s: (s >= policy.nsfw_review) & (s < drop_at))
    decisions = pd.DataFrame({"shard": df["shard"], "key": df["key"], "action": action, "reason": reason,
                              "quality_column": policy.quality_column, "quality_before": quality,
                              "nsfw_review": review})
    if policy.keep_fraction is not None:  # the outcome reads it: outside the cut, no fallback to the original
        decisions[IN_CUT] = inside.to_numpy(dtype=bool)
    if policy.keep_expression:  # the same for a pair failing the expression: a filter, as in MLM-Filter
        decisions[IN_EXPRESSION] = passed.to_numpy(dtype=bool)
    decisions[REWRITE_NEEDS] = needs.to_numpy(dtype=float)
    for column in DUPLICATE_COLUMNS:  # which group a pair is in, and which copy it duplicates
        if column in df:
            decisions[column] = df[column].to_numpy()
    return decisions
