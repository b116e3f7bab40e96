"""One in-memory Great Expectations context per process, shared by every check.

Importing GX costs seconds and each context registers data sources, so the context,
its pandas data source and one whole-dataframe batch definition are built once and
each check passes its DataFrame as a batch parameter. Progress bars are off (and
analytics, see the package ``__init__``): checks run inside pipeline steps.
"""

from __future__ import annotations

import threading
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.expectation import Expectation

from curation_pipeline.values import plain_tree

_LOCK = threading.Lock()
_BATCH_DEFINITION = None


def _batch_definition():
    global _BATCH_DEFINITION
    if _BATCH_DEFINITION is None:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        asset = context.data_sources.add_pandas("curation_validation").add_dataframe_asset("frame")
        _BATCH_DEFINITION = asset.add_batch_definition_whole_dataframe("whole")
    return _BATCH_DEFINITION


def validate(df: pd.DataFrame, expectations: list[Expectation], result_format: Any = "SUMMARY") -> list:
    """Validate ``expectations`` as one suite (metrics are shared) and return results in input order.

    GX reorders suite results, so each expectation is tagged with its position in ``meta``.
    """
    for i, expectation in enumerate(expectations):
        expectation.meta = {**(expectation.meta or {}), "position": i}
    suite = gx.ExpectationSuite(name="curation_validation", expectations=expectations)
    with _LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
        results = batch.validate(suite, result_format=result_format).results
    return sorted(results, key=lambda r: r.expectation_config.meta["position"])


def exception_message(result) -> str | None:
    """GX reports a failing metric inside the result; surface its message instead of a silent False."""
    info = result.exception_info or {}
    if "raised_exception" in info:
        info = {"_": info}
    for detail in info.values():
        if isinstance(detail, dict) and detail.get("raised_exception"):
            return str(detail.get("exception_message"))
    return None


def describe(result) -> dict:
    """The parts of a GX result a report needs: type, column, success, observed value or unexpected count."""
    details = result.result or {}
    observed = plain_tree(details.get("observed_value"))
    described = {
        "type": result.expectation_config.type,
        "column": result.expectation_config.kwargs.get("column"),
        "success": bool(result.success),
        "observed_value": observed,
        "error": exception_message(result),
    }
    if "unexpected_count" in details:
        described["unexpected_count"] = int(details["unexpected_count"])
    return described
