"""The CLI finds the raw folder and warehouse where the Dagster definitions do (flag, else CURATION_RAW /
CURATION_WAREHOUSE, else the default), and its UI hint opens the UI on the run's own home and folders."""

import shlex
import shutil
import sys
from pathlib import Path

from click.testing import CliRunner

from curation_pipeline.cli import EXIT_BAD_INPUT, main
from curation_pipeline_tests.conftest import RAW_SAMPLES

REPO = Path(__file__).resolve().parents[1]


def _ui_env(output: str) -> tuple[dict[str, str], list[str]]:
    """The variables and the command of the `web UI:` line `curate run` printed."""
    line = next(line for line in output.splitlines() if line.startswith("web UI:"))
    words = shlex.split(line.removeprefix("web UI:").split(", then open")[0])
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    return env, [w for w in words if "=" not in w]


def test_run_report_and_lineage_read_the_folders_from_the_environment(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    (cwd / "data" / "raw").mkdir(parents=True)  # an empty default raw folder: the troubleshooting case
    monkeypatch.chdir(cwd)
    raw = tmp_path / "my raw"  # a space: the printed command quotes it
    raw.mkdir()
    shutil.copy(RAW_SAMPLES / "sample-000001.tar", raw)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CURATION_RAW", str(raw))
    monkeypatch.setenv("CURATION_WAREHOUSE", "out/wh")  # relative: against the working folder
    runner = CliRunner()

    result = runner.invoke(main, ["run", "--profile", "offline"])
    assert result.exit_code == 0, result.output
    warehouse = cwd / "out" / "wh"
    assert (warehouse / "curated" / "sample-000001.tar").is_file() and "done: 1 shard curated" in result.output
    # the UI hint: this run's home, raw folder and warehouse, absolute; not `make ui` (its own home)
    env, command = _ui_env(result.output)
    assert env == {"DAGSTER_HOME": str(tmp_path / "home"), "CURATION_RAW": str(raw),
                   "CURATION_WAREHOUSE": str(warehouse)}, result.output
    assert "make" not in command and command[command.index("dev") - 1] == ".venv/bin/dagster", result.output

    report = runner.invoke(main, ["report"])
    assert report.exit_code == 0 and "sample-000001" in report.output, report.output
    lineage = runner.invoke(main, ["lineage", "--shard", "sample-000001"])
    assert lineage.exit_code == 0 and "sample-000001/" in lineage.output, lineage.output
    # a flag wins over the variable; an empty variable (an unset shell variable) means the default
    empty = tmp_path / "empty"
    empty.mkdir()
    flagged = runner.invoke(main, ["report", "--warehouse", str(empty)])
    assert flagged.exit_code == EXIT_BAD_INPUT and str(empty) in flagged.output
    monkeypatch.setenv("CURATION_RAW", "")
    default = runner.invoke(main, ["run", "--profile", "offline"])
    assert default.exit_code == EXIT_BAD_INPUT and "no .tar shards found in data/raw" in default.output


def test_help_names_the_variables():
    for command, names in (("run", ("CURATION_RAW", "CURATION_WAREHOUSE")), ("report", ("CURATION_WAREHOUSE",)),
                           ("lineage", ("CURATION_WAREHOUSE",)), ("export-uids", ("CURATION_WAREHOUSE",))):
        result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0 and all(f"env var: {n}" in result.output for n in names), result.output


def test_make_ui_is_offered_only_where_it_opens_the_runs_home_and_folders(monkeypatch):
    """`make ui` sets DAGSTER_HOME to the repository's data/dagster_home itself and leaves the folders to the
    environment, else their defaults under the repository."""
    from curation_pipeline.cli import ui_command

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("DAGSTER_HOME", str(REPO / "data" / "dagster_home"))
    monkeypatch.delenv("CURATION_RAW", raising=False)
    monkeypatch.delenv("CURATION_WAREHOUSE", raising=False)
    assert ui_command("data/raw", "data/warehouse").startswith("make ui   (= DAGSTER_HOME=")
    monkeypatch.setenv("CURATION_WAREHOUSE", "/elsewhere")  # what `make ui` from this shell would open
    hint = ui_command("data/raw", "data/warehouse")
    assert "make ui" not in hint and f"CURATION_WAREHOUSE={REPO / 'data' / 'warehouse'} " in hint
    assert ui_command("data/raw", "/elsewhere").startswith("make ui")
    monkeypatch.setenv("DAGSTER_HOME", "/tmp/another home")
    assert ui_command("data/raw", "/elsewhere") == (
        "DAGSTER_HOME='/tmp/another home' CURATION_RAW=" f"{REPO / 'data' / 'raw'} CURATION_WAREHOUSE=/elsewhere "
        ".venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000")
    # installed into another environment (pip install -e . in one's own): its dagster, and no `make ui` (the .venv's)
    monkeypatch.setattr(sys, "executable", "/opt/env/bin/python")
    monkeypatch.setenv("DAGSTER_HOME", str(REPO / "data" / "dagster_home"))
    assert ui_command("data/raw", "/elsewhere").endswith(
        "CURATION_WAREHOUSE=/elsewhere /opt/env/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000")


def test_the_ui_hint_carries_the_settings_file_absolute(monkeypatch, tmp_path):
    """A run started from CURATION_SETTINGS: the UI it points at must load the same settings (else its location
    scores with the offline profile and reads the run's shards stale), from any folder."""
    from curation_pipeline.cli import ui_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(REPO / "data" / "dagster_home"))
    monkeypatch.delenv("CURATION_RAW", raising=False)
    monkeypatch.delenv("CURATION_WAREHOUSE", raising=False)
    monkeypatch.setenv("CURATION_SETTINGS", "location.yaml")
    hint = ui_command(str(REPO / "data" / "raw"), str(REPO / "data" / "warehouse"))
    assert f"CURATION_SETTINGS={tmp_path / 'location.yaml'} " in hint and "make ui" not in hint
    assert hint.startswith(f"cd {REPO} && ")


def test_sample_data_refuses_a_url_and_the_empty_raw_hint_offers_it_only_for_a_folder(tmp_path, monkeypatch):
    """sample-data writes a local folder: given s3://..., it made ./s3:/... on local disk."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    refused = runner.invoke(main, ["sample-data", "--out", "s3://bucket/raw"])
    assert refused.exit_code == EXIT_BAD_INPUT and "is a URL" in refused.output, refused.output
    assert not (tmp_path / "s3:").exists()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    import fsspec

    fsspec.filesystem("memory").pipe("/curate-test-empty/raw/README.md", b"not a shard")  # an existing, shardless URL
    empty = runner.invoke(main, ["run", "--raw", "memory://curate-test-empty/raw", "--warehouse", str(tmp_path / "wh")])
    assert empty.exit_code == EXIT_BAD_INPUT and "no .tar shards found" in empty.output, empty.output
    assert "sample-data" not in empty.output
    (tmp_path / "raw").mkdir()
    local = runner.invoke(main, ["run", "--raw", str(tmp_path / "raw"), "--warehouse", str(tmp_path / "wh")])
    assert local.exit_code == EXIT_BAD_INPUT and f"curate sample-data --out {tmp_path / 'raw'}" in local.output


def test_the_ui_hint_of_an_installed_package_needs_no_checkout(monkeypatch, tmp_path):
    """Installed with pip (an image), the package has no workspace.yaml or .venv beside it."""
    import sys

    from curation_pipeline import cli

    monkeypatch.setattr(cli, "REPO", tmp_path / "site-packages")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    hint = cli.ui_command("/data/shards", "/data/curated")
    dagster = str(Path(sys.executable).with_name("dagster"))
    assert hint == (f"DAGSTER_HOME={tmp_path / 'home'} CURATION_RAW=/data/shards CURATION_WAREHOUSE=/data/curated "
                    f"{dagster} dev -m curation_pipeline.definitions -h 127.0.0.1 -p 3000")


def test_sample_data_writes_where_run_reads(tmp_path, monkeypatch):
    """`curate sample-data` then `curate run` with CURATION_RAW set: the shards land where run looks."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CURATION_RAW", str(tmp_path / "myraw"))
    result = CliRunner().invoke(main, ["sample-data", "--shards", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "myraw" / "sample-000000.tar").is_file() and not (tmp_path / "data").exists()


def test_a_bad_environment_setting_that_set_overrides_fails_nothing_at_import():
    """``--set compute.engine=local`` wins over ``CURATION_COMPUTE`` (README: a key left unset reads its variable),
    but importing the definitions built the code location's own from the variable first, and failed the command.
    The code location's ``defs`` is built on first use; it still refuses the bad variable, clearly."""
    import os
    import subprocess
    import sys

    code = ("import curation_pipeline.definitions as d\n"
            "try:\n    d.defs\nexcept Exception as exc:\n    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CURATION_COMPUTE": "bogus", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: " in done.stdout and "CURATION_COMPUTE='bogus' is not a valid compute engine" in done.stdout
