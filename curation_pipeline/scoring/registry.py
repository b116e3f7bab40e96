"""Every scorer, registered once: what its columns are and what they can decide.

The score-range check, the decision policy, the curated sidecars, the report, the UI's column
schemas and dedup read these declarations instead of lists of their own. A new signal is a
scorer class with ``outputs`` (and ``bounds``) added to ``SCORERS``. Imports are lazy: the
scorer modules pull in their models' libraries.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import import_module

from curation_pipeline.scoring.columns import Bound, ScoreColumn

# module:class, in the order decisions name their reasons
SCORERS = (
    "curation_pipeline.scoring.datacomp:DataCompBasicRules",
    "curation_pipeline.scoring.text_quality:CaptionTextQuality",
    "curation_pipeline.scoring.signals.nsfw:NsfwScorer",
    "curation_pipeline.scoring.signals.ocr:TextInImageScorer",
    "curation_pipeline.scoring.signals.image_quality:ImageQualityScorer",
    "curation_pipeline.scoring.signals.duplicates:DuplicateSignals",
    "curation_pipeline.scoring.clip:ClipScorer",
    "curation_pipeline.scoring.mlm.scorer:MlmFilterScorer",
    "curation_pipeline.scoring.aitqe:AitqeScorer",
)


@lru_cache(maxsize=1)
def scorer_classes() -> tuple[type, ...]:
    return tuple(getattr(import_module(module), name) for module, name in (s.split(":") for s in SCORERS))


@lru_cache(maxsize=1)
def score_columns() -> dict[str, ScoreColumn]:
    """Every column a registered scorer can write, by name."""
    return {c.name: c for cls in scorer_classes() for c in cls.outputs}


@lru_cache(maxsize=1)
def bounds() -> tuple[Bound, ...]:
    return tuple(b for cls in scorer_classes() for b in cls.bounds)


def score_ranges() -> dict[str, tuple[float, float]]:
    return {name: c.range for name, c in score_columns().items() if c.range is not None}


def columns_of(scorer: str) -> tuple[str, ...]:
    """The declared columns of the scorer named ``scorer`` (e.g. ``dup``)."""
    for cls in scorer_classes():
        if cls.name == scorer:
            return tuple(c.name for c in cls.outputs)
    raise KeyError(f"no registered scorer named {scorer!r}")
