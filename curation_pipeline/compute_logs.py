"""Dagster's local compute logs, mirrored to the terminal by a thread instead of four processes a run.

Dagster's ``LocalComputeLogManager`` points a run's stdout and stderr at files (the web UI's stdout/stderr
view reads them) and, to still show that output where the run was started, starts a ``tail -F`` for each
file plus a Python watcher for each tail (which kills it if the run dies): four processes started and
stopped again for every run, so twice for every shard ``curate run`` curates (about 0.05-0.1 s of a shard
on two cores). ``ThreadMirroredComputeLogManager`` writes the same files in the same folders, read by the
UI the same way, and mirrors them with a thread of the run's own process, which dies with it; it also
copies to the terminal what a run writes just before its capture ends, which a tail stopped within its
polling interval could drop (dagster-io/dagster#23336).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Generator, Sequence
from contextlib import contextmanager

from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._utils import ensure_file, touch_file

POLL_S = 0.1  # how soon output reaches the terminal (``tail -F`` polls every second without inotify)
CHUNK = 1 << 16


class ThreadMirroredComputeLogManager(LocalComputeLogManager):
    """``LocalComputeLogManager`` (its config, files and reads), each stream mirrored by ``mirrored``."""

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> ThreadMirroredComputeLogManager:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        outpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        errpath = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        with mirrored(sys.stdout, outpath), mirrored(sys.stderr, errpath):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # as Dagster's: the capture is complete


@contextmanager
def mirrored(stream, path: str) -> Generator[None, None, None]:
    """Within: ``stream``'s file descriptor writes to ``path`` (Dagster's ``redirect_to_file``: what the
    process and its children write, C libraries included), and a thread copies the file's new bytes to
    where the descriptor pointed before, from the file's start as ``tail -c +0`` does; on leaving, it copies
    the rest first. A stream without a descriptor (a test's captured stdout) is left as Dagster leaves it."""
    ensure_file(path)
    fd = _fileno(stream)
    if fd is None:
        with redirect_to_file(stream, path):
            yield
        return
    stream.flush()
    done = threading.Event()
    # the thread owns its copy of the descriptor and closes it: the number is never reused under it
    pump = threading.Thread(target=_copy, args=(path, os.dup(fd), done), name="compute-log-mirror", daemon=True)
    pump.start()
    try:
        with redirect_to_file(stream, path):
            yield
    finally:
        done.set()  # the descriptor points back at the terminal: the file holds all the run wrote
        pump.join()


def _copy(path: str, terminal: int, done: threading.Event) -> None:
    """Copies ``path``'s bytes to ``terminal`` as they come; once ``done``, up to the size the file had then:
    a child of the run that outlives it and still writes there (as to a ``tail`` stopped with the run) is
    not waited for."""
    writable, end = True, None
    try:
        with open(path, "rb") as source:
            while True:
                if end is None and done.is_set():
                    end = os.fstat(source.fileno()).st_size
                left = CHUNK if end is None else min(CHUNK, end - source.tell())
                chunk = source.read(left) if left > 0 else b""
                if chunk:
                    writable = writable and _write_all(terminal, chunk)
                elif end is not None:
                    return
                else:
                    done.wait(POLL_S)
    finally:
        os.close(terminal)


def _write_all(fd: int, data: bytes) -> bool:
    """Whether all of ``data`` went to ``fd``; a closed terminal (EPIPE) ends the mirroring, never the run,
    whose output the file still gets."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        return False
    return True


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None
