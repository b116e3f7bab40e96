"""Plain Python values for JSON and Dagster metadata (which reject numpy scalars and NaN)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """numpy/pandas scalars to Python; NaN/NA to None."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    try:
        if value is not None and not isinstance(value, (str, bytes, list, dict, tuple)) and value != value:
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, float) and math.isinf(value):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def plain_dict(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: plain(v) for k, v in mapping.items()}


def plain_tree(value: Any) -> Any:
    """``plain`` all the way down: dicts (keys as strings), lists, tuples and arrays (as lists)."""
    if isinstance(value, dict):
        return {str(k): plain_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain_tree(v) for v in value]
    return plain(value)


def jsonable(value: Any) -> Any:
    """A ``json.dumps`` ``default``: ``plain``, and the text of anything JSON has no type for."""
    value = plain(value)
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)
