"""An evaluation report is written as every warehouse file is: made whole first, then renamed into place."""

import json
import math

import pytest

from curation_pipeline.evaluation.reports import save_report


def test_a_report_is_saved_whole_and_a_failed_one_leaves_the_last(tmp_path):
    where = save_report({"tau": 0.5, "missing": math.nan}, warehouse_root=str(tmp_path / "wh"))
    path = tmp_path / "wh" / "evaluation" / "report.json"
    assert where == f"{tmp_path / 'wh'}/evaluation/report.json"
    assert json.loads(path.read_text()) == {"tau": 0.5, "missing": None}
    with pytest.raises(TypeError, match="not JSON serializable"):
        save_report({"tau": object()}, warehouse_root=str(tmp_path / "wh"))
    assert json.loads(path.read_text()) == {"tau": 0.5, "missing": None}  # not emptied by the failed one
    assert sorted(p.name for p in path.parent.rglob("*") if p.is_file()) == ["report.json"]  # no temp file left
    out = tmp_path / "elsewhere" / "mine.json"
    assert save_report({"n": 1}, out) == str(out) and json.loads(out.read_text()) == {"n": 1}
