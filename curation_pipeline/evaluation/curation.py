"""The pipeline's caption path, in process and without images: score -> decide -> rewrite -> resolve.

The same domain functions the Dagster assets call, over a list of captions: what the ``text``
profile with the offline cleaner decides, as the cleaner benchmark and ``curate evaluate --labels
... --from-captions`` measure it.
"""

from __future__ import annotations

import pandas as pd

from curation_pipeline.decisions.outcome import resolve_outcomes
from curation_pipeline.decisions.policy import DecisionPolicy, StillWeak, decide
from curation_pipeline.pairs import PairBatch
from curation_pipeline.rewriting.attempts import empty_lineage, rewrite_batches
from curation_pipeline.rewriting.base import Rewriter
from curation_pipeline.rewriting.targets import rescored_columns, rewrite_needs_of, rewrite_targets
from curation_pipeline.rewriting.verify import AcceptanceRules


def curate_captions(keys: list[str], captions: list[str | None], *, policy: DecisionPolicy | None = None,
                    rules: AcceptanceRules | None = None, rewriter: Rewriter | None = None,
                    shard: str = "evaluation", batch_size: int = 256) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(final_captions table, lineage table) for these captions, as the pipeline would make them."""
    from curation_pipeline.rewriting.cleaner import CaptionCleaner
    from curation_pipeline.scoring.profiles import caption_scorers
    from curation_pipeline.scoring.run import score_batch

    policy = policy or DecisionPolicy()
    rules = rules or AcceptanceRules(min_improvement=policy.min_improvement, min_quality=policy.drop_threshold,
                                     still_weak=StillWeak(policy))
    rewriter = rewriter or CaptionCleaner()
    scorers = caption_scorers()
    frames = [score_batch(scorers, part) for part in PairBatch(list(keys), list(captions)).chunks(batch_size)]
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    scores.insert(0, "shard", shard)
    scores.insert(1, "key", list(keys))
    scores["caption"] = list(captions)
    decisions = decide(scores, policy)
    targets = rewrite_targets(decisions, scores)
    if targets.empty:
        lineage = empty_lineage()
    else:
        rescorers = [s for s in scorers if rescored_columns({policy.quality_column}, rules) & set(s.columns)]
        batch = PairBatch(targets["key"].tolist(), targets["caption"].tolist())
        lineage = rewrite_batches(batch.chunks(batch_size), shard=shard, rewriter=rewriter,
                                  rescore=lambda b: score_batch(rescorers, b), quality_column=policy.quality_column,
                                  scores_before=dict(zip(targets["key"], targets["quality_before"].astype(float))),
                                  rules=rules, run_id="evaluation", needs=rewrite_needs_of(targets))
    final = resolve_outcomes(decisions, pd.Series(list(captions), index=list(keys)), lineage, policy)
    return final, lineage
