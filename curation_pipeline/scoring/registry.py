"""Every scorer, registered once: checks, policy, sidecars, report, UI schemas, dedup and profiles read
these declarations, so a new signal is a scorer class plus one line in ``SCORERS``. Imports are lazy:
the scorer modules pull in their models' libraries.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import import_module

from curation_pipeline.scoring.columns import Bound, ScoreColumn, error_columns

EVERY = ("offline", "text", "clip", "mlm", "full")
WITH_IMAGES = ("offline", "clip", "mlm", "full")

# module:class and the profiles that run it, in the order decisions name their reasons
SCORERS = (
    ("curation_pipeline.scoring.datacomp:DataCompBasicRules", EVERY),
    ("curation_pipeline.scoring.text_quality:CaptionTextQuality", EVERY),
    ("curation_pipeline.scoring.signals.nsfw:NsfwScorer", WITH_IMAGES),
    ("curation_pipeline.scoring.signals.ocr:TextInImageScorer", WITH_IMAGES),
    ("curation_pipeline.scoring.signals.image_quality:ImageQualityScorer", WITH_IMAGES),
    ("curation_pipeline.scoring.signals.duplicates:DuplicateSignals", WITH_IMAGES),
    ("curation_pipeline.scoring.clip:ClipScorer", ("clip", "full")),
    ("curation_pipeline.scoring.mlm.scorer:MlmFilterScorer", ("mlm", "full")),
    ("curation_pipeline.scoring.aitqe:AitqeScorer", WITH_IMAGES),  # when the profile names an AITQE model
)


@lru_cache(maxsize=None)
def scorer_classes(profile: str | None = None) -> tuple[type, ...]:
    """Every registered scorer class, or those a profile runs (only their modules are imported)."""
    return tuple(getattr(import_module(entry.split(":")[0]), entry.split(":")[1])
                 for entry, profiles in SCORERS if profile is None or profile in profiles)


def code_versions(profile) -> dict[str, str]:
    """Each scorer a ``ScoringProfile`` runs, by name: its code's version (the class's ``version``; no model
    is loaded). quality_scores' code version is made of them, so a scorer's new version marks the scores
    that profile made stale."""
    return {cls.name: cls.version for cls in scorer_classes(profile.name) if cls.profile_columns(profile)}


def profile_columns(profile) -> list[str]:
    """The columns a ``ScoringProfile``'s scorers write, from their declarations (no model is loaded)."""
    return [name for cls in scorer_classes(profile.name) for name in cls.profile_columns(profile)]


@lru_cache(maxsize=1)
def score_columns() -> dict[str, ScoreColumn]:
    """Every column a registered scorer can write, by name."""
    return {c.name: c for cls in scorer_classes() for c in cls.outputs}


@lru_cache(maxsize=1)
def bounds() -> tuple[Bound, ...]:
    return tuple(b for cls in scorer_classes() for b in cls.bounds)


@lru_cache(maxsize=1)
def error_columns_of() -> dict[str, tuple[str, ...]]:
    """Each declared column: its scorer's error columns, where a pair's missing value says why."""
    from types import SimpleNamespace

    return {c.name: error_columns(SimpleNamespace(name=cls.name, columns=tuple(o.name for o in cls.outputs)))
            for cls in scorer_classes() for c in cls.outputs}


def score_ranges() -> dict[str, tuple[float, float]]:
    """Where every known value of a column lies (the scores' range check)."""
    return {name: c.range for name, c in score_columns().items() if c.range is not None}


def score_scales() -> dict[str, tuple[float, float]]:
    """The scale a policy's thresholds on a column are set on (``ScoreColumn.threshold_scale``)."""
    return {name: c.threshold_scale for name, c in score_columns().items() if c.threshold_scale is not None}


def columns_of(scorer: str) -> tuple[str, ...]:
    """The declared columns of the scorer named ``scorer`` (e.g. ``dup``)."""
    for cls in scorer_classes():
        if cls.name == scorer:
            return tuple(c.name for c in cls.outputs)
    raise KeyError(f"no registered scorer named {scorer!r}")
