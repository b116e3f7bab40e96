"""Every shard of a table is stored with one schema, whatever its values: ints with a missing value stay
ints, a column with no value keeps its type, so the warehouse reads as one dataset (pyarrow, HF datasets)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from curation_pipeline.storage.warehouse import Warehouse

PER_SHARD = ("pairs", "skips", "quality_scores", "caption_decisions", "rewritten_captions", "final_captions")


@pytest.mark.parametrize("table", PER_SHARD)
def test_the_sample_shards_store_one_schema_and_read_as_one_dataset(curated, table):
    wh = Warehouse(str(curated["warehouse"]))
    files = [wh.local_path(wh.table_path(table, shard)) for shard in curated["shards"]]
    first, second = (pq.read_schema(f) for f in files)
    differ = [(f.name, str(f.type), str(second.field(f.name).type))
              for f in first if f.type != second.field(f.name).type]
    assert first.names == second.names and not differ, f"{table} (column, first shard, second): {differ}"
    assert not [f.name for f in first if pa.types.is_null(f.type)], f"{table}: a column stored with no type"
    # in either order: a dataset takes the first file's schema and casts the others to it
    for order in (files, files[::-1]):
        assert ds.dataset(order).to_table().num_rows == sum(pq.read_metadata(f).num_rows for f in files)


def test_the_shards_differ_where_the_defect_showed(curated):
    """The sample shards do have what once changed the types: a pair with no decoded size in one of them."""
    wh = Warehouse(str(curated["warehouse"]))
    missing = {s: int(wh.read_table("pairs", s, columns=["width"])["width"].isna().sum()) for s in curated["shards"]}
    assert sorted(n > 0 for n in missing.values()) == [False, True], missing
    schema = pq.read_schema(wh.local_path(wh.table_path("quality_scores", curated["shards"][0])))
    assert schema.field("width").type == pa.int64() and schema.field("nsfw_error").type == pa.string()
    assert schema.field("dup_caption_emb").type == pa.list_(pa.float32())  # json kind: as the scorer wrote it


def test_declared_types_keep_values_and_reads_are_unchanged(tmp_path):
    wh = Warehouse(str(tmp_path))
    frame = pd.DataFrame({"key": ["a", "b"], "width": [640.0, np.nan], "caption_chars": [2**53 + 1, 3],
                          "decode_error": [None, None], "original_width": [None, None], "extra": [None, None]})
    wh.write_table("pairs", "s1", frame)
    schema = pq.read_schema(wh.local_path(wh.table_path("pairs", "s1")))
    assert {f.name: str(f.type) for f in schema} == {
        "key": "string", "width": "int64", "caption_chars": "int64", "decode_error": "string",
        "original_width": "int64", "extra": "string"}
    back = wh.read_table("pairs", "s1")
    assert back["width"].dtype == float and back["width"].iloc[0] == 640 and pd.isna(back["width"].iloc[1])
    assert back["caption_chars"].tolist() == [2**53 + 1, 3]  # never through floats
    assert back["decode_error"].tolist() == [None, None] and back["original_width"].isna().all()


def test_a_value_the_declared_type_would_change_is_an_error(tmp_path):
    with pytest.raises(pa.ArrowInvalid, match="truncated"):
        Warehouse(str(tmp_path)).write_table("pairs", "s1", pd.DataFrame({"key": ["a"], "width": [1.5]}))


@pytest.mark.parametrize("missing", [None, np.nan], ids=["none", "nan"])
def test_an_embedding_column_with_no_vector_is_still_a_float_list(tmp_path, missing):
    """A shard without captions (None) or whose MiniLM failed (NaN) stores the caption embedding with the
    type of a shard that has vectors, not as null or double."""
    from curation_pipeline.scoring.signals.duplicates import CAPTION_EMBEDDING

    wh = Warehouse(str(tmp_path))
    vectors = pd.DataFrame({"key": ["a", "b"], CAPTION_EMBEDDING: [np.ones(3, np.float32), None]})
    empty = pd.DataFrame({"key": ["c", "d"], CAPTION_EMBEDDING: pd.Series([missing, missing], dtype=object)})
    types = {pq.read_schema(wh.write_table("quality_scores", shard, df)).field(CAPTION_EMBEDDING).type
             for shard, df in (("s1", vectors), ("s2", empty))}
    assert len(types) == 1 and all(pa.types.is_list(t) and t.value_type == pa.float32() for t in types), types
    assert wh.read_table("quality_scores", "s2")[CAPTION_EMBEDDING].isna().all()
