"""Turn tables into metadata a person reads in the UI: numbers, tables, inline charts."""


from typing import Any

import dagster as dg
import pandas as pd

from curation_pipeline.values import plain

PREVIEW_ROWS = 30


def numbers(mapping: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    """Numeric metadata Dagster can plot over time (ints stay ints, floats floats)."""
    out: dict[str, dg.MetadataValue] = {}
    for key, value in mapping.items():
        value = plain(value)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            out[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[key] = dg.MetadataValue.float(round(value, 4))
    return out


def table(df: pd.DataFrame, limit: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """A UI table of the first ``limit`` rows, every value a plain string/number/bool."""
    shown = df.head(limit)
    columns = []
    for name in shown.columns:
        kind = "string"
        if pd.api.types.is_bool_dtype(shown[name]):
            kind = "bool"
        elif pd.api.types.is_integer_dtype(shown[name]):
            kind = "int"
        elif pd.api.types.is_float_dtype(shown[name]):
            kind = "float"
        columns.append(dg.TableColumn(str(name), kind))
    records = []
    for row in shown.itertuples(index=False):
        values = {}
        for col, value in zip(shown.columns, row):
            value = plain(value)
            if isinstance(value, float):
                value = round(value, 4)
            elif value is not None and not isinstance(value, (int, bool, str)):
                value = str(value)
            values[str(col)] = value
        records.append(dg.TableRecord(values))
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def counts_markdown(counts: pd.Series, title: str) -> str:
    if counts.empty:
        return f"**{title}**: none"
    body = "\n".join(f"| {k} | {int(v)} |" for k, v in counts.items())
    return f"**{title}**\n\n| value | pairs |\n|---|---|\n{body}"
