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


def _lineage(rewriter: str, reasons: list[str], replies: list[str | None]):
    import pandas as pd

    from curation_pipeline.rewriting.attempts import LINEAGE_COLUMNS

    rows = [{"shard": SHARD, "key": f"k{i}", "attempt": 1, "rewriter": rewriter, "reason": reason,
             "rewriter_output": reply, "accepted": False} for i, (reason, reply) in enumerate(zip(reasons, replies))]
    return pd.DataFrame(rows).reindex(columns=LINEAGE_COLUMNS)


def test_a_model_whose_replies_hold_no_readable_caption_fails_the_shard_as_one_that_raises():
    """AITQE with too small a max_new_tokens (every reply cut off) or a checkpoint not trained on its format: every
    weak caption fell back or was dropped, and the check said the rewriter "raised on 0 of the 4 pairs"."""
    from curation_pipeline.checks.quality import rewrites_complete
    from curation_pipeline.resources import PolicyResource

    unread = "no candidate: no recaption; no overall score"
    cut = _lineage("aitqe", [unread] * 3 + ["score improved 70 -> 100"], ["{\"Overall", "x", "y", "{...}"])
    result = rewrites_complete(cut, PolicyResource())
    assert not result.passed and result.metadata["replies_unread"].value == 3
    assert result.description.startswith(
        "aitqe replied with no readable caption on 3 of the 4 pairs it attempted (75%, above max_unscored_share"), \
        result.description
    assert "most often (3 pairs) no recaption; no overall score: raise rewriter.max_new_tokens" in result.description
    # the cleaner's "no change" is no reply left unread, and a model's refusal to take a pair (no reply) neither
    cleaner = _lineage("cleaner", ["no candidate: no change", "no candidate: nothing left after cleaning"], [None, "x"])
    assert rewrites_complete(cleaner, PolicyResource()).passed
    refused = _lineage("aitqe", ["no candidate: no image"] * 3, [None] * 3)
    assert rewrites_complete(refused, PolicyResource()).passed
    one = _lineage("vlm", ["no candidate: empty output", "score improved 70 -> 100", "score improved 40 -> 90"],
                   ["", "a", "b"])
    said = rewrites_complete(one, PolicyResource())
    assert said.passed and said.description == "vlm raised on 0 of the 3 pairs it attempted; replied with no " \
                                               "readable caption on 1", said.description
