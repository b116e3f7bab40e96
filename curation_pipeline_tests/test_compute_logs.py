"""A run's stdout and stderr: in the files the web UI reads, and mirrored where the run was started, with
no process started for it."""

import os
import subprocess
import sys
import textwrap

import dagster as dg
import pytest

from curation_pipeline import compute_logs
from curation_pipeline.compute_logs import ThreadMirroredComputeLogManager, mirrored

# a run in its own process, whose stdout and stderr are real descriptors (pipes the test reads)
RUN = textwrap.dedent("""
    import os, subprocess, sys
    import dagster as dg
    from dagster._core.execution import compute_logs

    def no_tail(*args, **kwargs):  # Dagster's mirror: a tail -F and a watcher process per stream
        raise AssertionError("a tail process was started")

    compute_logs.execute_posix_tail = no_tail

    @dg.asset
    def talker():
        print("printed by the step", flush=True)
        os.write(2, b"written to descriptor 2 by the step\\n")
        subprocess.run(["echo", "echoed by a child process"], check=True)
        print("the step's last words", end="")  # left in the buffer: the capture's end flushes it
        return 1

    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([talker], instance=instance)
    print(f"\\nRUN {result.run_id} {result.success}", flush=True)
""")


@pytest.fixture
def home(shipped_home):
    return shipped_home


def test_a_runs_output_reaches_the_ui_and_the_terminal_with_no_process_started(home):
    ran = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "DAGSTER_HOME": str(home)})
    assert ran.returncode == 0, ran.stderr
    run_line = ran.stdout.strip().splitlines()[-1].split()
    assert run_line[0] == "RUN" and run_line[2] == "True", ran.stdout
    # mirrored, and before the run ended: the last words too, written just before the capture's end
    out = ran.stdout[:ran.stdout.index("\nRUN ")]
    assert [line for line in out.splitlines() if "step" in line or "child" in line] == [
        "printed by the step", "echoed by a child process", "the step's last words"], ran.stdout
    assert "written to descriptor 2 by the step" in ran.stderr
    with dg.DagsterInstance.get() as instance:
        manager = instance.compute_log_manager
        assert isinstance(manager, ThreadMirroredComputeLogManager)
        captured = [e.dagster_event.logs_captured_data for e in instance.all_logs(run_line[1])
                    if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.LOGS_CAPTURED]
        key = manager.build_log_key_for_run(run_line[1], captured[0].file_key)
        data = manager.get_log_data(key)  # as the UI's stdout/stderr view reads them
        assert manager.is_capture_complete(key)
    assert data.stdout.decode() == "printed by the step\nechoed by a child process\nthe step's last words"
    assert "written to descriptor 2 by the step\n" in data.stderr.decode()  # among Dagster's own log lines


def test_a_compute_logs_setting_in_dagster_yaml_still_wins(home):
    with open(home / "dagster.yaml", "a") as f:
        f.write("compute_logs:\n  module: dagster._core.storage.noop_compute_log_manager\n"
                "  class: NoOpComputeLogManager\n")
    from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager

    with dg.DagsterInstance.get() as instance:
        assert type(instance.compute_log_manager) is NoOpComputeLogManager


def test_a_closed_terminal_ends_the_mirroring_never_the_capture(tmp_path):
    read, write = os.pipe()
    os.close(read)  # whoever started the run is gone: a write there raises EPIPE
    log = tmp_path / "step.out"
    with open(write, "w") as terminal:
        with mirrored(terminal, str(log)):
            os.write(write, b"first\n")
            os.write(write, b"second\n")
    assert log.read_bytes() == b"first\nsecond\n"


def test_a_child_still_writing_after_the_run_is_not_waited_for(tmp_path, monkeypatch):
    """Once the run's capture ends, the mirror copies what the file held then: a child process of the run that
    outlives it and writes on (here: a line more each time the mirror copies one) would otherwise keep the run
    from finishing. Its later lines still reach the file, as with Dagster's tail stopped at the run's end."""
    log = tmp_path / "run.out"
    log.write_bytes(b"the run's own line\n")
    copied = []

    def copy_and_provoke(fd, data):
        copied.append(data)
        if len(copied) < 1000:  # a child writing as fast as the mirror copies (bounded: the old loop never ends)
            with open(log, "ab") as child:
                child.write(b"a child's line\n")
        return True

    monkeypatch.setattr(compute_logs, "_write_all", copy_and_provoke)
    done = compute_logs.threading.Event()
    done.set()
    read, write = os.pipe()
    os.close(read)
    compute_logs._copy(str(log), write, done)
    assert b"".join(copied) == b"the run's own line\n"
    assert log.read_bytes().count(b"a child's line") == 1  # the file keeps what the child wrote
