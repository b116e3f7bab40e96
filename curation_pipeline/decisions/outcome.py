"""The final caption of every pair, once rewrite attempts are known."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from curation_pipeline.decisions.policy import (DROP, DROPPED, IN_CUT, IN_EXPRESSION, KEEP, KEPT, REWRITE,
                                                REWRITE_NEEDS, REWRITTEN, DecisionPolicy, shown_below)
from curation_pipeline.rewriting.verify import needs_shown
from curation_pipeline.validation.lengths import caption_lengths

FINAL_COLUMNS = [
    "shard", "key", "outcome", "reason", "original_caption", "final_caption", "rewritten",
    "rewriter", "rewriter_version", "quality_column", "quality_before", "quality_final", "action",
]
# final_captions' Parquet metadata: the runs that made the rewrite attempts it resolved (``attempt_runs``), so a
# rewritten_captions made again without it (its rows carry their run) shows as not what was published
ATTEMPT_RUNS_KEY = "rewritten_captions_runs"
# and the run that made the caption_decisions it resolved (their ``DECIDED_BY_KEY``): decisions made again without
# it show as newer than what was published
DECISIONS_RUN_KEY = "caption_decisions_run"


def attempt_runs(run_ids: Iterable) -> str:
    """The distinct runs of a shard's rewrite attempts, sorted and comma-joined ('' for no attempts): what
    final_captions records of the rewritten_captions it read, and what lineage compares with the stored one."""
    return ",".join(sorted({str(r) for r in run_ids if r is not None and not pd.isna(r)}))


def resolve_outcomes(decisions: pd.DataFrame, captions: pd.Series, lineage: pd.DataFrame,
                     policy: DecisionPolicy) -> pd.DataFrame:
    """Kept, rewritten or dropped, with the reason; ``captions`` is the original caption by key. A
    rewrite-marked pair takes its last accepted attempt, else the fallback (keep the original if it
    clears ``drop_threshold``); a rewrite that still scores under ``drop_threshold`` is dropped.

    keep_fraction and keep_expression are filters whose rejects get one chance: a pair outside the cut
    (``in_keep_fraction`` False) or failing the expression (``passes_keep_expression`` False, as ``decide``
    recorded them) is published only through an accepted rewrite, never by the fallback, so the pool keeps
    what the filters pass plus what rewriting saved (MLM-Filter / DataComp). Saved means the rewrite's score
    passes the filter it failed (``rewrite_needs``, as ``decide`` recorded it: inside the cut, or meeting the
    expression with the pair's other scores as stored), not only ``drop_threshold``."""
    df = decisions.reset_index(drop=True).copy()
    if IN_CUT in df:
        outside = ~df[IN_CUT].fillna(True).astype(bool)
    elif policy.keep_fraction is not None:  # decided without the mark: the fallback would publish the cut's rejects
        raise ValueError(f"keep_fraction={policy.keep_fraction:g} is on but caption_decisions have no {IN_CUT!r} "
                         "column (decided with keep_fraction off, or by an older version): re-materialize "
                         "selection_cut and caption_decisions with this policy")
    else:
        outside = pd.Series(False, index=df.index)
    if IN_EXPRESSION in df:
        outside = outside | ~df[IN_EXPRESSION].fillna(True).astype(bool)
    elif policy.keep_expression:  # decided without the mark: the fallback would publish the expression's rejects
        raise ValueError(f"keep_expression={policy.keep_expression!r} is set but caption_decisions have no "
                         f"{IN_EXPRESSION!r} column (decided without it, or by an older version): re-materialize "
                         "caption_decisions with this policy")
    df["original_caption"] = df["key"].map(captions).astype(object)  # text even when empty (not float)
    accepted = lineage[lineage["accepted"].astype(bool)] if len(lineage) else lineage
    best = accepted.sort_values(["key", "attempt"]).groupby("key").tail(1).set_index("key") if len(accepted) else None
    last = lineage.sort_values(["key", "attempt"]).groupby("key").tail(1).set_index("key") if len(lineage) else None

    def lookup(frame, column):
        if frame is None:
            return pd.Series(np.nan, index=df.index, dtype=object)
        return df["key"].map(frame[column])

    cand = lookup(best, "candidate_caption")
    after = pd.to_numeric(lookup(best, "quality_after"), errors="coerce")
    rejection = lookup(last, "reason")
    before = pd.to_numeric(df["quality_before"], errors="coerce")

    is_rewrite = df["action"].eq(REWRITE)
    got = is_rewrite & cand.notna()
    # what each pair's rewrite must score, as decided (older decisions: drop_threshold alone)
    needs = (pd.to_numeric(df[REWRITE_NEEDS], errors="coerce") if REWRITE_NEEDS in df
             else pd.Series(float(policy.drop_threshold), index=df.index))
    good_rewrite = got & (after >= needs)
    short = got & (after >= policy.drop_threshold) & ~good_rewrite  # clears drop_threshold, not the filter it failed
    # an original with no words (none, blank, whitespace) is no caption to publish, whatever a threshold of 0 says
    blank = pd.Series(caption_lengths(df["original_caption"]) == 0, index=df.index)
    fallback_ok = (is_rewrite & ~got & ~outside & (policy.fallback == "keep_original")
                   & (before >= policy.drop_threshold) & ~blank)
    unsaved = is_rewrite & ~got & outside  # a filter's reject and no accepted rewrite: dropped, naming the filter
    kept = df["action"].eq(KEEP) & ~blank

    outcome = np.select(
        [kept, df["action"].eq(DROP), good_rewrite, fallback_ok],
        [KEPT, DROPPED, REWRITTEN, KEPT], default=DROPPED)
    reason = np.select(
        [df["action"].eq(KEEP) & blank, df["action"].isin([KEEP, DROP]), good_rewrite, fallback_ok, short, got,
         unsaved, is_rewrite & ~got & blank],
        ["no caption to keep (" + df["reason"].astype(str) + ")",
         df["reason"],
         "rewritten: " + df["reason"].astype(str),
         # why it was up for a rewrite too: a kept "not_english" caption says so, not only that its rewrite failed
         df["reason"].astype(str) + "; rewrite rejected (" + rejection.fillna("not attempted").astype(str)
         + "); kept original",
         df["reason"].astype(str) + "; rewrite short of what that filter needs ("
         + pd.Series([needs_shown(a, n) if a == a and n == n else "" for a, n in zip(after, needs)], index=df.index)
         + ")",
         "caption still weak after rewriting (" + shown_below(after, policy.drop_threshold)
         + f" < {policy.drop_threshold:g})",
         df["reason"].astype(str) + "; rewrite rejected (" + rejection.fillna("not attempted").astype(str) + ")",
         "no caption and no rewrite accepted (" + rejection.fillna("no rewrite attempted").astype(str) + ")"],
        # and why the original was not kept instead: the fallback, or a score under drop_threshold
        default="caption weak and not rewritten (" + rejection.fillna("no rewrite attempted").astype(str) + "; "
        + ("fallback: drop" if policy.fallback != "keep_original" else
           np.where(before.isna(), "original unscored",
                    "original " + shown_below(before, policy.drop_threshold)
                    + f" < drop_threshold {policy.drop_threshold:g}"))
        + ")")
    final = np.where(outcome == REWRITTEN, cand, np.where(outcome == KEPT, df["original_caption"], None))
    out = pd.DataFrame({
        "shard": df["shard"], "key": df["key"], "outcome": outcome, "reason": reason,
        "original_caption": df["original_caption"], "final_caption": final,
        "rewritten": outcome == REWRITTEN,
        "rewriter": np.where(outcome == REWRITTEN, lookup(best, "rewriter"), None),
        "rewriter_version": np.where(outcome == REWRITTEN, lookup(best, "rewriter_version"), None),
        "quality_column": df["quality_column"], "quality_before": before,
        "quality_final": np.where(outcome == REWRITTEN, after, np.where(outcome == KEPT, before, np.nan)),
        "action": df["action"],
    })
    return out[FINAL_COLUMNS]
