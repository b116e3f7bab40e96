"""The fixed cost of a ``curate run`` and how well two runs share one machine.

Every figure comes from real ``curate run`` processes over sample shards (``curate sample-data``'s
generator, 40 pairs each, offline profile by default, ``--no-report``), one Dagster home shared by all
of them as in production, and the step timings Dagster records for each run. Only the sample shards
of the same make-up are used (not the first, second and last, which add tiny, wide or broken images or
a copy of another shard's pair): each timed shard is the same kind of work.

A run of one shard takes one pass (one Dagster run); a run of several takes two (every shard scored,
then the pool's ``dedup_index`` run in the offline profile, then every shard decided: ``curate run``'s
``_materialize``), so the cost of a further shard is taken between two several-shard runs:

- ``one_run_s``: a run of one shard, start to exit; ``one_run_steps_s`` the time its steps took
  (the shard's own work, first-use loading of models and libraries included) and
  ``outside_steps_s`` the rest: imports, definitions, model loading, instance set-up, exit;
- ``two_shard_run_s`` and ``several_run_s``: runs of 2 and of ``--shards`` (N >= 3, default 5) shards;
  ``runs_one_shard``, ``runs_two_shards``, ``runs_several_shards``: the Dagster runs each made (checked:
  two per shard in both several-shard runs);
- ``per_shard_s``: what each further shard adds to a run of several, ``(several_run_s -
  two_shard_run_s) / (N - 2)``: its two passes and its share of the pool-wide ``dedup_index`` run;
  ``per_shard_steps_s`` the same difference of the two runs' step time, ``per_shard_overhead_s`` the
  rest (orchestration: run start-up, events, look-ups between steps);
- ``per_shard_scoring_s`` (``quality_scores``, whose step also runs its range check) and
  ``per_shard_non_scoring_s`` (the others, with their checks): a shard's own steps in both passes,
  the median over the N-shard run's shards after its first (which pays the first-use loading);
- ``per_shard_non_scoring_steps`` (the steps a shard runs besides ``quality_scores``, both passes),
  ``step_floor_s`` (the shortest step of those shards: ``raw_shards``' look at one small file, so about
  Dagster's own cost of a step) and ``per_shard_non_scoring_floor_s``, their product: what the
  non-scoring steps would cost if they did no work at all; ``per_shard_step_s``: each step's own median
  over those shards (not with ``--smoke``), where the time goes;
- ``fixed_per_run_s``: ``two_shard_run_s - 2 * per_shard_s``, what a run of several shards costs
  beyond what its shards add: process start, imports, definitions, instance set-up, first-use
  loading, exit, and the pool-wide ``dedup_index`` run's fixed part (a one-shard run's one pass has
  no separate figure: ``outside_steps_s`` is the nearest);
- ``two_runs_vs_one``: two runs of the one-shard run's shard, each into its own warehouse, side by
  side, against that run alone: ``2 * one_run_s / two_runs_s`` (2.0 is perfect sharing, 1.0 no gain);
- these runs find the home's warm processes running, as every run after the first does: the Great
  Expectations helper (``curation_pipeline.helper``) and the server whose forked children run
  ``curate run`` with Dagster and the definitions already imported (``curation_pipeline.forkserver``;
  ``served`` says whether it was up when the timed one-shard run started, looked up then);
  ``one_run_cold_s``, ``two_shard_run_cold_s``, ``fixed_per_run_cold_s`` (``two_shard_run_cold_s - 2 *
  per_shard_s``), ``two_runs_cold_s`` and ``two_runs_vs_one_cold`` measure the same after stopping both
  (what a first run pays). The package is byte-compiled first (``make setup`` does the same).
- ``pairs_step_s`` and ``pairs_step_cold_s``: the one-shard run's ``pairs`` step, warm and cold: its
  ``pairs_schema`` check is a run's first call to the GX helper, so the difference is what a first run
  waits for the helper's warm-up (``deferred``: it answers before scipy runs).

Each run sizes its thread pools to the cores divided by the home's ``max_concurrent_runs`` (the
shipped dagster.yaml says 2), unless ``CURATION_THREADS`` is set. ``--smoke`` skips the warm-up
run and the several-shard runs (``per_shard_*`` then come from the one-shard run's steps and
``fixed_per_run_s`` is ``one_run_s - per_shard_s``: no measurement) and uses the text profile: its
one-shard run is the home's first, so it is cold (``served: false``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_smoke_flag, compile_package, parse_args, result_line

from curation_pipeline.demo.samples import SAMPLES_PER_SHARD

CURATE = Path(sys.executable).with_name("curate")


def curate_command(args, raw: Path, warehouse: Path, shards: list[str]) -> list[str]:
    base = [str(CURATE)] if CURATE.is_file() else [sys.executable, "-m", "curation_pipeline.cli"]
    command = [*base, "run", "--raw", str(raw), "--warehouse", str(warehouse), "--profile", args.profile,
               "--no-report"]
    for shard in shards:
        command += ["--shard", shard]
    return command


def start(args, raw, warehouse, shards, env) -> subprocess.Popen:
    return subprocess.Popen(curate_command(args, raw, warehouse, shards), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=900)
    if process.returncode != 0:
        raise SystemExit(f"curate run exited {process.returncode}:\n{out[-2000:]}\n{err[-4000:]}")


def timed_run(args, raw, warehouse, shards, env) -> float:
    began = time.perf_counter()
    finish(start(args, raw, warehouse, shards, env))
    return time.perf_counter() - began


def side_by_side(args, raw, tmp, shards, env, label) -> float:
    """Runs of one shard each (the same shard twice compares equal work), each into its own warehouse,
    started together; seconds until all have exited."""
    began = time.perf_counter()
    pair = [start(args, raw, tmp / f"wh-pair-{label}-{i}", [shard], env) for i, shard in enumerate(shards)]
    for process in pair:
        finish(process)
    return time.perf_counter() - began


def step_times(home: Path, known: set[str]) -> tuple[dict[str, list[tuple[str, float]]], set[str], list[str]]:
    """Per shard, every step executed (step key, seconds), for the runs not in ``known``; every run id
    seen; and the job of each run not in ``known``. A shard's steps of both passes, and of a later
    re-selection (pool-wide dedup), are the shard's; a run of no shard is ``run:<job>``."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    shards: dict[str, list[tuple[str, float]]] = {}
    jobs: list[str] = []
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        for run in runs:
            if run.run_id in known:
                continue
            jobs.append(run.job_name)
            shard = run.tags.get("dagster/partition", f"run:{run.job_name}")
            shards.setdefault(shard, []).extend(
                (stat.step_key, stat.end_time - stat.start_time)
                for stat in instance.get_run_step_stats(run.run_id) if stat.start_time and stat.end_time)
        return shards, {run.run_id for run in runs}, jobs


def two_passes(shards: list[str], jobs: list[str]) -> int:
    """The Dagster runs of a several-shard ``curate run`` (``jobs``), checked to be two per shard (scoring,
    then deciding) and at most one other (the pool's ``dedup_index``): else its per-shard cost is not
    the one ``per_shard_s`` says."""
    per_shard = sum(job == "curate_shards" for job in jobs)
    if per_shard != 2 * len(shards) or len(jobs) - per_shard > 1:
        raise SystemExit(f"a run of {len(shards)} shards made the Dagster runs {sorted(jobs)}, not two per shard "
                         "and the pool's dedup_index: the several-shard runs no longer compare equal work")
    return len(jobs)


def total(steps: list[tuple[str, float]]) -> float:
    return sum(v for _, v in steps)


def split(steps: list[tuple[str, float]]) -> tuple[float, float]:
    scoring = sum(v for k, v in steps if k == "quality_scores")
    return scoring, total(steps) - scoring


def by_step(shards_steps: list[list[tuple[str, float]]]) -> dict[str, float]:
    """Each step's median over the shards of its time per shard (both passes summed): where the
    non-scoring time goes."""
    keys = sorted({k for steps in shards_steps for k, _ in steps})
    return {k: round(statistics.median(sum(v for kk, v in steps if kk == k) for steps in shards_steps), 4)
            for k in keys}


def floor(steps: list[tuple[str, float]]) -> tuple[int, float]:
    """The non-scoring steps a shard ran, and the shortest step: ``raw_shards`` observing one small file,
    so about Dagster's own cost of a step (events, input loading, partition look-ups)."""
    return sum(1 for k, _ in steps if k != "quality_scores"), min(v for _, v in steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=5,
                        help="shards of the larger several-shard run (>= 3; per_shard_s compares it with a run of 2)")
    parser.add_argument("--profile", default="offline")
    add_smoke_flag(parser, profile="text")
    args = parse_args(parser)
    if args.shards < 3:
        parser.error("--shards must be at least 3: a further shard's cost is taken against a run of 2")
    compile_package()
    from curation_pipeline.demo import generate_sample_shards
    from curation_pipeline.scoring import signals

    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    try:
        raw = tmp / "raw"
        # the first, second and last sample shards differ in make-up (tiny and wide images; broken ones; a copy
        # of the first shard's pair): only those between are timed, so every timed shard is the same work
        names = [p.stem for p in generate_sample_shards(raw, n_shards=(1 if args.smoke else args.shards) + 3)][2:-1]
        shard = names[0]  # the one-shard runs' and the side-by-side runs' shard
        home = tmp / "home"
        env = {**os.environ, "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "GX_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false", "CURATE_FORKSERVER": "on"}
        known: set[str] = set()
        from curation_pipeline import forkserver, helper

        if not args.smoke:  # a first run creates the home's storages, fills the page cache, starts the servers
            timed_run(args, raw, tmp / "wh-warm", [shard], env)
            _, known, _ = step_times(home, known)
            if not forkserver.wait_ready(home):
                raise SystemExit(f"the warm start did not come up: {forkserver.failures() or 'no failure recorded'}")
        served = bool(forkserver.servers(home))  # checked, not assumed: whether the timed run below is forked
        one_run_s = timed_run(args, raw, tmp / "wh-one", [shard], env)
        steps, known, jobs = step_times(home, known)
        first = steps[shard]
        one_run_steps_s = sum(total(s) for s in steps.values())
        figures: dict = {"runs_one_shard": len(jobs)}
        if args.smoke:
            per_shard_s = per_shard_steps_s = total(first)
            per_shard_scoring_s, per_shard_non_scoring_s = split(first)
            fixed_per_run_s = one_run_s - per_shard_s
            shards_steps = [first]
        else:  # a further shard's cost between two runs that both take two passes: 2 shards and N
            two, several = names[:2], names[:args.shards]
            two_shard_run_s = timed_run(args, raw, tmp / "wh-two", two, env)
            steps, known, jobs = step_times(home, known)
            two_steps_s = sum(total(s) for s in steps.values())
            figures["runs_two_shards"] = two_passes(two, jobs)
            several_run_s = timed_run(args, raw, tmp / "wh-several", several, env)
            steps, known, jobs = step_times(home, known)
            figures["runs_several_shards"] = two_passes(several, jobs)
            shards_steps = [steps[s] for s in several[1:]]  # the first shard of a run pays the first-use loading
            per_shard_s = (several_run_s - two_shard_run_s) / (len(several) - len(two))
            per_shard_steps_s = (sum(total(s) for s in steps.values()) - two_steps_s) / (len(several) - len(two))
            # medians: one shard's steps caught by another process's burst on a shared machine move a mean
            per_shard_scoring_s = statistics.median(split(s)[0] for s in shards_steps)
            per_shard_non_scoring_s = statistics.median(split(s)[1] for s in shards_steps)
            figures["per_shard_step_s"] = by_step(shards_steps)
            fixed_per_run_s = two_shard_run_s - len(two) * per_shard_s
            figures.update(several_shards=len(several), two_shard_run_s=two_shard_run_s, several_run_s=several_run_s)
        counts, shortest = zip(*(floor(s) for s in shards_steps))
        non_scoring_steps, step_floor_s = sum(counts) / len(counts), min(shortest)
        two_runs_s = side_by_side(args, raw, tmp, [shard, shard], env, "warm")  # the one-shard run's work, twice
        os.environ["DAGSTER_HOME"] = str(home)

        def stop_warm() -> None:
            helper.stop(home)
            forkserver.stop(home)

        cold = {}
        if not args.smoke:  # the same measures after stopping the home's warm processes: what a first run pays
            _, known, _ = step_times(home, known)  # the side-by-side runs': not the cold run's
            stop_warm()
            cold["one_run_cold_s"] = timed_run(args, raw, tmp / "wh-one-cold", [shard], env)
            steps, known, _ = step_times(home, known)
            cold["pairs_step_cold_s"] = sum(v for k, v in steps[shard] if k == "pairs")
            stop_warm()
            cold["two_shard_run_cold_s"] = timed_run(args, raw, tmp / "wh-two-cold", two, env)
            cold["fixed_per_run_cold_s"] = cold["two_shard_run_cold_s"] - 2 * per_shard_s
            stop_warm()
            cold["two_runs_cold_s"] = side_by_side(args, raw, tmp, [shard, shard], env, "cold")
            cold["two_runs_vs_one_cold"] = 2 * cold["one_run_cold_s"] / cold["two_runs_cold_s"]
        stop_warm()
        figures = {
            "cores": signals._cores(),
            "threads_per_run": signals.cpu_threads(),
            "pairs_per_shard": SAMPLES_PER_SHARD,  # the demo shards' size, as generated
            "shard": shard,
            "served": served,
            "one_run_s": one_run_s,
            "one_run_steps_s": one_run_steps_s,
            "pairs_step_s": sum(v for k, v in first if k == "pairs"),
            "outside_steps_s": one_run_s - one_run_steps_s,
            "fixed_per_run_s": fixed_per_run_s,
            "per_shard_s": per_shard_s,
            "per_shard_steps_s": per_shard_steps_s,
            "per_shard_overhead_s": per_shard_s - per_shard_steps_s,
            "per_shard_scoring_s": per_shard_scoring_s,
            "per_shard_non_scoring_s": per_shard_non_scoring_s,
            "per_shard_non_scoring_steps": non_scoring_steps,
            "step_floor_s": step_floor_s,
            "per_shard_non_scoring_floor_s": non_scoring_steps * step_floor_s,
            "two_runs_s": two_runs_s,
            "two_runs_vs_one": 2 * one_run_s / two_runs_s,
            **figures,
            **cold,
        }
        print(f"one run of one shard {one_run_s:.1f} s ({figures['outside_steps_s']:.1f} s outside its steps); "
              + ("" if args.smoke else f"runs of 2 and {args.shards} shards {figures['two_shard_run_s']:.1f} s and "
                 f"{figures['several_run_s']:.1f} s (two passes each): ")
              + f"fixed cost per run {fixed_per_run_s:.1f} s; each further shard {per_shard_s:.2f} s "
              f"(steps {per_shard_steps_s:.2f} s, orchestration {figures['per_shard_overhead_s']:.2f} s; its own "
              f"steps: scoring {per_shard_scoring_s:.2f} s, other steps {per_shard_non_scoring_s:.2f} s); "
              f"{non_scoring_steps:.0f} non-scoring steps per shard at no less than {step_floor_s:.3f} s each "
              f"(the shortest step): a floor of {figures['per_shard_non_scoring_floor_s']:.2f} s; two runs of "
              f"{shard} side by side {two_runs_s:.1f} s -> {figures['two_runs_vs_one']:.2f}x one run "
              f"({figures['threads_per_run']} thread(s) per run, {figures['cores']} cores)")
        if cold:
            print(f"with the GX helper and the run server stopped first: one run {cold['one_run_cold_s']:.1f} s, "
                  f"a run of 2 shards {cold['two_shard_run_cold_s']:.1f} s (fixed cost "
                  f"{cold['fixed_per_run_cold_s']:.1f} s), two side by side {cold['two_runs_cold_s']:.1f} s -> "
                  f"{cold['two_runs_vs_one_cold']:.2f}x")
        result_line(figures)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
