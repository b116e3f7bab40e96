"""The settle sensor keeps the policy the pool was last decided with on purpose (the README's keep_fraction
recipe, run with a launchpad / --config-json policy), not the code location's default: real runs on two
sample shards' stored scores, the sensor's requests executed as the daemon launches them."""

import hashlib
import json

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from curation_pipeline.assets.dedup import (policy_change, policy_config, settle_duplicates, settle_policy,
                                           settle_requests)
from curation_pipeline.decisions.dedup import DIGEST_KEY, POLICY_KEY, DedupIndex
from curation_pipeline.decisions.policy import IN_CUT
from curation_pipeline.definitions import build_definitions
from curation_pipeline.reporting.report import RULES_HINT, unsettled_shards
from curation_pipeline.resources import PolicyResource
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline_tests.assets.test_global_selection import SHARDS, copy_of, new_instance, scored  # noqa: F401
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES


def policy(**config) -> dict:
    return {**QUIET, "resources": {"policy": {"config": config}}}


def run(defs, instance, job, partition=None, run_config=None):
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=partition, raise_on_error=False, run_config={**QUIET, **(run_config or {})})
    assert result.success, (job, partition)


def outcome(wh: Warehouse) -> dict:
    """Per shard: whether its decisions applied a keep_fraction cut, how many pairs are inside it, and how
    many pairs it publishes."""
    out = {}
    for shard in SHARDS:
        decisions = wh.read_table("caption_decisions", shard)
        final = wh.read_table("final_captions", shard)
        out[shard] = (IN_CUT in decisions.columns and int(decisions[IN_CUT].sum()),
                      int(final["outcome"].ne("dropped").sum()))
    return out


def settle(defs, instance) -> tuple[list[dg.RunRequest], str]:
    """The sensor's body tick after tick, each request run as the daemon runs it (its own run config only),
    until it asks for nothing; returns what it asked for and why it stopped."""
    asked = []
    for _ in range(4):
        requests = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
        if isinstance(requests, str):
            return asked, requests
        for request in requests:
            asked.append(request)
            run(defs, instance, request.job_name, request.partition_key, request.run_config)
    raise AssertionError(f"still asking after 4 ticks: {asked}")


def test_settling_keeps_the_keep_fraction_the_pool_was_decided_with(scored, tmp_path):  # noqa: F811
    warehouse = copy_of(scored, tmp_path)
    wh = Warehouse(str(warehouse))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))  # the default policy
    instance = new_instance()
    cfg = policy(keep_fraction=0.3)
    # the README's recipe: the cut, the index, every shard re-selected, all with the same policy
    run(defs, instance, "selection_cut_job", run_config=cfg)
    run(defs, instance, "dedup_index_job", run_config=cfg)
    for shard in SHARDS:
        run(defs, instance, "reselect_shards", shard, cfg)
    decided = outcome(wh)
    assert all(in_cut for in_cut, _ in decided.values()), decided

    asked, why = settle(defs, instance)
    assert asked == [], [(r.job_name, r.partition_key) for r in asked]  # nothing undone
    assert "keep_fraction=0.3 (code location: off)" in why and "no shard is stale" in why
    assert outcome(wh) == decided

    # one shard run again with the code location's policy (a plain launch, the schedule): re-selected under
    # the index's rules, not the pool under the shard's
    run(defs, instance, "reselect_shards", SHARDS[0])
    assert outcome(wh)[SHARDS[0]][0] is False
    asked, why = settle(defs, instance)
    assert [(r.job_name, r.partition_key) for r in asked] == [("reselect_shards", SHARDS[0])]
    assert asked[0].run_config["resources"]["policy"]["config"]["keep_fraction"] == 0.3
    assert outcome(wh) == decided

    # a new fraction half applied (selection_cut first, as the recipe goes): the sensor neither undoes it nor
    # re-selects with a cut that does not match; once dedup_index has it, the pool settles under it
    run(defs, instance, "selection_cut_job", run_config=policy(keep_fraction=0.6))
    why = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert isinstance(why, str) and "selection_cut was computed with keep_fraction=0.6" in why, why
    run(defs, instance, "dedup_index_job", run_config=policy(keep_fraction=0.6))
    requests = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert sorted(r.partition_key for r in requests) == SHARDS
    assert {r.run_config["resources"]["policy"]["config"]["keep_fraction"] for r in requests} == {0.6}
    assert all("selection_cut changed" in r.tags["curation/reason"] for r in requests)


def test_the_default_policy_settles_as_before(scored, tmp_path):  # noqa: F811
    """No stored policy other than the code location's: the requests carry no run config."""
    warehouse = copy_of(scored, tmp_path)
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))
    instance = new_instance()
    requests = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert [(r.job_name, r.run_config) for r in requests] == [("dedup_index_job", {})]
    run(defs, instance, "dedup_index_job")
    manifest = json.loads((warehouse / "dedup" / "index.json").read_text())
    assert manifest["policy"]["keep_fraction"] is None
    for shard in SHARDS:
        run(defs, instance, "reselect_shards", shard)
    why = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert why == "duplicate index current for 2 shards; no shard is stale"


def test_a_shard_decided_under_other_rules_is_reselected_under_the_index(scored, tmp_path):  # noqa: F811
    """Not only keep_fraction (whose cut each decision records): a shard decided under other dedup rules
    than the stored index's, whatever its duplicate rows, is re-selected under the index's."""
    warehouse = copy_of(scored, tmp_path)
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))
    instance = new_instance()
    plain = policy(rewrite=False)  # a plain filter
    run(defs, instance, "dedup_index_job", run_config=plain)
    for shard in SHARDS:
        run(defs, instance, "reselect_shards", shard, plain)
    assert settle(defs, instance)[0] == []
    run(defs, instance, "reselect_shards", SHARDS[1])  # the code location's policy: rewrite on
    # the report says why, and how to settle it (a plain re-selection would not): not an older pool
    unsettled = unsettled_shards(Warehouse(str(warehouse)))
    assert list(unsettled) == [SHARDS[1]] and RULES_HINT in unsettled[SHARDS[1]], unsettled
    assert "older duplicate index" not in unsettled[SHARDS[1]]
    assert "backfill the reselect_shards" not in unsettled[SHARDS[1]]
    requests = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert [(r.partition_key, r.tags["curation/reason"]) for r in requests] == [
        (SHARDS[1], "decided under other rules than dedup_index's")]
    assert requests[0].run_config["resources"]["policy"]["config"]["rewrite"] is False


def published(wh: Warehouse) -> dict:
    return {shard: int(wh.read_table("final_captions", shard)["outcome"].ne("dropped").sum()) for shard in SHARDS}


def settled_under(defs, instance, wh, config: dict) -> dict:
    """The README's recipe with ``config``: dedup_index, then every shard, under it; the sensor asks for
    nothing more. Returns what each shard publishes."""
    run(defs, instance, "dedup_index_job", run_config=config)
    for shard in SHARDS:
        run(defs, instance, "reselect_shards", shard, config)
    assert settle(defs, instance)[0] == []
    return published(wh)


def assert_reselected_under_the_index(defs, instance, wh, decided: dict, field: str, value):
    """After a plain launch of SHARDS[0] (the code location's policy): the report names it as decided under
    another policy (not an older pool), and the sensor re-selects it, and only it, under the stored one."""
    run(defs, instance, "reselect_shards", SHARDS[0])
    assert published(wh) != decided  # the plain launch publishes otherwise
    unsettled = unsettled_shards(wh)
    assert list(unsettled) == [SHARDS[0]], unsettled
    assert "another policy than the one dedup_index was built with" in unsettled[SHARDS[0]]
    assert "older duplicate index" not in unsettled[SHARDS[0]] and RULES_HINT in unsettled[SHARDS[0]]
    asked, why = settle(defs, instance)
    assert [(r.partition_key, r.tags["curation/reason"]) for r in asked] == [
        (SHARDS[0], "decided under other rules than dedup_index's")], why
    assert asked[0].run_config["resources"]["policy"]["config"][field] == value
    assert published(wh) == decided and unsettled_shards(wh) == {}
    # launched plainly once more: asked again under another run_key (the daemon skips a key that ran)
    run(defs, instance, "reselect_shards", SHARDS[0])
    again = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert [r.partition_key for r in again] == [SHARDS[0]] and again[0].run_key != asked[0].run_key


def test_a_policy_that_differs_outside_the_dedup_rules_is_reselected(scored, tmp_path):  # noqa: F811
    """drop_duplicates is no dedup rule (the groups are the same): each decision records the whole policy."""
    warehouse = copy_of(scored, tmp_path)
    wh = Warehouse(str(warehouse))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))  # drop_duplicates on
    instance = new_instance()
    decided = settled_under(defs, instance, wh, policy(drop_duplicates=False))
    assert_reselected_under_the_index(defs, instance, wh, decided, "drop_duplicates", False)


def test_without_duplicate_signals_a_shard_decided_under_another_policy_is_reselected(scored, tmp_path):  # noqa: F811
    """The ``text`` profile: no dup_* columns, so no duplicate rows, yet the policy is recorded and kept."""
    warehouse = copy_of(scored, tmp_path)
    for path in (warehouse / "quality_scores").glob("*.parquet"):
        stored = pq.read_table(path)
        pq.write_table(stored.drop([c for c in stored.column_names if c.startswith("dup_")]), path)
    wh = Warehouse(str(warehouse))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))  # rewrite on
    instance = new_instance()
    decided = settled_under(defs, instance, wh, policy(rewrite=False))
    assert all(DIGEST_KEY not in wh.table_metadata("caption_decisions", s) for s in SHARDS)  # no duplicate rows
    assert_reselected_under_the_index(defs, instance, wh, decided, "rewrite", False)


def forget_policy(wh: Warehouse, shard: str):
    """The shard's decisions as a run before decisions recorded their policy left them."""
    path = wh.table_path("caption_decisions", shard)
    stored = pq.read_table(path)
    pq.write_table(stored.replace_schema_metadata(
        {k: v for k, v in (stored.schema.metadata or {}).items() if k != POLICY_KEY.encode()}), path)
    assert POLICY_KEY not in wh.table_metadata("caption_decisions", shard)


def test_decisions_that_record_no_policy_are_taken_as_the_code_locations(scored, tmp_path):  # noqa: F811
    """Made before decisions recorded their policy: stale only where the stored index's policy is not the
    code location's (what a plain run used), not every shard at once after an upgrade."""
    warehouse = copy_of(scored, tmp_path)
    wh = Warehouse(str(warehouse))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))
    instance = new_instance()
    settled_under(defs, instance, wh, policy())  # the code location's policy
    for shard in SHARDS:
        forget_policy(wh, shard)
    why = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert why == "duplicate index current for 2 shards; no shard is stale"
    assert unsettled_shards(wh) == {}
    # an index built under another policy: those decisions may well be the code location's, re-selected
    run(defs, instance, "dedup_index_job", run_config=policy(drop_duplicates=False))
    requests = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert sorted(r.partition_key for r in requests) == SHARDS
    assert {r.run_config["resources"]["policy"]["config"]["drop_duplicates"] for r in requests} == {False}


def test_policy_fields_that_decide_nothing_reselect_nothing(scored, tmp_path):  # noqa: F811
    """Check-only settings (max_unscored_share: quality_scores' check, which re-selection does not run;
    warn_drop_share: a warning; drift: the drift check's limits) are left out of the policy digest: a pool
    settled under other values of them stays as it is when dedup_index is built under the code location's."""
    warehouse = copy_of(scored, tmp_path)
    wh = Warehouse(str(warehouse))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))
    instance = new_instance()
    decided = settled_under(defs, instance, wh, policy(max_unscored_share=0.6, warn_drop_share=0.5,
                                                       drift={"max_kl": 0.9}))
    run(defs, instance, "dedup_index_job")  # the code location's policy: only those fields differ
    asked, why = settle(defs, instance)
    assert asked == [], [(r.partition_key, r.tags["curation/reason"]) for r in asked]
    assert why == "duplicate index current for 2 shards; no shard is stale"
    assert published(wh) == decided and unsettled_shards(wh) == {}
    # the other way round (the index built under them, the code location without): no difference reported
    run(defs, instance, "dedup_index_job", run_config=policy(warn_drop_share=0.5))
    asked, why = settle(defs, instance)
    assert asked == [] and why == "duplicate index current for 2 shards; no shard is stale", why


def test_settings_that_decide_nothing_are_no_reported_difference():
    """Both reports of a stored policy against another (the settle sensor's note, `curate run`'s message) leave
    out the settings that decide nothing (``POLICY_DIGEST_IGNORES``), as the policy digest does."""
    ours = policy_config(PolicyResource())
    ignored = {"warn_drop_share": 0.5, "max_unscored_share": 0.6, "drift": {**ours["drift"], "max_kl": 0.9}}

    def stored(**changes) -> DedupIndex:
        return DedupIndex(groups=pd.DataFrame(), links=pd.DataFrame(), identity={}, rules="",
                          computed_at="then", policy={**ours, **changes})

    settled, run_config, note = settle_policy(stored(**ignored), PolicyResource())
    assert note == "", note  # still settled under the stored config, which decides the same
    assert settled.warn_drop_share == 0.5 and run_config["resources"]["policy"]["config"]["warn_drop_share"] == 0.5
    assert policy_change({**ours, **ignored}, ours) == []
    _, _, note = settle_policy(stored(rewrite=False, **ignored), PolicyResource())
    assert "rewrite=False (code location: True)" in note, note
    assert not any(name in note for name in ignored), note
    assert policy_change({**ours, "rewrite": False, **ignored}, ours) == ["rewrite=False (this run: True)"]


def test_decisions_with_the_digest_of_the_full_config_are_not_all_reselected(scored, tmp_path):  # noqa: F811
    """Decisions written before the digest left the checks' fields out recorded the full config's digest:
    equal to the stored policy's, so an upgrade re-selects nothing where nothing differs."""
    warehouse = copy_of(scored, tmp_path)
    wh = Warehouse(str(warehouse))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))
    instance = new_instance()
    settled_under(defs, instance, wh, policy(rewrite=False))
    manifest = json.loads((warehouse / "dedup" / "index.json").read_text())
    full = hashlib.sha256(json.dumps(manifest["policy"], sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()[:16]  # as the earlier code wrote it
    for shard in SHARDS:
        path = wh.table_path("caption_decisions", shard)
        stored = pq.read_table(path)
        pq.write_table(stored.replace_schema_metadata(
            {**(stored.schema.metadata or {}), POLICY_KEY.encode(): full.encode()}), path)
    why = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    assert isinstance(why, str) and "no shard is stale" in why, why


def test_a_cli_run_under_another_policy_says_which_shards_it_reselects(scored, tmp_path):  # noqa: F811
    """`curate run`'s settling applies the run's own policy to the pool, and says so before re-selecting:
    the settings the pool was decided under and the other shards re-selected under the run's."""
    warehouse = copy_of(scored, tmp_path)
    wh = Warehouse(str(warehouse))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))  # rewrite on
    instance = new_instance()
    settled_under(defs, instance, wh, policy(rewrite=False))
    events = []
    failed = settle_duplicates(defs, instance, QUIET, after_each_run=lambda: events.append("run"),
                               say=events.append, own=(SHARDS[1],))
    assert failed == []
    assert events[0] == "run" and events[2:] == ["run", "run"], events  # said after the index, before re-selecting
    said = events[1]
    assert "decided under another policy" in said and "rewrite=False (this run: True)" in said, said
    assert f"1 other shard re-selected under them: {SHARDS[0]}" in said, said
    assert "max_unscored_share" not in said
    assert json.loads((warehouse / "dedup" / "index.json").read_text())["policy"]["rewrite"] is True
    # the same policy again: nothing to say
    events.clear()
    assert settle_duplicates(defs, instance, QUIET, after_each_run=lambda: events.append("run"),
                             say=events.append) == []
    assert events == ["run"], events


def test_an_edit_of_the_locations_own_policy_is_settled_under_not_reverted(scored, tmp_path, monkeypatch):  # noqa: F811
    """The index keeps a launchpad's policy until the code location's own changes: the settings file edited to
    keep_threshold 80 was reverted to the index's 95 for every new shard, each decided twice."""
    from curation_pipeline.settings_file import SETTINGS_FILE_ENV

    warehouse = copy_of(scored, tmp_path)
    settings = tmp_path / "location.yaml"
    settings.write_text("policy: {keep_threshold: 95}\n")
    monkeypatch.setenv(SETTINGS_FILE_ENV, str(settings))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))
    instance = new_instance()
    run(defs, instance, "dedup_index_job")
    for shard in SHARDS:
        run(defs, instance, "reselect_shards", shard)
    assert settle(defs, instance)[0] == []

    settings.write_text("policy: {keep_threshold: 80}\n")  # the file edited, the location reloaded
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(warehouse))
    asked, why = settle(defs, instance)
    assert [(r.job_name, r.run_config) for r in asked][:1] == [("dedup_index_job", {})], asked
    assert all(not r.run_config for r in asked)  # each under the location's own policy: no run config
    assert sorted(r.partition_key for r in asked if r.job_name == "reselect_shards") == SHARDS
    manifest = json.loads((warehouse / "dedup" / "index.json").read_text())
    assert manifest["policy"]["keep_threshold"] == 80
    # a launchpad's policy is still kept while the location's stays as it is
    run(defs, instance, "dedup_index_job", run_config=policy(keep_threshold=90))
    asked, why = settle(defs, instance)
    assert {r.run_config["resources"]["policy"]["config"]["keep_threshold"] for r in asked} == {90}, asked
