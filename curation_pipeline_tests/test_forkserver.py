"""``curate run`` in a child of the warm server (``forkserver``): the same output, exit codes, tables
and curated bytes as a run in its own process; the client's folder, environment, umask and signals
reach the run; the server leaves with its home. Real ``curate`` processes on the sample shards."""

from __future__ import annotations

import contextlib
import json
import os
import resource
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
from curation_pipeline_tests.conftest import require

CURATE = Path(sys.executable).with_name("curate")
PER_RUN = ("run_id", "created_at")  # per-run columns by design (docs/faults.md)



def _command(warehouse: str, raw: str = "raw", profile: str = "text") -> list[str]:
    base = [str(CURATE)] if CURATE.is_file() else [sys.executable, "-m", "curation_pipeline.cli"]
    return [*base, "run", "--raw", raw, "--warehouse", warehouse, "--profile", profile, "--no-report"]


def _served(cwd: Path, warehouse: str) -> int | None:
    """The pid of the server's child that ran the command with ``--warehouse warehouse`` from ``cwd``."""
    for log in _folder().glob("fork-*.log"):
        try:  # the folder is shared: another test's server deletes its log as it leaves
            lines = log.read_text().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            if len(fields := line.split(" ", 3)) < 4:
                continue
            _, pid, folder, command = fields
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
    yield root, env
    pids = [json.loads(s.with_suffix(".json").read_text())["pid"] for s in forkserver.servers(home)]
    assert pids, "no server serves the home"
    shutil.rmtree(home)
    assert _until(lambda: not any(_alive(pid) for pid in pids), within=30), "a server outlived its home"
    assert not forkserver.servers(home) and not forkserver.servers(home, ".starting")


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
    assert "done: 1 shard curated" in served.stdout
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


def _full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full: a run writing its output there cannot end (it waits in the write)
    before the test reads, so a signal the test sends never comes after the run's end."""
    read, write = os.pipe()
    os.set_blocking(write, False)  # the file description's flag, shared with the run: cleared below
    for size in (65536, 1):
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(write, b"\0" * size)
    os.set_blocking(write, True)
    return read, write


def _state(pid: int) -> str:
    """The process's state letter (``T``: stopped), ``gone`` once it is reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def _drain(fd: int) -> bool:
    """Read what the pipe holds now (the read end is non-blocking)."""
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 1 << 16):
            pass
    return False


def _no_core() -> None:  # in the client, so in its run too (the run takes its limits)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV], ids=["KILL", "SEGV"])
def test_a_run_killed_by_a_signal_ends_its_client_by_that_signal(warm, tmp_path, signum):
    """The OOM killer's SIGKILL, a crash's SIGSEGV: the client ends as the command in its own process
    would (a shell's 137 / 139), not with exit code 1."""
    root, env = warm
    warehouse = f"wh-killed-{signum.name}"
    read, write = _full_pipe()  # the run cannot have ended when it is killed
    try:
        with open(tmp_path / "stderr", "w") as err:
            client = subprocess.Popen(_command(warehouse), cwd=root, env=env, stdout=write, stderr=err,
                                      preexec_fn=_no_core)
        os.close(write)
        try:
            child = _until(lambda: _served(root, warehouse) or client.poll() is not None)
            assert child is not True and client.poll() is None, "the run was not served, or ended first"
            os.kill(child, signum)
            assert client.wait(timeout=300) == -signum, (tmp_path / "stderr").read_text()[-2000:]
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    finally:
        os.close(read)


@pytest.mark.parametrize("then", ["continue", "kill"])
def test_ctrl_z_stops_the_served_run_with_its_client(warm, tmp_path, then):
    """The shell sees the client as the job: stopping it must stop the run, and continuing it go on. Killed outright
    while stopped (``kill -9`` of the job), the stopped child cannot run its own watch of the client, so the server
    kills it; else it held its run (and the warehouse's lock) for good."""
    root, env = warm
    warehouse = f"wh-tstp-{then}"
    read, write = _full_pipe()  # the run cannot end before the stop: it waits to write its output
    try:
        # its own process group, as a shell's job: the kernel drops a default SIGTSTP in an orphaned
        # group (pytest's may be one, under a CI runner), and the client would not stop at all
        with open(tmp_path / "stderr", "w") as err:
            client = subprocess.Popen(_command(warehouse), cwd=root, env=env, stdout=write, stderr=err,
                                      process_group=0,
                                      preexec_fn=lambda: signal.signal(signal.SIGTSTP, signal.SIG_DFL))
        os.close(write)
        child = None
        try:
            child = _until(lambda: _served(root, warehouse) or client.poll() is not None)
            assert child is not True and client.poll() is None, "the run was not served, or ended first"
            client.send_signal(signal.SIGTSTP)  # the client may not have read the child's pid yet: it
            # then stops the two as soon as it has; a stopped process stays stopped, so waiting is exact
            assert _until(lambda: _state(client.pid) == "T" and _state(child) == "T"), \
                (_state(client.pid), _state(child))
            if then == "kill":
                client.kill()
                assert client.wait(timeout=60) == -signal.SIGKILL
                assert _until(lambda: not _alive(child), within=60), f"the stopped run outlived its client: " \
                    f"{_state(child)}"
                return
            client.send_signal(signal.SIGCONT)
            os.set_blocking(read, False)  # the read end is the test's alone
            _until(lambda: _drain(read) or client.poll() is not None, within=300)  # the run goes on to its end
            assert client.poll() == 0, (tmp_path / "stderr").read_text()[-2000:]
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            if isinstance(child, int) and _alive(child):
                os.kill(child, signal.SIGKILL)
    finally:
        with contextlib.suppress(OSError):
            os.close(read)


def test_a_process_is_alive_only_as_the_one_that_started_then():
    """A start marker whose pid was reused by another process (pids wrap) names no server: no run waits for it,
    and stop() sends that process nothing."""
    started = forkserver._start_time(os.getpid())
    assert started is not None
    assert forkserver._alive(os.getpid(), started) and forkserver._alive(os.getpid())
    assert not forkserver._alive(os.getpid(), started + 1)


def test_addresses_no_live_server_used_for_a_day_are_swept(tmp_path):
    """Each code change or environment makes a new address, and ``servers`` reads the folder whole: an address's
    files go once its server is gone and none were touched for a day; a live server's, or a fresh address's, stay."""
    def address(name: str, pid: int, age_s: float) -> list[Path]:
        files = [tmp_path / f"fork-{name}{suffix}" for suffix in (".lock", ".sock", ".key", ".log")]
        for f in files:
            f.write_text("")
        info = tmp_path / f"fork-{name}.json"
        info.write_text(json.dumps({"pid": pid, "started": forkserver._start_time(pid), "home": None}))
        for f in [*files, info]:
            os.utime(f, (time.time() - age_s, time.time() - age_s))
        return [*files, info]

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = address("stale", gone.pid, 2 * forkserver.STALE_AFTER_S)
    live = address("live", os.getpid(), 2 * forkserver.STALE_AFTER_S)  # this process: alive
    fresh = address("fresh", gone.pid, 60)
    mine = address("mine", gone.pid, 2 * forkserver.STALE_AFTER_S)
    forkserver._sweep(tmp_path / "fork-mine.sock")
    assert not any(f.exists() for f in stale)
    assert all(f.exists() for f in live + fresh + mine)


def test_the_idle_time_counts_from_the_end_of_the_last_run(tmp_path):
    """A run longer than CURATE_HELPER_IDLE_S is no idle time: the next run, right after it, is still served
    warm, and the server leaves once that long passed with no run. Its own home (the server is keyed on
    the environment, this idle time included), so the module's server is left alone."""
    idle = 10
    generate_sample_shards(tmp_path / "raw", n_shards=1)
    home = tmp_path / "home"
    env = {**os.environ, "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1", "CURATE_HELPER_IDLE_S": str(idle),
           forkserver.MODE_ENV: "on"}
    client = None
    try:
        first = subprocess.run(_command("wh-first", raw="no-such-folder"), cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=600)  # runs itself, starts the server
        assert first.returncode == 2 and _served(tmp_path, "wh-first") is None, first.stderr[-2000:]
        servers = _until(lambda: forkserver.servers(home), within=180)
        assert servers, "no server came up for the home"
        pid = json.loads(servers[0].with_suffix(".json").read_text())["pid"]
        read, write = _full_pipe()  # the run cannot end before the test reads its output
        try:
            client = subprocess.Popen(_command("wh-long"), cwd=tmp_path, env=env, stdout=write,
                                      stderr=subprocess.DEVNULL)
            os.close(write)
            child = _until(lambda: _served(tmp_path, "wh-long") or client.poll() is not None)
            assert child is not True and client.poll() is None, "the run was not served, or ended first"
            time.sleep(idle + 2)  # the run outlasts the idle time
            assert _alive(pid) and _alive(child)
            os.set_blocking(read, False)
            _until(lambda: _drain(read) or client.poll() is not None, within=300)
            assert client.wait(timeout=300) == 0
        finally:
            os.close(read)
        assert _until(lambda: not _alive(child), within=60)
        time.sleep(1.5)  # a moment later (a server that counted from the run's start leaves within 1 s)
        nxt = subprocess.run(_command("wh-next", raw="no-such-folder"), cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
        assert nxt.returncode == 2 and _served(tmp_path, "wh-next") is not None, "the next run started cold"
        assert _until(lambda: not _alive(pid), within=120), "the server did not leave with no run"
        assert not forkserver.servers(home)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        shutil.rmtree(home, ignore_errors=True)  # whatever is left of its server leaves with it


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


IDLE_IO = 3 << 13  # ionice -c 3: the idle class (its level is 0)
NEEDS_UTIL_LINUX = pytest.mark.skipif(not (shutil.which("ionice") and shutil.which("choom")),
                                      reason="needs util-linux's ionice and choom")


def _oom_score_adj(pid: int | str = "self") -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def _io_class(pid: int) -> str:
    shown = subprocess.run(["ionice", "-p", str(pid)], capture_output=True, text=True, check=True).stdout
    return shown.split(":")[0].strip()  # "idle", "best-effort: prio 4", "none: prio 0"


@NEEDS_UTIL_LINUX
def test_the_child_takes_on_the_clients_io_priority_and_oom_score(tmp_path):
    """``ionice`` and ``choom`` of the client, not of the server (whichever run started it): the child
    sets its own as the server's child does."""
    mine = _oom_score_adj()
    context = {**forkserver._context(), "cwd": str(tmp_path), "ioprio": IDLE_IO, "oom_score_adj": min(mine + 7, 1000)}
    assert _io_class(os.getpid()) != "idle" and context["oom_score_adj"] != mine
    report, reported = os.pipe()
    hold, release = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe, then waits to be looked at
        code = 1
        try:
            os.close(report)
            os.close(release)  # its end of the pipe it waits on: the test's close must end the wait
            forkserver._apply(context)
            code = 0
        finally:
            os.write(reported, b"applied" if code == 0 else b"failed")
            os.read(hold, 1)
            os._exit(code)
    os.close(reported)
    os.close(hold)
    try:
        assert os.read(report, 100) == b"applied"
        seen = (_io_class(pid), _oom_score_adj(pid))  # looked at from outside, as ionice -p / choom -p would
    finally:
        os.close(release)
        os.close(report)
        os.waitpid(pid, 0)
    assert seen == ("idle", context["oom_score_adj"])
    assert _io_class(os.getpid()) != "idle" and _oom_score_adj() == mine  # only the child's changed


@NEEDS_UTIL_LINUX
def test_the_client_sends_its_io_priority_and_oom_score(tmp_path):
    probe = ("from curation_pipeline import forkserver; c = forkserver._context(); "
             "print(c['ioprio'], c['oom_score_adj'])")
    adj = min(_oom_score_adj() + 9, 1000)
    out = subprocess.run(["ionice", "-c", "3", "choom", "-n", str(adj), "--", sys.executable, "-c", probe],
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert int(out[0]) >> 13 == 3 and int(out[1]) == adj  # the idle class (ionice gives it a level it ignores)


def test_the_address_follows_the_environment_and_code(monkeypatch):
    base = forkserver._fingerprint()
    monkeypatch.setenv("PWD", "/elsewhere")  # shell bookkeeping: the same server
    monkeypatch.setenv(forkserver.MODE_ENV, "on")
    monkeypatch.setenv("CURATE_HELPER_CONNECT_TIMEOUT_S", "2")  # read when dialling, by the client and child
    monkeypatch.setenv("CURATE_HELPER_CALL_TIMEOUT_S", "7")
    assert forkserver._fingerprint() == base
    # the pipeline's settings are each run's, read from the environment its child takes on: one server for all
    monkeypatch.setenv("CURATION_WAREHOUSE", "/elsewhere/wh")
    monkeypatch.setenv("CURATION_THREADS", "1")
    assert forkserver._fingerprint() == base
    monkeypatch.setenv("HF_HUB_OFFLINE", "0" if os.environ.get("HF_HUB_OFFLINE") == "1" else "1")
    assert forkserver._fingerprint() != base  # read at import by the libraries: another server
    monkeypatch.undo()
    monkeypatch.setenv("CURATION_AUTOMATION", "on" if os.environ.get("CURATION_AUTOMATION") != "on" else "off")
    assert forkserver._fingerprint() != base  # read at import (the sensors' default status)
    monkeypatch.undo()
    groups = os.getgroups()
    monkeypatch.setattr(os, "getgroups", lambda: [*groups, 4242])  # after newgrp: its files another group's
    assert forkserver._fingerprint() != base
    monkeypatch.undo()
    module = Path(forkserver.__file__)
    stat = module.stat()
    try:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # changed code: another server
        assert forkserver._fingerprint() != base
    finally:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert forkserver._fingerprint() == base


def test_a_client_in_another_network_namespace_gets_its_own_server(tmp_path):
    """A run inside ``unshare -n`` must never be run by a server outside it (its child would be outside too)."""
    require(os.geteuid() == 0 and bool(shutil.which("unshare")), "a network namespace needs root and unshare",
            "CI runs as root; .ci/run installs util-linux")
    probe = [sys.executable, "-c", "from curation_pipeline import forkserver; print(forkserver.address())"]
    outside = [subprocess.run(probe, capture_output=True, text=True, check=True, cwd=tmp_path).stdout for _ in "ab"]
    inside = subprocess.run(["unshare", "-n", *probe], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert outside[0] == outside[1] and inside != outside[0]


def test_a_stopped_server_is_not_waited_for(warm):
    """Its socket still queues connections, so connecting alone never fails: the handshake times out and
    the run runs in its own process (it hung before), and the server serves again once continued."""
    root, env = warm
    [sock] = forkserver.servers(Path(env["DAGSTER_HOME"]))
    pid = json.loads(sock.with_suffix(".json").read_text())["pid"]
    impatient = {**env, "CURATE_HELPER_CONNECT_TIMEOUT_S": "2"}
    os.kill(pid, signal.SIGSTOP)
    try:
        alone = subprocess.run(_command("wh-stopped"), cwd=root, env=impatient, capture_output=True, text=True,
                               timeout=600)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert alone.returncode == 0 and "done: 1 shard curated" in alone.stdout, alone.stderr[-2000:]
    assert _served(root, "wh-stopped") is None  # it ran itself
    # it dialled the stopped server: had the timeout keyed another address, it would have found no server
    # there, run alone for that reason, and started a second one as it ended
    assert forkserver.servers(Path(env["DAGSTER_HOME"])) == [sock]
    assert not forkserver.servers(Path(env["DAGSTER_HOME"]), ".starting")
    again = subprocess.run(_command("wh-continued"), cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and _served(root, "wh-continued") is not None


def test_a_long_tmpdir_still_gets_a_warm_server(tmp_path, monkeypatch):
    """Under a TMPDIR too long for a socket path (pytest's own temp folders come close), the servers'
    folder falls back to /tmp: before, every run started a server that imported for seconds and died
    binding its socket, and no run was ever served."""
    long_tmp = tmp_path / ("t" * 60)
    long_tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(long_tmp))  # what _folder() sees here, as the runs will
    folder = _folder()
    assert len(os.fsencode(folder / ("x" * 38))) < 104 and not folder.is_relative_to(long_tmp)
    generate_sample_shards(tmp_path / "raw", n_shards=1)
    home = tmp_path / "home"
    env = {**os.environ, "TMPDIR": str(long_tmp), "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1",
           "CURATE_HELPER_IDLE_S": "20", forkserver.MODE_ENV: "on"}
    try:
        first = subprocess.run(_command("wh-first", raw="no-such-folder"), cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=600)  # runs itself, starts the server
        assert first.returncode == 2, first.stderr[-2000:]
        assert forkserver.wait_ready(home), f"no server came up: {forkserver.failures()}"
        nxt = subprocess.run(_command("wh-next", raw="no-such-folder"), cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
        assert nxt.returncode == 2 and _served(tmp_path, "wh-next") is not None, "the next run was not served"
    finally:
        forkserver.stop(home)
        shutil.rmtree(home, ignore_errors=True)


def test_a_server_that_cannot_serve_says_why_and_is_not_restarted_by_every_run(tmp_path):
    """A server that fails (here: its socket path is too long to bind) leaves its traceback beside the
    socket and takes its start marker with it, so waiting ends at once; the next runs start no other
    for a while (each would cost seconds of imports and fail the same way)."""
    folder = tmp_path / ("x" * 100)
    folder.mkdir(mode=0o700)
    sock = folder / "fork-0123456789abcdef0123.sock"
    forkserver._start_server(sock)
    pid = json.loads(sock.with_suffix(".starting").read_text())["pid"]
    assert _until(lambda: not _alive(pid), within=180), "the failing server did not end"
    assert "too long" in forkserver.sock_error(sock).read_text()
    assert not sock.with_suffix(".starting").exists()  # a waiter sees at once that none is coming
    forkserver._start_server(sock)  # the next run's start: none, within RETRY_AFTER_FAILURE_S
    assert not sock.with_suffix(".starting").exists()
    old = time.time() - forkserver.RETRY_AFTER_FAILURE_S - 1
    os.utime(forkserver.sock_error(sock), (old, old))
    forkserver._start_server(sock)  # long enough after: tried again
    pid = json.loads(sock.with_suffix(".starting").read_text())["pid"]
    assert _until(lambda: not _alive(pid), within=180)


def test_waiting_sees_a_server_that_began_serving_between_its_two_looks(monkeypatch, tmp_path):
    """A server publishes its socket, then drops its start marker: a wait that looked for a serving one just
    before, and for a starting one just after, saw neither, and said the warm start did not come up (the
    Data-Juicer smoke failed so on a loaded machine)."""
    sock = tmp_path / "fork-x.sock"
    looks = iter([[], [], [sock]])  # serving: not yet; starting: no longer; serving: yes
    monkeypatch.setattr(forkserver, "servers", lambda home, suffix=".sock": next(looks))
    assert forkserver.wait_ready(tmp_path, timeout_s=5) == [sock]
