"""The UI's table previews: a whole-number score column reads as integers even where a value is unknown (empty,
never 0 or NaN), and a column with a fraction stays float."""

import math

import pandas as pd

from curation_pipeline.assets.metadata import table


def test_a_whole_number_column_with_an_unknown_value_previews_as_integers():
    preview = table(pd.DataFrame({"before": [70.0, 40.0], "after": [100.0, math.nan], "sim": [0.9, math.nan]})).value
    kinds = {c.name: c.type for c in preview.schema.columns}
    assert kinds == {"before": "int", "after": "int", "sim": "float"}
    assert [r.data for r in preview.records] == [{"before": 70, "after": 100, "sim": 0.9},
                                                 {"before": 40, "after": None, "sim": None}]
    assert all(type(r.data["before"]) is int for r in preview.records)
