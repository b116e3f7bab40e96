"""A warm helper process for the slow-to-import, pure libraries a run's steps call (Great
Expectations, matplotlib), so their imports leave the run's critical path.

``curate run`` calls ``start`` first: the helper imports GX on another core while the run starts.
``call`` runs a function there (plain values in and out, so it gives what it gives here), or
here when no helper was started (the UI's runs, tests) or the helper died. Warm-ups queued with
``warm_later`` are sent once the helper has answered its first call, so they never delay it.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, TypeVar

T = TypeVar("T")

_LOCK = threading.Lock()
_POOL: ProcessPoolExecutor | None = None
_LATER: list[Callable[[], object]] = []


def _start_helper(parent: int, warm: Callable[[], object]) -> None:
    """Leave with the run, even one killed without a word (its queue never closes for us)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    warm()
    # registered last, so run first at exit: the helper holds nothing to flush, and tearing down an
    # interpreter with GX loaded takes about a second, which the run would wait for
    atexit.register(os._exit, 0)


def start(warm: Callable[[], object]) -> None:
    """Start the helper now; ``warm`` (a module-level function) runs there first."""
    global _POOL
    with _LOCK:
        if _POOL is None:
            import multiprocessing

            _POOL = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_helper,
                                        initargs=(os.getpid(), warm))
            _POOL.submit(int)  # the worker starts on the first task, not before
            atexit.register(shutdown)


def warm_later(warm: Callable[[], object]) -> None:
    """Run ``warm`` in the helper after its first answered call (nothing without a helper)."""
    with _LOCK:
        if _POOL is not None:
            _LATER.append(warm)


def running() -> bool:
    return _POOL is not None


def call(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` in the helper if there is one, else (or once it has died) here."""
    global _POOL
    pool = _POOL
    if pool is not None:
        try:
            result = pool.submit(fn, *args, **kwargs).result()
        except BrokenProcessPool:  # the helper died (e.g. killed for memory): everything runs here from now on
            with _LOCK:
                if _POOL is pool:
                    _POOL = None
        else:
            with _LOCK:
                later, _LATER[:] = list(_LATER), []
            for warm in later:
                pool.submit(warm)
            return result
    return fn(*args, **kwargs)


def shutdown() -> None:
    """Waits for the helper to leave: not waiting races multiprocessing's own exit handler, which
    can close the queue before the stop message is sent and then wait for the helper forever."""
    global _POOL
    with _LOCK:
        pool, _POOL = _POOL, None
        _LATER.clear()
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
