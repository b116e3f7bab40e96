"""A run whose process is killed outright: Dagster leaves it STARTED for good; the shipped instance tags each
run with its process, so the schedule and the report mark it failed and stop waiting on it."""

import os
import shutil
import signal
import subprocess
import sys
import time

import dagster as dg

from curation_pipeline_tests.conftest import REPO_ROOT

# a real run in its own process, on the home's instance, that stays in its step until killed
STUCK_RUN = """
import sys, time
from pathlib import Path
import dagster as dg

@dg.op
def wait(context):
    Path(sys.argv[1]).write_text(context.run_id)
    time.sleep(600)

@dg.job(tags={"dagster/partition": "sample-000000", "curation/warehouse": sys.argv[2], "dagster/max_retries": "1",
             "dagster/retry_on_asset_or_op_failure": "false"})  # as curate_shards runs are tagged (RETRY_CRASHES)
def curate_shards():
    wait()

with dg.DagsterInstance.get() as instance:
    curate_shards.execute_in_process(instance=instance)
"""


def _started(tmp_path, name):
    marker = tmp_path / f"{name}.started"
    process = subprocess.Popen([sys.executable, "-c", STUCK_RUN, str(marker), str(tmp_path / "wh")],
                               env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home")})
    for _ in range(1200):  # until its step runs (import and start take seconds)
        if marker.exists() and marker.read_text() or process.poll() is not None:
            break
        time.sleep(0.1)
    assert process.poll() is None and marker.read_text(), "the run did not start"
    return process, marker.read_text()


def test_a_run_killed_outright_is_marked_failed_and_holds_its_shard_no_longer(tmp_path, monkeypatch):
    from curation_pipeline.assets.failures import shard_failures
    from curation_pipeline.automation import runs_in_flight
    from dagster._core.storage.tags import WILL_RETRY_TAG

    from curation_pipeline.workers import WORKER_TAG, gone

    (tmp_path / "home").mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "home" / "dagster.yaml")  # the shipped instance
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    killed, killed_id = _started(tmp_path, "killed")
    live, live_id = _started(tmp_path, "live")  # the shard's last run
    try:
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("shards", ["sample-000000"])
            run = instance.get_run_by_id(killed_id)
            assert run.status == dg.DagsterRunStatus.STARTED and str(killed.pid) in run.tags[WORKER_TAG]
            assert gone(run) is None  # alive: in flight
            assert {r.dagster_run.run_id for r in runs_in_flight(instance)["sample-000000"]} == {live_id, killed_id}
            killed.send_signal(signal.SIGKILL)
            killed.wait()
            assert instance.get_run_by_id(killed_id).status == dg.DagsterRunStatus.STARTED  # as Dagster leaves it
            why = gone(instance.get_run_by_id(killed_id))
            assert why == f"its process (pid {killed.pid} on {run.tags[WORKER_TAG].rsplit(':', 2)[0]}) ended " \
                          "without finishing the run (killed?)"
            # the schedule's look: the dead run is marked failed, the live one still holds the shard
            assert [r.dagster_run.run_id for r in runs_in_flight(instance)["sample-000000"]] == [live_id]
            dead = instance.get_run_by_id(killed_id)
            assert dead.status == dg.DagsterRunStatus.FAILURE
            # the schedule asks for the shard anew: Dagster's run retries must not queue a second run of it too
            assert dead.tags[WILL_RETRY_TAG] == "false"
            assert why in instance.all_logs(killed_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1].dagster_event.message
            assert gone(instance.get_run_by_id(live_id)) is None
            live.send_signal(signal.SIGKILL)
            live.wait()
            # the report's look: the shard's last run (the live one, now killed too) did not finish
            failures = shard_failures(instance, str(tmp_path / "wh"))
            assert failures["sample-000000"].startswith(f"run {live_id[:8]} did not finish: its process (pid "
                                                        f"{live.pid} ")
            assert instance.get_run_by_id(live_id).status == dg.DagsterRunStatus.FAILURE
            assert instance.get_run_by_id(live_id).tags[WILL_RETRY_TAG] == "true"  # the report asks for nothing
            assert runs_in_flight(instance) == {}
            # a run marked failed so is reported with that message (its RUN_FAILURE has no user message)
            instance.delete_run(live_id)
            assert "ended without finishing the run" in shard_failures(instance, str(tmp_path / "wh"))["sample-000000"]
    finally:
        for process in (live, killed):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_a_tag_naming_another_host_or_a_reused_pid_is_judged_correctly(tmp_path):
    from curation_pipeline.workers import WORKER_TAG, gone, identity

    with dg.instance_for_test() as instance:
        from dagster._core.test_utils import create_run_for_test

        def run(tag):
            return create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.STARTED,
                                       tags={WORKER_TAG: tag})

        me = identity()
        host, pid, start = me.rsplit(":", 2)
        assert gone(run(me)) is None  # this very process
        assert gone(run(f"elsewhere-{host}:{pid}:{start}")) is None  # another host: its launcher's monitoring
        assert gone(run(f"{host}:{pid}:{int(start) + 1}")) is not None  # the pid now runs another process
        assert gone(run("not a tag")) is None
        ended = create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.SUCCESS,
                                    tags={WORKER_TAG: f"{host}:{pid}:{int(start) + 1}"})
        assert gone(ended) is None  # only a STARTED run is judged


def test_a_start_time_that_cannot_be_read_proves_nothing(monkeypatch):
    """Without /proc (macOS) or with hidepid, a live run must not be taken for a dead one."""
    from curation_pipeline import workers

    monkeypatch.setattr(workers, "_start_time", lambda pid: None)
    me = workers.identity()
    assert me.endswith(f":{os.getpid()}:")  # no start time recorded
    with dg.instance_for_test() as instance:
        from dagster._core.test_utils import create_run_for_test

        for tag in (me, f"{me}123"):  # recorded without, or with, a start time this machine cannot read now
            run = create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.STARTED,
                                      tags={workers.WORKER_TAG: tag})
            assert workers.gone(run) is None and workers.settle(instance, run) is None
        monkeypatch.setattr(workers, "_start_time", lambda pid: workers.ZOMBIE)  # ended, not yet reaped
        assert workers.gone(run) is not None


def test_the_settle_sensor_marks_a_dead_run_failed_instead_of_waiting_on_it(tmp_path):
    from dagster._core.test_utils import create_run_for_test

    from curation_pipeline.assets.dedup import settle_requests
    from curation_pipeline.resources import PolicyResource, WarehouseResource
    from curation_pipeline.workers import WORKER_TAG, identity

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = identity(ended.pid)  # its start time, read while it runs
    ended.wait()
    warehouse = WarehouseResource(raw_root=str(tmp_path / "raw"), root=str(tmp_path / "wh"))
    with dg.instance_for_test() as instance:
        run = create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.STARTED,
                                  tags={WORKER_TAG: tag})
        assert settle_requests(instance, warehouse, PolicyResource()) == "no scored shards"  # not "runs in progress"
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        alive = create_run_for_test(instance, job_name="curate_shards", status=dg.DagsterRunStatus.STARTED,
                                    tags={WORKER_TAG: identity()})
        assert settle_requests(instance, warehouse, PolicyResource()).startswith(
            f"runs in progress ({alive.run_id[:8]})")


def test_a_run_being_canceled_is_in_flight_until_its_process_ends(tmp_path):
    """A terminated run stays CANCELING while its process winds down, and may still write its shard's files:
    asking for the shard again then ran a second run beside it. Its process gone, it is marked canceled."""
    from dagster._core.test_utils import create_run_for_test

    from curation_pipeline.automation import runs_in_flight
    from curation_pipeline.workers import CREATOR_TAG, WORKER_TAG, identity

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = identity(ended.pid)
    ended.wait()
    with dg.instance_for_test() as instance:
        canceling = {"job_name": "curate_shards", "status": dg.DagsterRunStatus.CANCELING}
        alive = create_run_for_test(instance, **canceling, tags={WORKER_TAG: identity(), "dagster/partition": "s1"})
        dead = create_run_for_test(instance, **canceling, tags={WORKER_TAG: tag, "dagster/partition": "s2"})
        # canceled before it started: no worker yet, its creator stands for it
        unstarted = create_run_for_test(instance, **canceling, tags={CREATOR_TAG: tag, "dagster/partition": "s3"})
        flight = runs_in_flight(instance)
        assert [r.dagster_run.run_id for r in flight["s1"]] == [alive.run_id] and "s2" not in flight, flight
        assert "s3" not in flight
        for run in (dead, unstarted):
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.CANCELING


# a process that creates a run and ends before starting it (a `curate run` interrupted between the two)
CREATE_ONLY = """
import dagster as dg

@dg.op
def work():
    pass

@dg.job
def curate_shards():
    work()

with dg.DagsterInstance.get() as instance:
    print(instance.create_run_for_job(curate_shards, run_config={}, tags={"dagster/partition": "sample-000000"}).run_id)
"""


def test_a_run_its_creator_left_not_started_is_marked_failed_and_holds_its_shard_no_longer(tmp_path, monkeypatch):
    from curation_pipeline.automation import runs_in_flight
    from curation_pipeline.workers import CREATOR_TAG, gone, identity

    (tmp_path / "home").mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", tmp_path / "home" / "dagster.yaml")  # the shipped instance
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    created = subprocess.run([sys.executable, "-c", CREATE_ONLY], capture_output=True, text=True, check=True,
                             env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home")})
    left_id = created.stdout.split()[-1]
    with dg.DagsterInstance.get() as instance:
        left = instance.get_run_by_id(left_id)
        assert left.status == dg.DagsterRunStatus.NOT_STARTED  # as Dagster leaves it, for ever
        host = left.tags[CREATOR_TAG].rsplit(":", 2)[0]
        # one this live process made, about to start: in flight, never judged
        graph = dg.Definitions(assets=[dg.asset(name="a")(lambda: None)]).resolve_asset_graph()
        live = instance.create_run_for_job(dg.define_asset_job("curate_shards").resolve(asset_graph=graph),
                                           tags={"dagster/partition": "sample-000001"})
        assert live.tags[CREATOR_TAG] == identity() and gone(live) is None
        assert gone(left).startswith("the process that created it (pid ") and f"on {host}) ended before starting" \
            in gone(left)
        assert set(runs_in_flight(instance)) == {"sample-000001"}  # the left run marked failed, not waited on
        assert instance.get_run_by_id(left_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.NOT_STARTED
        from dagster._core.test_utils import create_run_for_test

        assert create_run_for_test(instance, job_name="curate_shards").tags[CREATOR_TAG] == identity()
        # a re-execution copies its parent's tags: not the parent's processes, which may be long gone
        from curation_pipeline.workers import WORKER_TAG

        copied = create_run_for_test(instance, job_name="curate_shards", tags={
            WORKER_TAG: left.tags[CREATOR_TAG], CREATOR_TAG: left.tags[CREATOR_TAG], "dagster/partition": "x"})
        assert copied.tags[CREATOR_TAG] == identity() and WORKER_TAG not in copied.tags


def test_a_failed_run_about_to_be_retried_is_in_flight(tmp_path):
    """Between a dead run marked failed (Dagster then tags it to be retried) and the retry daemon's next pass, the
    run was in neither list: the schedule asked for its shard again and the settle sensor went on settling, then the
    retry launched too. Counted in flight; an in-process run (``curate run``'s), which Dagster cannot re-launch, not."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG
    from dagster._core.test_utils import create_run_for_test
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    from curation_pipeline.assets.dedup import settle_requests
    from curation_pipeline.automation import runs_in_flight
    from curation_pipeline.resources import PolicyResource, WarehouseResource

    origin = RemoteJobOrigin(RemoteRepositoryOrigin(InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="curation_pipeline.definitions", attribute="defs"),
        location_name="curation_pipeline"), "__repository__"), "curate_shards")
    with dg.instance_for_test() as instance:
        failed = {"status": dg.DagsterRunStatus.FAILURE, "job_name": "curate_shards"}
        launched = create_run_for_test(instance, **failed, remote_job_origin=origin,
                                       tags={WILL_RETRY_TAG: "true", "dagster/partition": "s1"})
        create_run_for_test(instance, **failed, tags={WILL_RETRY_TAG: "true", "dagster/partition": "s2"})  # in-process
        assert {key: [r.dagster_run.run_id for r in runs] for key, runs in runs_in_flight(instance).items()} == {
            "s1": [launched.run_id]}
        said = settle_requests(instance, WarehouseResource(raw_root=str(tmp_path), root=str(tmp_path / "wh")),
                               PolicyResource())
        assert isinstance(said, str) and said.startswith(f"runs in progress ({launched.run_id[:8]})"), said
        instance.add_run_tags(launched.run_id, {AUTO_RETRY_RUN_ID_TAG: "retry"})  # its retry launched: that one counts
        assert runs_in_flight(instance) == {}
