"""``curate run`` in a child of the warm server (``forkserver``): the same output, exit codes, tables
and curated bytes as a run in its own process; the client's folder, environment, umask and signals
reach the run; the server leaves with its home. Real ``curate`` processes on the sample shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from curation_pipeline import forkserver
from curation_pipeline.demo import generate_sample_shards
from curation_pipeline.helper import _folder

CURATE = Path(sys.executable).with_name("curate")
PER_RUN = ("run_id", "created_at")  # per-run columns by design (docs/faults.md)



def _command(warehouse: str, raw: str = "raw", profile: str = "text") -> list[str]:
    base = [str(CURATE)] if CURATE.is_file() else [sys.executable, "-m", "curation_pipeline.cli"]
    return [*base, "run", "--raw", raw, "--warehouse", warehouse, "--profile", profile, "--no-report"]


def _served(cwd: Path, warehouse: str) -> int | None:
    """The pid of the server's child that ran the command with ``--warehouse warehouse`` from ``cwd``."""
    for log in _folder().glob("fork-*.log"):
        for line in log.read_text().splitlines():
            _, pid, folder, command = line.split(" ", 3)
            words = command.split()
            if folder == str(cwd) and words[words.index("--warehouse") + 1] == warehouse:
                return int(pid)
    return None


def _until(predicate, within: float = 120.0):
    deadline = time.monotonic() + within
    while not (found := predicate()):
        if time.monotonic() > deadline:
            return found
        time.sleep(0.02)
    return found


def _alive(pid: int) -> bool:
    return forkserver._alive(pid)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A folder with a sample shard and a Dagster home whose server is ready; afterwards the home is
    deleted, and its server must leave."""
    root = tmp_path_factory.mktemp("forkserver")
    generate_sample_shards(root / "raw", n_shards=1)
    home = root / "home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1", "CURATE_HELPER_IDLE_S": "60",
           forkserver.MODE_ENV: "on"}
    first = subprocess.run(_command("wh-first"), cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _served(root, "wh-first") is None  # no server yet: it ran itself, and started one
    assert _until(lambda: forkserver.servers(home), within=180), "no server came up for the home"
    pid = json.loads(forkserver.servers(home)[0].with_suffix(".json").read_text())["pid"]
    yield root, env
    shutil.rmtree(home)
    assert _until(lambda: not _alive(pid), within=30), "the server outlived its home"
    assert not forkserver.servers(home)


def _tables(warehouse: Path) -> dict[str, object]:
    found = {}
    for path in sorted(warehouse.rglob("*")):
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
            found[str(path.relative_to(warehouse))] = df.drop(columns=[c for c in PER_RUN if c in df.columns])
        elif path.suffix in (".tar", ".json") and "curated" in path.parts:
            found[str(path.relative_to(warehouse))] = path.read_bytes()
    return found


def test_a_served_run_equals_a_run_in_its_own_process(warm):
    """The offline profile: its models (ONNX Runtime, OpenCV, SciPy) load in the forked child."""
    root, env = warm
    local = subprocess.run(_command("wh-local", profile="offline"), cwd=root, env={**env, forkserver.MODE_ENV: "off"},
                           capture_output=True, text=True, timeout=600)
    served = subprocess.run(_command("wh-served", profile="offline"), cwd=root, env=env, capture_output=True,
                            text=True, timeout=600, preexec_fn=lambda: os.umask(0o027))
    assert local.returncode == 0 and served.returncode == 0, (local.stderr[-2000:], served.stderr[-2000:])
    assert _served(root, "wh-local") is None and _served(root, "wh-served") is not None
    # relative paths resolved in the client's folder, the same lines on stdout
    assert served.stdout.replace("wh-served", "wh-local") == local.stdout
    assert "done: 1 shards curated" in served.stdout
    mine, theirs = _tables(root / "wh-served"), _tables(root / "wh-local")
    assert mine.keys() == theirs.keys() and any(k.endswith(".tar") for k in mine)
    for name, value in theirs.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(mine[name], value, check_like=True)
        else:
            assert mine[name] == value, name
    assert (root / "wh-served").stat().st_mode & 0o777 == 0o750  # the client's umask
    mask = os.umask(0o022)
    os.umask(mask)
    assert (root / "wh-local").stat().st_mode & 0o777 == 0o777 & ~mask


def test_bad_input_exits_2_with_its_message(warm):
    root, env = warm
    bad = subprocess.run(_command("wh-bad", raw="no-such-folder"), cwd=root, env=env, capture_output=True,
                         text=True, timeout=600)
    assert _served(root, "wh-bad") is not None
    assert bad.returncode == 2 and "no-such-folder" in bad.stderr


@pytest.mark.parametrize("how", ["interrupt", "kill"])
def test_signals_reach_the_served_run(warm, how):
    root, env = warm
    warehouse = f"wh-{how}"
    # a terminal's Ctrl-C: the client must not inherit an ignored SIGINT from whatever started pytest (a
    # background job of a script ignores it); the server, started by the warm run, may well have
    client = subprocess.Popen(_command(warehouse), cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        child = _until(lambda: _served(root, warehouse) or client.poll() is not None)
        assert child is not True and client.poll() is None, "the run was not served, or ended first"
        if how == "interrupt":  # Ctrl-C: the run stops as it would in the process itself: click's "Aborted!"
            client.send_signal(signal.SIGINT)  # (exit 1), or, before click took over, death by SIGINT
            _, err = client.communicate(timeout=300)
            assert client.returncode in (1, -signal.SIGINT), err[-2000:]
        else:  # killed outright: the run goes with it
            client.kill()
            client.wait(timeout=60)
            assert client.returncode == -signal.SIGKILL
        assert _until(lambda: not _alive(child), within=60), "the run outlived its client"
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()


def test_the_child_takes_on_the_clients_context(tmp_path):
    """Folder, environment, umask, CPUs, niceness and signal dispositions, applied in a forked child as the server's child does."""
    cpus = sorted(os.sched_getaffinity(0))
    context = {**forkserver._context(), "cwd": str(tmp_path), "env": {"ONLY": "this"}, "umask": 0o077,
               "cpus": cpus[:1], "nice": os.getpriority(os.PRIO_PROCESS, 0) + 1, "ignored": ["SIGHUP"]}
    before = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}  # the server's
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            forkserver._apply(context)
            seen = {"cwd": os.getcwd(), "env": dict(os.environ), "umask": os.umask(0),
                    "cpus": sorted(os.sched_getaffinity(0)), "nice": os.getpriority(os.PRIO_PROCESS, 0),
                    "signals": [str(signal.getsignal(s)) for s in forkserver.FORWARDED]}
            os.write(write, json.dumps(seen).encode())
        finally:
            os._exit(0)
    for s, handler in before.items():
        signal.signal(s, handler)
    os.close(write)
    with os.fdopen(read) as pipe:
        seen = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert seen == {"cwd": str(tmp_path), "env": {"ONLY": "this"}, "umask": 0o077, "cpus": cpus[:1],
                    "nice": context["nice"],  # the client's signal dispositions: Python's defaults, or ignored
                    "signals": [str(signal.default_int_handler), str(signal.SIG_DFL), str(signal.SIG_IGN)]}


def test_the_address_follows_the_environment_and_code(monkeypatch):
    base = forkserver._fingerprint()
    monkeypatch.setenv("PWD", "/elsewhere")  # shell bookkeeping: the same server
    monkeypatch.setenv(forkserver.MODE_ENV, "on")
    assert forkserver._fingerprint() == base
    monkeypatch.setenv("HF_HUB_OFFLINE", "0" if os.environ.get("HF_HUB_OFFLINE") == "1" else "1")
    assert forkserver._fingerprint() != base  # read at import by the libraries: another server
    monkeypatch.undo()
    module = Path(forkserver.__file__)
    stat = module.stat()
    try:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # changed code: another server
        assert forkserver._fingerprint() != base
    finally:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert forkserver._fingerprint() == base


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="a network namespace needs root")
def test_a_client_in_another_network_namespace_gets_its_own_server(tmp_path):
    """A run inside ``unshare -n`` must never be run by a server outside it (its child would be outside too)."""
    probe = [sys.executable, "-c", "from curation_pipeline import forkserver; print(forkserver.address())"]
    outside = [subprocess.run(probe, capture_output=True, text=True, check=True, cwd=tmp_path).stdout for _ in "ab"]
    inside = subprocess.run(["unshare", "-n", *probe], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert outside[0] == outside[1] and inside != outside[0]
