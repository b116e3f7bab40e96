"""A rewriter that bloats captions must be stopped by the blocking drift check, before publishing."""

import pytest

import curation_pipeline.resources as resources
from curation_pipeline.rewriting.base import Rewriter, RewriteCandidate
from curation_pipeline.resources import PolicyResource, ScoringResource
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline

PADDING = " photographed in great detail with a wide angle lens on a bright sunny afternoon near the river"


class BloatingRewriter(Rewriter):
    name = "bloater"

    def rewrite(self, batch):
        return [RewriteCandidate((c or "A photo") + PADDING) for c in batch.captions]


@pytest.fixture
def bloating(monkeypatch):
    monkeypatch.setattr(resources, "_rewriter", lambda *args: BloatingRewriter())


def test_drifted_captions_block_the_curated_shard(tmp_path, bloating):
    shard = "sample-000002"
    instance, results = run_pipeline(RAW_SAMPLES, tmp_path, [shard], report=False,
                                     scoring=ScoringResource(profile="text"),
                                     policy=PolicyResource(keep_threshold=100.0, drop_threshold=0))  # rewrite all but the perfect
    result = results[shard]
    assert not result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    drift = checks["caption_length_drift"]
    assert not drift.passed
    assert "mean caption length grew" in drift.description
    assert drift.metadata["drift_mean_ratio"].value > 1.25
    wh = Warehouse(str(tmp_path))
    final = wh.read_table("final_captions", shard)
    assert final["rewritten"].sum() >= 8  # the weak captions' rewrites really were accepted...
    assert not wh.fs.exists(wh.curated_path(shard))  # ...and still nothing was published
    assert wh.table_metadata("final_captions", shard)["failed_blocking_checks"] == "caption_length_drift"
    # the report counts it blocked, as lineage names it, not failed: the run's failure is that check
    from curation_pipeline.assets.failures import shard_failures
    from curation_pipeline.reporting.report import build_report, overall_values

    failures = shard_failures(instance, str(tmp_path), location_root=str(tmp_path))
    assert "caption_length_drift" in failures[shard]
    report = build_report(wh, failures=failures)
    status, detail = report.shards.set_index("shard").loc[shard, ["status", "status_detail"]]
    assert status == "blocked" and detail.startswith("final_captions failed its blocking check(s) caption_length_drift")
    assert (overall_values(report)["blocked_shards"], overall_values(report)["failed_shards"]) == (1, 0)

    # Dagster's blocking holds in its own run: curated_shards materialized alone later (the UI's
    # Materialize on it) must not publish the stored, drifted final captions either
    import dagster as dg

    from curation_pipeline.definitions import build_definitions

    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path),
                             scoring=ScoringResource(profile="text"))
    alone = defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key=shard, instance=instance, asset_selection=[dg.AssetKey("curated_shards")], raise_on_error=False)
    assert not alone.success and not wh.fs.exists(wh.curated_path(shard))
    failure = next(e for e in alone.all_events if e.event_type_value == "STEP_FAILURE")
    text = failure.event_specific_data.user_failure_data.description
    assert "failed its blocking check(s) caption_length_drift" in text and "materialize final_captions again" in text


def test_the_same_shard_passes_with_the_real_cleaner(tmp_path):
    shard = "sample-000002"
    _, results = run_pipeline(RAW_SAMPLES, tmp_path, [shard], report=False, scoring=ScoringResource(profile="text"))
    checks = {c.check_name: c for c in results[shard].get_asset_check_evaluations()}
    assert checks["caption_length_drift"].passed and results[shard].success


def test_a_drift_check_with_too_few_kept_pairs_holds_their_mean_alone():
    """Fewer kept pairs than min_rows: their length distribution is not compared, their mean is (it moves only
    by what the rewrites changed): a shard of 16 kept pairs padded 1.6x longer was published."""
    import pandas as pd

    from curation_pipeline.checks.quality import caption_length_drift

    kept = pd.DataFrame({"outcome": ["rewritten", "kept"], "original_caption": ["a dog", "a cat"],
                         "final_caption": ["a dog running", "a cat"]})
    result = caption_length_drift(kept, PolicyResource())
    assert result.passed  # 1.25x: on the limit
    assert result.description == ("caption lengths stable: mean ratio 1.25 (too few rows to compare (original 2, "
                                  "final 2; min_rows 20): the distribution not compared, the mean held to its limits)")
    padded = caption_length_drift(kept.assign(final_caption=["a dog running fast on the grass", "a cat"]),
                                  PolicyResource())
    assert not padded.passed and padded.description == "mean caption length grew 2.25x (2.0 -> 4.5 words), " \
        "allowed 0.80-1.25x"
    none = caption_length_drift(kept.iloc[:0], PolicyResource())
    assert none.passed and none.description.startswith("not compared: ")


def test_a_caption_written_for_a_pair_that_had_none_is_not_drift():
    """Captionless pairs are sent to the rewriter and may get a caption; counting them as grown from 0
    words blocked the shard although no caption changed length."""
    import pandas as pd

    from curation_pipeline.checks.quality import caption_length_drift

    rng = __import__("numpy").random.default_rng(0)
    captions = [" ".join(["word"] * int(n)) for n in rng.integers(3, 12, size=30)]
    kept = pd.DataFrame({"outcome": ["kept"] * 30 + ["rewritten"] * 10,
                         "original_caption": captions + [None] * 5 + [""] * 5,
                         "final_caption": captions + ["a brown dog runs on the grass by a lake"] * 10})
    # dropped pairs are the filter's doing: a long caption dropped is not a shortened one
    dropped = pd.DataFrame({"outcome": ["dropped"] * 20, "original_caption": [" ".join(["long"] * 40)] * 20,
                            "final_caption": [None] * 20})
    final = pd.concat([kept, dropped], ignore_index=True)
    result = caption_length_drift(final, PolicyResource())
    assert result.passed, result.description
    assert result.metadata["captions_written"].value == 10
    grown = final.assign(final_caption=[c + " and more words here" for c in captions] + final["final_caption"][30:].tolist())
    assert not caption_length_drift(grown, PolicyResource()).passed  # real growth still blocks


def test_captions_empty_before_and_after_have_not_drifted():
    import pandas as pd

    from curation_pipeline.validation.drift import check_caption_length_drift

    empty = pd.Series([""] * 30)
    assert check_caption_length_drift(empty, empty).passed
    emptied = check_caption_length_drift(pd.Series(["a dog on the grass"] * 30), empty)
    assert not emptied.passed and "all 30 final captions are empty or None" in emptied.failures


def test_a_failed_blocking_check_is_cleared_by_its_checks_passing_again(tmp_path):
    """A policy mistake (a quality column the profile does not make) fails scores_in_range and stamps
    quality_scores; once the policy is fixed, running the check alone clears it: re-selecting from the
    stored scores needs no model to run again."""
    import dagster as dg

    from curation_pipeline.checks.quality import SCORES_CHECKS
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline_tests.conftest import QUIET

    shard = "sample-000002"
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [shard])
    text = ScoringResource(profile="text")
    bad = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path), scoring=text,
                            policy=PolicyResource(quality_column="clip_score", keep_threshold=0.8, drop_threshold=0.5))
    assert not bad.resolve_job_def("curate_shards").execute_in_process(
        partition_key=shard, instance=instance, raise_on_error=False, run_config=QUIET).success
    wh = Warehouse(str(tmp_path))
    assert wh.table_metadata("quality_scores", shard)["failed_blocking_checks"] == "scores_in_range"
    good = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path), scoring=text)
    refused = good.resolve_job_def("reselect_shards").execute_in_process(
        partition_key=shard, instance=instance, raise_on_error=False, run_config=QUIET)
    assert not refused.success
    scores_before = wh.read_table("quality_scores", shard)
    checks_only = good.resolve_job_def("curate_shards").get_subset(
        asset_selection=set(), asset_check_selection={SCORES_CHECKS[0].key})
    result = checks_only.execute_in_process(partition_key=shard, instance=instance, raise_on_error=False,
                                            run_config=QUIET)
    assert [(c.check_name, c.passed) for c in result.get_asset_check_evaluations()] == [("scores_in_range", True)]
    assert wh.table_metadata("quality_scores", shard)["failed_blocking_checks"] == ""
    assert wh.read_table("quality_scores", shard).equals(scores_before)  # the rows as they were
    assert good.resolve_job_def("reselect_shards").execute_in_process(
        partition_key=shard, instance=instance, raise_on_error=False, run_config=QUIET).success


def test_the_length_chart_shows_the_pairs_the_drift_check_compares(tmp_path, bloating, monkeypatch):
    """Kept pairs that had a caption: not the dropped ones, nor those given a caption they lacked."""
    import curation_pipeline.assets.rewriting as rewriting
    from curation_pipeline.validation.lengths import caption_lengths

    drawn = {}
    real = rewriting.histogram_png
    monkeypatch.setattr(rewriting, "histogram_png", lambda series, *a, **k: drawn.update(series) or real(series, *a, **k))
    shard = "sample-000002"
    run_pipeline(RAW_SAMPLES, tmp_path, [shard], report=False, settle=False, scoring=ScoringResource(profile="text"),
                 policy=PolicyResource(keep_threshold=100.0, drop_threshold=65.0))  # a weak rewrite drops its pair
    final = Warehouse(str(tmp_path)).read_table("final_captions", shard)
    kept = final[final["outcome"].ne("dropped")]
    had = caption_lengths(kept["original_caption"]) > 0
    assert final["outcome"].eq("dropped").any() and (~had).any()  # both kinds left out are there
    assert sorted(drawn["original (kept)"]) == sorted(caption_lengths(kept.loc[had, "original_caption"]))
    assert sorted(drawn["final (kept)"]) == sorted(caption_lengths(kept.loc[had, "final_caption"]))
