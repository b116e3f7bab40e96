"""`curate run` refuses settings the run would ignore or could not decide by, before any run (exit 2);
says so when raw files were passed over; and points at curated shards only when some were curated."""

import shutil

import dagster as dg
import pytest
from click.testing import CliRunner

from curation_pipeline.cli import EXIT_BAD_INPUT, EXIT_FAILED, main
from curation_pipeline_tests.conftest import RAW_SAMPLES

SHARD = "sample-000001"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / f"{SHARD}.tar", raw)
    return {"raw": raw, "wh": tmp_path / "wh", "home": tmp_path / "home"}


def curate(env, *args):
    return CliRunner().invoke(main, ["run", "--raw", str(env["raw"]), "--warehouse", str(env["wh"]), *args])


def assert_refused_before_any_run(env, result, *messages):
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    for message in messages:
        assert message in result.output, result.output
    assert "FAILED" not in result.output and "Traceback" not in result.output
    assert not env["wh"].exists()
    with dg.DagsterInstance.get() as instance:  # the CLI's home: no run was started in it
        assert instance.get_runs() == []


@pytest.mark.parametrize("args, messages", [
    (["--set", "policy.quality_column=clip_score", "--set", "policy.keep_threshold=2",
      "--set", "policy.drop_threshold=1"],
     ["policy.quality_column: decision column 'clip_score' is not among the scores profile 'offline' writes",
      "CLIPScore writes it, in profile clip or full", "text_quality"]),
    # before its thresholds are checked against the column's range: the column is the mistake to name
    (["--set", "policy.quality_column=clip_score"],
     ["policy.quality_column: decision column 'clip_score' is not among the scores profile 'offline' writes"]),
    (["--set", "policy.keep_expression=aitqe_overall >= 70"],
     ["policy.keep_expression 'aitqe_overall >= 70' reads 'aitqe_overall' (AITQE scorer writes it"]),
    (["--set", "policy.quality_column=nonexistent"],
     ["policy.quality_column: decision column 'nonexistent'", "profile 'offline'", "no registered scorer writes it"]),
    (["--set", "policy.keep_expression=foo >= 3"],
     ["policy.keep_expression 'foo >= 3' reads 'foo'", "profile 'offline'"]),
    (["--profile", "text", "--set", "policy.keep_expression=text_quality >= 50 and nsfw_prob < 0.5"],
     ["policy.keep_expression", "'nsfw_prob' (NsfwScorer writes it, in profile offline, clip, mlm or full)",
      "profile 'text'"]),
    (["--profile", "text", "--set", "policy.keep_expression=dup_keep >= 1"],
     ["'dup_keep' (DuplicateSignals sets it on the scores, in profile offline, clip, mlm or full)"]),
])
def test_a_decision_column_the_profile_does_not_score_is_bad_input_before_any_run(env, args, messages):
    """It used to score every shard, then fail each one's scores_in_range check (missing columns), exit 1."""
    assert_refused_before_any_run(env, curate(env, *args), *messages)


def test_decision_columns_are_checked_without_loading_a_model(env, monkeypatch):
    from curation_pipeline.resources import ScoringResource

    def load(self):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(ScoringResource, "scorers", load)
    result = curate(env, "--profile", "clip", "--clip-model", "/nonexistent/clip",
                    "--set", "policy.quality_column=mlm_itm")
    assert_refused_before_any_run(env, result, "decision column 'mlm_itm' is not among the scores profile 'clip'",
                                  "MLM-Filter writes it, in profile mlm or full")


def test_a_column_only_some_models_write_is_checked_against_the_model_given(env, tmp_path):
    """clip_sigmoid is declared by the CLIP scorer but written by a SigLIP model alone: with a CLIP model the
    run scored every shard, then failed each one's scores_in_range check (missing columns)."""
    from curation_pipeline_tests.tiny_models import make_tiny_clip

    model = make_tiny_clip(tmp_path / "clip")
    result = curate(env, "--profile", "clip", "--clip-model", model, "--set", "policy.quality_column=clip_sigmoid",
                    "--set", "policy.keep_threshold=0.5", "--set", "policy.drop_threshold=0.1")
    assert_refused_before_any_run(
        env, result, "decision column 'clip_sigmoid' is not among the scores profile 'clip' with the models given",
        "not by the model given: SigLIP's match probability (sigmoid models only)", "clip_score")


def test_the_columns_a_decision_may_read_are_the_profiles_and_the_tables_it_is_given():
    """Declared outputs of the scorers the profile runs (AITQE's only with its model, MLM-Filter's for the
    metrics asked), plus the inventory columns and, with duplicate signals, the duplicate groups."""
    from curation_pipeline.cli import BadInput, _check_decision_columns
    from curation_pipeline.decisions.policy import DecisionPolicy
    from curation_pipeline.resources import ScoringResource

    def check(policy: dict, **scoring):
        rules = DecisionPolicy(**policy)
        _check_decision_columns(ScoringResource(**scoring), rules.quality_column, rules.keep_expression)

    check({"keep_expression": "width >= 200 and height >= 200 and dup_keep >= 1"})  # offline: inventory, groups
    check({"quality_column": "iq_sharpness", "keep_threshold": 1, "drop_threshold": 0})
    check({"quality_column": "aitqe_overall", "keep_threshold": 8, "drop_threshold": 4}, aitqe_model="/m")
    check({"keep_expression": "mlm_itm >= 60"}, profile="mlm", mlm={"model": "/m", "metrics": ["itm"]})
    with pytest.raises(BadInput, match="'aitqe_overall'.*with scoring.aitqe_model set"):
        check({"quality_column": "aitqe_overall", "keep_threshold": 8, "drop_threshold": 4})
    with pytest.raises(BadInput, match="'mlm_su' .*when scoring.mlm.metrics asks for its metric"):
        check({"keep_expression": "mlm_su >= 60"}, profile="mlm", mlm={"model": "/m", "metrics": ["itm"]})


@pytest.mark.parametrize("args, message", [
    (["--clip-model", "/nonexistent"],
     "scoring.clip.model (--clip-model) is set but profile 'offline' runs no CLIPScore: add --profile clip or full"),
    (["--profile", "clip", "--clip-model", "/nonexistent", "--mlm-model", "/nonexistent"],
     "scoring.mlm.model (--mlm-model) is set but profile 'clip' runs no MLM-Filter: add --profile mlm or full"),
    (["--profile", "text", "--set", "scoring.aitqe_model=/nonexistent"],
     "scoring.aitqe_model is set but profile 'text' runs no AITQE scorer: add --profile offline, clip, mlm or full"),
    (["--rewriter-model", "/nonexistent"],
     "rewriter.model (--rewriter-model) is set but rewriter 'cleaner' uses no model: add --rewriter vlm or aitqe"),
    (["--set", "rewriter.model=/nonexistent"], "rewriter.model (--rewriter-model) is set but rewriter 'cleaner'"),
    (["--set", "scoring.clip.prefix=false"],
     "scoring.clip.prefix is set but profile 'offline' runs no CLIPScore: add --profile clip or full"),
    (["--profile", "clip", "--clip-model", "/nonexistent", "--set", "scoring.mlm.pad_to_square=false"],
     "scoring.mlm.pad_to_square is set but profile 'clip' runs no MLM-Filter: add --profile mlm or full"),
])
def test_a_model_the_run_would_not_load_is_bad_input_before_any_run(env, args, message):
    """`--clip-model` on the offline profile used to exit 0, with no clip_score."""
    assert_refused_before_any_run(env, curate(env, *args), message)


@pytest.mark.parametrize("config, args, message", [
    # --config alone: its settings are the run's, checked as the command line's (they ran with exit 0, unread)
    ("scoring: {clip: {model: /nonexistent, prefix: false}}\n", [],
     "scoring.clip.model (--clip-model) is set but profile 'offline' runs no CLIPScore"),
    ("rewriter: {prompt: 'Rewrite {caption}'}\n", [], "rewriter.prompt is set but rewriter 'cleaner' never reads it"),
    (None, ["--set", "rewriter.num_beams=4"], "rewriter.num_beams is set but rewriter 'cleaner' never reads it"),
    (None, ["--set", "rewriter.max_new_tokens=10"], "rewriter.max_new_tokens is set but rewriter 'cleaner'"),
    (None, ["--rewriter", "aitqe", "--rewriter-model", "/nonexistent", "--set", "rewriter.num_beams=3"],
     "rewriter.num_beams is set but rewriter 'aitqe' never reads it: leave it out, or add --rewriter vlm"),
])
def test_a_setting_the_run_would_not_read_is_bad_input_wherever_it_was_given(env, tmp_path, config, args, message):
    if config:
        (tmp_path / "run.yaml").write_text(config)
        args = ["--config", str(tmp_path / "run.yaml"), *args]
    assert_refused_before_any_run(env, curate(env, *args), message)


def test_a_flag_that_chooses_again_overrides_the_config_files_settings_of_its_choice(env, tmp_path):
    """The file's profile and its model are replaced by the flag's choice: not the run's settings, not checked."""
    from curation_pipeline.cli import _check_models_used
    from curation_pipeline.resources import RewriterResource, ScoringResource

    merged = {"scoring": {"profile": "offline", "clip": {"model": "/m"}}, "rewriter": {"prompt": "p {caption}"}}
    _check_models_used(merged, {"scoring": {"profile": "offline"}, "rewriter": {"kind": "cleaner"}},
                       ScoringResource(), RewriterResource())
    from curation_pipeline.cli import BadInput

    with pytest.raises(BadInput, match="rewriter.prompt is set but rewriter 'cleaner' never reads it"):
        _check_models_used(merged, {"scoring": {"profile": "offline"}}, ScoringResource(), RewriterResource())


@pytest.mark.parametrize("pair, message", [
    ("policy.drift.max_kl=abc", "policy.drift.max_kl: Input should be a valid number, unable to parse string as a "
                                "number (got 'abc')"),
    ("scoring.clip.dtype=fp8", "scoring.clip.dtype: Input should be 'auto', 'float32', 'float16' or 'bfloat16' "
                               "(got 'fp8')"),
    ("scoring.mlm.metrics=[zz]", "scoring.mlm.metrics: metrics must be a non-empty subset of itm, odf, ctq, su, "
                                 "not zz (got ['zz'])"),
])
def test_a_setting_pydantic_refuses_is_named_by_its_dotted_name(env, pair, message):
    result = curate(env, "--set", pair)
    assert_refused_before_any_run(env, result, message)
    assert "validation error for" not in result.output


def test_run_help_names_every_resource_set_takes():
    result = CliRunner().invoke(main, ["run", "--help"])
    assert "Any setting of the scoring, rewriter, policy or compute resource" in " ".join(result.output.split())


def test_raw_files_passed_over_give_bad_input_after_the_valid_shards_are_curated(env):
    """A whole folder asked for: its valid shards are curated, then exit 2 naming what was skipped; a run of
    named shards (--shard) is not about the rest of the folder. A keep_expression may read inventory columns."""
    from curation_pipeline.storage.warehouse import Warehouse

    shutil.copy(RAW_SAMPLES / f"{SHARD}.tar", env["raw"] / "x y.tar")
    (env["raw"] / "old.tar.gz").write_bytes(b"")
    result = curate(env, "--profile", "text", "--no-report", "--set", "policy.keep_expression=width >= 1")
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "skipped: shard file name 'x y.tar'" in result.output and "done: 1 shard curated" in result.output
    assert result.output.rstrip().splitlines()[-1] == (
        f"skipped 2 files of {env['raw']}, not curated (named under 'skipped:' above, the first 20)")
    assert Warehouse(str(env["wh"])).curated_shards() == {SHARD}
    named = curate(env, "--profile", "text", "--no-report", "--shard", SHARD)
    assert named.exit_code == 0 and "skipped: shard file name 'x y.tar'" in named.output, named.output
    assert "not curated" not in named.output
    # a setting of its own: the web UI's runs would not have it, and the run says so beside the UI's command
    assert ("(its runs use the code location's settings: the defaults, not this run's --config / --set / flags: "
            "put those in the file CURATION_SETTINGS names)") in named.output


def test_a_run_whose_every_shard_failed_points_at_no_curated_shard(env):
    """A warehouse write error (its curated folder is a file): no "curated shards:" folder or lineage hint
    as if something had been published."""
    env["wh"].mkdir()
    (env["wh"] / "curated").write_text("not a folder")
    result = curate(env, "--profile", "text", "--no-report")
    assert result.exit_code == EXIT_FAILED, result.output
    assert f"FAILED: {SHARD}" in result.output
    assert "curated shards:" not in result.output and "curate lineage" not in result.output
    assert "web UI:" in result.output


def test_a_warehouse_that_is_a_file_is_bad_input_before_any_run(env):
    """It used to start the run, print the steps' tracebacks, then say ``Not a directory: .../pairs``."""
    env["wh"].write_text("not a folder")
    for warehouse in (env["wh"], env["wh"] / "sub" / "wh", f"file://{env['wh']}/wh"):  # the path it writes to
        result = CliRunner().invoke(main, ["run", "--raw", str(env["raw"]), "--warehouse", str(warehouse)])
        assert result.exit_code == EXIT_BAD_INPUT, result.output
        assert f"{env['wh']} is a file; point --warehouse" in result.output and "Traceback" not in result.output
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == []


def test_a_malformed_compute_variable_is_one_line_naming_it(env, monkeypatch):
    """The definitions' module reads the same variables when imported: it was imported first, and its
    pydantic error came out whole ("1 validation error for ComputeResource ... input_value=None")."""
    monkeypatch.setenv("CURATION_RAY_ACTORS", "four")
    result = curate(env)
    assert_refused_before_any_run(env, result, "compute.actors: environment variable CURATION_RAY_ACTORS='four' is "
                                               "not a valid compute actors")
    assert "validation error" not in result.output and "input_value" not in result.output
