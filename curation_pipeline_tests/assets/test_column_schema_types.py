"""A table's column schema in the UI states the types stored in its Parquet file (what DuckDB reads), not
types guessed from one shard's values."""

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

TABLES = ("pairs", "quality_scores", "caption_decisions", "rewritten_captions", "final_captions")


def _shown(instance, asset: str, shard: str) -> dict[str, str]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[shard]), limit=1).records
    schema = records[0].event_log_entry.asset_materialization.metadata["dagster/column_schema"].value
    return {c.name: c.type for c in schema.columns}


def test_column_schema_types_are_the_stored_parquet_types(curated):
    from curation_pipeline.storage.warehouse import Warehouse

    instance, wh = curated["instance"], Warehouse(str(curated["warehouse"]))
    first, second = curated["shards"]
    stored = {(asset, shard): pq.read_schema(wh.local_path(wh.table_path(asset, shard)))
              for asset in TABLES for shard in (first, second)}
    for (asset, shard), schema in stored.items():
        shown = _shown(instance, asset, shard)
        expected = {f.name: (f"list<{f.type.value_type}>" if pa.types.is_list(f.type) else str(f.type))
                    for f in schema}
        wrong = [(c, shown.get(c), t) for c, t in expected.items() if shown.get(c) != t]
        assert shown == expected, f"{asset} {shard} (column, shown, stored): {wrong}"

    # the cases a value guess got wrong: scores stored as double, a column with no value, the embedding list
    assert _shown(instance, "quality_scores", first)["text_quality"] == "double"
    assert _shown(instance, "rewritten_captions", first)["quality_before"] == "double"
    assert _shown(instance, "rewritten_captions", first)["quality_after"] == "double"
    assert _shown(instance, "quality_scores", first)["dup_caption_emb"] == "list<float>"
    assert _shown(instance, "pairs", first)["original_width"] == "int64"  # declared, though no sample records it

    # every table is stored with one schema in every shard (tables.TYPES), so each shows the same schema
    for asset in TABLES:
        assert stored[(asset, first)].equals(stored[(asset, second)], check_metadata=False), asset
        assert _shown(instance, asset, first) == _shown(instance, asset, second), asset


def test_the_column_schema_is_the_written_footers_without_reading_the_file_back(tmp_path, monkeypatch):
    """handle_output takes the schema and row count from the footer it wrote (``Warehouse.store_table``): on
    object storage a read-back is one more GET per table. What it shows is still what a reader gets, even
    where that is not the frame's Arrow type (a timestamp[s] column is stored, and read back, as
    timestamp[ms])."""
    import pandas as pd
    from fsspec.implementations.local import LocalFileSystem

    from curation_pipeline.assets.io import warehouse_io_manager
    from curation_pipeline.resources import WarehouseResource
    from curation_pipeline.storage.warehouse import Warehouse

    shard = "sample-000000"
    partitions = dg.StaticPartitionsDefinition([shard])

    @dg.asset(name="pairs", partitions_def=partitions)
    def pairs() -> pd.DataFrame:
        return pd.DataFrame({"shard": [shard] * 3, "key": ["a", "b", "c"], "width": [1, None, 3],
                             "seen_at": pd.Series(pd.to_datetime(["2024-01-01"] * 3)).astype("datetime64[s]")})

    wh = Warehouse(str(tmp_path / "warehouse"))
    written = wh.table_path("pairs", shard)
    reads = []
    opened = LocalFileSystem._open

    def counting(fs, path, mode="rb", *args, **kwargs):
        if "r" in mode and fs._strip_protocol(path) == fs._strip_protocol(written):
            reads.append(path)
        return opened(fs, path, mode, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "_open", counting)
    result = dg.materialize([pairs], partition_key=shard, resources={
        "warehouse": WarehouseResource(root=str(tmp_path / "warehouse"), raw_root=str(tmp_path / "raw")),
        "io_manager": warehouse_io_manager})
    assert result.success
    assert reads == []  # the table was written, never read back
    metadata = result.asset_materializations_for_node("pairs")[0].metadata
    footer = pq.ParquetFile(wh.local_path(written))
    shown = {c.name: c.type for c in metadata["dagster/column_schema"].value.columns}
    assert shown == {f.name: str(f.type) for f in footer.schema_arrow}, shown
    assert shown["seen_at"] == "timestamp[ms]" and shown["key"] == "string", shown
    assert metadata["dagster/row_count"].value == footer.metadata.num_rows == 3


def test_a_step_gets_its_inputs_without_the_attrs_stored_with_them(tmp_path):
    """pyarrow hands back the attrs a table was written with (its FILE_METADATA), and pandas deep-copies a
    frame's attrs into every Series and frame made from it: the IO manager gives a step its inputs without
    them (the file's metadata is checked, and returned, apart). A step's output still stores its own."""
    import pandas as pd

    from curation_pipeline.assets.io import FILE_METADATA, warehouse_io_manager
    from curation_pipeline.resources import WarehouseResource
    from curation_pipeline.storage.warehouse import Warehouse

    shard = "sample-000000"
    partitions = dg.StaticPartitionsDefinition([shard])
    seen = {}

    @dg.asset(name="pairs", partitions_def=partitions)
    def pairs() -> pd.DataFrame:
        frame = pd.DataFrame({"shard": [shard] * 2, "key": ["a", "b"]})
        frame.attrs[FILE_METADATA] = {"made_by": "pairs"}
        return frame

    @dg.asset(name="quality_scores", partitions_def=partitions)
    def quality_scores(pairs: pd.DataFrame) -> pd.DataFrame:
        seen["attrs"] = dict(pairs.attrs)
        out = pairs.assign(score=[1.0, 2.0])
        out.attrs[FILE_METADATA] = {"made_by": "quality_scores"}
        return out

    wh = Warehouse(str(tmp_path / "warehouse"))
    result = dg.materialize([pairs, quality_scores], partition_key=shard, resources={
        "warehouse": WarehouseResource(root=str(tmp_path / "warehouse"), raw_root=str(tmp_path / "raw")),
        "io_manager": warehouse_io_manager})
    assert result.success
    assert seen["attrs"] == {}
    for table in ("pairs", "quality_scores"):
        frame, stored = wh.read_table_and_metadata(table, shard)
        assert stored["made_by"] == table and frame.attrs[FILE_METADATA]["made_by"] == table
