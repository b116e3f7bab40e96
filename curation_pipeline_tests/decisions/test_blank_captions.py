"""A pair with no caption (none, blank, whitespace) is never published as it is: a drop_threshold of 0 (a valid
setting) once kept it through the fallback, and a blank caption was published or a missing one failed the shard."""

import numpy as np
import pandas as pd

from curation_pipeline.checks.quality import final_captions_complete
from curation_pipeline.decisions.outcome import resolve_outcomes
from curation_pipeline.decisions.policy import DecisionPolicy, decide
from curation_pipeline.rewriting.attempts import empty_lineage


def test_a_pair_without_words_is_kept_only_through_an_accepted_rewrite():
    captions = pd.Series({"text": "A dog on a lawn.", "none": None, "blank": "", "spaces": " \t ", "saved": None})
    scores = pd.DataFrame({"shard": "s", "key": list(captions.index), "decode_status": "ok",
                           "text_quality": [100.0, 0.0, 0.0, 0.0, 0.0]})
    policy = DecisionPolicy(drop_threshold=0.0, drop_duplicates=False)
    decisions = decide(scores, policy)
    lineage = pd.DataFrame([{"key": "saved", "attempt": 1, "candidate_caption": "A dog.", "quality_after": 90.0,
                             "accepted": True, "rewriter": "vlm", "rewriter_version": "1", "reason": "improved"}])
    out = resolve_outcomes(decisions, captions, lineage, policy).set_index("key")
    assert out["outcome"].to_dict() == {"text": "kept", "none": "dropped", "blank": "dropped", "spaces": "dropped",
                                        "saved": "rewritten"}
    assert out.loc["spaces", "reason"].startswith("no caption and no rewrite accepted (")
    assert out.loc["spaces", "final_caption"] is None
    # a keep_threshold of 0 keeps every caption as is: still none without words
    keep_all = DecisionPolicy(keep_threshold=0.0, drop_threshold=0.0, drop_duplicates=False)
    out = resolve_outcomes(decide(scores, keep_all), captions, empty_lineage(), keep_all).set_index("key")
    assert out["outcome"].tolist() == ["kept", "dropped", "dropped", "dropped", "dropped"]
    assert out.loc["blank", "reason"].startswith("no caption to keep (")


def test_a_kept_blank_caption_fails_the_completeness_check():
    final = pd.DataFrame({"key": ["a", "b", "c"], "outcome": ["kept", "rewritten", "dropped"], "reason": "r",
                          "final_caption": ["A dog.", " \t", None], "quality_final": np.nan})
    kept = final[final["outcome"].ne("dropped")]
    result = final_captions_complete(final, kept, 3)
    assert not result.passed and "1 kept pairs without a final caption: ['b']" in result.description
