"""rewritten_captions made again alone (the launchpad, a stricter acceptance policy or a new rewriter) replaces
the attempts, while final_captions and the curated tar still publish the earlier attempts' rewrites: lineage
and the report must say so, with what to re-run, rather than show a published rewrite next to attempts that
never produced it. A whole run, and re-running final_captions and curated_shards, leaves the shard unmarked."""

from __future__ import annotations

import shutil

import dagster as dg

from curation_pipeline.reporting.lineage import caption_history, format_history
from curation_pipeline.reporting.report import build_report
from curation_pipeline.storage.warehouse import Warehouse

SHARD = "sample-000001"  # has captions the cleaner rewrites


def _one_shard(tmp_path) -> tuple[dg.Definitions, Warehouse]:
    """Definitions over a raw folder holding SHARD (text profile), and their warehouse."""
    from curation_pipeline.definitions import build_definitions
    from curation_pipeline.resources import ScoringResource
    from curation_pipeline_tests.conftest import RAW_SAMPLES

    raw, wh_dir = tmp_path / "raw", tmp_path / "wh"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / f"{SHARD}.tar", raw / f"{SHARD}.tar")
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(wh_dir), scoring=ScoringResource(profile="text"))
    return defs, Warehouse(str(wh_dir))


def _runner(defs: dg.Definitions, instance: dg.DagsterInstance):
    """Materialize SHARD's assets (all, or ``names``) under a policy config (the launchpad's), not raising."""
    from curation_pipeline_tests.conftest import QUIET

    instance.add_dynamic_partitions("shards", [SHARD])
    job = defs.resolve_job_def("curate_shards")

    def run(names=None, policy=None):
        config = {**QUIET, **({"resources": {"policy": {"config": policy}}} if policy else {})}
        keys = [dg.AssetKey(n) for n in names] if names else None
        return job.execute_in_process(partition_key=SHARD, instance=instance, raise_on_error=False,
                                      run_config=config, asset_selection=keys)

    return run


def _marked_stale(wh: Warehouse, history, why: str, mark: str) -> None:
    """Lineage heads its text with the shard's STALE line and marks each pair; the report says the same."""
    text = format_history(history, limit=100)
    assert text.startswith(f"STALE shard {SHARD}: {why}")
    assert text.count(f"  STALE:    {mark} (see above)") == len(history.final) > 0
    shards = build_report(wh).shards.set_index("shard")
    assert shards["status"][SHARD] == "stale" and shards["status_detail"][SHARD] == why


def test_rewritten_captions_made_again_alone_marks_the_shard_stale(tmp_path):
    defs, wh = _one_shard(tmp_path)
    with dg.instance_for_test() as instance:
        runner = _runner(defs, instance)
        run = lambda names=None, policy=None: runner(names, policy).success  # noqa: E731

        assert run()
        whole = caption_history(wh, shard=SHARD)
        assert whole.stale == {} and "STALE" not in format_history(whole, limit=100)
        assert build_report(wh).shards.set_index("shard")["status"][SHARD] == "ok"
        assert whole.final["outcome"].eq("rewritten").any()

        # UI: select rewritten_captions of the shard, Materialize with a stricter acceptance policy
        assert run(["rewritten_captions"], policy={"acceptance": {"min_improvement": 40.0}})
        attempts = wh.read_table("rewritten_captions", SHARD)
        final = wh.read_table("final_captions", SHARD)
        orphaned = set(final.loc[final["rewritten"], "key"]) - set(attempts.loc[attempts["accepted"], "key"])
        assert orphaned  # the scenario: published rewrites with no accepted attempt left

        history = caption_history(wh, shard=SHARD, rewritten_only=True)
        why = history.stale.get(SHARD, "")
        assert why.startswith("final_captions (and any curated tar made from it) were made from an earlier "
                              "rewritten_captions")
        assert why.endswith("materialize final_captions and curated_shards of this shard")
        _marked_stale(wh, history, why, "final caption made from earlier rewrite attempts than those below")

        # the remedy named: final_captions and curated_shards of the shard made again
        assert run(["final_captions", "curated_shards"], policy={"acceptance": {"min_improvement": 40.0}})
        again = caption_history(wh, shard=SHARD)
        assert again.stale == {} and "STALE" not in format_history(again, limit=100)
        assert build_report(wh).shards.set_index("shard")["status"][SHARD] == "ok"
        fixed = wh.read_table("final_captions", SHARD)
        accepted = set(attempts.loc[attempts["accepted"], "key"])
        assert set(fixed.loc[fixed["rewritten"], "key"]) <= accepted


def test_caption_decisions_made_again_alone_marks_the_shard_stale(tmp_path):
    """The same for the decisions: decided again (the UI, one asset) while final_captions still resolves the
    earlier run's, so the ``decided:`` lines are not what was published under."""
    from curation_pipeline_tests.conftest import QUIET

    defs, wh = _one_shard(tmp_path)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", [SHARD])
        job = defs.resolve_job_def("curate_shards")

        def run(names=None):
            keys = [dg.AssetKey(n) for n in names] if names else None
            result = job.execute_in_process(partition_key=SHARD, instance=instance, raise_on_error=False,
                                            run_config=QUIET, asset_selection=keys)
            return result.run_id if result.success else None

        first = run()
        assert first and caption_history(wh, shard=SHARD).stale == {}

        again = run(["caption_decisions"])
        assert again
        history = caption_history(wh, shard=SHARD)
        why = history.stale.get(SHARD, "")
        assert why.startswith(f"final_captions (and any curated tar made from it) resolved the decisions of run "
                              f"{first[:8]}, but the stored caption_decisions are run {again[:8]}'s")
        _marked_stale(wh, history, why, "final caption resolved earlier decisions than the one shown")

        assert run(["rewritten_captions", "final_captions", "curated_shards"])  # the remedy named
        assert caption_history(wh, shard=SHARD).stale == {}
        assert build_report(wh).shards.set_index("shard")["status"][SHARD] == "ok"


def test_final_captions_refuse_attempts_made_for_other_decisions(tmp_path):
    """Decided again alone, then final_captions and curated_shards alone (the UI selects assets freely): the stored
    attempts are the earlier decisions', so a pair newly marked ``rewrite`` would be dropped as "not attempted"
    unseen. The step fails naming the remedy, and nothing is published from them."""
    defs, wh = _one_shard(tmp_path)
    with dg.instance_for_test() as instance:
        run = _runner(defs, instance)

        assert run(policy={"keep_threshold": 65.0}).success
        published = wh.read_table("final_captions", SHARD)
        stricter = {"keep_threshold": 95.0}  # more pairs marked rewrite than the stored attempts cover
        again = run(["caption_decisions"], policy=stricter)
        assert again.success
        decisions = wh.read_table("caption_decisions", SHARD)
        attempts = wh.read_table("rewritten_captions", SHARD)
        assert not set(decisions.loc[decisions["action"].eq("rewrite"), "key"]) <= set(attempts["key"])

        failed = run(["final_captions", "curated_shards"], policy=stricter)
        assert not failed.success
        failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
        text = failure.event_specific_data.error.message
        assert "rewritten_captions of shard" in text
        assert f"stored caption_decisions are run {again.run_id[:8]}'s" in text
        assert "materialize rewritten_captions, final_captions and curated_shards" in text
        assert wh.read_table("final_captions", SHARD).equals(published)  # nothing resolved from the stale attempts

        assert run(["rewritten_captions", "final_captions", "curated_shards"], policy=stricter).success  # the remedy
        final = wh.read_table("final_captions", SHARD)
        assert not final["reason"].str.contains("not attempted").any()


def test_a_pair_marked_rewrite_without_an_attempt_is_refused_though_unrecorded():
    """Attempts from before their decisions' run was recorded are taken as current, yet each pair marked
    ``rewrite`` must have one."""
    import pandas as pd
    import pytest

    from curation_pipeline.assets.rewriting import require_attempts_for

    decisions = pd.DataFrame({"key": ["a", "b", "c"], "action": ["keep", "rewrite", "rewrite"]})
    require_attempts_for(decisions, "run-2", pd.DataFrame({"key": ["b", "c"]}), None, SHARD)
    with pytest.raises(dg.Failure, match=r"1 of the 2 pairs of shard 'sample-000001' decided 'rewrite' have no "
                                         r"rewrite attempt in rewritten_captions \(first: 'c'\)"):
        require_attempts_for(decisions, "run-2", pd.DataFrame({"key": ["b"]}), None, SHARD)
    with pytest.raises(dg.Failure, match="made for the decisions of run run-1, but the stored caption_decisions are "
                                         "run run-2's"):
        require_attempts_for(decisions, "run-2", pd.DataFrame({"key": ["b", "c"]}), "run-1", SHARD)
