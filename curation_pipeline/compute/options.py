"""The knobs of a Ray Data pipeline and what a run reports back (no Ray import here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def check_gpus(name: str, gpus: float) -> None:
    """A fraction of one GPU (actors share it) or one whole GPU: refused here, with the knob's name, not in the
    middle of a shard's step. Never more: an actor loads its models on one device, so a second GPU would be
    reserved and left idle (a model too big for one GPU still runs out of memory on the first)."""
    if not math.isfinite(gpus) or gpus < 0 or gpus > 1:
        more = " (an actor runs its models on one GPU: for more GPUs, run more actors)" if gpus > 1 else ""
        raise ValueError(f"{name} must be a fraction of one GPU (0 to 1) or 1, got {gpus}{more}")


@dataclass(frozen=True)
class RayOptions:
    """How one asset's heavy work is spread over the cluster (the knobs are described per field)."""

    batch_size: int = 32  # pairs moving together through decode and model, as the local engine batches
    actors: int = 1  # the model actor pool's fixed size; each actor loads its models once
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  # fractions share a GPU
    threads_per_actor: int = 0  # intra-op threads of the actor's models (0 = its CPUs, rounded up)
    decode_concurrency: int = 0  # most decode tasks at once (0 = Ray Data decides)
    decode_cpus: float = 1.0
    spread: bool = True  # SPREAD scheduling: actors and decode tasks land on different nodes
    max_tasks_in_flight: int = 2  # batches queued per actor
    wait_for_actors_s: int = 0  # > 0: hold the stage until every actor is up, so the first does not take all
    # a model actor that dies (OOM kill, crash, lost node) is restarted (reloading its models) and its
    # batches retried this often, then the shard fails; Ray Data's own default retries without end
    max_retries: int = 2
    # what the shard's coordinator task (it collects the shard's rows) asks Ray for, so the scheduler
    # counts it: a node's coordinators cannot outgrow its memory, however many runs start at once
    coordinator_memory_mb: int = 512
    # > 0: a shard whose work has not finished after this many seconds is cancelled and fails, naming what it asked
    # of the cluster; else a request no node can ever meet (a GPU on a CPU-only cluster) waits without end, as Ray
    # waits for an autoscaler to add such a node
    shard_timeout_s: int = 0
    # dagster-ray's ``data_execution_options`` as the config set them, (name, value) pairs: each shard's datasets
    # are built in its coordinator task, which dagster-ray's own apply (driver and one worker) never reaches
    data_context: tuple = ()

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        for name in ("cpus_per_actor", "decode_cpus"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        check_gpus("gpus_per_actor", self.gpus_per_actor)
        for name in ("threads_per_actor", "decode_concurrency", "wait_for_actors_s"):  # 0 = the documented default
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative, got {getattr(self, name)}")
        if self.max_tasks_in_flight < 1:
            raise ValueError(f"max_tasks_in_flight must be >= 1, got {self.max_tasks_in_flight}")
        if self.max_retries < 0 or self.coordinator_memory_mb < 0 or self.shard_timeout_s < 0:
            raise ValueError("max_retries, coordinator_memory_mb and shard_timeout_s cannot be negative")

    @property
    def threads(self) -> int:
        return self.threads_per_actor or max(1, math.ceil(self.cpus_per_actor))


@dataclass
class RayStats:
    """What the workers said about themselves: where batches ran and how big workers grew."""

    nodes: set[str] = field(default_factory=set)  # node ids that ran any task or actor call
    workers: set[tuple[str, int]] = field(default_factory=set)  # (node, pid) of the model actors
    batches: int = 0
    pairs: int = 0
    peak_worker_rss_mb: float = 0.0  # largest peak RSS of any decode task or model actor process
    model_busy_seconds: float = 0.0  # summed time the actors spent in model calls
    model_cpu_seconds: float = 0.0  # summed CPU time of the actor processes during those calls
    first_start: float | None = None  # wall clock of the first model call's start
    last_end: float | None = None  # and of the last one's end
    per_worker: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # worker -> [pairs, busy s]

    @property
    def model_seconds(self) -> float:
        """Wall time of the model stage: first model call's start to the last one's end."""
        return 0.0 if self.first_start is None else self.last_end - self.first_start

    def add_batch(self, node: str, pid: int, rss_mb: float, pairs: int, t0: float, t1: float,
                  cpu_s: float = 0.0) -> None:
        self.nodes.add(node)
        self.workers.add((node, int(pid)))
        self.batches += 1
        self.pairs += int(pairs)
        self.peak_worker_rss_mb = max(self.peak_worker_rss_mb, float(rss_mb))
        busy = float(t1) - float(t0)
        self.model_busy_seconds += busy
        self.model_cpu_seconds += float(cpu_s)
        done = self.per_worker.setdefault((node, int(pid)), [0.0, 0.0])
        done[0] += int(pairs)
        done[1] += busy
        self.first_start = float(t0) if self.first_start is None else min(self.first_start, float(t0))
        self.last_end = float(t1) if self.last_end is None else max(self.last_end, float(t1))

    @property
    def model_pairs_per_s(self) -> float:
        """The model stage's throughput with every actor busy: the sum of each actor's own rate over its
        seconds in model calls, so start-up and waiting for input do not count. Actors that take turns (no
        core each) add up here with no gain in wall time: ``model_wall_pairs_per_s`` says what they gained."""
        return sum(pairs / busy for pairs, busy in self.per_worker.values() if busy > 0)

    @property
    def model_wall_pairs_per_s(self) -> float:
        """Pairs over the model stage's wall time (``model_seconds``: first call's start to last call's end),
        waits between calls included: what more actors gain in fact."""
        return self.pairs / self.model_seconds if self.model_seconds > 0 else 0.0

    @property
    def model_cores_per_actor(self) -> float:
        """CPU seconds over busy seconds of the model calls: about ``threads`` when each has a core, below
        it when the actors share too few cores."""
        return self.model_cpu_seconds / self.model_busy_seconds if self.model_busy_seconds > 0 else 0.0

    def metadata(self) -> dict[str, float | int]:
        return {"ray_nodes": len(self.nodes), "ray_model_actors": len(self.workers), "ray_batches": self.batches,
                "ray_peak_worker_rss_mb": round(self.peak_worker_rss_mb, 1),
                "ray_model_seconds": round(self.model_seconds, 3)}
