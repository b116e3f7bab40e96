"""MLM-Filter's four quality metrics: prompts (the authors'), score math, token tree, scorer."""

from curation_pipeline.scoring.mlm.scorer import MlmFilterScorer

__all__ = ["MlmFilterScorer"]
