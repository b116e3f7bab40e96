"""What a scorer declares about its output: each column's meaning, type and range, and the bounds
on it that decide a pair. The checks, the policy, the sidecars, the report, the UI's column
schemas and dedup read these declarations (``scoring.registry``), so a new signal is written once."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Literal

Kind = Literal["float", "int", "bool", "str", "json"]


@dataclass(frozen=True)
class ScoreColumn:
    name: str
    description: str
    kind: Kind = "float"
    range: tuple[float, float] | None = None  # every known value lies in it (NaN = unknown is allowed)
    # the scale a policy's thresholds on it are set on, where values may fall outside it (a released
    # MLM-Filter reply read as the authors read it: asked for 0-100, "150" kept); else its range
    scale: tuple[float, float] | None = None
    sidecar: bool = True  # copied into the curated sample's .json

    @property
    def threshold_scale(self) -> tuple[float, float] | None:
        return self.scale or self.range

    @property
    def numeric(self) -> bool:
        return self.kind in ("float", "int")


ERROR_SUFFIX = "_error"


def error_column(scorer_name: str) -> ScoreColumn:
    return ScoreColumn(f"{scorer_name}{ERROR_SUFFIX}",
                       "Why this scorer has no value for the pair (empty when it scored).", kind="str", sidecar=False)


def error_columns(scorer) -> tuple[str, ...]:
    """Where ``scorer`` (a Scorer, or its description: ``name`` and ``columns``) gives its reasons: the error
    columns it declares (``error_column``), or ``<name>_error`` when it declares none, so that a batch it
    fails on still says why."""
    return tuple(c for c in scorer.columns if c.endswith(ERROR_SUFFIX)) or (f"{scorer.name}{ERROR_SUFFIX}",)


OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Bound:
    """A decision a column can trigger: ``column op policy.<setting>`` (a threshold; None turns it off),
    or ``op="false"``: the boolean column is False while the policy switch ``setting`` is on.
    ``effect``: ``drop`` makes the image unusable; ``weak`` sends the caption to rewriting."""

    column: str
    op: Literal["<", "<=", ">", ">=", "false"]
    setting: str
    reason: str
    effect: Literal["drop", "weak"] = "drop"
