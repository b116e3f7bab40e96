"""The settle sensor asks for a new keep_fraction cut when the frozen shards moved, and only an index built
after the stored cut says they did: against an older index (its rebuild failing, say) every new cut would
differ from it as much as the last, and the sensor would ask for one on every tick."""

import tempfile

from curation_pipeline.assets.selection import cut_request
from curation_pipeline.decisions.cut_store import INDEX_MARK_KEY, cut_path, index_mark
from curation_pipeline.decisions.dedup import INDEX_VERSION, index_paths, read_manifest
from curation_pipeline.storage.warehouse import Warehouse

IDENTITY = {"a": "ida", "b": "idb"}


def _index(wh, run_id: str, frozen: dict) -> None:
    wh.write_json(index_paths(wh)["manifest"], {"version": INDEX_VERSION, "run_id": run_id, "frozen": frozen,
                                                "computed_at": f"2024-01-01T00:00:0{run_id[-1]}",
                                                "policy": {"keep_fraction": 0.5}})


def _cut(wh, run_id: str, frozen: list[str], mark: str | None) -> None:
    wh.write_json(cut_path(wh), {"version": 1, "status": "on", "computed_at": "2024-01-02T00:00:00+00:00",
                                 "run_id": run_id, "identity": IDENTITY, "fraction": 0.5,
                                 "quality_column": "text_quality", "frozen": frozen, INDEX_MARK_KEY: mark})


def test_a_cut_newer_than_the_index_is_not_asked_again_whatever_the_index_froze():
    wh = Warehouse(tempfile.mkdtemp())
    _index(wh, "idx1", {})  # built while b's raw file was there
    for run_id in ("cut1", "cut2", "cut3"):  # b's raw file gone since: each cut leaves it out
        _cut(wh, run_id, ["b"], index_mark(read_manifest(wh)))
        assert cut_request(wh, 0.5, "text_quality", IDENTITY) is None


def test_an_index_built_after_the_cut_with_other_frozen_shards_asks_for_a_new_cut():
    wh = Warehouse(tempfile.mkdtemp())
    _index(wh, "idx1", {})
    _cut(wh, "cut1", [], index_mark(read_manifest(wh)))
    assert cut_request(wh, 0.5, "text_quality", IDENTITY) is None
    _index(wh, "idx2", {"b": "no raw file"})  # rebuilt after b's raw file went
    request = cut_request(wh, 0.5, "text_quality", IDENTITY)
    assert request is not None and request.job_name == "selection_cut_job"
