"""Concurrency and publishing: N `curate run` at once on a fresh DAGSTER_HOME, two writers of one
file, a curated tar that fails its verification, and temp files after a failure (a full disk,
a kill): removed at once, and again by the next run."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from curation_pipeline.resources import ScoringResource
from curation_pipeline.shards.writer import CuratedShardInvalid, verify_curated, write_curated
from curation_pipeline.storage.warehouse import HOST, TEMP_DIR, Warehouse, temp_name
from curation_pipeline_tests.conftest import REPO_ROOT, require, run_pipeline
from curation_pipeline_tests.faults import builders
from curation_pipeline_tests.photos import members as photo_members

pytestmark = pytest.mark.faults

CURATE = str(Path(sys.executable).with_name("curate"))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".tmp-*"))


@pytest.fixture(scope="module")
def small_raw(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("small-raw")
    for shard in ("s1", "s2", "s3", "s4"):
        builders.write_members(raw / f"{shard}.tar", photo_members(3, prefix=shard))
    return raw


def test_concurrent_curate_runs_never_break_a_fresh_dagster_home(small_raw, tmp_path):
    """Before: 3 `curate run` at once on a fresh home failed in 3 of 5 trials ("more than one head":
    two processes stamped the run storage's schema), and every later run exited 1. Now the home is set
    up and partitions are registered under a lock: 3 runs at once all exit 0, and the instance opens. Each into
    its own warehouse: runs into one wait for each other (``warehouse_lock``), so the home would not be raced."""
    home = tmp_path / "home"
    env = dict(os.environ, DAGSTER_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    procs = [subprocess.Popen([CURATE, "run", "--raw", str(small_raw), "--warehouse", str(tmp_path / f"wh-{shard}"),
                               "--shard", shard, "--profile", "text", "--no-report"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for shard in ("s1", "s2", "s3")]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0 and "more than one head" not in out, out[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:  # what every later run does first
        assert sorted(instance.get_dynamic_partitions("shards")) == ["s1", "s2", "s3"]
        assert len(instance.get_runs()) == 3
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in instance.get_runs())


WRITER = textwrap.dedent("""
    import sys
    from curation_pipeline.storage.warehouse import Warehouse
    wh = Warehouse(sys.argv[1])
    with wh.atomic_open(wh.table_path("pairs", "s")) as handle:
        handle.write(b"second writer")
""")


def test_two_writers_of_one_file_never_delete_each_others_temp_file(tmp_path):
    wh = Warehouse(str(tmp_path))
    path = wh.table_path("pairs", "s")
    orphan = tmp_path / "pairs" / TEMP_DIR / temp_name("s.parquet", pid=dead_pid())
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left by a writer that was killed")
    with wh.atomic_open(path) as handle:
        handle.write(b"first writer")
        mine = temp_files(tmp_path)
        assert len(mine) == 1 and not orphan.exists()  # the dead writer's orphan is gone, mine is there
        # a second writer of the same file, in another process, runs start to finish meanwhile
        out = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], capture_output=True, text=True,
                             cwd=REPO_ROOT)
        assert out.returncode == 0, out.stderr
        assert Path(path).read_bytes() == b"second writer"
        assert temp_files(tmp_path) == mine  # it did not delete my temp file
    assert Path(path).read_bytes() == b"first writer"  # the last rename wins, whole
    assert temp_files(tmp_path) == []


def test_a_writer_in_another_pid_namespace_keeps_its_temp_file(tmp_path):
    """Two containers with the host's name (host networking) sharing the warehouse: a pid of one means
    nothing in the other, so the cleaner there must not take the writer here for dead."""
    require(os.geteuid() == 0 and bool(shutil.which("unshare")), "a PID namespace needs root and unshare",
            "CI runs as root; .ci/run installs util-linux")
    wh = Warehouse(str(tmp_path))
    wh.write_table("pairs", "s0", pd.DataFrame({"key": ["a"]}))
    cleaner = ("import sys; from curation_pipeline.storage.warehouse import Warehouse; "
               "print(len(Warehouse(sys.argv[1]).clean_temp_files()))")
    with wh.atomic_open(wh.curated_path("s1")) as handle:
        handle.write(b"x" * 1000)
        out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", cleaner,
                              str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT)
        assert out.returncode == 0 and out.stdout.strip() == "0", out.stdout + out.stderr
        handle.write(b"y" * 1000)
    assert Path(wh.curated_path("s1")).read_bytes() == b"x" * 1000 + b"y" * 1000


def test_a_dead_writers_temp_file_goes_although_its_pid_was_taken_again(tmp_path):
    """pid 1 lives, but started long after this file was last written: not its writer."""
    host = HOST
    (tmp_path / "pairs").mkdir()
    orphan = tmp_path / "pairs" / f".tmp-{host}-1-{'0' * 32}-s.parquet.partial"
    orphan.write_bytes(b"left by a writer that was killed")
    long_ago = time.time() - 3650 * 24 * 3600  # before this machine (so its pid 1) started
    os.utime(orphan, (long_ago, long_ago))
    young = tmp_path / "pairs" / f".tmp-{host}-{os.getpid()}-{'1' * 32}-t.parquet.partial"
    young.write_bytes(b"being written")  # by this live process, after it started
    assert [Path(p).name for p in Warehouse(str(tmp_path)).clean_temp_files()] == [orphan.name]
    assert young.exists()


def test_a_failed_write_removes_its_temp_file(tmp_path, monkeypatch):
    """A full disk in the middle of a Parquet write: the error propagates, no temp file stays."""
    import curation_pipeline.storage.warehouse as warehouse_module

    def full_disk(table, handle, **kwargs):
        handle.write(b"PAR1" + b"\0" * 4096)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(warehouse_module.pq, "write_table", full_disk)
    wh = Warehouse(str(tmp_path))
    with pytest.raises(OSError, match="No space left"):
        wh.write_table("pairs", "s", pd.DataFrame({"key": ["a"]}))
    assert temp_files(tmp_path) == [] and not (tmp_path / "pairs" / "s.parquet").exists()


REPORT_UNDER_QUOTA = textwrap.dedent("""
    import resource, signal, sys
    from curation_pipeline.reporting.report import build_report
    from curation_pipeline.storage.warehouse import Warehouse
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # the disk is full at 64 KB
    try:
        build_report(Warehouse(sys.argv[1]))
    except Exception as exc:
        print("FAILED", type(exc).__name__, exc)
        sys.exit(3)
""")


def test_report_temp_files_are_removed_on_failure_and_by_the_next_build(small_raw, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(small_raw / "s1.tar", raw)
    _, results = run_pipeline(raw, tmp_path / "wh", ["s1"], report=False, scoring=ScoringResource(profile="text"))
    assert results["s1"].success
    wh_root = tmp_path / "wh"
    # 1. a build that runs out of disk: it fails, and leaves neither its temp file nor DuckDB's .wal
    out = subprocess.run([sys.executable, "-c", REPORT_UNDER_QUOTA, str(wh_root)], capture_output=True, text=True,
                         cwd=REPO_ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 3, out.stdout + out.stderr
    assert not (wh_root / "quality.duckdb").exists()
    assert temp_files(wh_root) == [] and not list(wh_root.glob("*.wal"))
    # 2. what a killed builder leaves (dead pid) goes at the next build; a live builder's file stays
    dead = dead_pid()
    host = HOST
    killed = temp_name("quality.duckdb", pid=dead)
    orphans = [wh_root / TEMP_DIR / killed, wh_root / TEMP_DIR / f"{killed}.wal",
               wh_root / "pairs" / TEMP_DIR / temp_name("s1.parquet", pid=dead)]
    live = wh_root / TEMP_DIR / temp_name("quality.duckdb", pid=os.getpid(), host=host)
    for path in [*orphans, live]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
    from curation_pipeline.reporting.report import build_report

    build_report(Warehouse(str(wh_root)))
    assert (wh_root / "quality.duckdb").exists()
    assert not any(p.exists() for p in orphans[:2]) and live.exists()
    # 3. and the next shard run clears the table orphans too
    _, results = run_pipeline(raw, wh_root, ["s1"], report=False, scoring=ScoringResource(profile="text"))
    assert results["s1"].success and not orphans[2].exists() and live.exists()


def test_a_curated_tar_that_fails_verification_is_never_published(small_raw, tmp_path, monkeypatch):
    import curation_pipeline.assets.curation as curation

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(small_raw / "s2.tar", raw)
    scoring = ScoringResource(profile="text")
    instance, results = run_pipeline(raw, tmp_path / "wh", ["s2"], report=False, scoring=scoring)
    assert results["s2"].success
    curated = tmp_path / "wh" / "curated" / "s2.tar"
    previous = curated.read_bytes()
    original = curation.curated_samples

    def one_short(*args, **kwargs):
        samples = list(original(*args, **kwargs))
        return iter(samples[:-1])

    monkeypatch.setattr(curation, "curated_samples", one_short)
    _, results = run_pipeline(raw, tmp_path / "wh", ["s2"], instance=instance, report=False, scoring=scoring)
    result = results["s2"]
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "curated_shards"
    assert "wrote 2 curated samples but final_captions keeps 3; nothing was published" in str(
        failure.event_specific_data.user_failure_data.description)
    assert curated.read_bytes() == previous and temp_files(tmp_path / "wh") == []


def test_verify_curated_reads_the_tar_back(tmp_path):
    samples = [("k1", "jpg", b"\xff\xd8img1", {"key": "k1", "caption": "One."}),
               ("k2", "jpg", b"\xff\xd8img2", {"key": "k2", "caption": "Two."})]
    path = tmp_path / "c.tar"
    with open(path, "wb") as handle:
        write_curated(handle, samples)
    assert verify_curated(str(path), ["k1", "k2"]) == 2
    with pytest.raises(CuratedShardInvalid, match=r"missing \['k3'\]"):
        verify_curated(str(path), ["k1", "k2", "k3"])
    with pytest.raises(CuratedShardInvalid, match="unexpected"):
        verify_curated(str(path), ["k1"])
    with open(path, "wb") as handle:
        write_curated(handle, [("k1", "jpg", b"x", {"key": "other", "caption": "One."})])
    with pytest.raises(CuratedShardInvalid, match="its sidecar names key 'other'"):
        verify_curated(str(path), ["k1"])
    path.write_bytes(path.read_bytes()[:700])
    with pytest.raises(CuratedShardInvalid):
        verify_curated(str(path), ["k1"])
    with tarfile.open(tmp_path / "link.tar", "w") as tar:
        info = tarfile.TarInfo("k1.jpg")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(CuratedShardInvalid, match="not a regular file"):
        verify_curated(str(tmp_path / "link.tar"), ["k1"])
