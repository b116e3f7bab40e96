"""Great Expectations checks on curated shards: caption length drift and table contracts."""

import os

# Before anything imports great_expectations: pipeline steps must not phone home.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from curation_pipeline.validation.drift import (  # noqa: E402
    DriftResult,
    DriftThresholds,
    caption_lengths,
    check_caption_length_drift,
    reference_partition,
)
from curation_pipeline.validation.tables import TableCheckResult, check_table  # noqa: E402

__all__ = [
    "DriftResult",
    "DriftThresholds",
    "TableCheckResult",
    "caption_lengths",
    "check_caption_length_drift",
    "check_table",
    "reference_partition",
]
