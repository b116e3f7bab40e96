"""Prefetch (decode and preprocess ahead of the model) and the run's thread budget."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from curation_pipeline.demo import generate_sample_shards
from curation_pipeline.pairs import PairBatch
from curation_pipeline.scoring import signals
from curation_pipeline.scoring.clip import ClipScorer
from curation_pipeline.scoring.datacomp import DataCompBasicRules
from curation_pipeline.scoring.prefetch import prefetch
from curation_pipeline.scoring.run import score_stream
from curation_pipeline.shards.reader import iter_pair_batches
from curation_pipeline_tests.tiny_models import make_tiny_clip


def _threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetch_keeps_order_and_applies_prepare(depth):
    assert list(prefetch(range(20), lambda x: x * x, depth=depth)) == [x * x for x in range(20)]


def test_prefetch_runs_ahead_but_only_depth_items():
    made = []
    release = threading.Event()

    def prepare(x):
        made.append(x)
        return x

    def items():
        for x in range(100):
            if x == 10:
                release.wait(5)
            yield x

    stream = prefetch(items(), prepare, depth=2, name="bounded-test")
    assert next(stream) == 0
    # the producer fills the queue (2) and holds one more in hand, then blocks: never the whole input
    for _ in range(50):
        if len(made) >= 4:
            break
        threading.Event().wait(0.02)
    assert 2 <= len(made) <= 4
    release.set()
    assert list(stream) == list(range(1, 100))


def test_prefetch_raises_the_producers_error_in_place():
    def items():
        yield 1
        yield 2
        raise ValueError("corrupt tar")

    stream = prefetch(items(), depth=2)
    assert next(stream) == 1 and next(stream) == 2
    with pytest.raises(ValueError, match="corrupt tar"):
        next(stream)


def test_prefetch_stops_its_thread_when_the_consumer_leaves():
    closed = threading.Event()

    def items():
        try:
            for x in range(10_000):
                yield x
        finally:
            closed.set()

    stream = prefetch(items(), depth=2, name="leaving-test")
    assert next(stream) == 0
    stream.close()
    assert not _threads_named("leaving-test")
    assert closed.is_set()  # the source's own cleanup ran (open files closed)


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    # a real sample shard: decode failures, missing captions and images, odd sizes
    return generate_sample_shards(tmp_path_factory.mktemp("raw"), n_shards=1)[0]


@pytest.fixture(scope="module")
def scorers(tmp_path_factory):
    return [DataCompBasicRules(), ClipScorer(make_tiny_clip(tmp_path_factory.mktemp("clip")), batch_size=3)]


def _scores(shard, scorers, depth):
    batches = iter_pair_batches(str(shard), shard.stem, batch_size=7)
    return score_stream(scorers, batches, prefetch_depth=depth)


def test_prefetch_on_and_off_give_identical_scores(shard, scorers):
    serial = _scores(shard, scorers, 0)
    ahead = _scores(shard, scorers, 2)
    assert len(serial) == 40 and serial["clip_cosine"].notna().sum() > 20
    assert serial["clip_error"].notna().any()  # the shard's broken pairs reach the model stage
    pd.testing.assert_frame_equal(serial, ahead)
    # and the same as scoring each decoded batch directly, the way the scorer always did
    direct = [scorers[1].score(b) for b, _ in iter_pair_batches(str(shard), shard.stem, batch_size=7)]
    np.testing.assert_array_equal(pd.concat(direct, ignore_index=True)["clip_cosine"], ahead["clip_cosine"])


def test_a_failing_batch_is_still_split_and_retried_with_prefetch(shard, scorers):
    clip = scorers[1]
    calls = []
    original = ClipScorer.score

    def flaky(self, batch, prepared=None):
        calls.append(len(batch))
        if any(k.endswith("3") for k in batch.keys):
            raise RuntimeError("out of memory")
        return original(self, batch, prepared)

    clip.score = flaky.__get__(clip)
    try:
        frame = _scores(shard, scorers, 2)
    finally:
        del clip.score
    bad = frame["key"].str.endswith("3")
    assert bad.any()
    assert frame.loc[bad, "clip_error"].str.contains("out of memory").all()
    assert frame.loc[~bad & frame["clip_error"].isna(), "clip_cosine"].notna().all()
    assert 1 in calls  # halved down to single pairs


def test_score_stream_raises_a_reader_error_after_the_scored_batches(scorers):
    def batches():
        yield PairBatch(["a"], ["a caption here"]), [{"shard": "s", "key": "a"}]
        raise OSError("shard vanished")

    with pytest.raises(OSError, match="shard vanished"):
        score_stream(scorers, batches())  # CLIP reads pixels: the reader runs in the prefetch thread


def test_without_a_scorer_that_reads_pixels_the_reader_runs_in_the_scoring_thread(scorers):
    import threading

    readers = []

    def batches(n=3):
        for i in range(n):
            readers.append(threading.current_thread())
            yield PairBatch([f"k{i}"], ["a caption here"]), [{"shard": "s", "key": f"k{i}"}]

    score_stream(scorers[:1], batches(), prefetch_depth=2)  # DataComp's rules read image sizes only
    assert readers and set(readers) == {threading.current_thread()}
    readers.clear()
    score_stream(scorers, batches(), prefetch_depth=2)
    assert readers and threading.current_thread() not in readers


def test_thread_budget_divides_the_cores_by_concurrent_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("CURATION_THREADS", raising=False)
    monkeypatch.setattr(signals, "_cores", lambda: 8)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert signals.concurrent_runs() == 1 and signals.cpu_threads() == 8
    (tmp_path / "dagster.yaml").write_text("run_queue:\n  max_concurrent_runs: 3\n")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert signals.concurrent_runs() == 3 and signals.cpu_threads() == 2
    monkeypatch.setenv("CURATION_THREADS", "5")  # an explicit setting wins
    assert signals.cpu_threads() == 5
    other = tmp_path / "more"
    other.mkdir()
    (other / "dagster.yaml").write_text("run_queue:\n  max_concurrent_runs: 16\n")
    monkeypatch.setenv("DAGSTER_HOME", str(other))
    monkeypatch.delenv("CURATION_THREADS")
    assert signals.cpu_threads() == 1  # never below one thread
    monkeypatch.setenv("CURATION_THREADS", "0")  # 0, as the scoring resource's threads: the default
    assert signals.cpu_threads() == 1
    for typo in ("four", "2.5", "-1", "²"):  # never silently every core
        monkeypatch.setenv("CURATION_THREADS", typo)
        with pytest.raises(ValueError, match=f"CURATION_THREADS must be a whole number.*{typo!r}"):
            signals.cpu_threads()
    # the run_coordinator form, which Dagster's Helm chart writes
    (other / "dagster.yaml").write_text("run_coordinator:\n  module: dagster.core.run_coordinator\n"
                                        "  class: QueuedRunCoordinator\n  config:\n    max_concurrent_runs: 4\n")
    monkeypatch.delenv("CURATION_THREADS")
    assert signals.concurrent_runs() == 4 and signals.cpu_threads() == 2


def test_limit_torch_threads_sets_torchs_pool():
    before = torch.get_num_threads()
    try:
        assert signals.limit_torch_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_budget_follows_the_homes_settings_as_they_are_now(tmp_path, monkeypatch):
    """A home's first ``curate run`` writes its dagster.yaml: a budget read before must not stick."""
    monkeypatch.delenv("CURATION_THREADS", raising=False)
    monkeypatch.setattr(signals, "_cores", lambda: 8)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert signals.concurrent_runs() == 1 and signals.cpu_threads() == 8  # no settings yet
    (tmp_path / "dagster.yaml").write_text("run_queue:\n  max_concurrent_runs: 2\n")
    assert signals.concurrent_runs() == 2 and signals.cpu_threads() == 4
    (tmp_path / "dagster.yaml").write_text("run_queue:\n  max_concurrent_runs: 4\n")  # edited between runs
    assert signals.cpu_threads() == 2


def test_a_fresh_homes_first_run_loads_its_models_on_the_homes_budget(tmp_path, monkeypatch):
    """``curate run`` writes the shipped dagster.yaml (two runs at once) before it sizes any pool."""
    from click.testing import CliRunner

    from curation_pipeline import cli
    from curation_pipeline.demo import generate_sample_shards
    from curation_pipeline.resources import ScoringResource

    monkeypatch.delenv("CURATION_THREADS", raising=False)
    monkeypatch.setattr(signals, "_cores", lambda: 8)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "fresh-home"))
    monkeypatch.setenv("CURATE_HELPER", "off")
    seen = []

    def scorers(self):  # where the run loads its models: note the budget, then stop the run there
        seen.append(signals.cpu_threads())
        raise ValueError("stopped here by the test")

    monkeypatch.setattr(ScoringResource, "scorers", scorers)
    generate_sample_shards(tmp_path / "raw", n_shards=1)
    result = CliRunner().invoke(cli.main, ["run", "--raw", str(tmp_path / "raw"), "--warehouse", str(tmp_path / "wh"),
                                           "--profile", "text"])
    assert "stopped here by the test" in result.output, result.output
    assert seen == [4]  # 8 cores over the shipped max_concurrent_runs: 2


def test_scorers_built_for_another_thread_budget_are_built_again(monkeypatch):
    """The ONNX Runtime sessions (NSFW, OCR) are sized when built: the scorers cached by profile alone kept a
    session of 1 thread for a later resource of 2 in the same process (a notebook, the Python API)."""
    from curation_pipeline.resources import ScoringResource

    monkeypatch.setenv("CURATION_THREADS", "1")  # restored after: scorers() sets it from threads
    one = ScoringResource(profile="offline", threads=1).scorers()
    two = ScoringResource(profile="offline", threads=2).scorers()
    assert two is not one and ScoringResource(profile="offline", threads=1).scorers() is one
    nsfw = [next(s for s in scorers if type(s).__name__ == "NsfwScorer") for scorers in (one, two)]
    assert [s._classifier._session.get_session_options().intra_op_num_threads for s in nsfw] == [1, 2]


def test_the_cores_are_held_to_the_cgroup_cpu_quota(tmp_path, monkeypatch):
    """A Kubernetes run pod limited to 1 CPU sees every core of its node in its affinity mask: its pools were
    sized to the node. cgroup v2's cpu.max, else v1's cfs quota; none (max, -1, unreadable) leaves the mask."""
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert signals.cgroup_cpu_quota(str(v2)) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert signals.cgroup_cpu_quota(str(v2)) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert signals.cgroup_cpu_quota(str(v1)) == 1.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert signals.cgroup_cpu_quota(str(v1)) is None and signals.cgroup_cpu_quota(str(tmp_path / "none")) is None
    monkeypatch.setattr(signals, "cgroup_cpu_quota", lambda: 1.5)
    monkeypatch.setattr(signals.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("CURATION_THREADS", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert signals._cores() == 2 and signals.cpu_threads() == 2  # 1.5 CPUs: two threads, not sixteen
