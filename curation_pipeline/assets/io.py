"""The IO manager for per-shard tables: assets return DataFrames and name their inputs, so the
asset graph shows what reads what, while every table stays one atomic Parquet file per shard."""

import dagster as dg
import pandas as pd

from curation_pipeline.assets.metadata import table_metadata
from curation_pipeline.resources import WarehouseResource

# a DataFrame's ``attrs[FILE_METADATA]`` (str -> str) goes into the Parquet file's schema metadata
FILE_METADATA = "file_metadata"


def columns(*names: str, optional: tuple[str, ...] = ()) -> dg.AssetIn:
    """An input that reads only these columns of the upstream table, and those of ``optional`` it has
    (columns that only some scoring profiles make)."""
    return dg.AssetIn(metadata={"columns": list(names), **({"optional_columns": list(optional)} if optional else {})})


class WarehouseIOManager(dg.ConfigurableIOManager):
    """Writes an asset's DataFrame to ``<warehouse>/<asset>/<shard>.parquet`` (temp file + rename, so a
    re-run replaces the partition whole) and reads the same partition back for downstream assets."""

    warehouse: dg.ResourceDependency[WarehouseResource]

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        name, shard = context.asset_key.path[-1], context.asset_partition_key
        path = self.warehouse.warehouse().write_table(name, shard, obj, metadata=obj.attrs.get(FILE_METADATA))
        context.add_output_metadata({**table_metadata(name, obj), "path": dg.MetadataValue.path(path)})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        meta = context.definition_metadata or {}
        return self.warehouse.warehouse().read_table(context.asset_key.path[-1], context.asset_partition_key,
                                                     columns=meta.get("columns"), optional=meta.get("optional_columns"))
