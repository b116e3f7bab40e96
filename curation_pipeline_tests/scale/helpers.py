"""Real servers for the scale tests, each started and stopped by the test, bound to loopback.

``S3Server``: s3rver (npm), an S3-compatible server in its own process, storing objects in
a temp folder. `.ci/run` installs it into ``.venv/npm`` (``make setup-scale``);
``CURATION_S3RVER`` may point elsewhere. Clients reach it through the standard AWS
variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), as a
deployment reaches real S3: the pipeline itself is given no endpoint and no credentials.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from curation_pipeline.compute.cluster import (free_port, private_network_available, run_in_private_network,
                                              wait_for_port)
from curation_pipeline_tests.conftest import REPO_ROOT, require  # noqa: F401 (the scale tests import it here)

S3RVER = Path(os.environ.get("CURATION_S3RVER") or REPO_ROOT / ".venv" / "npm" / "node_modules" / ".bin" / "s3rver")
ACCESS_KEY = "S3RVER"  # s3rver's built-in account
SECRET = "curation-test-secret-7Q2xK9"  # accepted via --allow-mismatched-signatures; must never be logged
RUN_SPECIFIC = ("run_id", "created_at")  # lineage columns that name the run, not the data




class S3Server:
    """s3rver on 127.0.0.1:<free port> with one bucket; ``env`` is what a client needs."""

    def __init__(self, root: Path, bucket: str = "curation"):
        self.root, self.bucket = Path(root), bucket
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self) -> "S3Server":
        data = self.root / "s3rver-data"
        data.mkdir(parents=True, exist_ok=True)
        self.log = open(self.root / "s3rver.log", "ab")
        self.process = subprocess.Popen(
            [str(S3RVER), "-d", str(data), "-a", "127.0.0.1", "-p", str(self.port), "--allow-mismatched-signatures",
             "--configure-bucket", self.bucket], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            # s3rver makes list continuation tokens with DES, which OpenSSL 3 keeps in its legacy provider
            env={**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"})
        wait_for_port(self.port, 30, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()



# what a scenario's process must not inherit: a developer's cloud credentials, a Ray address elsewhere
SCENARIO_ENV_DROPPED = ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_ADDRESS")


def run_scenario(name: str, out: Path, *args: str, timeout: int, drop: tuple[str, ...] = ()) -> dict:
    """Run ``cluster_scenarios <name>`` as PID 1 of a private network namespace (Ray rewrites 127.0.0.1 to the
    machine's address: only there does it stay on loopback) and return its ``result.json``, failing with the
    scenario's output when it wrote none or reported an error."""
    ok, why = private_network_available()
    require(ok, why)
    env = {**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO_ROOT)}
    for variable in (*SCENARIO_ENV_DROPPED, *drop):
        env.pop(variable, None)
    done = run_in_private_network(
        [sys.executable, "-m", "curation_pipeline_tests.scale.cluster_scenarios", name, "--out", str(out), *args],
        timeout=timeout, env=env, cwd=str(REPO_ROOT), capture_output=True, text=True)
    result_file = out / "result.json"
    assert result_file.exists(), f"the scenario wrote no result (exit {done.returncode}):\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-6000:]}"
    result = json.loads(result_file.read_text())
    assert "error" not in result, result["error"]
    return result

def s3_available() -> tuple[bool, str]:
    if not S3RVER.exists():
        return False, f"s3rver not installed at {S3RVER}"
    if shutil.which("node") is None:
        return False, "node not installed (s3rver runs on Node.js)"
    return True, ""


def fresh_s3fs():
    """s3fs instances are cached per process with their endpoint: start each server afresh."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    return s3fs.S3FileSystem()


def upload_shards(fs, local_raw: Path, url: str, shards: list[str]) -> None:
    for shard in shards:
        fs.put(str(local_raw / f"{shard}.tar"), f"{url.removeprefix('s3://')}/{shard}.tar")


TABLES = ("pairs", "quality_scores", "caption_decisions", "rewritten_captions", "final_captions", "skips")


def table_differences(left, right, shards: list[str], tables: tuple[str, ...] = TABLES, tars: bool = True) -> list[str]:
    """Every (table, shard) whose Parquet rows differ between two warehouses (run ids and times
    aside), and every curated tar whose bytes differ. Empty when the runs agree."""
    import pyarrow.parquet as pq

    problems = []
    for table in tables:
        for shard in shards:
            missing = [name for name, wh in (("left", left), ("right", right)) if not wh.has_table(table, shard)]
            if missing:
                problems.append(f"{table}/{shard}: missing in {' and '.join(missing)}")
                continue
            frames = []
            for wh in (left, right):
                with wh.fs.open(wh.table_path(table, shard), "rb") as handle:
                    frames.append(pq.read_table(handle).to_pandas())
            a, b = (f.drop(columns=[c for c in RUN_SPECIFIC if c in f]) for f in frames)
            try:
                pd.testing.assert_frame_equal(a, b, check_exact=True)
            except AssertionError as exc:
                problems.append(f"{table}/{shard}: {str(exc)[:400]}")
    for shard in shards if tars else []:
        if not all(wh.fs.exists(wh.curated_path(shard)) for wh in (left, right)):
            problems.append(f"curated/{shard}.tar: missing")
            continue
        blobs = [wh.fs.cat_file(wh.curated_path(shard)) for wh in (left, right)]
        if blobs[0] != blobs[1]:
            problems.append(f"curated/{shard}.tar: {len(blobs[0])} vs {len(blobs[1])} bytes, not the same")
    return problems
