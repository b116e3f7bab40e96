"""Checks give the same outcomes whether GX runs here or in the warm helper process."""

import os

import numpy as np
import pandas as pd
import pytest

from curation_pipeline import sidecar
from curation_pipeline.validation import _gx, check_caption_length_drift, check_table

SPECS = [("ExpectColumnValuesToBeBetween", {"column": "x", "min_value": 0, "max_value": 10}),
         ("ExpectColumnValuesToBeUnique", {"column": "k"})]


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"k": ["a", "b", "b", "c"], "x": [1.0, 12.0, np.nan, 3.0]})


def _pid(_frame) -> int:
    return os.getpid()


@pytest.fixture()
def warm():
    sidecar.start(_gx.warm)
    yield sidecar._POOL
    sidecar.shutdown()


def test_helper_process_gives_the_same_outcomes_as_in_process(warm):
    assert warm.submit(_pid, None).result() != os.getpid()  # a separate process really runs them
    there = _gx.validate(_frame(), SPECS)
    original = pd.Series(["a dog runs", "two men walk on a road", "a cat", "red car"] * 5)
    final = original.str.replace("a dog runs", "a small brown dog runs fast on the wet sand near the sea")
    drift_there = check_caption_length_drift(original, final)
    table_there = check_table(_frame(), required_columns=["k", "x"], unique=["k"], ranges={"x": (0, 10)})
    sidecar.shutdown()
    here = _gx.validate(_frame(), SPECS)
    assert here == there
    assert [o.success for o in here] == [False, False]
    assert here[0].result["unexpected_count"] == 1 and here[0].kwargs == SPECS[0][1]
    assert check_caption_length_drift(original, final) == drift_there
    assert check_table(_frame(), required_columns=["k", "x"], unique=["k"], ranges={"x": (0, 10)}) == table_there
    assert not table_there.passed and len(table_there.failures) == 2


def test_a_dead_helper_falls_back_to_this_process(warm):
    for process in list(warm._processes.values()):
        process.kill()
        process.join()
    outcomes = _gx.validate(_frame(), SPECS)
    assert [o.success for o in outcomes] == [False, False]
    assert not sidecar.running()
