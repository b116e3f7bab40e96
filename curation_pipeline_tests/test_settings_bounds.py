"""Every numeric setting is bounded by what it means, and a bad one is refused when the resource is built
(before any run: `curate run` exits 2), naming the setting; a boolean is no number."""

import inspect
import re

import dagster as dg
import pydantic
import pytest
from click.testing import CliRunner

from curation_pipeline.cli import main
from curation_pipeline.resources import (ComputeResource, PolicyResource, RewriterResource, ScoringResource,
                                         WarehouseResource, _Group, _is_number)
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES

RESOURCES = {"scoring": ScoringResource, "rewriter": RewriterResource, "policy": PolicyResource,
             "compute": ComputeResource, "warehouse": WarehouseResource}


def _nested(path: str, value) -> dict:
    """``drift.max_kl`` -> ``{"drift": {"max_kl": value}}``."""
    *parents, leaf = path.split(".")
    settings = {leaf: value}
    for part in reversed(parents):
        settings = {part: settings}
    return settings


def _refused(setting: str, value) -> pydantic.ValidationError:
    resource, _, path = setting.partition(".")
    with pytest.raises(pydantic.ValidationError) as caught:
        RESOURCES[resource](**_nested(path, value))
    return caught.value


@pytest.mark.parametrize("setting, value", [
    ("rewriter.batch_size", -1),              # ran, and rewrote nothing (an empty range)
    ("rewriter.batch_size", 0),               # failed every shard after scoring
    ("rewriter.num_beams", 0),
    ("rewriter.max_new_tokens", -1),          # read as "the rewriter's default", silently
    ("scoring.threads", -3),
    ("scoring.prefetch", -1),
    ("scoring.mlm.min_mass", 1.5),
    ("policy.warn_drop_share", 5),
    ("policy.warn_drop_share", -0.1),
    ("policy.drift.max_kl", -1),              # failed after scoring, in GX's words
    ("policy.drift.min_rows", -5),
    ("policy.drift.mean_ratio_min", -0.1),
    ("policy.drift.mean_ratio_max", 0),
    ("policy.drift.quantile_tolerance", -1),
    ("policy.drift.quantile_floor", -1),
    ("policy.acceptance.max_edit_ratio", -1),  # rejected every rewrite
    ("policy.acceptance.max_edit_ratio", 1.5),
    ("policy.acceptance.min_length_ratio", -1),
    ("policy.acceptance.max_length_ratio", 0),
    ("policy.acceptance.min_similarity", 2),
    ("policy.acceptance.min_improvement", -1),
    ("policy.image.min_sharpness", -1),
])
def test_a_value_out_of_bounds_is_refused_at_its_setting(setting, value):
    errors = _refused(setting, value).errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [setting.partition(".")[2]]


def _numeric_settings(cls, prefix: str = ""):
    """Every numeric setting of a resource, its nested groups' included, as dotted paths (not dagster-ray's
    own groups of ComputeResource). Not a nested one whose default is 1 (policy.image.min_entropy): Dagster
    drops a nested value equal to its default before any validator sees it, and true == 1, so true there is
    the default it equals."""
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if inspect.isclass(annotation) and issubclass(annotation, _Group):
            yield from _numeric_settings(annotation, f"{prefix}{name}.")
        elif _is_number(annotation) and not (prefix and field.default == 1):
            yield f"{prefix}{name}"


NUMERIC = [f"{key}.{path}" for key, cls in RESOURCES.items() for path in _numeric_settings(cls)]


def test_the_numeric_settings_are_found():
    assert {"policy.keep_fraction", "policy.drift.min_rows", "scoring.mlm.min_mass", "rewriter.batch_size",
            "compute.actors", "warehouse.batch_size"} <= set(NUMERIC)


@pytest.mark.parametrize("setting", NUMERIC)
def test_a_boolean_is_no_number(setting):
    """pydantic reads true as 1: keep_fraction=true kept every pair, batch_size=true batched one."""
    errors = _refused(setting, True).errors()
    assert [".".join(map(str, e["loc"])) for e in errors] == [setting.partition(".")[2]]
    assert "a number is needed, not true" in errors[0]["msg"]


@pytest.mark.parametrize("setting, value", [
    ("rewriter.max_new_tokens", 0), ("rewriter.batch_size", 1), ("rewriter.num_beams", 4),
    ("scoring.threads", 0), ("scoring.prefetch", 0), ("scoring.mlm.min_mass", 0),
    ("policy.warn_drop_share", 0), ("policy.warn_drop_share", 1), ("policy.keep_fraction", 1),
    ("policy.keep_fraction", None), ("policy.drift.max_kl", 0), ("policy.drift.max_kl", 10),
    ("policy.drift.min_rows", 0), ("policy.drift.mean_ratio_min", 0), ("policy.drift.quantile_tolerance", 0),
    ("policy.acceptance.max_edit_ratio", 0), ("policy.acceptance.max_edit_ratio", 1),
    ("policy.acceptance.max_edit_ratio", None), ("policy.acceptance.min_similarity", -1),
    ("policy.acceptance.min_improvement", 0), ("policy.image.min_sharpness", 0), ("compute.actors", 2),
])
def test_values_at_the_bounds_and_off_still_run(setting, value):
    resource, _, path = setting.partition(".")
    built = RESOURCES[resource](**_nested(path, value))
    for part in path.split("."):
        built = getattr(built, part)
    assert built == value


@pytest.mark.parametrize("policy, message", [
    ({"drift": {"mean_ratio_min": 1.5, "mean_ratio_max": 1.2}},
     "policy.drift.mean_ratio_min (1.5) is above policy.drift.mean_ratio_max (1.2)"),
    ({"acceptance": {"min_length_ratio": 2, "max_length_ratio": 1}},
     "policy.acceptance.min_length_ratio (2) is above policy.acceptance.max_length_ratio (1)"),
    ({"image": {"min_brightness": 0.9, "max_brightness": 0.1}},
     "policy.image.min_brightness (0.9) is above policy.image.max_brightness (0.1)"),
])
def test_a_minimum_above_its_maximum_is_refused(policy, message):
    with pytest.raises(pydantic.ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PolicyResource(**policy)


@pytest.mark.parametrize("policy, named, field", [
    ({"nsfw": {"drop": 80}}, "policy.nsfw.drop=80 is outside nsfw_prob's declared range", "nsfw_drop"),
    ({"nsfw": {"review": 20}}, "policy.nsfw.review=20 is outside", "nsfw_review"),
    ({"acceptance": {"min_improvement": 500}}, "policy.acceptance.min_improvement=500 is outside", "min_improvement"),
    ({"image": {"min_entropy": 9}}, "policy.image.min_entropy=9 is outside iq_entropy's declared range", "min_entropy"),
    ({"image": {"max_text_area": 3}}, "policy.image.max_text_area=3 is outside", "max_text_area"),
    ({"keep_threshold": 950}, "policy.keep_threshold=950 is outside text_quality's declared range 0..100",
     "keep_threshold"),
    ({"keep_fraction": 1.5}, "policy.keep_fraction must be in [0, 1]", "keep_fraction"),
])
def test_the_policy_domain_errors_name_the_settings(policy, named, field):
    """DecisionPolicy's checks name its fields (nsfw_drop=80): said as the settings given (policy.nsfw.drop)."""
    with pytest.raises(pydantic.ValidationError) as caught:
        PolicyResource(**policy)
    message = str(caught.value).split(" [type=")[0]  # not the input pydantic repeats
    assert named in message
    assert not re.search(rf"(?<![\w.]){field}\b", message), message  # the field never named alone


@pytest.mark.parametrize("profile, setting", [("clip", "scoring.clip.model (--clip-model)"),
                                              ("full", "scoring.clip.model (--clip-model)"),
                                              ("mlm", "scoring.mlm.model (--mlm-model)")])
def test_a_model_profile_without_its_model_names_the_setting(profile, setting):
    with pytest.raises(ValueError, match=rf"needs {setting.replace('(', '[(]').replace(')', '[)]')}"):
        ScoringResource(profile=profile).as_profile()


def test_each_default_lives_once():
    from curation_pipeline.rewriting.aitqe import AITQE_MAX_NEW_TOKENS, AitqeRewriter
    from curation_pipeline.rewriting.vlm import VLM_MAX_NEW_TOKENS, VlmRewriter
    from curation_pipeline.scoring.prefetch import DEFAULT_DEPTH, prefetch
    from curation_pipeline.scoring.run import score_stream

    rewriter, vlm, aitqe = RewriterResource(), inspect.signature(VlmRewriter), inspect.signature(AitqeRewriter)
    assert vlm.parameters["batch_size"].default == aitqe.parameters["batch_size"].default == rewriter.batch_size
    assert vlm.parameters["num_beams"].default == rewriter.num_beams
    assert vlm.parameters["max_new_tokens"].default == VLM_MAX_NEW_TOKENS
    assert aitqe.parameters["max_new_tokens"].default == AITQE_MAX_NEW_TOKENS
    described = RewriterResource.model_fields["max_new_tokens"].description
    assert f"vlm {VLM_MAX_NEW_TOKENS}, aitqe {AITQE_MAX_NEW_TOKENS}" in described
    assert ScoringResource().prefetch == DEFAULT_DEPTH == inspect.signature(prefetch).parameters["depth"].default
    assert inspect.signature(score_stream).parameters["prefetch_depth"].default == DEFAULT_DEPTH


@pytest.mark.parametrize("args, message", [
    (["--set", "rewriter.batch_size=-1"], "batch_size"),
    (["--set", "policy.keep_fraction=true"], "a number is needed, not true"),
    (["--set", "policy.drift.max_kl=-1"], "drift.max_kl"),
    (["--set", "policy.nsfw.drop=80"], "policy.nsfw.drop=80"),
    (["--profile", "clip"], "scoring.clip.model (--clip-model)"),
])
def test_curate_run_refuses_a_bad_number_before_any_run(tmp_path, args, message):
    result = CliRunner().invoke(main, ["run", "--raw", str(RAW_SAMPLES), "--warehouse", str(tmp_path / "wh"),
                                       "--profile", "text", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and not (tmp_path / "wh").exists()


@pytest.mark.parametrize("policy, message", [
    ({"drift": {"max_kl": -1}}, "greater than or equal to 0"),
    ({"acceptance": {"max_edit_ratio": 2}}, "less than or equal to 1"),
])
def test_a_launchpad_bound_fails_the_run_before_any_step(tmp_path, monkeypatch, policy, message):
    """(A launchpad boolean is not refused: Dagster's own config check reads true as 1.0 before the resource.)"""
    from curation_pipeline.definitions import build_definitions

    monkeypatch.setenv("CURATION_RAW", str(RAW_SAMPLES))
    monkeypatch.setenv("CURATION_WAREHOUSE", str(tmp_path / "wh"))
    shard = "sample-000000"
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [shard])
    result = build_definitions().resolve_job_def("curate_shards").execute_in_process(
        partition_key=shard, instance=instance, raise_on_error=False,
        run_config={**QUIET, "resources": {"policy": {"config": policy}}},
        asset_selection=[dg.AssetKey("pairs")])
    assert not result.success
    assert not [e for e in result.all_events if e.is_step_event]
    failure = next(e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE")
    assert message in str(failure.event_specific_data.error)
    assert not (tmp_path / "wh").exists()


@pytest.mark.parametrize("raw", ["abc", "-5", "0", "nan", "inf"])
def test_a_bad_helper_timeout_warns_naming_the_variable(monkeypatch, raw):
    from curation_pipeline import helper

    for env in (helper.IDLE_ENV, helper.CONNECT_TIMEOUT_ENV):
        monkeypatch.setenv(env, raw)
        with pytest.warns(UserWarning, match=f"{env}='{raw}' is not a positive number of seconds: using 7"):
            assert helper._seconds(env, 7.0) == 7.0


def test_a_good_or_unset_helper_timeout_is_read_silently(monkeypatch, recwarn):
    from curation_pipeline import helper

    monkeypatch.setenv(helper.IDLE_ENV, " 2.5 ")
    monkeypatch.setenv(helper.CONNECT_TIMEOUT_ENV, "")
    assert helper._seconds(helper.IDLE_ENV, 7.0) == 2.5
    assert helper._seconds(helper.CONNECT_TIMEOUT_ENV, 7.0) == 7.0
    assert not recwarn.list


@pytest.mark.parametrize("setting", ["CURATE_HELPER_IDLE_S", "CURATE_HELPER_QUIET_S"])
def test_curate_run_warns_of_a_bad_helper_setting_in_the_users_terminal(tmp_path, monkeypatch, setting):
    """The idle and quiet times are read by the helper, started in the background: their warnings alone went
    unseen."""
    import warnings

    from curation_pipeline.cli import EXIT_BAD_INPUT

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(setting, "2 minutes")
    empty = tmp_path / "raw"
    empty.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(main, ["run", "--raw", str(empty), "--warehouse", str(tmp_path / "wh")])
    assert result.exit_code == EXIT_BAD_INPUT  # no shards: the run stops after reading its settings
    assert any(f"{setting}='2 minutes' is not a positive number of seconds" in str(w.message)
               for w in caught), [str(w.message) for w in caught]
