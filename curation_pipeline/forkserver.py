"""A warm start for ``curate run`` and ``curate demo``: a server that has imported Dagster, the
definitions and the scorers once, and forks a child to run each command.

Those imports cost 1.5-3.5 s of every run on two cores, a third of a 1,000-pair text run. The
``curate`` process (the client) hands its arguments, working folder, environment and standard
streams to the server of its Python, its package code and its environment; the child runs the
command as the process itself would, with those streams, and the client exits with its exit code.
Signals sent to the client (Ctrl-C, SIGTERM, SIGHUP) go to the child, which ignores those the client
ignores; a client killed outright takes
its child with it. With no server, a run runs itself and, as it exits, starts one in the background
(its imports would take a core from the run); the next runs find it. The server answers only its
user (a private folder, and multiprocessing's HMAC handshake with the key beside the socket), logs
each command it serves beside its socket, and leaves after ``CURATE_HELPER_IDLE_S`` seconds (120)
with no run, once its ``DAGSTER_HOME`` is gone, or when a newer server takes its address.
``CURATE_FORKSERVER=off`` runs every command in its own process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

MODE_ENV = "CURATE_FORKSERVER"
RETRY_AFTER_FAILURE_S = 600.0  # a failed server (its import, its socket) is tried again after this
COMMANDS = ("run", "demo")  # the commands whose start is mostly imports
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# shell bookkeeping that differs between invocations without changing what the server imported, and
# the helpers' timeouts, read only when a connection or call is made (the child takes the client's)
VOLATILE_ENV = ("_", "PWD", "OLDPWD", "SHLVL", MODE_ENV, "CURATE_HELPER_CONNECT_TIMEOUT_S",
                "CURATE_HELPER_CALL_TIMEOUT_S")
# the pipeline's own settings (CURATION_RAW, CURATION_WAREHOUSE, CURATION_THREADS, ...) are read by each run from
# the environment the child takes on, never at import: one server serves them all (a loop over warehouses started
# a server per warehouse, none of them used). CURATION_AUTOMATION is read at import (sensors' default status)
RUNTIME_ENV_PREFIX, IMPORT_TIME_SETTINGS = "CURATION_", ("CURATION_AUTOMATION",)
PACKAGE = Path(__file__).resolve().parent


def enabled() -> bool:
    return (os.environ.get(MODE_ENV, "on").strip().lower() not in ("off", "0", "false", "no")
            and hasattr(os, "fork") and hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds"))


def _fingerprint() -> str:
    """What a server must share with its clients: the interpreter, every module file of this package,
    the installed packages (an install changes a ``sys.path`` folder), the environment (libraries read
    some variables at import: HF_HUB_OFFLINE, GX_ANALYTICS_ENABLED, PYTHONPATH, ...) but for the pipeline's
    run-time settings, the namespaces, the control group and the credentials."""
    digest = hashlib.sha256(f"{sys.executable}|{sys.version}|{sys.flags}".encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        info = path.stat()
        digest.update(f"{path}|{info.st_mtime_ns}|{info.st_size}".encode())
    for entry in sys.path:  # an install or removal changes its site-packages folder
        stamp = ""
        if entry.endswith(("site-packages", "dist-packages")):
            with contextlib.suppress(OSError):
                stamp = str(os.stat(entry).st_mtime_ns)
        digest.update(f"{entry}|{stamp}".encode())
    env = sorted((k, v) for k, v in os.environ.items() if k not in VOLATILE_ENV
                 and (not k.startswith(RUNTIME_ENV_PREFIX) or k in IMPORT_TIME_SETTINGS))
    digest.update(repr(env).encode())
    digest.update(_confinement().encode())
    return digest.hexdigest()[:20]


def _confinement() -> str:
    """The namespaces (network, mounts, ...), control group and credentials (groups after ``newgrp``, capabilities,
    no_new_privs, seccomp, the security label) of this process: a child of a server elsewhere (a run inside
    ``unshare -n``, a container sharing /tmp, a shell whose group changed) would run outside them."""
    parts = [f"{os.getuid()}:{os.geteuid()}:{os.getgid()}:{os.getegid()}:{sorted(os.getgroups())}"]
    for ns in ("net", "mnt", "pid", "user", "uts", "ipc", "cgroup"):
        with contextlib.suppress(OSError):
            parts.append(os.readlink(f"/proc/self/ns/{ns}"))
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/self/cgroup").read_text())
    with contextlib.suppress(OSError):
        parts += [line for line in Path("/proc/self/status").read_text().splitlines()
                  if line.startswith(("Cap", "NoNewPrivs", "Seccomp"))]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/self/attr/current").read_text())
    return "|".join(parts)


def address() -> Path:
    from curation_pipeline.helper import _folder  # the helpers' private folder

    return _folder() / f"fork-{_fingerprint()}.sock"


# --- the client: the `curate` process ---------------------------------------------------------


def delegate(argv: list[str]) -> int | None:
    """Run ``argv`` (a ``curate`` command line) in a child of the warm server; its exit code, or None
    when it must run here: not a run, switched off, or no server ready (one is started for the next)."""
    if len(argv) < 2 or argv[1] not in COMMANDS or not enabled():
        return None
    try:
        sock = address()
        conn = _connect(sock)
    except Exception:  # noqa: BLE001 - any trouble reaching the server: this run runs here
        return None
    if conn is None:  # started as this run ends: its imports would take a core from this run
        import atexit

        # in the environment the address was made from, not the one the run leaves (CURATION_THREADS its --set made)
        atexit.register(_start_quietly, sock, dict(os.environ))
        return None
    return _relay(conn, argv)


def _start_quietly(sock: Path, env: dict[str, str]) -> None:
    """``env``: the environment the address was made from, with the Dagster home the run used, as an absolute path
    (the server runs in another folder: a relative one would name another home, a default one none)."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        env = {**env, "DAGSTER_HOME": os.path.abspath(home)}
    with contextlib.suppress(Exception):
        _start_server(sock, env)


def _connect(sock: Path):
    """A connection past the key handshake; None when the server left (start another). A server that
    does not answer within CURATE_HELPER_CONNECT_TIMEOUT_S (stopped, wedged: its socket still queues
    connections) raises ``helper.NoAnswer``, and this run runs in its own process instead of waiting."""
    from curation_pipeline.helper import dial

    if not sock.exists():
        return None
    try:
        return dial(sock)
    except (FileNotFoundError, ConnectionRefusedError):  # it left as we came: start another
        return None


def _relay(conn, argv: list[str]) -> int | None:
    """Send the command and the standard streams, forward signals to the child, return its code."""
    state: dict = {"pid": None, "signal": None, "stop": False}

    def forward(signum, _frame):
        state["signal"] = signum
        if state["pid"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(state["pid"], signum)

    def suspend(_signum, _frame):
        """Ctrl-Z: the run stops with this process (the shell sees one job), and goes on when it does."""
        if not state["pid"]:  # the child is not known yet: both stop as soon as it is
            state["stop"] = True
            return
        state["stop"] = False
        with contextlib.suppress(ProcessLookupError):
            os.kill(state["pid"], signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stopped here until the shell continues this process
        signal.signal(signal.SIGTSTP, suspend)
        with contextlib.suppress(ProcessLookupError):
            os.kill(state["pid"], signal.SIGCONT)

    # a signal this process ignores (started in the background, under nohup) stays ignored, in the child too
    previous = {s: signal.getsignal(s) for s in FORWARDED}
    for s, handler in previous.items():
        if handler != signal.SIG_IGN:
            signal.signal(s, forward)
    # only a default SIGTSTP stops this process; one handled or ignored by whoever started it stays so
    previous_tstp = signal.getsignal(signal.SIGTSTP)
    if previous_tstp == signal.SIG_DFL:
        signal.signal(signal.SIGTSTP, suspend)

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.signal(signal.SIGTSTP, previous_tstp)

    try:
        conn.send({"argv": list(argv), **_context(), "ignored": [s.name for s, h in previous.items() if h == signal.SIG_IGN]})
        fds = [fd for fd in (0, 1, 2) if _is_open(fd)]
        with socket.socket(fileno=os.dup(conn.fileno())) as raw:
            socket.send_fds(raw, [bytes(fd in fds for fd in (0, 1, 2))], fds)
        kind, pid = conn.recv()
        if kind != "pid":  # the child died (a signal) before its command started
            raise EOFError(kind)
    except Exception:  # noqa: BLE001 - nothing ran yet: run here (and take a signal that came meanwhile)
        conn.close()
        restore()
        if state["signal"] is not None:
            os.kill(os.getpid(), state["signal"])
        if state["stop"]:
            os.kill(os.getpid(), signal.SIGTSTP)
        return None
    killed = None
    try:
        state["pid"] = pid  # before the checks below: a signal from here on finds the child itself
        if state["signal"] is not None:  # came before the child was known
            forward(state["signal"], None)
        if state["stop"]:
            suspend(signal.SIGTSTP, None)
        while True:
            try:
                kind, value = conn.recv()
            except (EOFError, OSError):
                break
            if kind == "exit":
                return int(value)
            if kind == "killed":  # from the server, which reaped the child: its wait status's signal
                killed = int(value)
                break
    finally:
        conn.close()
        restore()
    if killed is not None:
        return _die_of(killed)
    if state["signal"] is not None:  # the child died of a forwarded signal: so does this process
        signal.signal(state["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), state["signal"])
    print("curate: the run's process ended without an exit status (killed?)", file=sys.stderr)
    return 1


def _die_of(signum: int) -> int:
    """End as the run ended, killed by ``signum`` (the OOM killer's SIGKILL, a crash's SIGSEGV), as the
    command in its own process would: a shell shows 128+signum, a parent sees the signal. No core of
    this process: the run's (if any) is the one that tells."""
    import resource

    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    with contextlib.suppress(OSError, ValueError):  # SIGKILL cannot be handled: it is at its default
        signal.signal(signum, signal.SIG_DFL)
    with contextlib.suppress(OSError, ValueError):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)
    return 128 + signum  # a signal that ends no process by default: the shell's code for it


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _context() -> dict:
    """Everything about this process that its command's run must inherit besides its streams."""
    import resource

    umask = os.umask(0o022)
    os.umask(umask)
    limits = {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource)
              if name.startswith("RLIMIT_")}
    return {"cwd": os.getcwd(), "env": dict(os.environ), "umask": umask, "limits": limits,
            "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "nice": os.getpriority(os.PRIO_PROCESS, 0), "ioprio": _ioprio(), "oom_score_adj": _oom_score_adj()}


# ioprio_get / ioprio_set (no wrapper in Python or glibc): their numbers on the usual architectures
_IOPRIO_CALLS = {"x86_64": (252, 251), "aarch64": (31, 30), "i386": (290, 289), "i686": (290, 289)}
_IOPRIO_WHO_PROCESS, _IOPRIO_CLASS_SHIFT, _IOPRIO_CLASS_NONE = 1, 13, 0


def _ioprio_syscall(which: int, *args: int) -> int:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(ctypes.c_long(which), *(ctypes.c_int(a) for a in args))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def _ioprio() -> int | None:
    """This process's I/O priority (``ionice``: class and level), None where it cannot be read."""
    calls = _IOPRIO_CALLS.get(os.uname().machine)
    if calls is None or not sys.platform.startswith("linux"):
        return None
    try:
        return _ioprio_syscall(calls[0], _IOPRIO_WHO_PROCESS, 0)
    except (OSError, AttributeError):
        return None


def _set_ioprio(value: int) -> None:
    if value >> _IOPRIO_CLASS_SHIFT == _IOPRIO_CLASS_NONE:
        value = 0  # "none" (follow the CPU nice) is read with a level but set only without one
    _ioprio_syscall(_IOPRIO_CALLS[os.uname().machine][1], _IOPRIO_WHO_PROCESS, 0, value)


def _oom_score_adj() -> int | None:
    try:
        return int(Path("/proc/self/oom_score_adj").read_text())
    except (OSError, ValueError):
        return None


def _apply(context: dict) -> None:
    """Take on a client's context (in the child); raises if one part cannot be (e.g. a higher limit
    than the server's), and the client then runs the command itself."""
    import resource

    os.chdir(context["cwd"])
    os.umask(context["umask"])
    os.environ.clear()
    os.environ.update(context["env"])
    for name, limit in context["limits"].items():
        if resource.getrlimit(getattr(resource, name)) != tuple(limit):
            resource.setrlimit(getattr(resource, name), tuple(limit))
    if context["cpus"] is not None:
        os.sched_setaffinity(0, context["cpus"])
    if os.getpriority(os.PRIO_PROCESS, 0) != context["nice"]:
        os.setpriority(os.PRIO_PROCESS, 0, context["nice"])
    # ionice and choom: the server's are those of whichever run started it (an idle-I/O, OOM-first batch
    # job, say). Set only where they differ: lowering either may need a privilege the client had.
    ioprio, current = context.get("ioprio"), _ioprio()
    if ioprio is not None and current != ioprio and (current is None or (current | ioprio) >> _IOPRIO_CLASS_SHIFT):
        _set_ioprio(ioprio)  # (two "none" classes differ only in the level that class ignores)
    oom = context.get("oom_score_adj")
    if oom is not None and _oom_score_adj() != oom:
        Path("/proc/self/oom_score_adj").write_text(str(oom))
    # the client's dispositions, not the server's (which has those of whatever started it): Python's
    # start-up defaults, or ignored where the client ignores the signal
    for s in FORWARDED:
        default = signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL
        signal.signal(s, signal.SIG_IGN if s.name in context.get("ignored", ()) else default)


def sock_log(sock: Path) -> Path:
    """One line per command the server at ``sock`` served: time, child pid, folder, command."""
    return sock.with_suffix(".log")


def sock_error(sock: Path) -> Path:
    """Why the last server for ``sock`` could not serve (its traceback); no new one starts for
    ``RETRY_AFTER_FAILURE_S`` after it."""
    return sock.with_suffix(".error")


def _start_server(sock: Path, env: dict[str, str] | None = None) -> None:
    """Start a server for ``sock`` in the background unless one is starting; never waits for it."""
    import fcntl

    env = dict(os.environ) if env is None else env
    _sweep(sock)
    with open(sock.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time: side-by-side runs start one server
        starting = sock.with_suffix(".starting")
        with contextlib.suppress(OSError, ValueError, KeyError):
            if _alive(**_owner(json.loads(starting.read_text()))):
                return  # one is importing
        if sock.exists() and _answers(sock):
            return
        with contextlib.suppress(OSError):  # the last one for this address failed: not one per run
            if time.time() - sock_error(sock).stat().st_mtime < RETRY_AFTER_FAILURE_S:
                return
        key = sock.with_suffix(".key")
        tmp = key.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(os.urandom(32))
        tmp.chmod(0o600)
        os.replace(tmp, key)
        # from the package's folder, so ``-m`` imports this package (the one the address is keyed on)
        process = subprocess.Popen([sys.executable, "-m", "curation_pipeline.forkserver", str(sock)],
                                   cwd=str(PACKAGE.parent), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True, env=env)
        home = env.get("DAGSTER_HOME")
        starting.write_text(json.dumps({"pid": process.pid, "started": _start_time(process.pid),
                                        "home": str(Path(home).resolve()) if home else None}))


STALE_AFTER_S = 86400.0  # an address no server has used for a day: its files are swept


def _sweep(keep: Path) -> None:
    """Remove the files of addresses whose server is gone and that no run has used for ``STALE_AFTER_S``
    (each code change or environment makes a new address): the folder is read whole by ``servers``."""
    now = time.time()
    for lock in keep.parent.glob("fork-*.lock"):
        stem = lock.with_suffix("")
        if stem == keep.with_suffix(""):
            continue
        with contextlib.suppress(OSError):
            files = [f for f in keep.parent.glob(f"{stem.name}.*") if f.name.split(".", 1)[0] == stem.name]
            if now - max(f.stat().st_mtime for f in files) < STALE_AFTER_S:
                continue
            owners = []
            for marker in (".json", ".starting"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    owners.append(_alive(**_owner(json.loads(stem.with_suffix(marker).read_text()))))
            if not any(owners):
                for f in files:
                    f.unlink(missing_ok=True)


def _start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): with the pid, it names one process, not whichever has that
    number now (pids wrap)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _owner(info: dict) -> dict:
    """The ``_alive`` arguments of a server's record (``.json``, ``.starting``)."""
    return {"pid": info["pid"], "started": info.get("started")}


def _answers(sock: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(sock))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def servers(home: str | os.PathLike | None = None, suffix: str = ".sock") -> list[Path]:
    """The sockets of the servers (of this user) that serve, of those for ``home`` when given; with
    ``suffix=".starting"``, the start markers of those still importing."""
    from curation_pipeline.helper import _folder

    found = []
    for sock in sorted(_folder().glob(f"fork-*{suffix}")):
        with contextlib.suppress(OSError, ValueError, KeyError):
            info = json.loads(sock.with_suffix(".json" if suffix == ".sock" else suffix).read_text())
            if (home is None or info["home"] == str(Path(home).resolve())) and _alive(**_owner(info)):
                found.append(sock.with_suffix(".sock"))
    return found


def wait_ready(home: str | os.PathLike, timeout_s: float = 180.0) -> list[Path]:
    """The serving servers for ``home`` once one serves, or ``[]`` as soon as none is serving or
    starting any more (it failed: ``failures`` says why) or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = servers(home)
        if found or time.monotonic() > deadline:
            return found
        if not servers(home, ".starting"):
            # none starting any more: failed, or it began serving (and dropped its start marker) between the
            # two looks, which a loaded machine makes likely enough to fail a benchmark now and then
            return servers(home)
        time.sleep(0.1)


def failures() -> dict[str, str]:
    """The recorded failures of this user's servers, by socket name: the traceback of each."""
    from curation_pipeline.helper import _folder

    found = {}
    for error in sorted(_folder().glob("fork-*.error")):
        with contextlib.suppress(OSError):
            found[error.with_suffix(".sock").name] = error.read_text()
    return found


def stop(home: str | os.PathLike, timeout_s: float = 30.0) -> int:
    """Make the servers for ``home`` leave, those still importing included (benchmarks measure a cold
    start so), and wait for them; how many there were. Runs they serve go on."""
    pids = []
    for sock in servers(home, ".starting"):  # not serving yet: nothing to lose
        with contextlib.suppress(OSError, ValueError, KeyError):
            info = json.loads(sock.with_suffix(".starting").read_text())
            if _alive(**_owner(info)):  # that process, not one that has its number since
                os.kill(info["pid"], signal.SIGTERM)
                pids.append(info["pid"])
    for sock in servers(home):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pids.append(json.loads(sock.with_suffix(".json").read_text())["pid"])
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()  # it notices within half a second
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
    return len(pids)


def _alive(pid: int, started: int | None = None) -> bool:
    """Whether ``pid`` runs (a zombie does not), and is the process that started at ``started`` where given."""
    if started is not None and _start_time(pid) not in (started, None):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie (its parent has not reaped it yet) is gone
        return open(f"/proc/{pid}/stat").read().split(") ")[-1][:1] != "Z"
    return True


# --- the server -------------------------------------------------------------------------------


def preload() -> None:
    """What every run imports: Dagster, the definitions and their resources, the instance storage and
    its empty run database, every scorer module (the caption patterns compile at import, the whole credit
    pattern here), the CLI, the warehouse's readers, the cleaner, duplicate grouping (SciPy), Pillow's
    format plugins. Not the model runtimes (ONNX Runtime, OpenCV, torch): they start threads of their own,
    which a fork would leave behind."""
    import dagster._core.execution.execute_in_process  # noqa: F401
    import dagster._core.executor.in_process  # noqa: F401
    import dagster._core.instance.runs.run_domain  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import upath.implementations.local  # noqa: F401
    from PIL import Image

    import curation_pipeline.cli  # noqa: F401
    import curation_pipeline.decisions.duplicate_groups  # noqa: F401
    import curation_pipeline.definitions  # noqa: F401
    import curation_pipeline.instance  # noqa: F401
    import curation_pipeline.rewriting.cleaner  # noqa: F401
    import curation_pipeline.validation._gx  # noqa: F401
    from curation_pipeline.captions import patterns
    from curation_pipeline.models import loading  # noqa: F401
    from curation_pipeline.reporting import charts  # noqa: F401
    from curation_pipeline.scoring.registry import scorer_classes
    from curation_pipeline.storage import warehouse  # noqa: F401

    scorer_classes()
    patterns.compile_credit_patterns()  # else compiled in each run, when a caption first needs them
    # the code location's definitions built once here, as importing them did before they were built on first use:
    # a run's own build then finds Dagster's and pydantic's caches warm (a bad CURATION_* variable is each run's
    # to report, or to override with --set)
    with contextlib.suppress(Exception):
        curation_pipeline.definitions.defs  # noqa: B018
    Image.init()
    curation_pipeline.instance.new_run_database()


def serve(sock: Path, idle_s: float) -> None:
    import gc
    import select

    from curation_pipeline import heap

    gc.disable()  # no collection may touch the imported objects before they are frozen
    preload()
    heap.freeze(heap.IMPORTED)  # the children's collections skip them: fewer copied pages, shorter collections
    key = sock.with_suffix(".key").read_bytes()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = sock.with_suffix(f".{os.getpid()}.bind")
    listener.bind(str(bound))
    listener.listen(16)
    home = os.environ.get("DAGSTER_HOME")
    info = sock.with_suffix(".json")
    info.write_text(json.dumps({"pid": os.getpid(), "started": _start_time(os.getpid()),
                                "home": str(Path(home).resolve()) if home else None}))
    os.replace(bound, sock)  # clients find it only now, warm
    mine = sock.stat().st_ino
    sock.with_suffix(".starting").unlink(missing_ok=True)
    sock_error(sock).unlink(missing_ok=True)
    # each child's client connection, kept until the child is reaped: only this process can see that
    # a signal killed the child (it sends nothing then), and it tells the client which
    children: dict[int, socket.socket] = {}
    # and whether its client is still there, watched here too: a child stopped with its client (Ctrl-Z) cannot
    # run its own watch (_die_with) when the client is then killed outright, and would hold its run forever.
    # Only hang-ups are asked for: the child's handshake on that connection is never read here
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    watched: dict[int, int] = {}  # client fd -> child pid
    since = time.monotonic()
    while True:
        for pid, client in list(children.items()):
            with contextlib.suppress(ChildProcessError):
                reaped, status = os.waitpid(pid, os.WNOHANG)
                if not reaped:
                    continue
                if os.WIFSIGNALED(status):
                    _tell_killed(client, os.WTERMSIG(status))
            if watched.pop(client.fileno(), None) is not None:
                poller.unregister(client)
            client.close()  # the client reads to the end of the connection: now it comes
            del children[pid]
            since = time.monotonic()  # idle from the end of the last run, not its start: a long run is no idle time
        events = dict(poller.poll(500))
        for fd, pid in list(watched.items()):
            if events.get(fd, 0) & (_HANGUP | select.POLLHUP | select.POLLERR):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # stopped or not (SIGKILL needs no SIGCONT); reaped above next
                poller.unregister(fd)
                del watched[fd]
        if events.get(listener.fileno(), 0) & select.POLLIN:
            client, _ = listener.accept()
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in children.values():  # other runs' connections: theirs ends with their child
                    other.close()
                gc.enable()
                _child(client, key, sock)  # never returns
            children[pid] = client
            poller.register(client, _HANGUP)
            watched[client.fileno()] = pid
            since = time.monotonic()
            continue
        try:
            taken, removed = sock.stat().st_ino != mine, False  # taken: a newer server has the address
        except FileNotFoundError:
            taken, removed = False, True  # stop(), or a cleaner of the folder
        gone = bool(home) and not os.path.isdir(home)
        if taken or removed or gone or (not children and time.monotonic() - since > idle_s):
            break
    # leave: clients that connected but were not taken find the connection reset and run themselves
    listener.close()
    if not taken:
        with contextlib.suppress(OSError):
            sock.unlink()
        sock_log(sock).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if sock.with_suffix(".key").read_bytes() == key:
                sock.with_suffix(".key").unlink()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(info.read_text())["pid"] == os.getpid():
                info.unlink()
    os._exit(0)  # runs still going go on (they need nothing of the server); init reaps them


# a peer's hang-up without reading its data (Linux); elsewhere only a full hang-up (POLLHUP, always reported)
_HANGUP = getattr(__import__("select"), "POLLRDHUP", 0)


def _tell_killed(client: socket.socket, signum: int) -> None:
    """Send the client of a child a signal killed a message as the child's own (``("killed", signum)``);
    never blocks the server (a client gone or not reading loses it)."""
    from multiprocessing.connection import Connection

    with contextlib.suppress(OSError, ValueError):
        client.setblocking(False)  # the child is gone: no one else uses this file description
        conn = Connection(os.dup(client.fileno()))
        try:
            conn.send(("killed", signum))
        finally:
            conn.close()


def _child(client: socket.socket, key: bytes, sock: Path) -> None:
    """In the forked child: take over the client's command, streams, folder and environment, run it,
    answer its exit code."""
    import threading
    from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

    try:
        conn = Connection(os.dup(client.fileno()))
        deliver_challenge(conn, key)
        answer_challenge(conn, key)
        request = conn.recv()
        flags, fds, _, _ = socket.recv_fds(client, 3, 3)
        streams = iter(fds)
        for target, present in zip((0, 1, 2), flags):
            fd = next(streams) if present else os.open(os.devnull, os.O_RDWR)
            os.dup2(fd, target)
            os.close(fd)
        _reopen_stdio()
        _apply(request)
        sys.argv = list(request["argv"])
    except BaseException:  # noqa: BLE001 - a context this child cannot take on: the client runs the command itself
        os._exit(1)
    code = 1
    try:  # whatever happens (a Ctrl-C at any point included), this process ends here, never in the server's loop
        conn.send(("pid", os.getpid()))  # from here on the client forwards its signals
        # logged after the pid went out: a signal sent to the client once the line shows reaches this run
        with contextlib.suppress(OSError), open(sock_log(sock), "a", encoding="utf-8") as log:
            log.write(f"{time.time():.3f} {os.getpid()} {request['cwd']} {' '.join(sys.argv)}\n")
        try:
            # the client never writes again: anything read means it is gone, and so is its run
            threading.Thread(target=_die_with, args=(client,), name="curate-client-watch", daemon=True).start()
            code = _run(sys.argv)
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # the command has ended: later signals wait
        from curation_pipeline import cli

        with contextlib.suppress(BaseException):
            cli.wind_down()
        with contextlib.suppress(BaseException):
            conn.send(("exit", code))
    finally:
        os._exit(code)


def _run(argv: list[str]) -> int:
    """The command, as the ``curate`` process would run it; its exit code."""
    from curation_pipeline import cli

    try:
        cli.main.main(args=argv[1:], prog_name=Path(argv[0]).name)
        return 0
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - as an uncaught exception in the process itself
        import traceback

        traceback.print_exc()
        return 1


def _die_with(client: socket.socket) -> None:
    with contextlib.suppress(OSError):
        client.recv(1)
    os.kill(os.getpid(), signal.SIGKILL)


def _reopen_stdio() -> None:
    """New stream objects on fds 0-2 (now the client's): buffering follows whether each is a terminal,
    as at a process's start."""
    sys.stdin = sys.__stdin__ = open(0, encoding=sys.stdin.encoding, closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = open(1, "w", encoding=sys.stdout.encoding, errors=sys.stdout.errors,  # noqa: SIM115
                                       buffering=1 if os.isatty(1) else -1, closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding=sys.stderr.encoding, errors="backslashreplace",  # noqa: SIM115
                                       buffering=1, closefd=False)


def main(argv: list[str]) -> None:
    from curation_pipeline.helper import DEFAULT_IDLE_S, IDLE_ENV, _seconds

    sock = Path(argv[0])
    try:
        serve(sock, _seconds(IDLE_ENV, DEFAULT_IDLE_S))
    except Exception:  # noqa: BLE001 - no one sees this process's streams: the failure is kept
        import traceback

        with contextlib.suppress(OSError):
            tmp = sock_error(sock).with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(traceback.format_exc())
            os.replace(tmp, sock_error(sock))
        with contextlib.suppress(OSError):
            sock.with_suffix(".starting").unlink()
        raise


if __name__ == "__main__":
    main(sys.argv[1:])
