"""`curate run --set` and `--config` reach every resource setting, typed, with clear bad-input errors."""

import pytest
from click.testing import CliRunner

from curation_pipeline.cli import BadInput, load_settings, main
from curation_pipeline_tests.conftest import RAW_SAMPLES


def test_set_pairs_are_typed_yaml_and_win_over_the_file(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text("resources:\n  policy:\n    config:\n      keep_threshold: 70\n      fallback: drop\n"
                      "  scoring:\n    mlm_metrics: [itm]\n")
    settings = load_settings(("policy.keep_threshold=80", "policy.keep_fraction=null", "policy.rewrite=false"),
                             str(config))
    assert settings["policy"] == {"keep_threshold": 80, "fallback": "drop", "keep_fraction": None, "rewrite": False}
    assert settings["scoring"] == {"mlm_metrics": ["itm"]} and settings["rewriter"] == {}


@pytest.mark.parametrize("pair", ["keep_threshold=80", "nowhere.x=1", "policy.=1", "policy.keep_threshold"])
def test_malformed_set_is_bad_input(pair):
    with pytest.raises(BadInput, match="RESOURCE.KEY=VALUE"):
        load_settings((pair,))


@pytest.mark.parametrize("pair, message", [
    ("policy.keep_thresold=80", "keep_thresold"),        # a typo names the unknown setting
    ("policy.fallback=maybe", "keep_original"),           # a Literal lists its choices
    ("policy.keep_threshold=high", "keep_threshold"),     # a number that is not one
])
def test_invalid_setting_exits_2_before_any_run(tmp_path, pair, message):
    result = CliRunner().invoke(main, ["run", "--raw", str(RAW_SAMPLES), "--warehouse", str(tmp_path / "wh"),
                                       "--profile", "text", "--set", pair])
    assert result.exit_code == 2, result.output
    assert message in result.output and not (tmp_path / "wh").exists()
