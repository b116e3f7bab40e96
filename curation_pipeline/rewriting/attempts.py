"""Rewrite the weak tail, re-score each candidate, and record every attempt as lineage."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from curation_pipeline.pairs import PairBatch, split_on_failure
from curation_pipeline.rewriting.base import RewriteCandidate, Rewriter
from curation_pipeline.rewriting.verify import AcceptanceRules, edit_ratio, judge, length_ratio
from curation_pipeline.scoring.prefetch import DEFAULT_DEPTH, prefetch
from curation_pipeline.scoring.run import Raised

LINEAGE_COLUMNS = [
    "shard", "key", "attempt", "rewriter", "rewriter_version", "prompt_hash",
    "original_caption", "candidate_caption", "quality_column", "quality_before", "quality_after",
    "edit_ratio", "length_ratio", "semantic_similarity", "accepted", "reason",
    "rewriter_output", "rewriter_scores", "run_id", "created_at",
]

NO_CANDIDATE = "no candidate: "  # the reason of an attempt that got no caption, then why
RAISED = "rewriter failed: "  # why, where the rewriter raised on the pair (``rewrite_with_retry``)

Rescore = Callable[[PairBatch], pd.DataFrame]
Similarity = Callable[[list[str], list[str]], np.ndarray]


def empty_lineage() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in LINEAGE_COLUMNS})


def rewrite_batches(batches: Iterable[PairBatch], *, shard: str, rewriter: Rewriter, rescore: Rescore,
                    quality_column: str, scores_before: dict[str, float], rules: AcceptanceRules,
                    run_id: str, similarity: Similarity | None = None, attempt: int = 1,
                    prefetch_depth: int = DEFAULT_DEPTH, needs: dict[str, float] | None = None) -> pd.DataFrame:
    """One lineage row per pair handed in, accepted or not, with the reason. ``needs``: key -> the least score
    that publishes the pair, where its decision records one above ``rules.min_quality`` (``rewrite_needs``).

    ``batches`` is consumed ``prefetch_depth`` batches ahead in a background thread, so reading
    and decoding the next targets overlaps the rewriter's generation (0: serially)."""
    rows: list[dict] = []
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for batch in prefetch(batches, depth=prefetch_depth, name="curate-rewrite-prefetch"):
        candidates = rewrite_with_retry(rewriter, batch)
        usable = [i for i, c in enumerate(candidates) if c.caption]
        after, weak = np.full(len(batch), math.nan), [None] * len(batch)
        if usable:
            sub = PairBatch([batch.keys[i] for i in usable], [candidates[i].caption for i in usable],
                            [batch.images[i] for i in usable])
            rescored = rescore(sub)
            after[usable] = pd.to_numeric(rescored[quality_column], errors="coerce").to_numpy(dtype=float)
            if rules.still_weak is not None:
                for i, hit in zip(usable, rules.still_weak(rescored.reset_index(drop=True))):
                    weak[i] = hit
        # a fresh caption for a pair that had none to edit (as the rewriter saw it: no words, or only the
        # image placeholder) is no edit: its edit ratio, length ratio and similarity are not measured (NaN)
        fresh = [rewriter.no_caption_to_edit(c) for c in batch.captions]
        edits = [i for i in usable if not fresh[i]]
        sims = np.full(len(batch), math.nan)
        if similarity is not None and edits:
            sims[edits] = similarity([batch.captions[i] for i in edits], [candidates[i].caption for i in edits])
        for i, (key, original, cand) in enumerate(zip(batch.keys, batch.captions, candidates)):
            before = float(scores_before.get(key, math.nan))
            measured = bool(cand.caption) and not fresh[i]
            edit = edit_ratio(original, cand.caption) if measured else math.nan
            length = length_ratio(original, cand.caption) if measured else math.nan
            if cand.caption:
                accepted, reason = judge(before, float(after[i]), edit, length, float(sims[i]), rules,
                                         original=original, candidate=cand.caption, fresh=fresh[i], weak=weak[i],
                                         needs=(needs or {}).get(key))
                if cand.error:  # what else the reply got wrong (AITQE: a score that did not parse)
                    reason = f"{reason}; reply: {cand.error}"
            else:
                accepted, reason = False, f"{NO_CANDIDATE}{cand.error or 'empty output'}"
            rows.append({
                "shard": shard, "key": key, "attempt": attempt,
                "rewriter": rewriter.name, "rewriter_version": rewriter.version,
                "prompt_hash": cand.prompt_hash if cand.prompt_hash is not None else rewriter.prompt_hash,
                "original_caption": original, "candidate_caption": cand.caption,
                "quality_column": quality_column, "quality_before": before, "quality_after": float(after[i]),
                "edit_ratio": edit, "length_ratio": length, "semantic_similarity": float(sims[i]),
                "accepted": bool(accepted), "reason": reason,
                "rewriter_output": cand.raw, "rewriter_scores": _scores_text(cand.scores),
                "run_id": run_id, "created_at": now,
            })
    return pd.DataFrame(rows, columns=LINEAGE_COLUMNS) if rows else empty_lineage()


def rewrite_with_retry(rewriter: Rewriter, batch: PairBatch) -> list[RewriteCandidate]:
    """Rewrite a batch; on failure (an exception, out of memory) halve it down to single pairs,
    and a pair that still fails gets no candidate, with the reason, instead of stopping the shard."""
    candidates = split_on_failure(
        batch, rewriter.rewrite,
        failed=lambda part, exc: [RewriteCandidate(None, error=f"{RAISED}{type(exc).__name__}: {exc}"[:300])
                                  for _ in range(len(part))],
        combine=lambda parts: [c for part in parts for c in part])
    if len(candidates) != len(batch):
        raise RuntimeError(f"{rewriter.ident} returned {len(candidates)} candidates for {len(batch)} pairs")
    return candidates


def rewriter_raised(lineage: pd.DataFrame) -> Raised:
    """The attempts on which the rewriter raised, of all its attempts, with its most common reason: a rewriter
    that fails on every pair (out of memory, a broken checkpoint) leaves each weak caption unsaved, and decisions
    drop them as if no rewrite had been good enough (the ``rewrites_complete`` check fails such a shard)."""
    reasons = lineage["reason"].astype(str) if len(lineage) else pd.Series(dtype=str)
    return _counted(lineage, reasons.str.startswith(NO_CANDIDATE + RAISED), pd.Series(True, index=lineage.index))


def replies_unread(lineage: pd.DataFrame, model_rewriters) -> Raised:
    """The attempts on which a model (a rewriter of ``model_rewriters``) replied, yet no caption could be read from
    its reply, of all its attempts: replies cut off at max_new_tokens, or a checkpoint not trained on the format,
    leave every weak caption unsaved as a rewriter that raises does, with nothing raised."""
    if not len(lineage):
        return Raised("rewriter", 0, 0)
    reasons = lineage["reason"].astype(str)
    model = lineage["rewriter"].isin(list(model_rewriters))
    unread = (model & reasons.str.startswith(NO_CANDIDATE) & ~reasons.str.startswith(NO_CANDIDATE + RAISED)
              & lineage["rewriter_output"].notna())
    return _counted(lineage, unread, model)


def _counted(lineage: pd.DataFrame, hit: pd.Series, attempted: pd.Series) -> Raised:
    """``Raised`` of the ``attempted`` attempts, ``hit`` of them, with their most common reason (after
    ``NO_CANDIDATE``) and the rewriters that made them."""
    top = lineage.loc[hit, "reason"].astype(str).str.removeprefix(NO_CANDIDATE).value_counts() if len(lineage) \
        else pd.Series(dtype=int)
    names = lineage.loc[attempted, "rewriter"].dropna().unique() if len(lineage) else ()
    return Raised(", ".join(map(str, names)) or "rewriter", int(hit.sum()), int(attempted.sum()),
                  str(top.index[0]) if len(top) else None, int(top.iloc[0]) if len(top) else 0)


def _scores_text(scores: dict[str, float]) -> str | None:
    """The rewriter's own scores as JSON, keys sorted; a missing score (NaN) is null, as JSON has no NaN."""
    if not scores:
        return None
    return json.dumps({k: None if math.isnan(v) else float(v) for k, v in scores.items()}, sort_keys=True)
