"""A warm helper process for the slow-to-import, pure library the steps' checks call (Great
Expectations): its import leaves the runs' critical path, and is paid once, not once per run.

One helper serves every run of a Dagster home. ``curate run`` starts it first thing unless one is
running, so GX is imported on another core while the run starts; later runs, runs side by side and
the UI's runs find it warm (a UI run that finds none starts one at its first check). It listens on
a Unix socket in a folder only its user can open, answers only clients that know the key beside the
socket (multiprocessing's HMAC handshake), runs the package it was started from (changed code gets
a new helper), and leaves after ``CURATE_HELPER_IDLE_S`` seconds (120) with no client connected, or
once its home is gone. ``call`` runs a function there (plain values in and out, so it gives what it
gives here), or here: without a home, with ``CURATE_HELPER=off``, or when the helper cannot be
reached (connecting gives up after ``CURATE_HELPER_CONNECT_TIMEOUT_S``, 20: a stopped helper still
queues connections; a client that stalls in the handshake holds up only its own). What the warm-up defers
(``deferred``: GX's scipy) runs once no call has been in flight for ``CURATE_HELPER_QUIET_S`` (1); should
that fail, the helper refuses every call (each runs in its caller) and leaves after its idle time.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from importlib import import_module
from pathlib import Path
from typing import Callable, NoReturn, TypeVar

T = TypeVar("T")

MODE_ENV, IDLE_ENV, CALL_TIMEOUT_ENV = "CURATE_HELPER", "CURATE_HELPER_IDLE_S", "CURATE_HELPER_CALL_TIMEOUT_S"
CONNECT_TIMEOUT_ENV, QUIET_ENV = "CURATE_HELPER_CONNECT_TIMEOUT_S", "CURATE_HELPER_QUIET_S"
DEFAULT_IDLE_S = 120.0
DEFAULT_CALL_TIMEOUT_S = 900.0  # a call with no answer by then: the helper is wedged, run it here
# connecting and the key handshake, each step: a helper (or, for the helper, a client) silent that long
# is stopped or wedged, though its socket still takes connections
DEFAULT_CONNECT_TIMEOUT_S = 20.0
START_TIMEOUT_S = 20.0  # a started helper binds its socket within this (before its heavy imports)
READY_TIMEOUT_S = 300.0  # the helper's warm-up (GX's import) finishes within this, or calls run in the runs
# what the warm-up left for later runs once no call has been in flight this long since it ended: a run's
# calls come tens of milliseconds apart in its deciding steps, seconds apart while it scores
DEFAULT_QUIET_S = 1.0
PACKAGE = Path(__file__).resolve().parent
# the modules whose functions run in the helper: a change to any of them starts a new helper
SERVED = ("helper.py", "values.py", "deferred.py", "validation/_gx.py")

_LOCK = threading.Lock()
_CLIENT: _Client | None = None
_GAVE_UP: set[str] = set()  # helpers (sockets) this process could not reach: their calls run here


class Unreachable(RuntimeError):
    """The helper did not answer (not started, died, wedged, or refused us): the call runs here."""


class NoAnswer(Unreachable):
    """The helper took the call but did not answer in time: wedged, so not tried again."""


class NotSendable(RuntimeError):
    """The call, its answer or its error does not travel (pickling), or the helper is not ready: it runs here."""


class _Refused(Exception):
    """In the helper: a call it will not run (its warm-up failed), answered as not sendable."""


def _code_key() -> str:
    digest = hashlib.sha256(f"{sys.prefix}|{sys.version}".encode())  # the environment, whichever python links to it
    for name in SERVED:
        digest.update((PACKAGE / name).read_bytes())
    return digest.hexdigest()[:16]


# A socket's path must fit ``sockaddr_un`` (108 bytes on Linux, 104 on macOS, the NUL included), and the
# longest name bound in the folder is the warm start's ``fork-<20 hex>.<pid>.bind`` (38 characters).
SOCKET_PATH_MAX = 103
LONGEST_SOCKET_NAME = 38


def _folder() -> Path:
    """``$TMPDIR/curate-helper-<uid>``, mode 0700: refused if another user owns it or can open it. Under
    a TMPDIR too long for a socket path (a test's temp folder) it is ``/tmp/curate-helper-<uid>``: there
    no socket could be bound, and every run would start a server that dies at once."""
    folder = Path(tempfile.gettempdir()) / f"curate-helper-{os.getuid()}"
    if len(os.fsencode(folder)) + 1 + LONGEST_SOCKET_NAME > SOCKET_PATH_MAX and os.path.isdir("/tmp"):
        folder = Path("/tmp") / f"curate-helper-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise Unreachable(f"{folder} is not a private folder of this user")
    return folder


def address(home: str | os.PathLike) -> Path:
    """The helper's socket for this home and this code (a short name: socket paths are limited)."""
    name = hashlib.sha256(f"{Path(home).resolve()}|{_code_key()}".encode()).hexdigest()[:20]
    return _folder() / f"{name}.sock"


def enabled() -> bool:
    return (os.environ.get(MODE_ENV, "on").strip().lower() not in ("off", "0", "false", "no")
            and bool(os.environ.get("DAGSTER_HOME")) and hasattr(socket, "AF_UNIX"))


def _seconds(env: str, default: float) -> float:
    """Seconds from ``env`` (unset or empty: ``default``). A value that is not a positive number warns, naming
    the variable, and the default is used: the helper only saves time, so none of its settings fails a run."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if 0 < value < float("inf"):
        return value
    import warnings

    warnings.warn(f"environment variable {env}={raw!r} is not a positive number of seconds: using {default:g}",
                  stacklevel=2)
    return default


class _Client:
    """Connections (one per thread of this process) to the helper at ``sock``."""

    def __init__(self, sock: Path, home: Path, warm: Callable[[], object] | None = None):
        self.sock, self.home, self.warm = sock, home, warm
        self.local, self.opened = threading.local(), []
        self.started = threading.Event()
        self.failed = False  # the helper this client started died before it could serve

    def begin(self) -> None:
        """Start (or find) the helper in the background."""
        threading.Thread(target=self._start, name="curate-helper-start", daemon=True).start()

    def _start(self) -> None:
        try:
            self.failed = not _start_server(self.sock, self.home, self.warm)
        except Exception:  # noqa: BLE001 - shows as Unreachable at the first call, which then runs here
            self.failed = True
        finally:
            self.started.set()

    def close(self) -> None:
        for conn in self.opened:
            with contextlib.suppress(OSError):
                conn.close()

    def close_mine(self) -> None:
        conn = getattr(self.local, "conn", None)
        self.local.conn = None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self.opened.remove(conn)
                conn.close()

    def _connection(self):
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            return conn
        if not self.started.wait(START_TIMEOUT_S + 5) or self.failed:
            raise Unreachable(f"no helper could be started at {self.sock}")
        restarted = False
        while True:
            try:
                conn = dial(self.sock)
                break
            except NoAnswer:
                raise
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                # it left (idle) before this run's first call: start a fresh one, once
                if restarted or self.warm is None or not _start_server(self.sock, self.home, self.warm):
                    raise Unreachable(f"no helper at {self.sock}: {exc}") from exc
                restarted = True
            except Exception as exc:  # noqa: BLE001 - refused handshake, odd file: never fatal
                raise Unreachable(f"helper at {self.sock} refused the connection: {exc}") from exc
        self.local.conn = conn
        self.opened.append(conn)
        return conn

    def call(self, fn, args, kwargs):
        from multiprocessing.reduction import ForkingPickler

        try:
            request = ForkingPickler.dumps((fn, args, kwargs))  # as ``Connection.send`` pickles
        except Exception as exc:  # noqa: BLE001 - not picklable (nothing is sent): run it here
            raise NotSendable(str(exc)) from exc
        conn = self._connection()
        # each call's number comes back with its answer: an answer to another call is never returned
        self.local.number = number = getattr(self.local, "number", 0) + 1
        answered = False
        try:
            conn.send(number)
            conn.send_bytes(request)
            if not conn.poll(_seconds(CALL_TIMEOUT_ENV, DEFAULT_CALL_TIMEOUT_S)):
                raise NoAnswer(f"the helper at {self.sock} did not answer in time")
            reply = conn.recv()
            answered = True
        except (EOFError, OSError) as exc:
            raise Unreachable(f"the helper at {self.sock} went away: {exc}") from exc
        except Unreachable:
            raise
        except Exception as exc:  # noqa: BLE001 - an answer or error that does not unpickle here
            raise NotSendable(str(exc)) from exc
        finally:
            # its answer unread (no answer in time, an answer that does not unpickle, or an interrupt:
            # Ctrl-C, or Dagster's interrupt of a step, both BaseException): it may still come, and
            # would be the next call's, so this connection is never read again
            if not answered:
                self.close_mine()
        if not (isinstance(reply, tuple) and len(reply) == 3):  # a helper of another wire format (an upgrade)
            self.close_mine()
            raise Unreachable(f"the helper at {self.sock} speaks another wire format")
        answers, status, value = reply
        if answers != number:
            self.close_mine()
            raise Unreachable(f"the helper at {self.sock} answered call {answers}, not call {number}")
        if status == "error":
            raise value
        if status == "unsendable":
            raise NotSendable(value)
        return value


def _limit(raw: socket.socket, seconds: float) -> None:
    """Bound each blocking connect, send and receive on ``raw`` (0: no bound). The kernel's timeouts,
    not ``settimeout``: that makes the descriptor non-blocking, which multiprocessing's Connection cannot read."""
    whole = int(seconds)
    micro = int((seconds - whole) * 1e6) or (1 if seconds > 0 and not whole else 0)
    value = struct.pack("ll", whole, micro)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, (BlockingIOError, TimeoutError))  # EAGAIN once a kernel timeout expires


def dial(sock: Path):
    """A connection to the helper at ``sock`` past its key handshake (multiprocessing's ``Client``, with
    a timeout): ``NoAnswer`` when the helper takes longer than CURATE_HELPER_CONNECT_TIMEOUT_S at any step."""
    from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

    key = sock.with_suffix(".key").read_bytes()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        raw.setblocking(True)  # whatever socket.setdefaulttimeout says: the Connection reads it blocking
        _limit(raw, _seconds(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT_S))
        conn = Connection(os.dup(raw.fileno()))  # shares the socket's options: ``raw`` lifts the bound below
        try:
            raw.connect(str(sock))
            answer_challenge(conn, key)
            deliver_challenge(conn, key)
            _limit(raw, 0)  # from here, a call waits for its answer under CURATE_HELPER_CALL_TIMEOUT_S
        except BaseException as exc:
            conn.close()
            if _timed_out(exc):
                raise NoAnswer(f"the helper at {sock} did not take the connection in time (stopped?)") from exc
            raise
        return conn
    finally:
        raw.close()


def _start_server(sock: Path, home: Path, warm: Callable[[], object]) -> bool:
    """Start a helper for ``sock`` unless one answers there; True once one answers or its socket
    exists, False if the started one died first."""
    import fcntl

    with open(sock.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time: side-by-side runs share one helper
        if _answers(sock):
            return True
        sock.unlink(missing_ok=True)  # a dead helper's socket
        key = sock.with_suffix(".key")
        tmp = key.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(os.urandom(32))
        tmp.chmod(0o600)
        os.replace(tmp, key)
        # from the package's own folder, so ``-m`` imports this package (the one the socket is keyed
        # on), never one in the caller's working directory
        process = subprocess.Popen(
            [sys.executable, "-m", "curation_pipeline.helper", str(sock), str(home),
             f"{warm.__module__}:{warm.__qualname__}"], cwd=str(PACKAGE.parent),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)  # outlives this run, never its terminal
        deadline = time.monotonic() + START_TIMEOUT_S
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _limit(probe, _seconds(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT_S))
        probe.connect(str(sock))
        return True
    except OSError as exc:
        # a queue still full after the timeout: there, but not accepting (stopped); not replaced, as a
        # busy one must not be, and its calls time out and run in their runs
        return _timed_out(exc)
    finally:
        probe.close()


def start(warm: Callable[[], object]) -> None:
    """Make sure a helper serves this home, starting one (it runs ``warm`` first) in the background
    unless one is running; returns at once."""
    global _CLIENT
    if not enabled():
        return
    home = Path(os.environ["DAGSTER_HOME"]).resolve()
    with _LOCK:
        if _CLIENT is not None and _CLIENT.home == home:
            return
        try:
            sock = address(home)
        except (OSError, Unreachable):
            return
        if str(sock) in _GAVE_UP:
            return
        if _CLIENT is not None:  # DAGSTER_HOME changed (a notebook, a test): that home's helper instead
            _CLIENT.close()
        _CLIENT = _Client(sock, home, warm)
        _CLIENT.begin()


def check_settings() -> None:
    """Read every seconds setting once in the caller's process (``curate run``), so a malformed one warns
    where the user sees it, not only in the log of a helper started in the background."""
    for env, default in ((IDLE_ENV, DEFAULT_IDLE_S), (CALL_TIMEOUT_ENV, DEFAULT_CALL_TIMEOUT_S),
                         (CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT_S), (QUIET_ENV, DEFAULT_QUIET_S)):
        _seconds(env, default)


def running() -> bool:
    return _CLIENT is not None


def call(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` in the helper when one serves (or can be started for) this home, else here.
    A helper that cannot be reached is tried again once (fresh), then not by this process."""
    global _CLIENT
    if not enabled():  # read each time: a process may change DAGSTER_HOME or CURATE_HELPER
        return fn(*args, **kwargs)
    from curation_pipeline.validation._gx import warm

    if _CLIENT is None or _CLIENT.home != Path(os.environ["DAGSTER_HOME"]).resolve():
        start(warm)  # a UI run's first check: start one now, so the next runs find it warm
    for attempt in (1, 2):  # a helper that left as this run reached it: start a fresh one, once
        client = _CLIENT
        if client is None:
            break
        try:
            result = client.call(fn, args, kwargs)
        except NotSendable:
            return fn(*args, **kwargs)
        except Unreachable as exc:
            last = attempt == 2 or isinstance(exc, NoAnswer)
            with _LOCK:
                if _CLIENT is client:
                    _CLIENT = None
                    client.close()
                if last:
                    _GAVE_UP.add(str(client.sock))
            if last:
                break
            start(warm)
        else:
            return result
    return fn(*args, **kwargs)


def shutdown() -> None:
    """Disconnect (the helper stays up for the next run, until it has been idle for long enough) and
    forget the helpers this process gave up on."""
    global _CLIENT
    with _LOCK:
        client, _CLIENT = _CLIENT, None
        _GAVE_UP.clear()
    if client is not None:
        client.close()


def _name(fn) -> tuple:
    return getattr(fn, "__qualname__", None), getattr(getattr(fn, "__code__", None), "co_filename", None)


def _leave() -> int:
    """Run in the helper: answer, then exit."""
    threading.Timer(0.05, os._exit, (0,)).start()
    return os.getpid()


def stop(home: str | os.PathLike) -> int | None:
    """Stop the helper serving ``home`` (e.g. to measure a cold start); its pid, or None if none ran."""
    home = Path(home).resolve()
    sock = address(home)
    if not _answers(sock):
        return None
    client = _Client(sock, home)
    client.started.set()
    try:
        return client.call(_leave, (), {})
    except (Unreachable, NotSendable):
        return None
    finally:
        client.close()


# --- the helper process itself --------------------------------------------------------------


def serve(sock: Path, home: Path, warm: Callable[[], object], idle_s: float, quiet_s: float) -> None:
    """Answer calls once ``warm`` has run; if it returns a function (what it left for later), run that
    once no call has been in flight for ``quiet_s``, calls that come meanwhile waiting for it."""
    import fcntl
    from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
    from multiprocessing.reduction import ForkingPickler

    key = sock.with_suffix(".key").read_bytes()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))  # the socket exists from here on
    listener.listen(64)
    handshake_s = _seconds(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT_S)
    mine = sock.stat().st_ino
    ready = threading.Event()
    state = {"clients": 0, "since": time.monotonic()}
    guard = threading.Lock()
    # calls run side by side, never beside the warm-up's later part: {"calls": in flight, "later": running
    # it, "last": when the last call, or the warm-up, ended, "failed": why the later part failed, if it did}
    work = {"calls": 0, "later": False, "last": time.monotonic(), "failed": ""}
    gate = threading.Condition()

    def run(fn, args, kwargs):
        with gate:
            gate.wait_for(lambda: not work["later"])
            if work["failed"] and _name(fn) != _name(_leave):  # ``stop`` still ends it (this module runs as
                raise _Refused(work["failed"])  # __main__ here: the call's ``_leave`` is another object)
            work["calls"] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with gate:
                work["calls"] -= 1
                work["last"] = time.monotonic()

    def leave() -> NoReturn:  # clients see the connection close and run their calls themselves (or start another)
        with contextlib.suppress(OSError):
            if sock.stat().st_ino == mine:  # not a newer helper's
                sock.unlink()
        os._exit(1)

    def run_later(later: Callable[[], object]) -> bool:
        """Run ``later`` if no call has been in flight for quiet_s; whether it ran. If it fails, a module
        that failed to run stays half-run in this process: every call is refused from then on (each runs in
        its caller, which keeps this helper, so no new one is started for each call to fail the same way),
        until the idle time has passed since the failure and the helper leaves."""
        with gate:
            if work["calls"] or time.monotonic() - work["last"] < quiet_s:
                return False
            work["later"] = True
        failed = ""
        try:
            later()
        except BaseException as exc:  # noqa: BLE001 - the calls are refused, never served by half a warm-up
            failed = f"the helper's warm-up failed ({type(exc).__name__}: {exc})"[:500]
        gc.freeze()
        with gate:
            work["later"], work["failed"], work["last"] = False, failed, time.monotonic()
            gate.notify_all()
        return True

    def touch(change: int = 0) -> None:
        with guard:
            state["clients"] += change
            state["since"] = time.monotonic()

    def handle(raw: socket.socket) -> None:
        # the handshake here, in the connection's own thread and with a timeout (not in Listener.accept,
        # in the one accepting thread): a client that connects and stalls holds up only itself
        conn = None
        try:
            raw.setblocking(True)
            _limit(raw, handshake_s)
            conn = Connection(os.dup(raw.fileno()))
            try:
                deliver_challenge(conn, key)
                answer_challenge(conn, key)
            except Exception:  # noqa: BLE001 - a wrong key, a probe, a client that stalled: never served
                return
            _limit(raw, 0)  # a served client may wait as long as it likes between calls
            while True:
                try:  # a call: its number, then the pickled function and arguments (see ``_Client.call``)
                    number = conn.recv()
                    if type(number) is not int:  # a client of another wire format (code from before an
                        return  # upgrade): the connection closed, it runs the call itself, never waits
                    request = conn.recv_bytes()
                except Exception:  # noqa: BLE001 - gone, or a message of another format: closed as above
                    return
                try:
                    fn, args, kwargs = ForkingPickler.loads(request)
                except Exception as exc:  # noqa: BLE001 - a function this process cannot import
                    reply = ("unsendable", f"the helper cannot load the call: {exc}"[:500])
                else:
                    if not ready.wait(READY_TIMEOUT_S):
                        reply = ("unsendable", "the helper is still warming up")
                    else:
                        try:
                            reply = ("ok", run(fn, args, kwargs))
                        except _Refused as exc:
                            reply = ("unsendable", str(exc))
                        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
                            reply = ("error", exc)
                try:
                    conn.send((number, *reply))
                except (EOFError, OSError):
                    return
                except Exception as exc:  # noqa: BLE001 - an answer or error that does not pickle
                    conn.send((number, "unsendable",
                               f"the helper cannot send {type(reply[1]).__name__}: {exc}"[:500]))
                touch()
        finally:
            if conn is not None:
                conn.close()
            raw.close()
            touch(-1)  # a probe or a failed handshake too: someone looked for this helper, it is wanted

    def accept() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except Exception:  # noqa: BLE001 - out of descriptors, say
                time.sleep(0.01)
                continue
            touch(+1)
            threading.Thread(target=handle, args=(raw,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        later = warm()
    except BaseException:  # noqa: BLE001 - clients see the connection close and run their calls themselves
        leave()
    later = later if callable(later) else None
    gc.freeze()  # what the warm-up made lives as long as the helper: its collections skip it (``heap``)
    with gate:
        work["last"] = time.monotonic()
    ready.set()

    def idle() -> bool:
        with gate:  # a helper refusing every call since its idle time counts as idle, clients or not: the
            if work["failed"] and time.monotonic() - work["last"] > idle_s:  # next starts afresh (a passing
                return True  # failure heals; a lasting one costs a warm-up per idle time, not per call)
        with guard:
            return state["clients"] == 0 and time.monotonic() - state["since"] > idle_s

    while True:
        time.sleep(0.1 if later else 0.5)
        if later and run_later(later):
            later = None
        try:
            replaced = sock.stat().st_ino != mine
        except FileNotFoundError:
            replaced = True
        if replaced:  # a newer helper took the address: leave it alone
            break
        if idle() or not home.exists():
            with open(sock.with_suffix(".lock"), "a+") as lock:  # never while a new helper is being started
                fcntl.flock(lock, fcntl.LOCK_EX)
                if home.exists() and not idle():  # a run connected meanwhile: keep serving
                    continue
                with contextlib.suppress(OSError):
                    sock.unlink()  # no new client finds this helper from here on
                    keyfile = sock.with_suffix(".key")
                    if keyfile.read_bytes() == key:
                        keyfile.unlink()
            break
    os._exit(0)  # nothing to flush; tearing down an interpreter with GX loaded takes a second


def main(argv: list[str]) -> None:
    sock, home, warm = Path(argv[0]), Path(argv[1]), argv[2]
    module, name = warm.split(":")
    serve(sock, home, getattr(import_module(module), name), _seconds(IDLE_ENV, DEFAULT_IDLE_S),
          _seconds(QUIET_ENV, DEFAULT_QUIET_S))


if __name__ == "__main__":
    main(sys.argv[1:])
