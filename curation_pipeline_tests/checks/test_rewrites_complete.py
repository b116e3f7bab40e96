"""A rewriter that raises on every pair (out of memory, a broken checkpoint) fails the shard visibly, as a scorer
does: else each weak caption it would have saved is dropped as "not rewritten", the run succeeds, and the shard
reads up to date. One pair it raises on is that pair's rejected attempt."""

import pytest

from curation_pipeline.resources import ScoringResource
from curation_pipeline.rewriting.cleaner import CaptionCleaner
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES, failure_alone, run_pipeline

SHARD = "sample-000002"
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


@pytest.fixture
def failing(monkeypatch):
    """The cleaner, raising on the pairs ``fails`` picks (every one unless a test says otherwise)."""
    real, picked = CaptionCleaner.rewrite, {"fails": lambda keys: True}

    def rewrite(self, batch):
        if picked["fails"](batch.keys):
            raise RuntimeError(OOM)
        return real(self, batch)

    monkeypatch.setattr(CaptionCleaner, "rewrite", rewrite)
    return picked


def _run(tmp_path, instance=None):
    return run_pipeline(RAW_SAMPLES, tmp_path, [SHARD], instance=instance, report=False, settle=False,
                        scoring=ScoringResource(profile="text"))


def test_a_rewriter_raising_on_every_pair_fails_the_shard_and_a_later_run_makes_it(tmp_path, failing, monkeypatch):
    instance, results = _run(tmp_path)
    result, wh = results[SHARD], Warehouse(str(tmp_path))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    lineage = wh.read_table("rewritten_captions", SHARD)
    attempts = len(lineage)
    assert attempts >= 2 and not result.success
    complete = checks["rewrites_complete"]
    assert not complete.passed
    assert complete.description == (f"cleaner raised on {attempts} of the {attempts} pairs it attempted (all), most "
                                     f"often ({attempts} pairs) rewriter failed: RuntimeError: {OOM}")
    assert complete.metadata["raised"].value == attempts and complete.metadata["raised_share"].value == 1.0
    # the lineage is stored to be looked at, stamped as failed; nothing after it was made
    assert wh.table_metadata("rewritten_captions", SHARD)["failed_blocking_checks"] == "rewrites_complete"
    assert not wh.has_table("final_captions", SHARD) and not wh.fs.exists(wh.curated_path(SHARD))
    # a run of final_captions alone refuses it, saying why
    said = failure_alone(tmp_path, instance, SHARD, "final_captions", scoring=ScoringResource(profile="text"))
    assert "rewritten_captions of shard 'sample-000002' failed its blocking check(s) rewrites_complete" in said

    # the rewriter mended, the shard's next run rewrites and publishes it
    monkeypatch.undo()
    _, again = _run(tmp_path, instance)
    assert again[SHARD].success
    checks = {c.check_name: c for c in again[SHARD].get_asset_check_evaluations()}
    assert checks["rewrites_complete"].passed
    assert checks["rewrites_complete"].description == f"cleaner raised on 0 of the {attempts} pairs it attempted"
    assert wh.read_table("rewritten_captions", SHARD)["accepted"].any() and wh.fs.exists(wh.curated_path(SHARD))


def test_a_rewriter_raising_on_one_pair_passes(tmp_path, failing):
    first = {}
    failing["fails"] = lambda keys: first.setdefault("key", keys[0]) in keys  # halved down to that one pair
    _, results = _run(tmp_path)
    result, wh = results[SHARD], Warehouse(str(tmp_path))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert result.success and checks["rewrites_complete"].passed
    lineage = wh.read_table("rewritten_captions", SHARD).set_index("key")
    assert lineage.loc[first["key"], "reason"] == f"no candidate: rewriter failed: RuntimeError: {OOM}"
    assert lineage["reason"].str.contains("rewriter failed").sum() == 1
    assert checks["rewrites_complete"].metadata["raised"].value == 1
    assert wh.fs.exists(wh.curated_path(SHARD))
