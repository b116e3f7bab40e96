"""``curate lineage`` shows how close each attempt stayed to its original: edit ratio, length ratio and semantic
similarity on every attempt line, a measure that was not taken (NaN) left out."""

import math

import pandas as pd

from curation_pipeline.reporting.lineage import CaptionHistory, format_history


def test_each_attempt_line_shows_its_minimality():
    final = pd.DataFrame([{"shard": "s", "key": "k", "outcome": "rewritten", "reason": "rewrite accepted",
                           "original_caption": "A dog. Photo: J", "final_caption": "A dog.", "rewriter": "cleaner",
                           "rewriter_version": "6", "quality_column": "text_quality", "quality_before": 40.0,
                           "quality_final": 90.0, "action": "rewrite"}])
    attempt = {"shard": "s", "key": "k", "rewriter": "cleaner", "rewriter_version": "6", "prompt_hash": None,
               "original_caption": "A dog. Photo: J", "quality_before": 40.0, "run_id": "run12345678",
               "created_at": "2024-01-01"}
    attempts = pd.DataFrame([
        {**attempt, "attempt": 1, "candidate_caption": "A dog. Photo", "quality_after": 80.0, "edit_ratio": 0.284,
         "length_ratio": 1.1, "semantic_similarity": 0.9149, "accepted": False, "reason": "malformed rewrite"},
        {**attempt, "attempt": 2, "candidate_caption": "A dog.", "quality_after": 90.0, "edit_ratio": 0.5,
         "length_ratio": 0.5, "semantic_similarity": math.nan, "accepted": True, "reason": "score improved"},
    ])
    lines = format_history(CaptionHistory(final=final, attempts=attempts, matched=1)).splitlines()
    first, second = (line for line in lines if line.startswith("  attempt "))
    assert "(score 40 -> 80, edit 0.28, length 1.10, similarity 0.91; malformed rewrite)" in first
    assert "(score 40 -> 90, edit 0.50, length 0.50; score improved)" in second


def test_an_attempt_without_a_candidate_or_a_score_says_so():
    """A rewriter that gave nothing: no candidate and an unknown score after, not "None" and "nan"."""
    final = pd.DataFrame([{"shard": "s", "key": "k", "outcome": "dropped", "reason": "caption weak and not rewritten",
                           "original_caption": "IMG_0042", "final_caption": None, "rewriter": None,
                           "rewriter_version": None, "quality_column": "text_quality", "quality_before": 30.0,
                           "quality_final": math.nan, "action": "rewrite"}])
    attempts = pd.DataFrame([{"shard": "s", "key": "k", "rewriter": "cleaner", "rewriter_version": "6",
                              "prompt_hash": None, "original_caption": "IMG_0042", "quality_before": 30.0,
                              "run_id": "run12345678", "created_at": "2024-01-01", "attempt": 1,
                              "candidate_caption": None, "quality_after": math.nan, "edit_ratio": math.nan,
                              "length_ratio": math.nan, "semantic_similarity": math.nan, "accepted": False,
                              "reason": "no candidate: no change"}])
    (line,) = (line for line in format_history(CaptionHistory(final=final, attempts=attempts, matched=1)).splitlines()
               if line.startswith("  attempt "))
    assert line.endswith("rejected: no candidate (score 30 -> unknown; no candidate: no change)"), line
