"""SIGKILL in the middle of a write leaves the previous output or none, never a partial file;
re-running gives the same Parquet rows and the same curated tar, byte for byte.

Real subprocesses (``curate run``) are killed while the warehouse holds a ``.tmp-*`` file,
which exists only between a writer opening its temporary file and renaming it into place.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from curation_pipeline.shards.fingerprint import OBSERVED
from curation_pipeline.storage.warehouse import TABLES, TEMP_DIR
from curation_pipeline_tests.faults import builders, flickr

pytestmark = pytest.mark.faults

SHARD = "sample-000000"
N_PAIRS = 300  # the curated tar write takes ~0.1 s: a wide window for a 2 ms poll
PER_RUN = {"rewritten_captions": ["run_id", "created_at"]}  # per-run by design, see docs/faults.md
CURATE = str(Path(sys.executable).with_name("curate"))


def curate(raw: Path, warehouse: Path, home: Path) -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DAGSTER_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.Popen(
        [CURATE, "run", "--raw", str(raw), "--warehouse", str(warehouse), "--shard", SHARD, "--profile", "text",
         "--no-report"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def run_to_completion(raw: Path, warehouse: Path, home: Path) -> None:
    proc = curate(raw, warehouse, home)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]


def temp_files(warehouse: Path) -> list[Path]:
    return sorted(p for p in warehouse.rglob(".tmp-*"))


def kill_while_writing(raw: Path, warehouse: Path, home: Path, folder: str, timeout: float = 300) -> Path:
    """Start a run and SIGKILL its process group the moment ``folder`` holds a temporary file."""
    proc = curate(raw, warehouse, home)
    target = warehouse / folder / TEMP_DIR  # where the folder's writers put their temp files
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                hits = [e.path for e in os.scandir(target) if e.name.startswith(".tmp-")]
            except FileNotFoundError:
                hits = []
            if hits:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return Path(hits[0])
            if proc.poll() is not None:
                pytest.fail(f"run ended (rc {proc.returncode}) before a temporary file appeared in {folder}/")
            time.sleep(0.002)
        pytest.fail(f"no temporary file in {folder}/ within {timeout} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def rows(path: Path, table: str) -> pd.DataFrame:
    df = pq.read_table(path).to_pandas()
    return df.drop(columns=PER_RUN.get(table, []))


def tar_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def assert_complete_or_absent(warehouse: Path, baseline: Path) -> None:
    """Every non-temporary file is whole and equal to the baseline's; temp files are the only debris."""
    for path in warehouse.rglob("*"):
        if path.is_dir() or path.name.startswith(".tmp-"):
            continue
        relative = path.relative_to(warehouse)
        expected = baseline / relative
        assert expected.exists(), f"unexpected file {relative}"
        if path.suffix == ".parquet":
            pd.testing.assert_frame_equal(rows(path, relative.parts[0]), rows(expected, relative.parts[0]))
        elif path.suffix == ".tar":
            assert path.read_bytes() == expected.read_bytes(), relative
        elif relative.parts[0] == OBSERVED:  # an observation's stat -> hash record: whole, the same hash
            assert json.loads(path.read_text())["sha256"] == json.loads(expected.read_text())["sha256"], relative
        else:
            pytest.fail(f"unexpected file {relative}")


def assert_same_outputs(warehouse: Path, baseline: Path) -> None:
    assert temp_files(warehouse) == []  # orphans of a killed writer are gone
    for table in TABLES:
        pd.testing.assert_frame_equal(rows(warehouse / table / f"{SHARD}.parquet", table),
                                      rows(baseline / table / f"{SHARD}.parquet", table), obj=table)
    curated = f"curated/{SHARD}.tar"
    assert tar_members(warehouse / curated) == tar_members(baseline / curated)
    assert (warehouse / curated).read_bytes() == (baseline / curated).read_bytes()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, flickr_dir):
    root = tmp_path_factory.mktemp("crash")
    raw = root / "raw"
    raw.mkdir()
    builders.write_members(raw / f"{SHARD}.tar", flickr.flickr_members(N_PAIRS), tarfile.USTAR_FORMAT)
    run_to_completion(raw, root / "baseline", root / "home")
    return root, raw, root / "baseline"


def test_sigkill_mid_write_leaves_previous_or_nothing_and_rerun_is_identical(baseline):
    root, raw, base = baseline
    wh, home = root / "killed", root / "home"
    # 1. no previous output: killed while quality_scores is being written
    tmp = kill_while_writing(raw, wh, home, "quality_scores")
    assert f"-{SHARD}.parquet" in tmp.name
    assert not (wh / "quality_scores" / f"{SHARD}.parquet").exists()
    assert not (wh / "curated").exists()
    assert_complete_or_absent(wh, base)
    # 2. re-run to completion: the orphan is removed, everything equals the baseline
    run_to_completion(raw, wh, home)
    assert_same_outputs(wh, base)
    previous_tar = (wh / "curated" / f"{SHARD}.tar").read_bytes()
    # 3. a previous output exists: killed while the curated tar is being written over it
    tmp = kill_while_writing(raw, wh, home, "curated")
    assert tmp.name.startswith(".tmp-") and f"-{SHARD}.tar" in tmp.name
    assert (wh / "curated" / f"{SHARD}.tar").read_bytes() == previous_tar
    assert_complete_or_absent(wh, base)
    # 4. and once more to completion
    run_to_completion(raw, wh, home)
    assert_same_outputs(wh, base)


def test_two_full_runs_give_byte_identical_curated_tars(baseline):
    root, raw, base = baseline
    again = root / "again"
    shutil.rmtree(again, ignore_errors=True)
    run_to_completion(raw, again, root / "home")
    assert (again / "curated" / f"{SHARD}.tar").read_bytes() == (base / "curated" / f"{SHARD}.tar").read_bytes()
    for table in TABLES:
        pd.testing.assert_frame_equal(rows(again / table / f"{SHARD}.parquet", table),
                                      rows(base / table / f"{SHARD}.parquet", table), obj=table)


def test_an_orphan_temp_file_does_not_break_other_readers(tmp_path):
    from curation_pipeline.reporting.lineage import caption_history
    from curation_pipeline.reporting.report import build_report
    from curation_pipeline.resources import ScoringResource
    from curation_pipeline.storage.warehouse import Warehouse
    from curation_pipeline_tests.conftest import RAW_SAMPLES, run_pipeline

    wh_root = tmp_path / "wh"
    _, results = run_pipeline(RAW_SAMPLES, wh_root, ["sample-000001"], report=False,
                              scoring=ScoringResource(profile="text"))
    assert results["sample-000001"].success
    for table in TABLES:  # what a writer killed mid-write leaves behind
        good = (wh_root / table / "sample-000001.parquet").read_bytes()
        for where in (wh_root / table, wh_root / table / TEMP_DIR):  # in the folder, as before .tmp folders, and in it
            where.mkdir(exist_ok=True)
            (where / ".tmp-0123456789abcdef-sample-000000.parquet.partial").write_bytes(good[: len(good) // 2])
    wh = Warehouse(str(wh_root))
    assert wh.shards("final_captions") == ["sample-000001"]
    assert build_report(wh).overall["pairs_read"] == 40
    assert len(caption_history(wh, shard="sample-000001").final) == 40
