"""The code location's own settings (``CURATION_SETTINGS``, a YAML file as ``curate run --config`` reads): the UI's,
the schedules' and the sensors' runs use its profile, models, policy and compute, and the model assets' code versions
name them. Without it the location always scored with the offline profile and rewrote with the cleaner: a
deployment could run a model only from each launchpad run's config, and its schedule scored every new shard
without it. ``curate run`` starts from the same file, under its own --config, --set and flags."""

from __future__ import annotations

import dagster as dg
import pytest
from click.testing import CliRunner

from curation_pipeline.cli import load_settings, main
from curation_pipeline.definitions import build_definitions
from curation_pipeline.resources import SETTINGS_FILE_ENV, PolicyResource, ScoringResource
from curation_pipeline_tests.conftest import QUIET, RAW_SAMPLES

SHARD = "sample-000001"


@pytest.fixture()
def location(tmp_path, monkeypatch):
    path = tmp_path / "location.yaml"
    path.write_text("scoring: {profile: text}\npolicy: {keep_threshold: 75}\n")
    monkeypatch.setenv(SETTINGS_FILE_ENV, str(path))
    return path


def test_the_location_runs_with_its_settings_file(location, tmp_path):
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path / "wh"))
    assert defs.resources["scoring"].profile == "text" and defs.resources["policy"].keep_threshold == 75
    assert defs.resources["rewriter"].kind == "cleaner"  # what the file leaves out: the defaults
    expected = build_definitions(scoring=ScoringResource(profile="text"))
    graph, text = (d.get_repository_def().asset_graph for d in (defs, expected))
    key = dg.AssetKey("quality_scores")
    assert graph.get(key).code_version == text.get(key).code_version  # its scorers, not the offline profile's

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [SHARD])
    assert defs.resolve_job_def("curate_shards").execute_in_process(partition_key=SHARD, instance=instance,
                                                                    run_config=QUIET).success
    from curation_pipeline.storage.warehouse import Warehouse

    scores = Warehouse(str(tmp_path / "wh")).read_table("quality_scores", SHARD)
    assert "text_quality" in scores and "nsfw_prob" not in scores  # the text profile's columns only
    # explicit resources (curate run, tests) win over the file
    assert build_definitions(policy=PolicyResource(keep_threshold=90)).resources["policy"].keep_threshold == 90


@pytest.mark.parametrize("text,message", [
    ("scoring: {profile: fancy}\n", r"CURATION_SETTINGS=.*location\.yaml: invalid scoring setting"),
    ("scoring: {colour: red}\n", r"CURATION_SETTINGS=.*: unknown scoring setting colour; known: "),
    ("- a list\n", r"config file .*location\.yaml must map resources"),
    ("weights: {a: 1}\n", r"'weights' is not one of scoring, rewriter, policy, compute"),
    # what each run would refuse before its first step (curate run refuses it up front), told at load
    ("scoring: {profile: clip}\n", r"invalid scoring setting: scoring profile 'clip' needs scoring\.clip\.model"),
    ("rewriter: {kind: vlm}\n", r"invalid rewriter setting: rewriter 'vlm' needs rewriter\.model"),
    ("rewriter: {kind: vlm, model: m, vision_tower: /x}\n", r"invalid rewriter setting: rewriter\.vision_tower is set"),
    # a decision column the file's profile never writes: each scheduled shard was scored, then failed its checks
    ("scoring: {clip: {model: m}}\npolicy: {quality_column: clip_score, keep_threshold: 0.8, drop_threshold: 0.5}\n",
     r"invalid policy setting: policy\.quality_column: decision column 'clip_score' is not among the scores profile "
     r"'offline' writes \(CLIPScore writes it, in profile clip or full\)"),
    ("policy: {keep_expression: 'mlm_itm >= 60'}\n", r"invalid policy setting: policy\.keep_expression 'mlm_itm >= 60' "
     r"reads 'mlm_itm' \(MLM-Filter writes it, in profile mlm or full\)"),
])
def test_a_bad_settings_file_is_refused_naming_the_file_and_the_setting(location, text, message):
    location.write_text(text)
    with pytest.raises(ValueError, match=message):
        build_definitions()
    result = CliRunner().invoke(main, ["report", "--rebuild", "--warehouse", str(location.parent / "none")])
    assert result.exit_code == 2


def test_curate_run_starts_from_the_locations_file_under_its_own_settings(location, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("policy: {keep_threshold: 80}\n")
    path = str(location)
    assert load_settings((), None, {}, path)["scoring"] == {"profile": "text"}
    merged = load_settings(("policy.fallback=drop",), str(config), {"scoring.profile": "offline"}, path)
    assert merged["scoring"] == {"profile": "offline"}  # a flag over the location's file
    assert merged["policy"] == {"keep_threshold": 80, "fallback": "drop"}  # --config's key over the file's, --set


def test_curate_run_scores_with_the_locations_profile(location, tmp_path, monkeypatch):
    import shutil

    from curation_pipeline.storage.warehouse import Warehouse

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / f"{SHARD}.tar", raw)
    result = CliRunner().invoke(main, ["run", "--raw", str(raw), "--warehouse", str(tmp_path / "wh"), "--no-report"])
    assert result.exit_code == 0, result.output
    scores = Warehouse(str(tmp_path / "wh")).read_table("quality_scores", SHARD)
    assert "text_quality" in scores and "nsfw_prob" not in scores


def test_a_run_config_setting_some_keys_keeps_the_files_others(tmp_path, monkeypatch):
    """Dagster replaces a resource's whole config with a launchpad's: a run config setting ``scoring.batch_size``
    alone ran the offline profile and the default policy, not the file's. The file's values are the resources'
    defaults now, nested groups' keys too."""
    path = tmp_path / "location.yaml"
    path.write_text("scoring: {profile: text, batch_size: 4}\n"
                    "policy: {keep_threshold: 75, drift: {max_kl: 0.4, min_rows: 5}}\n")
    monkeypatch.setenv(SETTINGS_FILE_ENV, str(path))
    defs = build_definitions(raw_root=str(RAW_SAMPLES), warehouse_root=str(tmp_path / "wh"))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("shards", [SHARD])
    config = {**QUIET, "resources": {"scoring": {"config": {"batch_size": 8}},
                                     "policy": {"config": {"drift": {"min_rows": 3}}}}}
    assert defs.resolve_job_def("curate_shards").execute_in_process(partition_key=SHARD, instance=instance,
                                                                    run_config=config).success
    import json

    from curation_pipeline.assets.decisions import POLICY_CONFIG_KEY
    from curation_pipeline.storage.warehouse import Warehouse

    wh = Warehouse(str(tmp_path / "wh"))
    assert "nsfw_prob" not in wh.read_table("quality_scores", SHARD)  # still the text profile
    used = json.loads(wh.table_metadata("caption_decisions", SHARD)[POLICY_CONFIG_KEY])
    assert used["keep_threshold"] == 75 and used["drift"]["max_kl"] == 0.4 and used["drift"]["min_rows"] == 3
    [record] = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("quality_scores"), asset_partitions=[SHARD]), limit=1).records
    tags = record.asset_materialization.tags
    assert tags["dagster/code_version"] == defs.get_repository_def().asset_graph.get(
        dg.AssetKey("quality_scores")).code_version  # a faster setting is no other code


def test_the_locations_models_are_in_its_code_versions(tmp_path, monkeypatch):
    """The file's values are its resources' defaults (above), and a code version's digest names the settings that
    differ from the defaults: it named no model of the file, so another model left every shard fresh, and
    ``curate run`` (plain resources, the model named) and the location's schedule each re-made the other's shards."""
    from curation_pipeline.resources import ClipConfig, ComputeResource, RewriterResource, location_resources

    def versions(defs):
        graph = defs.get_repository_def().asset_graph
        return [graph.get(dg.AssetKey(k)).code_version for k in ("quality_scores", "rewritten_captions")]

    found = {}
    for clip, vlm in (("clip-a", "vlm-x"), ("clip-b", "vlm-y")):
        path = tmp_path / f"{clip}.yaml"
        path.write_text(f"scoring: {{profile: clip, clip: {{model: {clip}}}}}\nrewriter: {{kind: vlm, model: {vlm}}}\n")
        monkeypatch.setenv(SETTINGS_FILE_ENV, str(path))
        found[clip] = versions(build_definitions())
        monkeypatch.delenv(SETTINGS_FILE_ENV)
        plain = versions(build_definitions(scoring=ScoringResource(profile="clip", clip=ClipConfig(model=clip)),
                                           rewriter=RewriterResource(kind="vlm", model=vlm)))
        assert found[clip] == plain  # what curate run with the same settings records
    assert all(a != b for a, b in zip(found["clip-a"], found["clip-b"]))
    # a key the file sets counts as set, not as a default: dagster-ray's options are passed only where set
    path = tmp_path / "compute.yaml"
    path.write_text("compute: {engine: ray, data_execution_options: {verbose_progress: false}}\n")
    built = location_resources(str(path))["compute"]
    plain = ComputeResource(engine="ray", data_execution_options={"verbose_progress": False})
    assert dict(built._data_context()) == dict(plain._data_context()) == {"verbose_progress": False}


def test_a_launchpad_value_out_of_bounds_is_refused_for_a_key_the_file_sets(tmp_path):
    """The file's values became the fields' defaults, and those fields lost their bounds: a launchpad's
    ``warn_drop_share: 5`` or ``drift: {max_kl: -1}`` ran where the file set the key, and was refused elsewhere."""
    from pydantic import ValidationError

    from curation_pipeline.resources import location_resources

    path = tmp_path / "location.yaml"
    path.write_text("policy: {warn_drop_share: 0.8, drift: {max_kl: 0.3}}\nscoring: {mlm: {min_mass: 0.1}}\n")
    built = location_resources(str(path))
    policy, scoring = type(built["policy"]), type(built["scoring"])
    assert policy(warn_drop_share=0.7).warn_drop_share == 0.7 and policy().drift.max_kl == 0.3
    for launchpad in ({"warn_drop_share": 5}, {"drift": {"max_kl": -1}}):
        with pytest.raises(ValidationError, match="greater_than_equal|less_than_equal"):
            policy(**launchpad)
    with pytest.raises(ValidationError, match="less_than_equal"):
        scoring(mlm={"min_mass": 1.5})


def test_curate_runs_config_file_replaces_the_locations_keys_one_by_one(location, tmp_path):
    location.write_text("policy: {keep_threshold: 75, drift: {max_kl: 0.4, min_rows: 5}}\n")
    config = tmp_path / "run.yaml"
    config.write_text("policy: {drift: {min_rows: 3}}\n")
    merged = load_settings((), str(config), {}, str(location))
    assert merged["policy"] == {"keep_threshold": 75, "drift": {"max_kl": 0.4, "min_rows": 3}}


def test_the_readmes_settings_example_is_a_valid_location_file(tmp_path):
    from curation_pipeline.resources import location_resources
    from curation_pipeline_tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    example = readme[readme.index("# settings.yaml; then"):]
    path = tmp_path / "settings.yaml"
    path.write_text(example[:example.index("```")])
    built = location_resources(str(path))
    assert built["scoring"].profile == "full" and built["rewriter"].kind == "aitqe"
    assert built["policy"].decision_policy().quality_column == "mlm_itm"
