"""The home's warm helper process: same outcomes as in-process, shared by every run of the home,
private to its user, gone when idle, and never a reason for a check to fail."""

import os
import signal
import socket
import subprocess
import sys
import time
import types
from multiprocessing.connection import Client
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster._core.errors import DagsterExecutionInterruptedError

from curation_pipeline import helper
from curation_pipeline.validation import _gx, check_caption_length_drift, check_table

SPECS = [("ExpectColumnValuesToBeBetween", {"column": "x", "min_value": 0, "max_value": 10}),
         ("ExpectColumnValuesToBeUnique", {"column": "k"})]


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"k": ["a", "b", "b", "c"], "x": [1.0, 12.0, np.nan, 3.0]})


def _gone(pid: int, within: float = 60.0) -> bool:
    deadline = time.monotonic() + within
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # started from this process: reaped once it exits
                return True
        except ChildProcessError:  # started by another process
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A Dagster home with its own helper, stopped afterwards."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(helper.MODE_ENV, "on")
    monkeypatch.setenv(helper.IDLE_ENV, "2")
    monkeypatch.setenv(helper.QUIET_ENV, "3600")  # what GX's import deferred stays so: the checks run it
    monkeypatch.setattr(helper, "_GAVE_UP", set())
    (tmp_path / "home").mkdir()
    helper.shutdown()  # whatever an earlier test of this process connected to
    helper.start(_gx.warm)
    pid = helper.call(os.getpid)
    yield tmp_path / "home", pid
    helper.shutdown()
    if not _gone(pid, within=0):
        os.kill(pid, 9)


SCIPY_STATS = "type(__import__('sys').modules['scipy.stats']).__name__"  # evaluated in the helper


def test_the_helper_gives_the_same_outcomes_as_in_process(home, monkeypatch):
    _, pid = home
    assert pid != os.getpid()  # a separate process really runs them
    assert helper.call(eval, SCIPY_STATS) == "_LazyModule"  # GX's scipy deferred: the drift check runs it
    there = _gx.validate(_frame(), SPECS)
    original = pd.Series(["a dog runs", "two men walk on a road", "a cat", "red car"] * 5)
    final = original.str.replace("a dog runs", "a small brown dog runs fast on the wet sand near the sea")
    drift_there = check_caption_length_drift(original, final)
    table_there = check_table(_frame(), required_columns=["k", "x"], unique=["k"], ranges={"x": (0, 10)})
    helper.shutdown()
    monkeypatch.setenv(helper.MODE_ENV, "off")
    assert helper.call(os.getpid) == os.getpid()
    here = _gx.validate(_frame(), SPECS)
    assert here == there
    assert [o.success for o in here] == [False, False]
    assert here[0].result["unexpected_count"] == 1 and here[0].kwargs == SPECS[0][1]
    assert check_caption_length_drift(original, final) == drift_there
    assert check_table(_frame(), required_columns=["k", "x"], unique=["k"], ranges={"x": (0, 10)}) == table_there
    assert not table_there.passed and len(table_there.failures) == 2


def _warm_with_later():
    """A warm-up that leaves a part for later, which marks its start and end in DAGSTER_HOME and runs until
    half a second after the test says its call is coming (or a minute)."""
    marks = Path(os.environ["DAGSTER_HOME"])

    def later():
        (marks / "later-started").touch()
        deadline = time.monotonic() + 60
        while not (marks / "call-coming").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        (marks / "later-ended").touch()

    return later


def _warm_with_failing_later():
    def later():
        raise ImportError("a deferred module failed to run")

    return later


def _exists(path: str) -> bool:
    return Path(path).exists()


@pytest.fixture()
def quick_later(tmp_path, monkeypatch):
    """A home whose helper runs what its warm-up left for later at once (``CURATE_HELPER_QUIET_S`` 0.01): start
    it with the warm-up given; stopped afterwards."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv(helper.MODE_ENV, "on")
    monkeypatch.setenv(helper.QUIET_ENV, "0.01")
    monkeypatch.setattr(helper, "_GAVE_UP", set())
    helper.shutdown()
    yield helper.start
    helper.shutdown()
    helper.stop(tmp_path)


def test_what_gx_deferred_loads_once_no_call_is_in_flight(quick_later):
    quick_later(_gx.warm)
    pid = helper.call(os.getpid)
    deadline = time.monotonic() + 120  # a bound on a hang, not a measure of speed
    while helper.call(eval, SCIPY_STATS) != "module":
        assert time.monotonic() < deadline, "the helper never loaded what GX's import deferred"
        time.sleep(0.05)
    assert helper.call(eval, "[type(f).__name__ for f in __import__('sys').meta_path]").count("Deferred") == 0
    assert helper.call(os.getpid) == pid


def test_a_call_during_the_later_warm_up_waits_for_it(quick_later, tmp_path):
    """The later part runs with no call beside it (LazyLoader is not thread-safe): a call that comes
    meanwhile is answered after it ends, by the helper, not refused or run beside it."""
    quick_later(_warm_with_later)
    deadline = time.monotonic() + 120
    while not (tmp_path / "later-started").exists():
        assert time.monotonic() < deadline, "the later part never ran"
        time.sleep(0.01)
    (tmp_path / "call-coming").touch()
    assert helper.call(_exists, str(tmp_path / "later-ended"))  # answered only after it ended
    assert helper.call(os.getpid) != os.getpid()


def test_a_helper_whose_later_warm_up_fails_refuses_every_call(quick_later, tmp_path):
    """A module that failed to run stays half-run in its process: the helper serves nothing from then on,
    each call running in its caller, and it stays (a new helper for each call would fail the same way, each
    after importing GX again) until ``stop`` ends it."""
    quick_later(_warm_with_failing_later)
    pid = helper.call(os.getpid)
    assert pid != os.getpid()
    deadline = time.monotonic() + 120  # a bound on a hang, not a measure of speed
    while helper.call(os.getpid) != os.getpid():
        assert time.monotonic() < deadline, "the helper still serves after its later warm-up failed"
        time.sleep(0.05)
    for _ in range(3):
        assert helper.call(os.getpid) == os.getpid() and helper.running()  # refused, not given up on
    assert not _gone(pid, within=0)  # the same helper: none started again
    helper.shutdown()
    assert helper.stop(tmp_path) == pid and _gone(pid)


def test_a_refusing_helper_leaves_after_its_idle_time_though_runs_stay_connected(quick_later, monkeypatch):
    """So a passing failure (memory, a file missing during an upgrade) heals: the next call starts a fresh
    helper, even on a home whose runs never leave it idle."""
    monkeypatch.setenv(helper.IDLE_ENV, "1")
    quick_later(_warm_with_failing_later)
    pid = helper.call(os.getpid)
    deadline = time.monotonic() + 120
    while helper.call(os.getpid) != os.getpid():  # refused: the later part failed
        assert time.monotonic() < deadline, "the helper still serves after its later warm-up failed"
        time.sleep(0.05)
    assert helper.running()  # this process stays connected all along
    assert _gone(pid)
    assert helper.call(str.upper, "answered") == "ANSWERED"  # by a fresh helper, or here


def test_later_runs_of_the_home_find_it_warm(home):
    """Another process of the same home is served by the same helper and never imports GX itself."""
    _, pid = home
    code = ("import os, sys\nimport pandas as pd\nfrom curation_pipeline import helper\n"
            "from curation_pipeline.validation import _gx\n"
            "outcomes = _gx.validate(pd.DataFrame({'k': ['a', 'a']}), [('ExpectColumnValuesToBeUnique', {'column': 'k'})])\n"
            "print(helper.call(os.getpid), outcomes[0].success, 'great_expectations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         env=os.environ).stdout.split()
    assert out == [str(pid), "False", "False"]


def test_only_clients_with_the_key_are_served(home):
    folder, pid = home
    sock = helper.address(folder)
    assert (sock.parent.stat().st_mode & 0o777) == 0o700
    assert (sock.with_suffix(".key").stat().st_mode & 0o777) == 0o600
    with pytest.raises(Exception, match="digest"):
        Client(str(sock), family="AF_UNIX", authkey=b"not the key")
    assert helper.call(os.getpid) == pid  # still serving the rest


def test_what_cannot_be_sent_runs_here(home):
    _, pid = home
    assert helper.call(lambda: os.getpid()) == os.getpid()  # a lambda does not pickle
    assert helper.call(os.getpid) == pid  # and the helper still serves


def test_a_changed_home_gets_its_own_helper_and_off_is_read_each_call(home, tmp_path, monkeypatch):
    _, pid = home
    monkeypatch.setenv(helper.MODE_ENV, "off")
    assert helper.call(os.getpid) == os.getpid()  # even while connected to a helper
    monkeypatch.setenv(helper.MODE_ENV, "on")
    other = tmp_path / "other-home"
    other.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(other))
    second = helper.call(os.getpid)
    assert second not in (pid, os.getpid())
    helper.shutdown()
    assert helper.stop(other) == second and _gone(second)


def test_a_call_the_helper_cannot_load_runs_here_and_the_helper_stays(home, monkeypatch):
    _, pid = home
    module = types.ModuleType("curate_test_only_module")  # importable here, not in the helper
    exec("import os\ndef where():\n    return os.getpid()\n", module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    assert helper.call(module.where) == os.getpid()
    assert helper.call(os.getpid) == pid


def test_a_helper_that_left_before_the_first_call_is_started_again(home, monkeypatch):
    folder, pid = home
    helper.shutdown()
    helper.start(_gx.warm)  # finds it running; then this "run" loads models for longer than the idle time
    assert _gone(pid)  # idle for 2 s with no client: it left
    second = helper.call(os.getpid)
    assert second not in (pid, os.getpid())
    helper.shutdown()
    assert helper.stop(folder) == second and _gone(second)


def _slow() -> int:
    time.sleep(5)
    return os.getpid()


def test_a_helper_that_does_not_answer_in_time_is_not_waited_for_again(home, monkeypatch):
    _, pid = home
    monkeypatch.setenv(helper.CALL_TIMEOUT_ENV, "0.5")
    assert helper.call(_slow) == os.getpid()  # ran here after the helper's silence
    assert not helper.running() and helper.call(os.getpid) == os.getpid()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, DagsterExecutionInterruptedError])
def test_an_interrupted_call_leaves_no_answer_for_the_next(home, tmp_path, interrupt):
    """Ctrl-C, or Dagster's interrupt inside a step (both BaseException), while the helper computes: its
    answer must never be taken for a later call's (a check would report another check's outcome)."""
    _, pid = home
    computing = tmp_path / "computing"

    def on_alarm(*_):
        if not computing.exists():  # the helper has not started it yet: look again shortly
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        raise interrupt()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(interrupt):
            helper.call(subprocess.check_output, ["sh", "-c", f"touch '{computing}'; sleep 3; echo interrupted call"],
                        text=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert helper.call(os.getpid) == pid  # its own answer, and from the helper still
    assert [o.success for o in _gx.validate(_frame(), SPECS)] == [False, False]
    assert helper.call(str.upper, "third") == "THIRD"


def test_an_answer_to_another_call_is_never_returned(home):
    """Should an answer be left unread on a connection anyway, the next call notices by its number,
    and gets its own answer on a fresh connection."""
    _, pid = home
    conn = helper._CLIENT._connection()  # this thread's connection: a call sent, its answer never read
    conn.send(0)
    conn.send_bytes(ForkingPickler.dumps((str.upper, ("stale",), {})))
    assert helper.call(os.getpid) == pid
    assert helper.call(str.upper, "own") == "OWN"


def test_a_client_of_the_old_wire_format_is_closed_on_not_left_waiting(home):
    """A process that imported the code from before an upgrade (a call: one pickled message) reaching a
    helper of today's code: the helper closes the connection (the caller runs the call itself) instead of
    waiting for a second message while the caller waits for its answer."""
    conn = helper._CLIENT._connection()
    conn.send((str.upper, ("old",), {}))  # the old format: function and arguments, no call number
    assert conn.poll(60), "the helper left the old client waiting"
    with pytest.raises(EOFError):
        conn.recv()
    helper._CLIENT.close_mine()
    assert helper.call(str.upper, "new") == "NEW"


def test_changed_code_gets_its_own_helper(home, monkeypatch):
    folder, _ = home
    before = helper.address(folder)
    monkeypatch.setattr(helper, "_code_key", lambda: "another-version")
    assert helper.address(folder) != before


def test_a_dead_helper_is_replaced_once_then_the_checks_run_here(home, monkeypatch):
    folder, pid = home
    os.kill(pid, 9)
    assert _gone(pid)
    outcomes = _gx.validate(_frame(), SPECS)  # no error: a fresh helper answers
    assert [o.success for o in outcomes] == [False, False]
    second = helper.call(os.getpid)
    assert second not in (pid, os.getpid())
    monkeypatch.setattr(helper, "_start_server", lambda *args: False)  # no helper can start now
    monkeypatch.setattr(helper, "START_TIMEOUT_S", 1.0)
    os.kill(second, 9)
    assert _gone(second)
    outcomes = _gx.validate(_frame(), SPECS)  # GX runs in this process instead
    assert [o.success for o in outcomes] == [False, False]
    assert not helper.running() and helper.call(os.getpid) == os.getpid()


def test_an_idle_helper_leaves_and_removes_its_socket(home):
    folder, pid = home
    sock = helper.address(folder)
    assert sock.exists()
    helper.shutdown()  # no client left: it leaves after CURATE_HELPER_IDLE_S (2 s here)
    assert _gone(pid)
    assert not sock.exists() and not sock.with_suffix(".key").exists()


def test_stop_ends_the_homes_helper(home):
    folder, pid = home
    helper.shutdown()
    assert helper.stop(folder) == pid
    assert _gone(pid)
    assert helper.stop(folder) is None


def test_off_or_without_a_home_everything_runs_here(tmp_path, monkeypatch):
    helper.shutdown()
    monkeypatch.setattr(helper, "_GAVE_UP", set())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv(helper.MODE_ENV, "off")
    assert helper.call(os.getpid) == os.getpid() and not helper.running()
    monkeypatch.setenv(helper.MODE_ENV, "on")
    monkeypatch.delenv("DAGSTER_HOME")
    assert helper.call(os.getpid) == os.getpid() and not helper.running()


CALLER = "import os\nfrom curation_pipeline import helper\nprint(helper.call(os.getpid), os.getpid())"


def _call_from_another_process(**env: str) -> tuple[int, int]:
    """``helper.call(os.getpid)`` from a new process of the home: who answered, and that process's pid."""
    caller = subprocess.Popen([sys.executable, "-c", CALLER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, **env})
    try:
        out, err = caller.communicate(timeout=300)  # a generous bound on a hang, not a measure of speed
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.communicate()
    assert caller.returncode == 0, err[-2000:]
    answered, mine = map(int, out.split())
    return answered, mine


def test_a_client_that_connects_and_stalls_holds_up_no_other(home):
    """A run stopped (Ctrl-Z) or frozen in the middle of the key handshake: the others are still served."""
    folder, pid = home
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        stalled.connect(str(helper.address(folder)))  # and never answers the helper's challenge
        # a timeout far beyond any handshake, so only a helper that never gets to it makes the caller run it
        answered, _ = _call_from_another_process(CURATE_HELPER_CONNECT_TIMEOUT_S="250")
        assert answered == pid
    finally:
        stalled.close()


def _state(pid: int) -> str:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


def test_a_stopped_helper_is_not_waited_for(home):
    """Its socket still takes connections (the kernel queues them), but it never answers: the call runs
    in the caller once connecting times out, and the helper serves again once continued."""
    _, pid = home
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while _state(pid) != "T":  # stopped for sure: a helper still running could answer first
            assert time.monotonic() < deadline, _state(pid)
            time.sleep(0.02)
        answered, caller = _call_from_another_process(CURATE_HELPER_CONNECT_TIMEOUT_S="1")
        assert answered == caller
    finally:
        os.kill(pid, signal.SIGCONT)
    assert helper.call(os.getpid) == pid  # this process's connection, made before the stop
