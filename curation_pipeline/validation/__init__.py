"""Great Expectations checks on curated shards: caption length drift and table contracts.

The names below load on first use (PEP 562), so ``curate run`` can start the GX helper process
(``helper.start``) before pandas, Dagster or anything else is imported here.
"""

import os
from importlib import import_module

# Before anything imports great_expectations: pipeline steps must not phone home.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

_EXPORTS = {
    "DriftResult": "drift", "DriftThresholds": "drift", "caption_lengths": "lengths",
    "check_caption_length_drift": "drift", "compare_lengths": "drift", "reference_partition": "drift",
    "LengthCounts": "lengths",
    "TableCheckResult": "tables", "check_table": "tables",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
