"""A scorer that raises on every pair (a CUDA error, out of memory at one pair, a bug) fails the shard
visibly: the blocking ``scores_complete`` check fails, later steps refuse the scores and nothing is
published. A pair the model rejects stays a counted NaN with its reason; the reader's skips are no failures."""

import dagster as dg
import pandas as pd
import pytest

import curation_pipeline.resources as resources
from curation_pipeline.checks.quality import scores_checks
from curation_pipeline.resources import PolicyResource, ScoringResource
from curation_pipeline.scoring import registry
from curation_pipeline.scoring.base import Scorer, scorable
from curation_pipeline.scoring.columns import ScoreColumn, error_column
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES, failure_alone, run_pipeline

SHARD = "sample-000002"  # 40 pairs, some without a decodable image or a caption
CUDA = "CUDA error: an illegal memory access was encountered"


class BrokenModel(Scorer):
    """A model scorer as the real ones are: NaN and "no image" / "no caption" where it lacks its input (the
    reader's skips), else its model runs, and here raises on ``fails(keys)``."""

    name, needs_images = "broken", True
    outputs = (ScoreColumn("broken_score", "A model's score.", range=(0, 1)), error_column("broken"))
    fails = staticmethod(lambda keys: True)

    def score(self, batch):
        valid, errors = scorable(batch)
        if valid and self.fails([batch.keys[i] for i in valid]):
            raise RuntimeError(CUDA)
        return pd.DataFrame({"broken_score": [0.5 if e is None else float("nan") for e in errors],
                             "broken_error": pd.Series(errors, dtype=object)})


@pytest.fixture
def broken(monkeypatch):
    """BrokenModel registered as a new signal is (one line in the registry's SCORERS), in the text profile."""
    def clear():
        for cached in (registry.scorer_classes, registry.score_columns, registry.bounds, registry.error_columns_of,
                       resources._scorers):
            cached.cache_clear()

    monkeypatch.setattr(registry, "SCORERS", (*registry.SCORERS, (f"{__name__}:BrokenModel", ("text",))))
    monkeypatch.setattr(BrokenModel, "fails", staticmethod(lambda keys: True))
    clear()
    yield BrokenModel
    monkeypatch.undo()
    clear()


def _quality_scores_metadata(result):
    return next(m for m in result.get_asset_materialization_events()
                if m.asset_key == dg.AssetKey("quality_scores")).materialization.metadata


def test_a_scorer_raising_on_every_pair_fails_the_shard_and_nothing_is_published(tmp_path, broken):
    instance, results = run_pipeline(RAW_SAMPLES, tmp_path, [SHARD], report=False, settle=False,
                                     scoring=ScoringResource(profile="text"))
    result = results[SHARD]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not result.success  # the run fails: the nightly schedule retries it once, then holds it
    assert checks["scores_in_range"].passed  # all NaN is within range: this check alone let it through
    complete = checks["scores_complete"]
    wh = Warehouse(str(tmp_path))
    scores = wh.read_table("quality_scores", SHARD)
    skipped = int(scores["broken_error"].isin(["no image", "no caption"]).sum())
    assert 0 < skipped < len(scores) == 40  # the reader's skips: neither attempted nor failed
    attempted = len(scores) - skipped
    assert not complete.passed
    assert complete.description.startswith(f"broken raised on {attempted} of the {attempted} pairs it attempted "
                                           f"(all), most often ({attempted} pairs) RuntimeError: {CUDA}")
    assert complete.metadata["raised_broken"].value == attempted
    assert complete.metadata["raised_share_broken"].value == 1.0
    assert complete.metadata["error_broken"].text == f"RuntimeError: {CUDA}"
    assert complete.metadata["raised_datacomp"].value == 0  # the other scorers are fine
    # the scores are stored to be looked at, stamped as failed; nothing after them was made
    assert wh.table_metadata("quality_scores", SHARD)["failed_blocking_checks"] == "scores_complete"
    meta = _quality_scores_metadata(result)
    assert meta["missing_broken"].value == len(scores) and meta["raised_broken"].value == attempted
    assert not wh.fs.exists(wh.curated_path(SHARD))
    # the step log holds the exception's traceback once, not once per pair
    logs = [e.user_message for e in instance.all_logs(result.run_id) if "the first traceback" in e.user_message]
    assert len(logs) == 1 and "Traceback (most recent call last)" in logs[0] and CUDA in logs[0]

    # a later run (the UI's Materialize of caption_decisions, a re-selection) refuses the stored scores
    said = failure_alone(tmp_path, instance, SHARD, "caption_decisions", scoring=ScoringResource(profile="text"))
    assert "failed its blocking check(s) scores_complete" in said
    assert not wh.has_table("caption_decisions", SHARD) and not wh.fs.exists(wh.curated_path(SHARD))


def test_a_scorer_raising_on_one_of_40_pairs_passes(tmp_path, broken):
    """One pair the model rejects is that pair's NaN with its reason, and the shard goes on."""
    first = {}
    broken.fails = staticmethod(lambda keys: first.setdefault("key", keys[0]) in keys)
    _, results = run_pipeline(RAW_SAMPLES, tmp_path, [SHARD], report=False, settle=False,
                              scoring=ScoringResource(profile="text"))
    result = results[SHARD]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["scores_complete"].passed, checks["scores_complete"].description
    assert result.success
    scores = Warehouse(str(tmp_path)).read_table("quality_scores", SHARD).set_index("key")
    assert scores.loc[first["key"], "broken_error"] == f"RuntimeError: {CUDA}"
    assert scores["broken_error"].eq(f"RuntimeError: {CUDA}").sum() == 1
    assert checks["scores_complete"].metadata["raised_broken"].value == 1
    assert _quality_scores_metadata(result)["raised_broken"].value == 1
    assert Warehouse(str(tmp_path)).fs.exists(Warehouse(str(tmp_path)).curated_path(SHARD))


def _check(errors: dict[str, list], **policy):
    """``scores_complete`` over a table with these registered error columns."""
    n = len(next(iter(errors.values())))
    table = pd.DataFrame({"shard": ["s"] * n, "key": [str(i) for i in range(n)], "text_quality": [90.0] * n,
                          **errors})
    return scores_checks(table, PolicyResource(**policy))["scores_complete"]()


RAISED = "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_the_share_that_fails_a_shard_is_a_policy_setting():
    errors = {"nsfw_error": [RAISED] * 6 + [None] * 4}  # 60% of the attempted pairs
    failed = _check(errors)
    assert not failed.passed
    assert failed.description.startswith("nsfw raised on 6 of the 10 pairs it attempted (60%, above "
                                         "max_unscored_share 50%)")
    assert _check(errors, max_unscored_share=0.7).passed
    assert _check({"nsfw_error": [RAISED] * 5 + [None] * 5}).passed  # at most the share passes
    # every pair it attempted fails whatever the share, but one pair is never systematic
    assert not _check({"nsfw_error": [RAISED, RAISED]}, max_unscored_share=1.0).passed
    assert _check({"nsfw_error": [RAISED, "no image", "no image"]}).passed
    with pytest.raises(ValueError, match="max_unscored_share"):
        PolicyResource(max_unscored_share=1.5)


def test_only_raised_pairs_count_not_missing_input_nor_unreadable_replies():
    """The reader's skips ("no image", "no caption") are not attempts; a reply the model gave that the scorer
    could not read is a verdict on the pair, not a raise; a scorer's own per-pair exception is one."""
    # 3 of the 4 pairs it had images for: failed, though only 3 of the shard's 12
    failed = _check({"nsfw_error": ["no image"] * 8 + [RAISED] * 3 + [None]})
    assert not failed.passed and "nsfw raised on 3 of the 4 pairs it attempted (75%" in failed.description
    assert failed.metadata["raised_share_nsfw"].value == 0.75
    assert _check({"nsfw_error": ["no image"] * 8 + [RAISED] * 2 + [None] * 2}).passed  # 50%
    assert _check({"nsfw_error": ["no image"] * 12}).passed  # nothing to attempt is no failure
    # MLM-Filter's metrics: unreadable replies are not raises; a raise in any metric's column counts once
    unreadable = {f"mlm_{m}_error": ["unparseable reply: 'great'"] * 9 + ["empty reply"] for m in ("itm", "odf")}
    assert _check(unreadable).passed
    raised = {"mlm_itm_error": [RAISED] * 3 + [None], "mlm_odf_error": [RAISED] * 3 + [None]}
    result = _check(raised)
    assert not result.passed and result.metadata["raised_mlm"].value == 3
    assert result.metadata["error_mlm"].text == RAISED
    # image_quality catches an exception on one image itself, in the same form: still a raise
    assert not _check({"iq_error": ["ValueError: cannot measure this image"] * 3 + [None]}).passed
    assert _check({"iq_error": ["ValueError: cannot measure this image"] + [None] * 39}).passed


def test_a_pair_one_metric_of_which_was_scored_was_attempted():
    """MLM-Filter answers four metrics per pair: one metric's reply unreadable on every pair (low score-token
    mass) leaves the others scored; two pairs out of memory are 2 of the 100 it attempted, not all of them."""
    low = "low score-token mass (0.10)"
    errors = {"mlm_itm_error": [RAISED] * 2 + [None] * 98, "mlm_odf_error": [RAISED] * 2 + [None] * 98,
              "mlm_ctq_error": [RAISED] * 2 + [None] * 98, "mlm_su_error": [RAISED] * 2 + [low] * 98}
    result = _check(errors)
    assert result.passed, result.description
    assert result.metadata["raised_mlm"].value == 2 and result.metadata["raised_share_mlm"].value == 0.02


def test_a_passing_check_names_the_scorer_that_raised_most():
    result = _check({"nsfw_error": [RAISED] + [None] * 39, "ocr_error": [None] * 40})
    assert result.passed and result.description == "raised on the most: nsfw, 1 of the 40 pairs it attempted (2%)"
    assert result.metadata["raised_nsfw"].value == 1 and result.metadata["raised_ocr"].value == 0
    clean = _check({"nsfw_error": [None] * 40})
    assert clean.passed and clean.description == "no scorer raised on any of 40 pairs"
