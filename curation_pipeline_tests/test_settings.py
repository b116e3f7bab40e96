"""`curate run --set` and `--config` reach every resource setting, typed, with clear bad-input errors."""

import re

import pytest
from click.testing import CliRunner

from curation_pipeline.cli import BadInput, load_settings, main
from curation_pipeline_tests.conftest import RAW_SAMPLES


def test_set_pairs_are_typed_yaml_and_win_over_the_file(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("resources:\n  policy:\n    config:\n      keep_threshold: 70\n      fallback: drop\n"
                      "  scoring:\n    mlm: {metrics: [itm]}\n")
    settings = load_settings(("policy.keep_threshold=80", "policy.keep_fraction=null", "policy.rewrite=false"),
                             str(config))
    assert settings["policy"] == {"keep_threshold": 80, "fallback": "drop", "keep_fraction": None, "rewrite": False}
    assert settings["scoring"] == {"mlm": {"metrics": ["itm"]}} and settings["rewriter"] == {}


def test_nested_settings_reach_the_nested_config_and_the_domain_classes(tmp_path):
    from curation_pipeline.resources import PolicyResource

    config = tmp_path / "settings.yaml"
    config.write_text("policy:\n  drift: {max_kl: 0.4, min_rows: 5}\n")
    settings = load_settings(("policy.drift.max_kl=0.3", "policy.nsfw.drop=0.9", "policy.image.min_entropy=null",
                              "policy.acceptance.max_edit_ratio=0.5"), str(config))
    assert settings["policy"] == {"drift": {"max_kl": 0.3, "min_rows": 5}, "nsfw": {"drop": 0.9},
                                  "image": {"min_entropy": None}, "acceptance": {"max_edit_ratio": 0.5}}
    policy = PolicyResource(**settings["policy"])
    assert policy.drift_thresholds().max_kl == 0.3 and policy.drift_thresholds().min_rows == 5
    rules = policy.decision_policy()
    assert rules.nsfw_drop == 0.9 and rules.min_entropy is None and rules.min_brightness is not None
    assert policy.acceptance_rules().max_edit_ratio == 0.5


def test_every_default_comes_from_the_domain_classes():
    from curation_pipeline.decisions.policy import DecisionPolicy
    from curation_pipeline.resources import PolicyResource
    from curation_pipeline.rewriting.verify import AcceptanceRules
    from curation_pipeline.validation.drift import DriftThresholds

    policy = PolicyResource()
    assert policy.decision_policy() == DecisionPolicy()
    # min_quality is no setting of its own: it is the policy's drop_threshold
    assert policy.acceptance_rules() == AcceptanceRules(min_quality=DecisionPolicy().drop_threshold)
    assert policy.drift_thresholds() == DriftThresholds()


@pytest.mark.parametrize("pair", ["keep_threshold=80", "nowhere.x=1", "policy.=1", "policy.keep_threshold"])
def test_malformed_set_is_bad_input(pair):
    with pytest.raises(BadInput, match="RESOURCE.KEY=VALUE"):
        load_settings((pair,))


@pytest.mark.parametrize("text, message", [
    ("polcy: {keep_threshold: 80}", "'polcy' is not one of scoring, rewriter, policy, compute"),
    ("policy: [1, 2]", "'policy' must map its settings to values (got list [1, 2])"),
    # beside a run config's resources: or a resource's config:, a section was dropped without a word
    ("resources: {scoring: {config: {profile: offline}}}\npolicy: {keep_threshold: 150}",
     "'policy' beside resources: in the top level is not read (a run's ops, execution or loggers are not settings); "
     "move it under resources: or remove it"),
    ("resources: {}\nops: {pairs: {}}\nexecution: {}", "'ops', 'execution' beside resources:"),
    ("policy: {config: {keep_threshold: 80}, keep_threshold: 150}",
     "'keep_threshold' beside config: in 'policy' is not read (its settings go under config:)"),
])
def test_a_config_file_naming_a_resource_wrongly_says_which_and_how(tmp_path, text, message):
    config = tmp_path / "settings.yaml"
    config.write_text(text)
    with pytest.raises(BadInput, match=re.escape(message)):
        load_settings((), str(config))


@pytest.mark.parametrize("pair, message", [
    ("policy.keep_thresold=80", "keep_thresold"),        # a typo names the unknown setting
    ("policy.fallback=maybe", "keep_original"),           # a Literal lists its choices
    ("policy.keep_threshold=high", "keep_threshold"),     # a number that is not one
    ("policy.drift.max_kll=1", "max_kll"),                # a typo in a nested setting
    ("policy.keep_threshold=[80", "not YAML"),             # a value YAML cannot parse
    ("policy.keep_expression='clip_score >= 66", "not YAML"),
    ("compute.gpus_per_actor=1.5", "gpus_per_actor"),     # compute is settable, with its bounds
    ("compute.engine=spark", "spark"),                     # an unknown engine, before any run
    ("compute.actorz=2", "actorz"),
])
def test_invalid_setting_exits_2_before_any_run(tmp_path, pair, message):
    result = CliRunner().invoke(main, ["run", "--raw", str(RAW_SAMPLES), "--warehouse", str(tmp_path / "wh"),
                                       "--profile", "text", "--set", pair])
    assert result.exit_code == 2, result.output
    assert message in result.output and not (tmp_path / "wh").exists()


def test_the_config_choices_are_the_domain_choices():
    from typing import get_args

    from curation_pipeline.resources import MlmConfig, MlmMetric, ScoringResource
    from curation_pipeline.scoring.mlm.prompts import METRICS, PROMPT_SETS
    from curation_pipeline.scoring.profiles import PROFILES, ScoringProfile

    assert set(get_args(MlmMetric)) == set(METRICS)
    assert set(get_args(MlmConfig.model_fields["prompt_set"].annotation)) - {""} == set(PROMPT_SETS)
    assert get_args(ScoringResource.model_fields["profile"].annotation) == PROFILES
    profile = ScoringResource().as_profile()
    assert profile == ScoringProfile()


def test_given_flags_win_over_set_and_the_file_and_keep_its_other_settings(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("scoring: {profile: offline, clip: {model: from-file, prefix: false}}\n"
                      "rewriter: {kind: cleaner, batch_size: 4}\n")
    flags = {"scoring.profile": "text", "scoring.clip.model": "from-flag", "rewriter.kind": None}  # None: not given
    settings = load_settings(("scoring.profile=clip", "rewriter.kind=aitqe"), str(config), flags)
    assert settings["scoring"] == {"profile": "text", "clip": {"model": "from-flag", "prefix": False}}
    assert settings["rewriter"] == {"kind": "aitqe", "batch_size": 4}  # no flag: --set over the file


def _used(warehouse, shard="sample-000001") -> tuple[set[str], set[str]]:
    """The scorers and rewriters a run's stored tables name."""
    import json

    from curation_pipeline.storage.warehouse import Warehouse

    wh = Warehouse(str(warehouse))
    scorers = set(json.loads(wh.table_metadata("quality_scores", shard)["scorers"]))
    return scorers, set(wh.read_table("rewritten_captions", shard)["rewriter"])


def test_a_run_uses_the_flags_given_over_the_config_file_and_the_file_over_the_defaults(tmp_path, monkeypatch):
    """Scores stored under the profile asked for: a flag given wins over --config; without flags the
    file's settings hold; without either, the resources' defaults."""
    import shutil

    from curation_pipeline.cli import setting_default
    from curation_pipeline.resources import ScoringResource
    from curation_pipeline.rewriting.vlm import ChatGenerator
    from curation_pipeline_tests.rewriting.test_rewrite_end_to_end import finished
    from curation_pipeline_tests.tiny_models import make_tiny_llava

    # a tiny random VLM never ends its reply: each cut off, no candidate, and rewrites_complete fails the shard
    monkeypatch.setattr(ChatGenerator, "generate", finished(ChatGenerator.generate))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000001.tar", raw)
    vlm = make_tiny_llava(tmp_path / "vlm")
    config = tmp_path / "settings.yaml"
    # loose drift: a tiny random VLM's candidates are not what this test is about
    config.write_text(f"scoring: {{profile: text}}\nrewriter: {{kind: vlm, model: '{vlm}', max_new_tokens: 8}}\n"
                      "policy: {drift: {max_kl: 10, mean_ratio_min: 0, mean_ratio_max: 10, quantile_tolerance: 10}}\n")

    def run(name, *args):
        result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / name),
                                           "--no-report", *args])
        assert result.exit_code == 0, result.output
        return _used(tmp_path / name)

    def scorers(profile):
        return {s.name for s in ScoringResource(profile=profile).scorers()}

    defaults = (setting_default("scoring.profile"), setting_default("rewriter.kind"))
    assert scorers("text") != scorers("offline") and defaults != ("text", "vlm")  # each case tells its source
    assert run("file", "--config", str(config)) == (scorers("text"), {"vlm"})
    assert run("flags", "--config", str(config), "--profile", "offline",
               "--rewriter", "cleaner") == (scorers("offline"), {"cleaner"})
    assert run("defaults") == (scorers(defaults[0]), {defaults[1]})


def test_run_help_shows_the_resources_defaults():
    from curation_pipeline.resources import RewriterResource, ScoringResource

    result = CliRunner().invoke(main, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip().startswith("--")}
    assert f"[default: {ScoringResource().profile}]" in lines["--profile"]
    assert f"[default: {RewriterResource().kind}]" in lines["--rewriter"]
    assert "default" not in lines["--clip-model"]  # empty: no model


def test_compute_settings_reach_the_run_and_unset_keys_read_their_variables(monkeypatch):
    from curation_pipeline.resources import ComputeResource

    monkeypatch.setenv("CURATION_RAY_ACTORS", "3")
    settings = load_settings(("compute.gpus_per_actor=0.5",))
    compute = ComputeResource(**settings["compute"])
    assert (compute.gpus_per_actor, compute.actors, compute.engine) == (0.5, 3, "local")
