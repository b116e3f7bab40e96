"""Contract checks on the pipeline's tables (columns present, keys unique, scores in range).

A failure names the offending rows by key (the first ``unique`` column unless given). Range checks
skip NaN on purpose: an unknown score is allowed, unless ``non_null`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from curation_pipeline.values import plain_tree

MAX_EXAMPLES = 5


@dataclass
class TableCheckResult:
    passed: bool
    n_rows: int
    failures: list[str]
    expectations: list[dict]

    def to_metadata(self) -> dict[str, float | int | str | bool]:
        values: dict[str, float | int | str | bool] = {
            "table_check_passed": bool(self.passed), "table_check_rows": int(self.n_rows),
            "table_check_expectations": len(self.expectations),
            "table_check_failed_expectations": sum(not e["success"] for e in self.expectations)}
        if self.failures:
            values["table_check_failures"] = "; ".join(self.failures)
        return values


def check_table(df: pd.DataFrame, *, required_columns: Sequence[str], non_null: Sequence[str] = (),
                unique: Sequence[str] = (), ranges: Mapping[str, tuple[float | None, float | None]] | None = None,
                key: str | None = None) -> TableCheckResult:
    """Validate ``df`` against its contract; columns that are missing are reported once, not per check."""
    from curation_pipeline.validation import _gx

    ranges = ranges or {}
    present = set(df.columns)
    key = key or next(iter(unique), None)
    key = key if key in present else None

    specs = [("ExpectTableColumnsToMatchSet", {"column_set": list(required_columns), "exact_match": False})]
    specs += [("ExpectColumnValuesToNotBeNull", {"column": c}) for c in dict.fromkeys(non_null) if c in present]
    specs += [("ExpectColumnValuesToBeUnique", {"column": c}) for c in dict.fromkeys(unique) if c in present]
    specs += [("ExpectColumnValuesToBeBetween", {"column": c, "min_value": lo, "max_value": hi})
              for c, (lo, hi) in ranges.items() if c in present and (lo is not None or hi is not None)]
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
    if key:
        result_format["unexpected_index_column_names"] = [key]
    # Most tables pass: a first pass asks GX for success only (about half the time of a SUMMARY pass),
    # and what failed or could not be evaluated runs again for its counts and examples. The first pass
    # sees only the checked columns (the same successes: the column set holds the required ones present),
    # and those whose values no expectation reads (only the column-set one names them) as one shared column
    # of zeros: GX fingerprints every column of its frame twice per validation, and the helper is sent the
    # frame (a pairs table's source json and captions were most of its check's time). The second sees the
    # whole table, whose columns a failed column-set check reports.
    read = {*non_null, *unique, *ranges, *([key] if key else [])}
    first = df.loc[:, df.columns.isin({*required_columns, *read})]
    if not first.columns.has_duplicates:
        zeros = np.zeros(len(df), dtype=np.int8)
        # the columns' own arrays: their types kept, nothing aligned on the index
        first = pd.DataFrame({c: first[c].array if c in read else zeros for c in first.columns}, index=df.index)
    results = _gx.validate(first, specs, "BOOLEAN_ONLY")
    again = [i for i, r in enumerate(results) if not r.success or r.error]
    if again:
        for i, detailed in zip(again, _gx.validate(df, [specs[i] for i in again], result_format)):
            results[i] = detailed

    failures = []
    checked = set(required_columns) | set(non_null) | set(unique) | set(ranges)
    missing = sorted(checked - present)
    if missing:
        failures.append(f"missing columns: {missing}")
    failures += [_sentence(res, key) for res in results[1:] if not res.success]
    return TableCheckResult(passed=not failures, n_rows=len(df), failures=failures,
                            expectations=[r.describe() for r in results])


def _sentence(res, key: str | None) -> str:
    column = res.kwargs["column"]
    if res.error:
        return f"{res.type} on {column} could not be evaluated: {res.error}"
    r = res.result
    count = r["unexpected_count"]
    if res.type == "expect_column_values_to_be_unique":
        values = list(dict.fromkeys(plain_tree(r["partial_unexpected_list"])))
        return f"{count} rows with duplicate values in {column}: {values[:MAX_EXAMPLES]}"
    where = _examples(r, key, column)
    if res.type == "expect_column_values_to_not_be_null":
        return f"{count} null {'value' if count == 1 else 'values'} in {column}{where}"
    lo, hi = res.kwargs.get("min_value"), res.kwargs.get("max_value")
    bounds = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
    values = plain_tree(r["partial_unexpected_list"])[:MAX_EXAMPLES]
    return f"{count} {'value' if count == 1 else 'values'} of {column} outside {bounds}: {values}{where}"


def _examples(r: dict, key: str | None, column: str) -> str:
    """Offending rows by key when there is one, else by DataFrame index."""
    index = plain_tree(r.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]
    if key and index and isinstance(index[0], dict):
        return f" ({key}: {[row[key] for row in index]})"
    return f" (index: {index})" if index else ""
