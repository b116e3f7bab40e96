"""A shard that only repeats an earlier shard is dropped whole, and that is a successful run."""

import shutil
import tarfile

from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline


def test_a_shard_of_duplicates_runs_to_an_empty_curated_shard(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000002.tar", raw / "a-first.tar")
    shutil.copy(RAW_SAMPLES / "sample-000002.tar", raw / "b-copy.tar")
    _, results = run_pipeline(raw, tmp_path / "wh", ["a-first", "b-copy"], report=True)
    assert all(r.success for r in results.values())
    wh = Warehouse(str(tmp_path / "wh"))
    copy = wh.read_table("final_captions", "b-copy")
    first = wh.read_table("final_captions", "a-first")
    kept_first = first[first["outcome"] != "dropped"]
    # every pair the first shard kept is a duplicate in the copy, recorded as such
    dup = copy.set_index("key").loc[kept_first["key"], "reason"]
    assert dup.str.startswith("duplicate:").all()
    assert (copy["outcome"] == "dropped").all()
    with tarfile.open(wh.curated_path("b-copy")) as tar:
        assert tar.getnames() == []
    checks = {c.check_name: c.passed for c in results["b-copy"].get_asset_check_evaluations()}
    assert checks["final_captions_complete"] and checks["caption_length_drift"]
