"""Turn tables into metadata a person reads in the UI: numbers, tables, inline charts."""


from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from curation_pipeline.values import plain

# who answers for the pipeline's assets (shown and filterable in the Catalog)
OWNERS = ["team:curation"]

PREVIEW_ROWS = 30


def numbers(mapping: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    """Numeric metadata Dagster can plot over time (ints stay ints, floats floats)."""
    out: dict[str, dg.MetadataValue] = {}
    for key, value in mapping.items():
        value = plain(value)
        if isinstance(value, int) and not isinstance(value, bool):
            out[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[key] = dg.MetadataValue.float(round(value, 4))
    return out


def _kind(values: pd.Series) -> str:
    """A preview column's kind, guessed from its values (a float column of whole numbers shows as int, its
    missing values empty: a score of 70 beside an unknown one reads 70, not 70.0): for previews only; a
    table's column schema states the stored types (``table_metadata``)."""
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    if pd.api.types.is_float_dtype(values):
        known = values.dropna()
        return "int" if len(known) and known.eq(known.round()).all() and known.abs().lt(2**53).all() else "float"
    return "string"


def type_name(arrow_type: pa.DataType) -> str:
    """A stored column's type as Arrow names it (int64, double, string, bool, null for a column with no
    value, timestamp[us, tz=UTC], ...), a list as list<float>: what DuckDB and pyarrow read back."""
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return f"list<{type_name(arrow_type.value_type)}>"
    return str(arrow_type)


def table_metadata(name: str, schema: pa.Schema, rows: int) -> dict[str, Any]:
    """Dagster's standard table metadata of a written table: the column schema with the stored (Parquet)
    types, never guessed from the values (those differ between shards of one table), every column
    described (``tables.py``), and the row count."""
    from curation_pipeline.tables import describe

    columns = [dg.TableColumn(field.name, type_name(field.type), description=describe(name, field.name) or "")
               for field in schema]
    return {"dagster/column_schema": dg.TableSchema(columns=columns),
            "dagster/row_count": dg.MetadataValue.int(rows)}


def shown(df: pd.DataFrame, limit: int, what: str, where: str) -> dg.MetadataValue:
    """What a ``table`` of ``df`` cut at ``limit`` rows leaves out, said beside it (a pool easily has more
    shards than a UI table holds): ``all 39 shards`` or ``first 200 of 1280 shards (...); all: <where>``."""
    if len(df) <= limit:
        return dg.MetadataValue.text(f"all {len(df)} {what}")
    return dg.MetadataValue.text(f"first {limit} of {len(df)} {what}; all: {where}")


def table(df: pd.DataFrame, limit: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """A UI table of the first ``limit`` rows, every value a plain string/number/bool; missing values
    stay empty (never 0), and float columns holding whole numbers show as integers."""
    shown = df.head(limit)
    columns = [dg.TableColumn(str(name), _kind(shown[name])) for name in shown.columns]
    whole = {str(c.name) for c in columns if c.type == "int"}

    def cell(col, value):
        value = plain(value)
        if isinstance(value, float):  # plain() made NaN None
            return int(value) if str(col) in whole else round(value, 4)
        return value if value is None or isinstance(value, (int, bool, str)) else str(value)

    records = [dg.TableRecord({str(col): cell(col, value) for col, value in zip(shown.columns, row)})
               for row in shown.itertuples(index=False)]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))
