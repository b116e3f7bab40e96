"""img2dataset's original_width / original_height travel from the sample json to the DataComp rules."""

import json

import pytest

from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring.datacomp import DataCompBasicRules
from curation_pipeline.shards.reader import RECORD_COLUMNS, ShardReader, iter_pair_batches, original_size
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.shards import faults

CAPTION = b"A black dog and a spotted dog are fighting on the road"


def _meta(**fields) -> bytes:
    return json.dumps({"caption": "x", "width": 64, "height": 48, **fields}).encode()


@pytest.mark.parametrize(
    "meta, expected",
    [
        ({"original_width": 1024, "original_height": 768}, (1024, 768)),
        ({"original_width": 1024.0, "original_height": 768}, (1024, 768)),
        ({"original_width": 1024}, None),
        ({"original_width": "1024", "original_height": "768"}, None),
        ({"original_width": True, "original_height": 768}, None),
        ({"original_width": 0, "original_height": 768}, None),
        ({"original_width": -5, "original_height": 768}, None),
        ({"original_width": 10.5, "original_height": 768}, None),
        ({"original_width": float("nan"), "original_height": 768}, None),
        ({"original_width": None, "original_height": None}, None),
        ({}, None),
        (None, None),
    ],
)
def test_original_size_parsing(meta, expected):
    assert original_size(meta) == expected


def test_reader_records_and_batches_carry_the_original_size(tmp_path):
    path = builders.write_members(tmp_path / "s.tar", [
        ("a.jpg", faults.jpeg((64, 48))), ("a.txt", CAPTION),
        ("a.json", _meta(original_width=1024, original_height=768)),
        ("b.jpg", faults.jpeg((64, 48))), ("b.txt", CAPTION), ("b.json", _meta()),
        ("c.jpg", faults.jpeg((64, 48))), ("c.txt", CAPTION),
        ("d.jpg", faults.jpeg((64, 48))), ("d.txt", CAPTION), ("d.json", b"{not json"),
    ])
    assert {"original_width", "original_height"} <= set(RECORD_COLUMNS)
    samples = {s.key: s for s in ShardReader(str(path), "s")}
    assert samples["a"].record["original_width"] == 1024 and samples["a"].record["original_height"] == 768
    assert samples["a"].original_size == (1024, 768) and samples["a"].image.size == (64, 48)
    for key in "bcd":
        assert samples[key].record["original_width"] is None and samples[key].original_size is None
    [(batch, records)] = list(iter_pair_batches(str(path), "s", batch_size=10))
    assert batch.original_sizes == [(1024, 768), None, None, None]
    assert [r["original_width"] for r in records] == [1024, None, None, None]

    # DataComp's image rules: the 64x48 thumbnail passes on its original size, the others fail on theirs
    rules = DataCompBasicRules().score(batch)
    assert rules["datacomp_min_side_ge200"].tolist() == [True, False, False, False]
    assert bool(rules["datacomp_pass"][0]) is True


def test_pair_batch_keeps_original_sizes_through_chunks():
    batch = PairBatch(["a", "b", "c"], ["x", "y", "z"], [None, None, None], [(10, 20), None, (30, 40)])
    assert [c.original_sizes for c in batch.chunks(2)] == [[(10, 20), None], [(30, 40)]]
    assert PairBatch(["a"], ["x"]).original_sizes == [None]
    with pytest.raises(ValueError, match="original_sizes"):
        PairBatch(["a", "b"], ["x", "y"], [None, None], [(1, 1)])
