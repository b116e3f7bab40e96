"""A shard whose source changed (captions cut to a word) is flagged against the pinned caption-length
reference, without stopping the shard; before a reference exists the check says it did not compare."""

import shutil

import dagster as dg
import pytest

from curation_pipeline.assets.reference import caption_length_reference
from curation_pipeline.definitions import build_definitions, build_resources
from curation_pipeline.storage.warehouse import Warehouse
from curation_pipeline.validation.reference import read_reference
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES, truncated_captions_copy



@pytest.fixture
def home(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("sample-000000", "sample-000001", "sample-000002"):
        shutil.copy(RAW_SAMPLES / f"{name}.tar", raw / f"{name}.tar")
    truncated_captions_copy(RAW_SAMPLES / "sample-000002.tar", raw / "cut-000002.tar")
    defs = build_definitions(raw_root=str(raw), warehouse_root=str(tmp_path / "warehouse"))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", ["sample-000000", "sample-000001", "sample-000002", "cut-000002"])
    return defs, instance, tmp_path


def _pairs(defs, instance, shard):
    result = defs.resolve_job_def("curate_shards").execute_in_process(
        partition_key=shard, instance=instance, raise_on_error=False, run_config=QUIET,
        asset_selection=[dg.AssetKey("pairs")])
    assert result.success  # the check never blocks
    return {c.check_name: c for c in result.get_asset_check_evaluations()}["caption_length_vs_reference"]


def _reference(defs, instance, tmp_path, shards, **overrides):
    resources = build_resources(raw_root=str(tmp_path / "raw"), warehouse_root=str(tmp_path / "warehouse"),
                                **overrides)
    return dg.materialize([caption_length_reference], instance=instance, resources=resources, raise_on_error=False,
                          run_config={**QUIET, "ops": {"caption_length_reference": {"config": {"shards": shards}}}})


def test_a_truncating_source_is_flagged_against_the_pinned_reference(home):
    defs, instance, tmp_path = home
    before = _pairs(defs, instance, "sample-000000")
    assert before.passed and before.severity == dg.AssetCheckSeverity.WARN
    assert before.description.startswith("not compared: no reference built yet: materialize caption_length_reference")
    _pairs(defs, instance, "sample-000001")

    built = _reference(defs, instance, tmp_path, ["sample-000000", "sample-000001"])
    assert built.success
    meta = built.asset_materializations_for_node("caption_length_reference")[0].metadata
    assert meta["pairs"].value == 80 and meta["shards"].value == 2 and meta["length_unit"].value == "words"
    stored = read_reference(Warehouse(str(tmp_path / "warehouse")))
    assert stored.shards == ("sample-000000", "sample-000001") and stored.counts.n == 80

    same_source = _pairs(defs, instance, "sample-000002")
    assert same_source.passed, same_source.description
    assert same_source.metadata["shard_in_reference"].value is False
    assert same_source.metadata["reference_shards"].value == 2

    cut = _pairs(defs, instance, "cut-000002")
    assert not cut.passed and cut.severity == dg.AssetCheckSeverity.WARN
    assert "mean caption length shrank to" in cut.description
    assert cut.metadata["drift_mean_shard"].value < cut.metadata["drift_mean_reference"].value / 2
    assert "| metric | reference | shard |" in cut.metadata["drift_table"].value


def test_a_reference_over_shards_without_pairs_fails_naming_them(home):
    defs, instance, tmp_path = home
    assert not _reference(defs, instance, tmp_path, []).success  # nothing stored yet
    _pairs(defs, instance, "sample-000000")
    result = _reference(defs, instance, tmp_path, ["sample-000000", "nope-1"])
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "no stored pairs for 1 of the reference's shards: nope-1" in str(failure.event_specific_data.error)


def test_a_reference_too_small_to_compare_with_is_refused(home):
    """A reference of fewer than min_rows captions would let every later shard pass "not compared", for good."""
    from curation_pipeline.resources import DriftConfig, PolicyResource

    defs, instance, tmp_path = home
    _pairs(defs, instance, "sample-000000")  # 40 captions
    strict = PolicyResource(drift=DriftConfig(min_rows=50))
    result = _reference(defs, instance, tmp_path, ["sample-000000"], policy=strict)
    assert not result.success and read_reference(Warehouse(str(tmp_path / "warehouse"))) is None
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert ("the reference's 1 shard(s) hold 40 captions, fewer than policy.drift.min_rows (50)"
            in str(failure.event_specific_data.error))
    assert _reference(defs, instance, tmp_path, ["sample-000000"]).success  # 40 >= the default 20


def test_a_reference_in_another_unit_is_not_compared(home):
    from curation_pipeline.resources import PolicyResource

    defs, instance, tmp_path = home
    _pairs(defs, instance, "sample-000000")
    assert _reference(defs, instance, tmp_path, []).success  # every shard with pairs: in words
    chars = build_definitions(raw_root=str(tmp_path / "raw"), warehouse_root=str(tmp_path / "warehouse"),
                              policy=PolicyResource(drift={"length_unit": "chars"}))
    check = _pairs(chars, instance, "sample-000001")
    assert check.passed
    assert check.description == ("not compared: the reference counts words, policy.drift.length_unit is chars: "
                                 "materialize caption_length_reference again")
