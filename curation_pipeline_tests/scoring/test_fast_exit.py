"""``curate`` ends its process at once after a command (``FastExitGroup``): output and exit codes
must be exactly what a normal exit gives. A real process, since in-process calls exit normally."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from curation_pipeline.cli import EXIT_BAD_INPUT

CURATE = Path(sys.executable).with_name("curate")


def _curate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(CURATE)] if CURATE.is_file() else [sys.executable, "-m", "curation_pipeline.cli"]
    env = {**os.environ, "DAGSTER_HOME": str(cwd / "home"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_output_is_flushed_and_exit_codes_kept(tmp_path):
    made = _curate("sample-data", "--out", str(tmp_path / "raw"), "--shards", "1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().endswith("sample-000000.tar") and (tmp_path / "raw" / "sample-000000.tar").is_file()
    bad = _curate("lineage", "--warehouse", str(tmp_path / "wh"), cwd=tmp_path)
    assert bad.returncode == EXIT_BAD_INPUT and "give --key and/or --shard" in bad.stderr
    helped = _curate("--help", cwd=tmp_path)
    assert helped.returncode == 0 and "Usage: curate" in helped.stdout
