"""``curate``: the demo run, runs over a folder of shards, lineage look-ups and the report.

Exit codes: 0 success; 1 a run or check failed; 2 bad input (no shards found, an
invalid shard name, an unknown key, a model that cannot be loaded, a raw file read only up to damage).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import click

from curation_pipeline.settings_checks import SettingsConflict, check_decision_columns, check_models_used
from curation_pipeline.settings_file import RESOURCE_KEYS, SETTINGS_FILE_ENV, read_settings_file

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
OBSERVE_NAMED_MAX = 2000  # --only-missing observes the shards named, up to this many (a run tag), else all


class BadInput(click.ClickException):
    exit_code = EXIT_BAD_INPUT


class Failed(click.ClickException):
    exit_code = EXIT_FAILED


REPO = Path(__file__).resolve().parents[1]
INSTANCE_YAML = REPO / "dagster.yaml"
HOME_DEFAULT = Path("data", "dagster_home")  # under the working folder; `make ui` always uses the repository's


@contextlib.contextmanager
def home_lock(home: Path):
    """An exclusive lock on DAGSTER_HOME: creating the SQLite storages and registering partitions are not
    safe to race (concurrent `curate run`s on a fresh home stamped two alembic heads, failing every later run)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (run one `curate run` at a time there)
        yield
        return
    with open(home / ".curate.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def warehouse_lock(home: Path, warehouse: str, say=lambda message: None):
    """One `curate run` at a time per warehouse and Dagster home: a second one planned shards the first had
    scored and not yet decided (no run of theirs existed to tell it) and decided them beside it, twice, each
    publishing its own. It waits, after ``say`` tells who holds the lock."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (run one `curate run` at a time there)
        yield
        return
    name = hashlib.sha256(_absolute(warehouse, Path.cwd()).encode()).hexdigest()[:16]
    with open(home / f".curate-run-{name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            say(f"waiting for another `curate run` on {warehouse} ({handle.read().strip() or 'a process'}) to end")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _home_path() -> Path:
    """The Dagster home, made absolute (Dagster refuses a relative one, after everything has loaded) and
    created; an empty DAGSTER_HOME (an unset shell variable) means the default."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / HOME_DEFAULT).resolve()
    if home.exists() and not home.is_dir():
        raise BadInput(f"DAGSTER_HOME {home} is a file, not a folder")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create DAGSTER_HOME {home}: {exc}") from exc
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _dagster_home() -> Path:
    home = _home_path()
    with home_lock(home):  # one process at a time sets up a fresh home, the others find it ready
        config = home / "dagster.yaml"
        if not config.exists():  # the shipped instance settings (run retries on, telemetry off), never overwritten
            text = INSTANCE_YAML.read_text() if INSTANCE_YAML.is_file() else ""
            tmp = config.with_name(f".dagster.yaml.{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, config)
        import dagster as dg

        # set up once per Dagster version and instance settings: later runs skip this second instance
        settings = hashlib.sha256(config.read_bytes()).hexdigest()[:12]
        ready = home / f".curate-ready-{dg.__version__}-{settings}"
        if not ready.exists():
            with dg.DagsterInstance.get() as instance:  # creates (and migrates) every storage, serialized
                instance.get_runs(limit=1)
                instance.get_dynamic_partitions("shards")
                instance.all_instigator_state()
            ready.touch()
    return home


def _quiet() -> dict:
    return {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _run_config(defs) -> dict:
    """Quiet loggers, and the warehouse resource as the definitions hold it, its root absolute: recorded with
    every run this command starts (the settle helpers' too, which take no tags), so the report tells this
    warehouse's runs from another ``--warehouse``'s in the same Dagster home (``assets/failures.py``).
    Every setting of the resource: run config replaces its whole config."""
    from curation_pipeline.assets.failures import warehouse_id

    warehouse = defs.resources["warehouse"]
    config = {name: getattr(warehouse, name) for name in type(warehouse).model_fields}
    config["root"] = warehouse_id(warehouse.root)
    return {**_quiet(), "resources": {"warehouse": {"config": config}}}


def _run_tags(run_config: dict) -> dict[str, str]:
    """The tag that names the warehouse a run writes to (``curation/warehouse``, its absolute root)."""
    from curation_pipeline.assets.failures import WAREHOUSE_TAG

    return {WAREHOUSE_TAG: run_config["resources"]["warehouse"]["config"]["root"]}


def _last_error(result) -> str | None:
    """The last failure message of an in-process run, if any."""
    errors = [e.message for e in result.all_events if e.is_failure and e.message]
    return errors[-1] if errors else None


@contextlib.contextmanager
def _stop_on_interrupt():
    """Yield a check that raises KeyboardInterrupt if a Ctrl-C, SIGTERM or SIGHUP came since the last check.

    Dagster takes SIGINT over during an in-process run and raises it only at the next step's
    boundary: one that comes after the last step is forgotten when the run ends, and one that
    fails a step fails only that shard's run, after which the next shard would start. The signal's
    wakeup byte (written at C level for any signal with a Python handler) is kept here instead, so
    the command stops after the run the signal came in, as it would stop anywhere else.

    SIGTERM and SIGHUP (a scheduler or pod stopping the run, a closed terminal) would otherwise kill
    the process mid-step and leave its Dagster run STARTED for ever, which also holds off the settle
    sensor; here they stop it as a Ctrl-C does: the run marked failed, exit 1. (Dagster maps SIGTERM
    to its SIGINT handler during a run.) A signal this process ignores (``nohup``, a background job's
    SIGINT) never stops the command: Dagster would take even an ignored SIGINT during a run and fail the step it
    lands in, so while SIGINT is ignored its handler is only kept here, for SIGTERM and SIGHUP to call."""
    import signal
    import threading

    from dagster._utils import interrupts

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    ignored = {s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) == signal.SIG_IGN}
    stopping = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} - ignored
    dagster_handler = [signal.SIG_IGN]  # while SIGINT is ignored: the handler Dagster would have given it

    class _SigintKept:
        """``signal`` as Dagster's interrupt helpers see it while SIGINT stays ignored: the handler they install
        and save (nested: a step's inside the run's) is kept here, so each restores the one it replaced."""

        def __getattr__(self, name):
            return getattr(signal, name)

        @staticmethod
        def getsignal(signum):
            return dagster_handler[0] if signum == signal.SIGINT else signal.getsignal(signum)

    def as_interrupt(_signum, frame) -> None:
        # Dagster's during a run, else Python's KeyboardInterrupt
        handler = dagster_handler[0] if signal.SIGINT in ignored else signal.getsignal(signal.SIGINT)
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    replaced = {s: signal.signal(s, as_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(s) == signal.SIG_DFL}
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)

    def check() -> None:
        # Dagster leaves SIGTERM with SIGINT's handler after each run, and takes even an ignored SIGINT
        # (and SIGTERM) during one: what this process ignores is ignored again, the rest re-armed
        for s in ignored & {signal.SIGTERM, signal.SIGHUP}:
            signal.signal(s, signal.SIG_IGN)
        for s in replaced:
            signal.signal(s, as_interrupt)
        with contextlib.suppress(BlockingIOError):
            if any(s in stopping for s in os.read(read, 1024)):
                raise KeyboardInterrupt

    replace, module = interrupts._replace_interrupt_signal, interrupts.signal
    try:
        if signal.SIGINT in ignored:
            interrupts._replace_interrupt_signal = lambda handler: dagster_handler.__setitem__(0, handler)
            interrupts.signal = _SigintKept()
        yield check
    finally:
        interrupts._replace_interrupt_signal, interrupts.signal = replace, module
        signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)
        for s, handler in replaced.items():
            signal.signal(s, handler)
        for s in ignored & {signal.SIGTERM, signal.SIGHUP}:  # as found, whatever the last run left
            signal.signal(s, signal.SIG_IGN)


def _run_shards(job, instance, shards: list[str], desc: str, run_config: dict, assets=None,
                stop_if_interrupted=lambda: None) -> list[str]:
    """Each shard's run of ``job`` (only ``assets`` of it, if given) under ``run_config`` (``_run_config``),
    reporting failed checks and errors; returns the shards whose run failed."""
    from tqdm import tqdm

    tags = _run_tags(run_config)
    failed = []
    for shard in tqdm(shards, desc=desc, unit="shard"):
        result = job.execute_in_process(partition_key=shard, instance=instance, raise_on_error=False,
                                        run_config=run_config, asset_selection=assets, tags=tags)
        stop_if_interrupted()
        checks = [c for c in result.get_asset_check_evaluations() if not c.passed]
        for c in checks:
            click.echo(f"  {shard}: check {c.check_name} failed: {c.description}", err=True)
        if not result.success:
            failed.append(shard)
            error = _last_error(result)
            if error and not checks:
                click.echo(f"  {shard}: {error}", err=True)
    return failed


def _register(instance, shards: list[str]) -> None:
    """The shards as partitions, those not yet registered (concurrent `curate run`s register theirs in turn)."""
    from curation_pipeline.partitions import add_shards

    with home_lock(Path(os.environ["DAGSTER_HOME"])):  # another writer outside the lock is retried (add_shards)
        add_shards(instance, shards)


def _register_pool(instance, defs, raw: dict[str, str]) -> None:
    """The warehouse's scored shards with a raw file here that this Dagster home has not registered (curated
    under another home): registered, or settling would hold them as frozen, as if their raw file were gone,
    and never re-select them under this run's policy or a changed duplicate index."""
    from curation_pipeline.decisions.dedup import pool_identity
    from curation_pipeline.partitions import shard_partitions

    known = set(instance.get_dynamic_partitions(shard_partitions.name))
    unregistered = [s for s in pool_identity(defs.resources["warehouse"].warehouse()) if s in raw and s not in known]
    if unregistered:
        _register(instance, unregistered)


def _materialize(defs, instance, selected: list[str], report: bool,
                 redecide: list[str] = (), settle: bool = False) -> tuple[list[str], bool, list[str]]:
    """Run each shard's job, then the report (``_report``); returns what failed, whether the report
    was rebuilt, and the shards of ``selected`` and ``redecide`` curated (decided and published) by this run.
    The shards of ``redecide`` are not scored: they join the decide pass, as in a re-selection. ``settle``:
    the pool is settled (duplicates, cut) even where no shard is scored or decided here.

    Several shards go in two passes: every shard scored first, then the duplicate index over the
    whole pool, then every shard decided once against it. One pass per shard would decide each
    shard against the pool as it was, and re-select all but the last once the pool is complete.
    With keep_fraction on, the global cut over the scored pool comes between the passes, even for
    one shard: no shard can be decided before it; shards of earlier runs decided with another cut
    are then re-selected, so the whole pool keeps the fraction asked. With keep_fraction off over a
    stored "on" cut, the cut records "off" instead, and shards of earlier runs decided with a cut are
    re-selected without one (else the report would hold the pool to a cut no run applies)."""
    from curation_pipeline.assets.dedup import settle_duplicates
    from curation_pipeline.assets.selection import settle_cut
    from curation_pipeline.automation import DECIDE_KEYS, SCORE_KEYS
    from curation_pipeline.decisions.cut_store import CUT_ASSET, read_cut_record
    from curation_pipeline.decisions.dedup import INDEX_ASSET

    _register(instance, selected)
    job = defs.resolve_job_def("curate_shards")
    cut = defs.resources["policy"].keep_fraction is not None
    # keep_fraction off over a stored "on" cut: recorded "off" again, or every shard reads as unsettled
    uncut = not cut and (read_cut_record(defs.resources["warehouse"].warehouse()) or {}).get("status") == "on"
    two_passes = len(selected) > 1 or cut or bool(redecide)
    deciding = [*selected, *redecide]  # every shard this run decides
    run_config = _run_config(defs)  # every run says which warehouse it wrote to
    with _stop_on_interrupt() as stop_if_interrupted:
        desc, assets = ("scoring", SCORE_KEYS) if two_passes else ("shards", None)
        failed = _run_shards(job, instance, selected, desc, run_config, assets,
                             stop_if_interrupted) if selected else []
        # the pool moved: a shard scored, or one to decide under this run's settings
        scored = len(failed) < len(selected) or bool(redecide) or settle
        no_cut = False  # the cut this run needs is not stored: with it on, no shard can be decided
        if (cut and scored) or uncut:
            result = defs.resolve_job_def("selection_cut_job").execute_in_process(
                instance=instance, raise_on_error=False, run_config=run_config, tags=_run_tags(run_config))
            stop_if_interrupted()
            if not result.success:
                no_cut = True
                undecided = [s for s in deciding if s not in failed]
                click.echo(f"  selection_cut: {_last_error(result) or 'failed'}; " + (
                    f"scored but not decided: {', '.join(undecided)}" if cut else
                    "it still records keep_fraction on, so the report holds the pool to that cut"), err=True)
                failed.append(CUT_ASSET)
        # cross-shard dedup over the whole pool, whatever order the shards ran in
        if scored and not (cut and no_cut):
            settled: dict = {}
            indexed = len(failed)  # a shard failing from here on is not known to the index as blocked
            # says so when the pool was decided under another policy: this run's re-selects those shards
            failed += settle_duplicates(defs, instance, run_config, settled, stop_if_interrupted,
                                        say=lambda message: click.echo(f"  {message}", err=True),
                                        own=deciding)
            # shards of earlier runs decided with another cut than the stored one (a smaller pool's; or any cut,
            # with keep_fraction off): nothing to read when no cut was ever stored
            if not no_cut:  # else the stored cut is not this run's: re-selecting would not settle them
                failed += settle_cut(defs, instance, run_config, skip=tuple(deciding), results=settled,
                                     after_each_run=stop_if_interrupted)
            if two_passes:  # the shards scored above and not re-selected by settling, decided once
                todo = [s for s in deciding if s not in failed and f"reselect:{s}" not in settled]
                if todo:  # else settling decided them all: no empty "deciding: 0shard" bar
                    failed += _run_shards(job, instance, todo, "deciding", run_config, DECIDE_KEYS,
                                          stop_if_interrupted)
            # a shard that failed since the index was built (deciding, or re-selected by settling) may have failed a
            # blocking check: it publishes nothing new, and the index ranked its pairs as published, withholding
            # their copies elsewhere. Settled again (as the sensor would) until no shard fails anew
            newly = [s for s in failed[indexed:] if s not in (INDEX_ASSET, CUT_ASSET)]
            while newly:
                newly = [s for s in settle_duplicates(defs, instance, run_config, settled, stop_if_interrupted,
                                                      own=deciding) if s not in failed]
                failed += newly
            # the reverse: a shard blocked when the index was built that passes now (decided again under new
            # settings) is another pool too. Settled again while the settle sensor's own test finds work (bounded:
            # a round that leaves the same requests would only repeat)
            asked: list[tuple[str, ...]] = []
            while (two_passes and len(asked) < SETTLE_ROUNDS and (requests := _settle_requested(defs, instance))
                   and requests not in asked):
                asked.append(requests)
                failed += [s for s in settle_duplicates(defs, instance, run_config, settled, stop_if_interrupted,
                                                        own=deciding) if s not in failed]
                if cut and not no_cut:
                    failed += [s for s in settle_cut(defs, instance, run_config, results=settled,
                                                     after_each_run=stop_if_interrupted) if s not in failed]
            # shards of earlier runs this one re-decided and published again: the pool they were decided against moved
            others = sorted(k.split(":", 1)[1] for k in settled if k.startswith("reselect:")
                            and k.split(":", 1)[1] not in deciding)
            if others:
                click.echo(f"  re-selected {len(others)} other shard{'s' * (len(others) != 1)} against the pool as "
                           f"it is now (their duplicates or keep_fraction cut changed): {', '.join(others[:20])}"
                           + (f" and {len(others) - 20} more" if len(others) > 20 else ""), err=True)
        reported = report and _report(defs, instance, failed, stop_if_interrupted, run_config)
    # with keep_fraction on and no cut stored, the scored shards were never decided
    curated = [] if cut and no_cut else [s for s in deciding if s not in failed]
    return failed, reported, curated


SETTLE_ROUNDS = 3  # a run's settling rounds after its decide pass: each changes the pool only by shards it mends


def _settle_requested(defs, instance) -> tuple[str, ...]:
    """What the settle sensor would request now (its own test, ``settle_requests``), as comparable names; none
    while something else keeps the pool changing (a run in progress)."""
    from curation_pipeline.assets.dedup import settle_requests

    requests = settle_requests(instance, defs.resources["warehouse"], defs.resources["policy"])
    if isinstance(requests, str):
        return ()
    return tuple(sorted(r.partition_key or r.job_name for r in requests))


def _to_settle(defs, instance) -> bool:
    """Whether the pool needs settling though no shard needs a run (``--only-missing``): a shard removed, or
    a frozen one's raw file back, leaves its duplicates' other copies withheld until the index is rebuilt and
    they are re-selected. The settle sensor's own test (``settle_requests``), each request printed."""
    from curation_pipeline.assets.dedup import no_pool_to_settle, settle_requests
    from curation_pipeline.decisions.dedup import read_index

    warehouse, policy = defs.resources["warehouse"], defs.resources["policy"]
    wh = warehouse.warehouse()
    if policy.keep_fraction is None and no_pool_to_settle(wh, read_index(wh)):
        return False  # as a run settles: no index for one shard, or a pool without duplicate signals
    requests = settle_requests(instance, warehouse, policy)
    if isinstance(requests, str) or not requests:
        return False
    for request in requests:
        click.echo(f"to settle: {request.partition_key or request.job_name.removesuffix('_job')} "
                   f"({request.tags.get('curation/reason') or 'the pool changed since its shards were decided'})")
    return True


def _needing_a_run(defs, instance, selected: list[str], raw: dict[str, str]
                   ) -> tuple[list[str], list[str], list[str]] | None:
    """The shards of ``selected`` that need a run, as the ``fill_missing_shards`` schedule picks them
    (``refresh_plan``): never curated, a file of theirs gone from the warehouse, stale by a replaced raw file
    or changed code (another profile, scorer or rewriter version, or another model: ``output_settings``), left
    half made by a run that stopped, or last made into another warehouse, once the raw files are observed (only
    a file whose stat changed is read); also those the schedule holds after two failed runs, as asked here by
    hand. Apart: the shards whose stale tables all come after their scores (``SCORES_CURRENT``: another rewriter
    version or model), and those of the rest decided under other policy settings than this run's
    (``_decided_otherwise``): their scores stand, so they are re-decided, rewritten and published again, not
    scored. Returns (shards to run, shards to re-decide, shards left to a run in flight); the others are counted,
    not run. None when the raw files could not be observed."""
    from curation_pipeline.assets.ingest import OBSERVE_TAG
    from curation_pipeline.automation import SCORES_CURRENT, in_flight_note, refresh_plan, runs_in_flight

    _register(instance, selected)
    run_config = _run_config(defs)
    # only the shards asked for (``--shard``): observing all of a large pool on each call cost O(pool)
    named = ({OBSERVE_TAG: json.dumps(sorted(selected))}
             if len(selected) <= OBSERVE_NAMED_MAX and len(selected) < len(raw) else {})
    observed = defs.resolve_job_def("observe_raw_shards").execute_in_process(
        instance=instance, raise_on_error=False, run_config=run_config, tags={**_run_tags(run_config), **named})
    if not observed.success:  # unobserved, a replaced raw file would read as up to date
        click.echo(f"  observe_raw_shards: {_last_error(observed) or 'failed'}; nothing run", err=True)
        return None
    # only the shards asked for are judged: the others count as absent here (no status looked up for them)
    todo, held, _ = refresh_plan(instance, defs.resources["warehouse"], defs.get_repository_def(),
                                 {s: raw[s] for s in selected if s in raw} if named else raw)
    needed = {**todo, **{shard: held_back.reason for shard, held_back in held.items()}}  # asked by hand: run
    # Dagster's records say up to date, but a file of the shard's scoring cannot be read (truncated, overwritten):
    # run, else the pool's next read of it (the duplicate index, the cut) fails every shard's run
    needed.update(_unreadable(defs, [s for s in selected if s not in needed], SCORED_TABLES))
    # as the schedule: a shard with a run queued, launching or started (another `curate run`, the daemon's, a
    # backfill's yet to launch) is not run beside it, both writing its files; a run whose process on this machine
    # is gone no longer counts
    otherwise = _decided_otherwise(defs, [s for s in selected if s not in needed])  # read once: footers
    flight = runs_in_flight(instance)
    busy = [s for s in selected if s in flight and (s in needed or s in otherwise)]
    if busy:
        click.echo(f"  in flight, not run: {in_flight_note(flight, busy)}", err=True)
        selected = [s for s in selected if s not in busy]
    chosen = [s for s in selected if s in needed and not needed[s].startswith(SCORES_CURRENT)]
    for shard in [s for s in selected if s in held]:
        click.echo(f"  held by the schedule, run as asked: {held[shard]}", err=True)
    for shard in chosen:
        click.echo(f"  to run: {shard} ({needed[shard]})", err=True)
    redecide = {s: needed[s] for s in selected if s in needed and s not in chosen}  # another rewriter, say
    redecide.update({s: why for s, why in otherwise.items() if s not in busy})
    for shard, why in redecide.items():
        click.echo(f"  to re-decide: {shard} ({why})", err=True)
    fresh = len(selected) - len(chosen) - len(redecide)  # those in flight left out above
    if fresh:
        click.echo(f"  up to date, not run: {fresh} shard{'s' if fresh != 1 else ''}", err=True)
    return chosen, list(redecide), busy


SCORED_TABLES = ("pairs", "skips", "quality_scores")  # a shard's tables that only a run of the whole shard makes


def _by_footers(wh, shards: list[str], tables, judge) -> dict[str, str]:
    """shard -> the first answer of ``judge(shard, table, metadata, error)`` that is not None, over the shard's files
    of ``tables`` (their footers: a request each on object storage, a few at a time); only shards with one. A file
    removed since the listing is passed over."""
    from concurrent.futures import ThreadPoolExecutor

    from curation_pipeline.storage.warehouse import READ_THREADS

    listed = {table: set(wh.shards(table)) for table in tables}

    def why(shard: str) -> str | None:
        for table in tables:
            if shard not in listed[table]:
                continue
            try:
                metadata, error = wh.table_metadata(table, shard), None
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:  # damaged: pyarrow's ArrowInvalid is a ValueError
                metadata, error = None, exc
            said = judge(shard, table, metadata, error)
            if said:
                return said
        return None

    with ThreadPoolExecutor(READ_THREADS) as pool:
        return {shard: said for shard, said in zip(shards, pool.map(why, shards)) if said}


def _unreadable(defs, shards: list[str], tables: tuple[str, ...]) -> dict[str, str]:
    """Shard -> which of its ``tables`` files cannot be read, for the shards with such a file; a file the shard
    does not have is the schedule's to name missing."""
    wh = defs.resources["warehouse"].warehouse()
    return _by_footers(wh, shards, tables, lambda shard, table, _, error: None if error is None else (
        f"its {table} file cannot be read ({wh.table_path(table, shard)}: {error}): made again"))


def _decided_otherwise(defs, shards: list[str]) -> dict[str, str]:
    """Shard -> why its stored decisions or rewrites do not hold under this run's policy: the settings its
    caption_decisions were made under that differ (``decided_under_other_policy``), or its rewrites' acceptance
    (``accepted_under_other_rules``), or a decisions file that cannot be read (re-deciding replaces it); only
    the shards where any does. A shard with no decisions stored is no shard to re-decide. Reads each shard's
    table footers, a few at a time (one request each on object storage)."""
    from concurrent.futures import ThreadPoolExecutor

    from curation_pipeline.assets.decisions import accepted_under_other_rules, decided_under_other_policy
    from curation_pipeline.storage.warehouse import READ_THREADS

    wh, policy = defs.resources["warehouse"].warehouse(), defs.resources["policy"]
    decided, rewritten = set(wh.shards("caption_decisions")), set(wh.shards("rewritten_captions"))
    resolved = set(wh.shards("final_captions"))

    def why(shard: str) -> str | None:
        try:
            decisions = wh.table_metadata("caption_decisions", shard)
            rewrites = wh.table_metadata("rewritten_captions", shard) if shard in rewritten else None
            if shard in resolved:  # read by lineage and the report: a damaged one is made again
                wh.table_metadata("final_captions", shard)
        except FileNotFoundError:  # removed since the listing: the schedule's plan names it missing next time
            return None
        except (OSError, ValueError) as exc:  # a damaged file (pyarrow's errors are these): made again
            return f"its stored decisions, rewrites or final captions cannot be read: {exc}"
        differs = [*decided_under_other_policy(decisions, policy),
                   *accepted_under_other_rules(decisions, rewrites, policy)]
        return f"decided under other settings: {'; '.join(differs)}" if differs else None

    todo = [shard for shard in shards if shard in decided]
    with ThreadPoolExecutor(READ_THREADS) as pool:  # on object storage each read is a round trip
        reasons = dict(zip(todo, pool.map(why, todo)))
    return {shard: reason for shard, reason in reasons.items() if reason}


def _report(defs, instance, failed: list[str], stop_if_interrupted, run_config: dict) -> bool:
    """Rebuild the quality report, whatever failed: an old one would still call a shard that failed or
    was blocked in this run ok (the new one lists it so, out of the pooled figures). Not when no shard
    has been decided yet: there is nothing to report. Returns whether it was rebuilt; a failed build is
    added to ``failed``."""
    from curation_pipeline.reporting.report import REQUIRED_TABLES
    from curation_pipeline.storage.warehouse import StorageUnreachable, object_storage_errors

    wh = defs.resources["warehouse"].warehouse()
    try:  # storage lost during the run: the shards' failures say so already, the summary still comes
        with object_storage_errors(wh.root):
            missing = [table for table in REQUIRED_TABLES if not wh.shards(table)]
    except StorageUnreachable as exc:
        click.echo(f"  quality_report: not built, {exc}", err=True)
        failed.append("quality_report")
        return False
    if missing:  # what build_report needs of at least one shard
        click.echo(f"  quality_report: not built, no shard has {', '.join(missing)} yet", err=True)
        return False
    result = defs.resolve_job_def("quality_report_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config=run_config, tags=_run_tags(run_config))
    stop_if_interrupted()
    if not result.success:
        failed.append("quality_report")
    return result.success


def _hush_dagster_previews() -> None:
    """The definitions use preview and beta Dagster features on purpose (partitioned checks, observable sources):
    said to whoever runs `curate` on every run, it is noise, not advice."""
    import warnings

    import dagster as dg

    for category in (dg.PreviewWarning, dg.BetaWarning):
        warnings.filterwarnings("ignore", category=category)


def _build_definitions(**kwargs):
    """``build_definitions(**kwargs)``, its module imported here: the module's default definitions, built when it
    is imported, read the environment's settings (``CURATION_RAY_ACTORS=four``), refused in one line that names
    the setting, not pydantic's whole error."""
    import pydantic

    try:  # a resource not given is built from the environment here too
        from curation_pipeline.definitions import build_definitions

        return build_definitions(**kwargs)
    except pydantic.ValidationError as exc:
        keys = {cls.__name__: key for key, cls in _resource_classes().items()}
        raise _invalid(keys.get(exc.title, exc.title), exc) from exc
    except ValueError as exc:  # the location's settings file (CURATION_SETTINGS), named in the message
        raise BadInput(str(exc)) from exc


def _resource_classes() -> dict[str, type]:
    from curation_pipeline.resources import RESOURCE_CLASSES

    return RESOURCE_CLASSES


def setting_default(setting: str):
    """The default a resource declares for ``setting`` (``scoring.clip.model``): the one place it lives."""
    resource, *path = setting.split(".")
    value = _resource_classes()[resource]()
    for part in path:
        value = getattr(value, part)
    return value


def _put(settings: dict[str, dict], resource: str, key: str, value, source: str) -> None:
    """Set ``resource.key`` (``drift.max_kl``: a nested setting) to ``value``."""
    *parents, leaf = key.split(".")
    target = settings[resource]
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise BadInput(f"{source}: {resource}.{part} is a value, not a group of settings")
    target[leaf] = value


def _merge(target: dict, values: dict) -> None:
    """``values`` over ``target``, groups key by key (``policy: {drift: {min_rows: 3}}`` keeps the drift's
    other keys)."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def load_settings(pairs: tuple[str, ...] = (), config_file: str | None = None,
                  flags: dict[str, object] | None = None, location_file: str | None = None) -> dict[str, dict]:
    """Resource settings, each from the last of: the code location's settings file (``location_file``:
    ``CURATION_SETTINGS``, so a run here and the UI's agree), a YAML file (``policy: {keep_threshold: 80}`` or run
    config's ``resources:`` section; its keys replace the location file's, key by key in nested groups too),
    ``--set policy.drift.max_kl=0.3`` pairs (later wins; values are YAML, ``null`` = off), then ``flags``
    (``{"scoring.profile": "text"}``; None = not given). Anything unset keeps the resource's default."""
    import yaml

    settings: dict[str, dict] = {key: {} for key in RESOURCE_KEYS}
    for path in (location_file, config_file):
        if path:
            try:
                for resource, values in read_settings_file(path).items():
                    _merge(settings[resource], values)
            except ValueError as exc:
                raise BadInput(str(exc)) from exc
    for pair in pairs:
        name, sep, value = pair.partition("=")
        resource, dot, key = name.strip().partition(".")
        if not sep or not dot or resource not in RESOURCE_KEYS or not key:
            raise BadInput(f"--set {pair!r}: expected RESOURCE.KEY=VALUE with RESOURCE one of {', '.join(RESOURCE_KEYS)}")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise BadInput(f"--set {pair!r}: the value is not YAML ({str(exc).splitlines()[0]}); quote text that "
                           "holds YAML syntax, e.g. --set \"policy.keep_expression='clip_score >= 0.3'\"") from exc
        _put(settings, resource, key, parsed, f"--set {pair!r}")
    for name, value in (flags or {}).items():
        if value is not None:
            resource, _, key = name.partition(".")
            _put(settings, resource, key, value, f"{name}={value!r}")
    return settings


def _invalid(resource: str, exc: Exception) -> BadInput:
    """A resource's pydantic ValidationError as bad input naming each setting by its dotted name
    (``policy.drift.max_kl: ... (got -1)``), not the resource class and a bare location."""
    from curation_pipeline.storage.warehouse import mask_credentials

    lines = []
    for error in exc.errors():
        setting = ".".join([resource, *map(str, error["loc"])])
        message = error["msg"].removeprefix("Value error, ")
        got = mask_credentials(error["input"]) if isinstance(error["input"], str) else error["input"]
        # an environment variable's message says what it got, and so does a URL refused for its credentials
        given = error["loc"] and not message.startswith("environment variable") and f"{got}:" not in message
        lines.append(f"{setting}: {message}" + (f" (got {got!r})" if given else ""))
    return BadInput("\n".join(lines))


def _setting_name(setting: str) -> str:
    """``scoring.clip.model (--clip-model)``: a setting with the flag of ``curate run`` that sets it, if any."""
    flags = [p.opts[0] for p in run.params if isinstance(p, SettingFlag) and p.setting == setting]
    return f"{setting} ({flags[0]})" if flags else setting


def _check_models_used(settings: dict[str, dict], named: dict[str, dict], scoring, rewriting) -> None:
    """``settings_checks.check_models_used`` over what the run was given: the command line's and the --config
    file's settings, except a file's settings of a choice the command line made again (a flag that picks another
    profile or rewriter overrides the file's choice, and so its models and switches)."""
    given = {**settings}
    for group, choice in (("scoring", "profile"), ("rewriter", "kind")):
        if choice in (named.get(group) or {}):
            given[group] = named[group]
    try:
        check_models_used(given, scoring, rewriting, name_of=_setting_name)
    except SettingsConflict as exc:
        raise BadInput(str(exc)) from None


def _check_decision_columns(scoring, quality_column: str, keep_expression: str | None,
                            written: list[str] | None = None) -> None:
    try:
        check_decision_columns(scoring, quality_column, keep_expression, written, name_of=_setting_name)
    except SettingsConflict as exc:
        raise BadInput(str(exc)) from None


def run_shards(raw: str, warehouse: str, shards: tuple[str, ...], report: bool,
               settings: dict[str, dict] | None = None, named: dict[str, dict] | None = None,
               only_missing: bool = False, own_settings: bool = False) -> int:
    """Register the shards as partitions, materialize each, then the report; returns an exit code.
    ``settings``: the resources' settings (``load_settings``), the rest their defaults; ``named``: those
    given on the command line (flags and --set), whose models must be ones the run loads; ``only_missing``:
    only the shards that need a run (``_needing_a_run``); ``own_settings``: ``settings`` has more than the code
    location's (--config), which the web UI's runs do not get."""
    from curation_pipeline import heap, helper
    from curation_pipeline.validation import _gx

    # first: unless the home's helper is running, start it: it imports Great Expectations (seconds) on
    # the other core while Dagster, the definitions and the models load here; later runs find it warm
    _home_path()
    helper.start(_gx.warm)
    import dagster as dg
    import pydantic

    _hush_dagster_previews()
    from curation_pipeline.models.loading import ModelUnavailableError
    from curation_pipeline.resources import WarehouseResource
    from curation_pipeline.scoring.signals import cpu_threads
    from curation_pipeline.storage.warehouse import StorageUnreachable, Warehouse, object_storage_errors

    helper.check_settings()
    try:
        found, rejected = WarehouseResource(raw_root=raw, root=warehouse).list_raw()
    except pydantic.ValidationError as exc:
        raise _invalid("warehouse", exc) from None
    Warehouse(warehouse).check_reachable()
    from curation_pipeline.automation import LOGGED_REJECTS

    for message in rejected[:LOGGED_REJECTS]:  # a subfolder of 10,000 shards is one line's worth
        click.echo(f"skipped: {message}", err=True)
    if len(rejected) > LOGGED_REJECTS:
        click.echo(f"skipped: and {len(rejected) - LOGGED_REJECTS} more raw file(s)", err=True)
    selected = list(dict.fromkeys(shards)) or sorted(found)  # `--shard a --shard a` runs it once
    unknown = [s for s in selected if s not in found]
    if unknown:
        raise BadInput(f"no raw shard {', '.join(unknown)} in {raw} (found: {', '.join(sorted(found)) or 'none'})")
    if not selected:
        raise BadInput(f"no .tar shards found in {raw}; "  # sample-data writes a local folder, not a URL
                       + (f"generate samples with `curate sample-data --out {shlex.quote(raw)}` or "
                          if not _is_url(raw) else "")
                       + "point --raw elsewhere")
    settings = settings or {}
    for name, cls in _resource_classes().items():
        unknown = sorted(set(settings.get(name, {})) - set(cls.model_fields))
        if unknown:
            raise BadInput(f"unknown {name} setting {', '.join(unknown)}; known: {', '.join(sorted(cls.model_fields))}")
    built = {}
    for name, cls in _resource_classes().items():  # compute: keys not given read their env variables
        try:
            built[name] = cls(**settings.get(name, {}))
        except pydantic.ValidationError as exc:
            if name == "policy":  # scoring is built: a decision column it never writes is named first
                given = settings.get(name, {})
                _check_decision_columns(built["scoring"],
                                        given.get("quality_column") or setting_default("policy.quality_column"),
                                        given.get("keep_expression") if isinstance(given.get("keep_expression"), str)
                                        else None)
            raise _invalid(name, exc) from exc
        except (dg.DagsterInvalidConfigError, TypeError, ValueError) as exc:
            raise BadInput(f"invalid {name} setting: {exc}") from exc
    scoring, rewriting, policy, compute = (built[name] for name in RESOURCE_KEYS)
    try:
        rules = policy.decision_policy()
        compute.uses_ray  # an unknown engine is bad input here, not a failed step
    except (pydantic.ValidationError, dg.DagsterInvalidConfigError, TypeError, ValueError) as exc:
        raise BadInput(f"invalid setting: {exc}") from exc
    # before any model loads or run starts: a model the run would not use, a decision column it would not score
    _check_models_used(settings, named or {}, scoring, rewriting)
    _check_decision_columns(scoring, rules.quality_column, rules.keep_expression)
    _dagster_home()  # a fresh home's settings written first: the thread budget reads its max_concurrent_runs
    try:  # load models here, once: a model that cannot be loaded is bad input, not a failed run
        cpu_threads()  # a malformed CURATION_THREADS too
        scoring.scorers()
        rewriting.rewriter()
    except (ValueError, ModelUnavailableError) as exc:
        raise BadInput(str(exc)) from exc
    # and what the models loaded write: a declared column only some models have (clip_sigmoid: SigLIP's alone)
    _check_decision_columns(scoring, rules.quality_column, rules.keep_expression,
                            written=[c for scorer in scoring.scorers() for c in scorer.columns])
    defs = _build_definitions(raw_root=raw, warehouse_root=warehouse, scoring=scoring, rewriter=rewriting,
                              policy=policy, compute=compute)
    # what this process built so far lives as long as it does (a child of the warm start: its server froze
    # what it imported before forking, and this does nothing)
    heap.freeze(heap.IMPORTED)
    with (warehouse_lock(Path(os.environ["DAGSTER_HOME"]), warehouse, say=lambda m: click.echo(m, err=True)),
          dg.DagsterInstance.get() as instance):  # also makes it the definitions' state storage
        _register_pool(instance, defs, found)
        redecide: list[str] = []
        settle = False  # nothing to run, but the pool moved since its shards were decided (a shard removed)
        if only_missing:
            plan = _needing_a_run(defs, instance, selected, found)
            if plan is None:
                click.echo("FAILED: observe_raw_shards", err=True)
                return EXIT_FAILED
            selected, redecide, busy = plan
            settle = not selected and not redecide and not busy and _to_settle(defs, instance)
            if not selected and not redecide and not settle:
                # a report removed, or never built (runs with --no-report): built now, from the tables as they are
                wh_now = defs.resources["warehouse"].warehouse()
                rebuilt = report and not busy and not wh_now.fs.exists(wh_now.report_db_path)
                if rebuilt and not _report(defs, instance, [], lambda: None, _run_config(defs)):
                    click.echo("FAILED: quality_report", err=True)
                    return EXIT_FAILED
                said = ("the report was missing: built" if rebuilt else "the report is as it was")
                click.echo(f"nothing to run here: {len(busy)} shard{'s' if len(busy) != 1 else ''} in flight in "
                           f"another run (named above), every other shard selected curated and up to date ({said})"
                           if busy else
                           f"nothing to run: every shard selected is curated and up to date ({said})")
                return EXIT_BAD_INPUT if rejected and not shards else 0
        if selected and not compute.uses_ray and _embeds_captions(scoring.scorers()):
            # every shard scored here encodes its captions: MiniLM loads in a background thread while the
            # first one starts, not when its duplicate signals first need it
            from curation_pipeline.scoring.signals.embedding import prefetch_minilm

            prefetch_minilm()
        try:  # the store lost mid-run (between runs: settling, the report): one line, not botocore's traceback
            with object_storage_errors(warehouse):
                failed, reported, curated = _materialize(defs, instance, selected, report, redecide, settle=settle)
        except StorageUnreachable as exc:
            click.echo(f"FAILED: {exc}; once it answers again, `curate run --only-missing` runs what is left",
                       err=True)
            return EXIT_FAILED
    wh = Warehouse(warehouse)
    quoted = shlex.quote(warehouse)  # every path printed as a shell word: copied, a space or quote still works
    click.echo("")
    if curated:  # else nothing of this run was published: no folder or shard to point at
        click.echo(f"curated shards: {shlex.quote(wh.local_path(wh.curated_dir) + '/')}")
    cut = _cut_summary(wh) if curated and defs.resources["policy"].keep_fraction is not None else None
    if cut:  # what the fraction asked became: otherwise only in the cut's file and Dagster's metadata
        click.echo(f"keep_fraction:  {cut}")
    if reported:  # the path of an old report would pass it off as this run's
        click.echo(f"quality report: {shlex.quote(wh.local_path(wh.report_db_path))}  "
                   f"({curate_command()} report --warehouse {quoted})")
    # raw files read only up to damage (a cut download, an HTML page saved as .tar): curated, but a script must notice
    damaged = _damaged(wh, [shard for shard in selected if shard not in failed])
    if curated:  # a shard read whole: an unreadable one has no pair to show
        shown = next((shard for shard in curated if shard not in damaged), curated[0])
        click.echo(f"lineage:        {curate_command()} lineage --warehouse {quoted} --shard {shown}")
    click.echo(f"web UI:         {ui_command(raw, warehouse)}, then open http://127.0.0.1:3000")
    # its Materialize, backfills and sensors would decide otherwise, and call this run's shards stale
    if own_settings or any((named or {}).values()):
        click.echo("                (its runs use the code location's settings"
                   + (f", {os.environ[SETTINGS_FILE_ENV]}" if os.environ.get(SETTINGS_FILE_ENV) else ": the defaults")
                   + ", not this run's --config / --set / flags: put those in the file CURATION_SETTINGS names)")
    # files of --raw passed over (a name that is no shard key, a .tar.gz, ...): the valid shards are curated,
    # then the exit code says bad input so a script notices; not when --shard named what to curate
    skipped = 0 if shards else len(rejected)
    for shard, detail in damaged.items():
        click.echo(f"damaged: {shard}.tar: {detail}", err=True)
    if failed:
        click.echo(f"FAILED: {', '.join(failed)}", err=True)
    else:
        done = len(selected) + len(redecide)
        click.echo(f"done: {done} shard{'s' * (done != 1)} curated" if done or not settle else
                   "done: the pool settled (no shard needed a run of its own)")
    if skipped:
        click.echo(f"skipped {skipped} file{'s' if skipped != 1 else ''} of {raw}, not curated (named under "
                   f"'skipped:' above, the first {LOGGED_REJECTS})", err=True)
    if damaged:
        click.echo(f"{len(damaged)} raw file{'s' if len(damaged) != 1 else ''} read only up to damage (each named "
                   "under 'damaged:' above): replace them and run those shards again", err=True)
    return EXIT_FAILED if failed else EXIT_BAD_INPUT if skipped or damaged else 0


def _cut_summary(wh) -> str | None:
    """The stored keep_fraction cut in one line: pairs inside of those scored, the cut score and its ties."""
    from curation_pipeline.decisions.cut_store import read_cut_record

    record = read_cut_record(wh) or {}
    if record.get("status") != "on":
        return None
    line = (f"{record.get('kept', 0)} of {record.get('scored', 0)} scored pairs inside the cut (top "
            f"{float(record['fraction']) * 100:g}% by {record['quality_column']}")
    line += (": none)" if record.get("cut_score") is None else
             f": cut score {record['cut_score']:g}, {record.get('ties_kept', 0)} of {record.get('ties_at_cut', 0)} "
             "pairs tied at it drawn by key)")
    frozen = record.get("frozen") or []
    if frozen:  # scored shards whose raw file this --raw lacks: outside this cut, held to an earlier one
        line += (f"; {len(frozen)} shard{'s' * (len(frozen) != 1)} of the warehouse not in --raw ("
                 f"{', '.join(frozen[:5])}{', ...' if len(frozen) > 5 else ''}) stay under an earlier cut: run with "
                 "the --raw that holds them, or keep one raw location")
    return line


DAMAGE_SAYS = {"unreadable_tar": "no sample read: not a tar, or damaged at its start",
               "corrupt_tar": "nothing after it read", "truncated_tar": "the file ends there"}


def _damaged(wh, shards: list[str]) -> dict[str, str]:
    """shard -> its skips that say its raw file is damaged (``TAR_DAMAGE``), for the shards read by this run."""
    from concurrent.futures import ThreadPoolExecutor

    from curation_pipeline.shards.reader import TAR_DAMAGE
    from curation_pipeline.storage.warehouse import READ_THREADS, object_storage_errors

    def damage(shard: str) -> str | None:
        try:  # gone, unreadable, or storage lost since: the run's own failures say so, never a traceback here
            with object_storage_errors(wh.root):
                skips = wh.read_table("skips", shard, columns=["reason", "detail"], keep=False)
        except (OSError, ValueError):  # StorageUnreachable is an OSError
            return None
        told = skips[skips["reason"].isin(TAR_DAMAGE)]
        return "; ".join(f"{r.reason} {r.detail} ({DAMAGE_SAYS[r.reason]})" for r in told.itertuples(index=False))

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:  # a request or two each on object storage
        return {shard: told for shard, told in zip(shards, pool.map(damage, shards)) if told}


def _embeds_captions(scorers) -> bool:
    from curation_pipeline.scoring.signals.duplicates import DuplicateSignals

    return any(isinstance(s, DuplicateSignals) and s.embed_captions for s in scorers)


def _is_url(location: str) -> bool:
    """``s3://...`` (object storage, any fsspec protocol) rather than a local folder."""
    from fsspec.core import split_protocol

    return bool(split_protocol(location)[0])


def _absolute(location: str, base: Path) -> str:
    """A local folder as an absolute path (against ``base``), a URL (``s3://...``) as it is."""
    return location if _is_url(location) else os.path.normpath(base / location)


def curate_command() -> str:
    """``curate`` as the user can type it here: the bare name where PATH finds this installation's, else
    its path (``.venv/bin/curate`` after ``make demo``, whose virtualenv is not activated)."""
    import shutil

    own = Path(sys.executable).with_name("curate")
    if not own.is_file():
        return "curate"
    found = shutil.which("curate")
    if found and Path(found).resolve() == own.resolve():
        return "curate"
    try:
        return shlex.quote(str(own.absolute().relative_to(Path.cwd().absolute())))
    except ValueError:  # outside the working folder
        return shlex.quote(str(own.absolute()))


def ui_command(raw: str, warehouse: str) -> str:
    """The command that opens the web UI on this run's home, raw folder, warehouse and settings file
    (``CURATION_SETTINGS``, where set): the definitions read them from the environment, so each is passed,
    absolute. ``make ui`` is offered only where it opens the
    same ones: it sets DAGSTER_HOME to the repository's default home itself and leaves the other two to the
    environment (or their defaults, under the repository)."""
    from curation_pipeline.storage.warehouse import WAREHOUSE_DEFAULTS

    home = Path(os.environ["DAGSTER_HOME"])  # made absolute by _home_path
    env = {"DAGSTER_HOME": str(home)}
    make_ui = home == REPO / HOME_DEFAULT
    for field, given in (("raw_root", raw), ("root", warehouse)):
        name, default = WAREHOUSE_DEFAULTS[field]
        env[name] = _absolute(given, Path.cwd())
        make_ui &= env[name] == _absolute(os.environ.get(name) or default, REPO)
    if os.environ.get(SETTINGS_FILE_ENV):  # the settings this run started from: the UI's code location's too
        env[SETTINGS_FILE_ENV] = _absolute(os.environ[SETTINGS_FILE_ENV], Path.cwd())
        make_ui = False  # the command carries it, absolute (make runs in the repository)
    command = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    dagster = Path(sys.executable).with_name("dagster").absolute()  # this run's environment: `make ui`'s .venv or not
    if not (REPO / "workspace.yaml").is_file():  # an installed package (pip install ., an image): no checkout
        return f"{command} {shlex.quote(str(dagster))} dev -m curation_pipeline.definitions -h 127.0.0.1 -p 3000"
    in_venv = dagster == (REPO / ".venv" / "bin" / "dagster").absolute()
    make_ui &= in_venv
    dagster_command = ".venv/bin/dagster" if in_venv else shlex.quote(str(dagster))
    command += f" {dagster_command} dev -w workspace.yaml -h 127.0.0.1 -p 3000"
    if Path.cwd().resolve() != REPO:  # the virtualenv and workspace.yaml are the repository's
        command = f"cd {shlex.quote(str(REPO))} && {command}"
    return f"make ui   (= {command})" if make_ui else command


class FastExitGroup(click.Group):
    """Exit the real ``curate`` process without tearing down the interpreter (freeing torch, Dagster, GX
    and the models takes seconds nobody waits for); in-process (tests, ``CliRunner``) it exits as click does."""

    def main(self, *args, **kwargs):
        entry = getattr(sys.modules.get("__main__"), "__file__", None) or ""
        process = Path(entry).name in ("curate", "cli.py")
        if process and not args and "args" not in kwargs:  # `run` and `demo` in the warm server's child
            from curation_pipeline import forkserver

            code = forkserver.delegate(sys.argv)
            if code is not None:
                sys.exit(code)
        try:
            return super().main(*args, **kwargs)
        except SystemExit as exc:
            if not process or os.environ.get("CURATE_SLOW_EXIT"):
                raise
            if exc.code is not None and not isinstance(exc.code, int):
                click.echo(exc.code, err=True)
            _fast_exit(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))


def wind_down() -> None:
    """What a process must still do before ``os._exit``: stop a local Ray cluster, run the exit
    handlers (temp folders, loggers, Dagster's: ~30 ms), flush the streams."""
    import atexit
    import logging

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a local Ray cluster's processes must be stopped
        ray.shutdown()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _fast_exit(code: int) -> None:
    wind_down()
    os._exit(code)


@click.group(cls=FastExitGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Curate image-text pairs from webdataset shards: score, rewrite weak captions, keep the rest.

    Everything runs through the Dagster definitions in curation_pipeline.definitions, so runs
    started here show up in the web UI (same DAGSTER_HOME, default data/dagster_home).
    """


class StorageOption(click.Option):
    """--raw / --warehouse: given, else the environment variable the Dagster definitions read, else their
    default, both from ``WAREHOUSE_DEFAULTS`` (``field``: its key), so the CLI and the UI agree. Read only
    when the option is not given or --help shows it."""

    def __init__(self, *decls, field: str, **attrs):
        super().__init__(*decls, show_default=True, show_envvar=True, **attrs)
        self.field = field

    def _load(self) -> None:
        if self.envvar is None:
            from curation_pipeline.storage.warehouse import WAREHOUSE_DEFAULTS

            self.envvar, self.default = WAREHOUSE_DEFAULTS[self.field]

    def resolve_envvar_value(self, ctx):
        self._load()
        return super().resolve_envvar_value(ctx)

    def get_default(self, ctx, call=True):
        self._load()
        return super().get_default(ctx, call=call)

    def get_help_record(self, ctx):
        self._load()
        return super().get_help_record(ctx)


RAW = click.option("--raw", cls=StorageOption, field="raw_root", help="Folder or URL of raw .tar shards.")
WAREHOUSE = click.option("--warehouse", cls=StorageOption, field="root",
                         help="Warehouse root (Parquet tables, curated shards, quality.duckdb).")


class SettingFlag(click.Option):
    """A flag for one resource setting (``setting="scoring.profile"``). Unset (None) unless given, so a
    given flag wins over --config and --set and an absent one leaves theirs; --help shows the
    resource's own default (read only then: it imports the resources)."""

    def __init__(self, *decls, setting: str, **attrs):
        super().__init__(*decls, default=None, **attrs)
        self.setting = setting

    def get_help_record(self, ctx):
        spec, text = super().get_help_record(ctx)
        default = setting_default(self.setting)
        return spec, f"{text}  [default: {default}]" if default not in ("", None) else text


def _flag(*decls, setting: str, help: str):
    return click.option(*decls, cls=SettingFlag, setting=setting, help=help)


SAMPLE_SHARDS = tuple(f"sample-{i:06d}" for i in range(3))  # what generate_sample_shards() writes by default


def sample_shards_folder() -> Path:
    """The bundled sample shards' folder, holding ``SAMPLE_SHARDS``: the checkout's data/raw (committed;
    written there if missing), else, for an installed package (no checkout), a folder in the user's cache.
    Never the working folder's ./data/raw, whatever it holds, nor CURATION_RAW."""
    from curation_pipeline.storage.warehouse import WAREHOUSE_DEFAULTS

    if (REPO / "workspace.yaml").is_file():
        folder = REPO / WAREHOUSE_DEFAULTS["raw_root"][1]
    else:
        from curation_pipeline import cache_folder

        folder = cache_folder() / "sample-shards"
    if not all((folder / f"{shard}.tar").is_file() for shard in SAMPLE_SHARDS):
        from curation_pipeline.demo import generate_sample_shards

        generate_sample_shards(folder, n_shards=len(SAMPLE_SHARDS))
    return folder


@main.command()
@WAREHOUSE
def demo(warehouse: str) -> None:
    """Run every stage on the bundled sample shards (offline profile, rule-based rewriter): the checkout's
    data/raw, else written once to ~/.cache/curation-pipeline/sample-shards; only those shards.

    Example: curate demo
    """
    from curation_pipeline.storage.warehouse import StorageUnreachable

    raw = str(sample_shards_folder())
    try:  # bad input as `run` says it: one line, exit 2
        code = run_shards(raw, warehouse, SAMPLE_SHARDS, True,
                          {"scoring": {"profile": "offline"}, "rewriter": {"kind": "cleaner"}})
    except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError, StorageUnreachable) as exc:
        raise BadInput(str(exc)) from exc
    sys.exit(code)


@main.command()
@RAW
@WAREHOUSE
@click.option("--shard", "shards", multiple=True, help="Only these shard keys (repeatable); default all.")
@_flag("--profile", setting="scoring.profile", help="offline | text | clip | mlm | full")
@_flag("--clip-model", setting="scoring.clip.model", help="CLIP/SigLIP HuggingFace id or local path (clip, full).")
@_flag("--mlm-model", setting="scoring.mlm.model", help="Chat VLM id or local path for MLM-Filter metrics (mlm, full).")
@_flag("--rewriter", setting="rewriter.kind", help="cleaner | vlm | aitqe")
@_flag("--rewriter-model", setting="rewriter.model", help="Model id or local path for the vlm/aitqe rewriter.")
@click.option("--no-report", is_flag=True, help="Skip rebuilding quality.duckdb.")
@click.option("--only-missing", is_flag=True,
              help="Only the shards that need a run, as the fill_missing_shards schedule picks them: never curated, "
                   "a warehouse file gone, stale by a replaced raw file or changed code (profile, scorer or rewriter "
                   "version, or another model or model switch), left half made by a stopped run, or last made into "
                   "another warehouse; those stale only after their scores (another rewriter) and those decided "
                   "under other policy settings than this run's are re-decided, rewritten and published again from "
                   "their stored scores (no model scores them again); the rest are counted as up to date.")
@click.option("--set", "pairs", multiple=True, metavar="RESOURCE.KEY=VALUE",
              help="Any setting of the scoring, rewriter, policy or compute resource, e.g. "
                   "--set policy.keep_threshold=80 (repeatable; VALUE is YAML: 80, true, null = off); wins over "
                   "--config, the flags above over it.")
@click.option("--config", "config_file", default=None, type=click.Path(dir_okay=False),
              help="YAML file of settings: {policy: {keep_threshold: 80}, scoring: {...}} or Dagster run config's "
                   "resources section; --set and the flags above win over it.")
@click.pass_context
def run(ctx, raw, warehouse, shards, no_report, only_missing, pairs, config_file, **flags) -> None:
    """Curate the shards in --raw into --warehouse, then rebuild the report.

    Each setting comes from the last of: the resource's default, the file CURATION_SETTINGS names (the code
    location's, as the UI's runs), --config, --set, its own flag.

    Example: curate run --raw /data/laion/shards --warehouse /data/curated --profile clip
    --clip-model openai/clip-vit-base-patch32
    """
    from curation_pipeline.storage.warehouse import StorageUnreachable

    try:
        given = {p.setting: flags[p.name] for p in ctx.command.params if isinstance(p, SettingFlag)}
        location = os.environ.get(SETTINGS_FILE_ENV)  # the UI's settings, under this command's own
        code = run_shards(raw, warehouse, shards, not no_report, load_settings(pairs, config_file, given, location),
                          named=load_settings(pairs, None, given),  # what the command line itself names
                          only_missing=only_missing, own_settings=config_file is not None)
    except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError, StorageUnreachable) as exc:
        raise BadInput(str(exc)) from exc
    sys.exit(code)


@main.command()
@WAREHOUSE
@click.option("--key", default=None, help="Sample key, e.g. 000010023.")
@click.option("--shard", default=None, help="Shard key, e.g. sample-000001.")
@click.option("--rewritten-only", is_flag=True, help="Only pairs whose caption was rewritten.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=0), help="Pairs to print.")
def lineage(warehouse, key, shard, rewritten_only, limit) -> None:
    """How captions came to be: decision, every rewrite attempt (rewriter, run, scores), final caption.

    Example: curate lineage --shard sample-000001 --rewritten-only
    """
    import duckdb

    from curation_pipeline.reporting.lineage import caption_history, format_history, undecided_shard, unresolved
    from curation_pipeline.shards.keys import InvalidShardName
    from curation_pipeline.storage.warehouse import StorageUnreachable, Warehouse, object_storage_errors

    if key is None and shard is None:
        raise BadInput("give --key and/or --shard")
    try:
        with object_storage_errors(warehouse):
            history = caption_history(Warehouse(warehouse), key=key, shard=shard, rewritten_only=rewritten_only)
    except FileNotFoundError as exc:
        raise BadInput(_missing_bucket(warehouse) or str(exc)) from exc
    except (NotADirectoryError, InvalidShardName, StorageUnreachable) as exc:
        raise BadInput(str(exc)) from exc
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:  # a damaged file: DuckDB names it
        raise Failed(f"cannot read the tables of {warehouse}: {str(exc).splitlines()[0]}; `curate run "
                     "--only-missing` makes a damaged file again") from exc
    if history.final.empty and history.matched:  # --rewritten-only: the pairs are there, none rewritten
        click.echo(f"no rewritten pair among the {history.matched} pair(s) with key={key!r} shard={shard!r}")
        return
    if history.final.empty:
        asked = " and ".join(f"{name} {value!r}" for name, value in (("key", key), ("shard", shard))
                             if value is not None)
        with object_storage_errors(warehouse):
            wh = Warehouse(warehouse)
            # a key alone: it may be a pair of a shard not resolved yet
            where = shard if shard is not None else undecided_shard(wh, key)
            why = unresolved(wh, where) if where is not None else None
        raise BadInput(f"no pair with {asked} in {warehouse}" + (f": {why}" if why else ""))
    click.echo(format_history(history, limit=limit))


def _missing_bucket(warehouse: str) -> str | None:
    """Why nothing was found in an object-storage warehouse, where the reason is its bucket (a typo): not "run
    the pipeline first"."""
    from curation_pipeline.storage.warehouse import StorageUnreachable, Warehouse

    try:
        Warehouse(warehouse).check_reachable()
    except (FileNotFoundError, StorageUnreachable) as exc:  # a local one's is never a FileNotFoundError
        return str(exc)
    except OSError:
        return None
    return None


@main.command()
@WAREHOUSE
@click.option("--rebuild", is_flag=True, help="Rebuild quality.duckdb from the warehouse's tables first, as `curate "
              "run` does at its end (after `--no-report` runs, or assets materialized one by one); no shard runs.")
def report(warehouse, rebuild) -> None:
    """Print the quality report (per shard and overall) from quality.duckdb.

    Example: curate report
    """
    import warnings

    from curation_pipeline.reporting.report import ReportOutOfDate, open_report
    from curation_pipeline.storage.warehouse import StorageUnreachable, Warehouse, object_storage_errors

    if rebuild:
        try:
            _rebuild_report(warehouse)
        except (FileNotFoundError, NotADirectoryError, PermissionError, StorageUnreachable) as exc:
            raise BadInput(str(exc)) from exc
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always", ReportOutOfDate)
            with object_storage_errors(warehouse), open_report(Warehouse(warehouse)) as con:  # local, or s3://
                for table in ("overall", "shard_summary", "drop_reasons", "rewriter_summary"):
                    click.echo(f"\n## {table}\n")
                    click.echo(con.execute(f"SELECT * FROM {table}").df().to_string(index=False))
    except FileNotFoundError as exc:
        hint = "" if rebuild else (f"; build it with `{curate_command()} report --warehouse {shlex.quote(warehouse)} "
                                   f"--rebuild` once a shard is curated (`{curate_command()} run`, or `demo`)")
        raise BadInput(_missing_bucket(warehouse) or f"{exc}{hint}") from exc
    except (NotADirectoryError, PermissionError, StorageUnreachable) as exc:
        raise BadInput(str(exc)) from exc
    for warning in said:  # the report's own: a line a user reads, not a Python warning with its source line
        if issubclass(warning.category, ReportOutOfDate):
            click.echo(f"\nwarning: {warning.message}", err=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def _rebuild_report(warehouse: str) -> None:
    """``quality_report`` materialized into ``warehouse`` as ``curate run`` does at its end, its run recorded in the
    Dagster home; no shard runs. Bad input (exit 2) when no shard of it is decided yet, a failure (exit 1) when
    the build fails."""
    _home_path()
    import dagster as dg

    from curation_pipeline.reporting.report import REQUIRED_TABLES
    from curation_pipeline.storage.warehouse import WAREHOUSE_DEFAULTS, Warehouse, object_storage_errors

    _hush_dagster_previews()
    wh = Warehouse(warehouse)
    with object_storage_errors(warehouse):
        wh.check_reachable()
        missing = [table for table in REQUIRED_TABLES if not wh.shards(table)]
    if missing:
        raise BadInput(f"nothing to report in {warehouse}: no shard has {', '.join(missing)} yet")
    env, default = WAREHOUSE_DEFAULTS["raw_root"]  # read by no report; a value, not Dagster's EnvVar, in run config
    defs = _build_definitions(raw_root=os.environ.get(env) or default, warehouse_root=warehouse)
    _dagster_home()
    failed: list[str] = []
    with dg.DagsterInstance.get() as instance, _stop_on_interrupt() as stop_if_interrupted:  # Ctrl-C: Aborted!
        if not _report(defs, instance, failed, stop_if_interrupted, _run_config(defs)):
            click.echo("FAILED: quality_report", err=True)
            sys.exit(EXIT_FAILED)


@main.command("sample-data")
@click.option("--out", cls=StorageOption, field="raw_root", help="Folder for the .tar shards (where --raw reads).")
@click.option("--shards", default=3, show_default=True, type=click.IntRange(min=1))
def sample_data(out, shards) -> None:
    """Regenerate the bundled sample shards (deterministic, byte-identical).

    Example: curate sample-data --out /tmp/raw --shards 5
    """
    from curation_pipeline.demo import generate_sample_shards

    if _is_url(out):
        raise BadInput(f"--out {out} is a URL: sample-data writes a local folder; write one, then copy it up "
                       "(e.g. `aws s3 cp --recursive <folder> <url>`)")
    if Path(out).exists() and not Path(out).is_dir():
        raise BadInput(f"--out {out} is a file, not a folder")
    for path in generate_sample_shards(out, n_shards=shards):
        click.echo(path)


@main.command("convert-model")
@click.argument("src")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--vision-tower", default=None,
              help="Local directory or id of the vision tower the checkpoint names (mm_vision_tower / "
                   "vision_model_name_or_path); default: the name in its config.")
def convert_model(src, dst, vision_tower) -> None:
    """Write a released MLM-Filter or AITQE checkpoint (SRC: hub id or directory) as a standard
    transformers LLaVA directory DST, which transformers and vLLM load without this project. This project's
    scorers and rewriters take SRC itself: they ask it as its reference does (DST would be a chat VLM, and an
    AITQE one, having no chat template, is refused)."""
    from curation_pipeline.models.loading import ModelUnavailableError
    from curation_pipeline.models.released import convert_released

    try:
        out = convert_released(src, dst, vision_tower=vision_tower)
    except (ModelUnavailableError, ValueError, FileNotFoundError, NotADirectoryError) as exc:  # not loadable here
        raise BadInput(str(exc)) from exc
    click.echo(f"converted {src} -> {out}")


def _local_tars(wh, shards: list[str]):
    """Each shard's curated tar as a local file: its own path, or (object storage) a temporary copy,
    one at a time, removed once the next is asked for."""
    import tempfile

    for shard in shards:
        path = wh.curated_path(shard)
        if wh.is_local:
            yield Path(path)
            continue
        with tempfile.TemporaryDirectory(prefix="curate-export-") as folder:
            local = Path(folder) / f"{shard}.tar"
            wh.fs.get_file(path, str(local))
            yield local


def _withheld(wh, shards: list[str]) -> dict[str, str]:
    """shard -> why its tar is not the pool's settled selection, as the report says it: blocked (a table of the
    shard failed a blocking check, so curated/ holds an earlier run's tar, if any) or unsettled (decided against
    an older duplicate index or another keep_fraction cut)."""
    from curation_pipeline.reporting.report import unsettled_shards
    from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
    from curation_pipeline.storage.warehouse import TABLES

    def blocked(_shard: str, table: str, metadata: dict | None, error: Exception | None) -> str | None:
        if error is not None:
            return f"its {table} cannot be read ({error})"
        failed = metadata.get(FAILED_CHECKS_KEY)
        return (f"blocked: {table} failed its blocking check(s) {failed.replace(',', ', ')}, so its tar is an "
                "earlier run's") if failed else None

    out = _by_footers(wh, shards, TABLES, blocked)
    for shard, why in unsettled_shards(wh).items():
        if shard in shards and shard not in out:
            out[shard] = f"unsettled: {why}"
    return out


def _unpublished(wh, shards: list[str]) -> dict[str, str]:
    """shard -> why its tar is not its current final_captions (a killed or replaced run's: an empty tar where the
    table keeps pairs too), as the report calls it unpublished; exported as curated/ holds it, but said. A table
    that cannot be read is said as such."""
    from concurrent.futures import ThreadPoolExecutor

    from curation_pipeline.reporting.report import publication_problems
    from curation_pipeline.storage.warehouse import READ_THREADS

    def kept(shard: str) -> int | str:
        try:
            return int(wh.read_table("final_captions", shard, columns=["outcome"], keep=False)["outcome"]
                       .ne("dropped").sum())
        except FileNotFoundError:
            return 0  # no table: its tar is checked as one that keeps nothing
        except (OSError, ValueError) as exc:
            return f"its final_captions cannot be read ({type(exc).__name__}: {exc}), so its tar is not checked"

    with ThreadPoolExecutor(READ_THREADS) as pool:
        counts = dict(zip(shards, pool.map(kept, shards)))
    unreadable = {shard: why for shard, why in counts.items() if isinstance(why, str)}
    found, _ = publication_problems(wh, {shard: n for shard, n in counts.items() if isinstance(n, int)})
    return {**found, **unreadable}


@main.command("export-uids")
@WAREHOUSE
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .npy file to write.")
@click.option("--shard", "shards", multiple=True, help="Only these curated shards (repeatable); default all.")
@click.option("--rewritten", type=click.Choice(["leave-out", "include"]), default="leave-out", show_default=True,
              help="Rewritten samples: the resharder would copy them from the original pool with the weak caption "
                   "the rewrite replaced, so they are left out unless you will put the curated captions back.")
@click.option("--as-published", is_flag=True,
              help="Also export the tars of shards the report calls blocked or unsettled, as curated/ holds them.")
def export_uids(warehouse, out, shards, rewritten, as_published) -> None:
    """Write the uids of every published (curated) sample kept as is as DataComp's subset file: a sorted
    .npy of uid pairs (np.dtype("u8,u8"), the high and low 64 bits of the hex uid), as its resharder.py
    reads with --subset_file, so the filtering can be applied to the original pool. The uid is the source
    sample's json `uid` (carried in the curated sidecar under `source`). Rewritten samples are left out
    (counted) unless --rewritten include: the pool holds their original captions. Shards the report calls
    blocked (a blocking check failed: the tar is an earlier run's) or unsettled (decided against an older pool:
    a cross-shard duplicate twice, or another keep_fraction cut) are left out, named, and the exit code is 1,
    unless --as-published.

    Example: curate export-uids --out kept_uids.npy
    """
    from curation_pipeline.shards.keys import InvalidShardName, validate_key
    from curation_pipeline.shards.uids import kept_uids, write_subset
    from curation_pipeline.storage.warehouse import StorageUnreachable, Warehouse, object_storage_errors

    wh = Warehouse(warehouse)
    folder = wh.local_path(wh.curated_dir)
    try:
        with object_storage_errors(warehouse):
            published = wh.curated_shards()  # one listing, local or on object storage
            wanted = list(dict.fromkeys(validate_key(s) for s in shards)) or sorted(published)  # each once
            missing = [s for s in wanted if s not in published]
            if missing or not wanted:
                raise BadInput(f"no curated shard {', '.join(missing) or 'at all'} in {folder}; run `curate run` first")
            withheld = {} if as_published else _withheld(wh, wanted)
            exported = [s for s in wanted if s not in withheld]
            found = kept_uids(_local_tars(wh, exported), rewritten=rewritten == "include")
            stale = _unpublished(wh, exported)
    except (InvalidShardName, StorageUnreachable, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        raise BadInput(str(exc)) from exc
    for shard, why in withheld.items():
        click.echo(f"  left out: {shard}: {why}", err=True)
    if withheld and not exported:
        raise Failed(f"every shard asked is left out ({len(withheld)}, named above): settle or re-run them "
                     f"(`curate run --only-missing`), or export them as they stand with --as-published; {out} not "
                     "written")
    if found.samples and not found.uids:  # an empty subset file would select nothing, and a script never notice
        if found.without_uid or found.bad_uid:
            raise BadInput(f"none of the {found.samples} curated samples in {found.shards} shards has a hex uid in "
                           f"its source json (e.g. {', '.join((found.without_uid or found.bad_uid)[:3])}); {out} not "
                           "written")
        raise BadInput(f"all {found.samples} curated samples in {found.shards} shards are rewritten, none kept as is: "
                       f"--rewritten include exports them (the pool holds their original captions); {out} not written")
    try:
        array = write_subset(out, found.uids)
    except OSError as exc:  # a folder where the file should go, no permission, a full disk
        raise BadInput(f"cannot write {out}: {exc}") from exc
    click.echo(f"{len(array)} uids from {found.samples} curated samples in {found.shards} shards -> {out}")
    if found.rewritten and rewritten == "include":
        click.echo(f"  {len(found.rewritten)} of them rewritten: the resharder copies their original captions from "
                   "the pool; take their captions from the curated tars", err=True)
    elif found.rewritten:
        click.echo(f"  {len(found.rewritten)} rewritten samples left out (the pool holds their original captions; "
                   "--rewritten include to export them), e.g. " + ", ".join(found.rewritten[:3]), err=True)
    for label, where in (("without a uid in their source json", found.without_uid),
                         ("with a uid that is not hex", found.bad_uid)):
        if where:
            click.echo(f"  {len(where)} samples {label} (not exported), e.g. {', '.join(where[:5])}", err=True)
    for shard, why in stale.items():
        click.echo(f"  warning: {shard}: {why} (its uids are exported as the tar has them)", err=True)
    if found.without_uid or found.bad_uid:  # the subset misses published samples: a script must notice
        sys.exit(EXIT_BAD_INPUT)
    if withheld:  # nor is it the pool's settled selection
        click.echo(f"{len(withheld)} shard{'s' * (len(withheld) != 1)} left out (named above): settle or re-run "
                   "them (`curate run --only-missing`) and export again, or --as-published", err=True)
        sys.exit(EXIT_FAILED)


@main.command("evaluate")
@WAREHOUSE
@click.option("--judgments", type=click.Path(dir_okay=False), default=None,
              help="Human judgments: Flickr8k ExpertAnnotations.txt or CrowdFlowerAnnotations.txt, or a CSV / JSON "
                   "lines file with image, caption, score.")
@click.option("--score", "score", default=None, help="The score column of quality_scores to compare (clip_score, "
              "mlm_itm, text_quality, ...), or ref_minilm: the reference-caption MiniLM baseline (no warehouse).")
@click.option("--format", "fmt", default="auto", show_default=True, type=click.Choice(["auto", "expert",
              "crowdflower", "generic"]), help="Judgment file format.")
@click.option("--captions", "captions_file", type=click.Path(dir_okay=False), default=None,
              help="Flickr8k.token.txt: caption text (and references) for the Flickr8k formats.")
@click.option("--keep-reference-candidates", is_flag=True,
              help="Expert: keep candidates that are their image's own reference (CLIPScore and SPICE drop them).")
@click.option("--protocol", type=click.Choice(["both", "mean", "each"]), default="both", show_default=True,
              help="Expert: correlate with the mean of the 3 expert scores, with each score as its own row "
                   "(CLIPScore's published protocol), or both.")
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap resamples for the 95% intervals.")
@click.option("--seed", default=0, show_default=True)
@click.option("--make-shards", type=click.Path(file_okay=False), default=None,
              help="Instead of evaluating: write the judged pairs as webdataset shards here (needs --images), "
                   "to score them with `curate run`.")
@click.option("--images", type=click.Path(file_okay=False), default=None, help="Folder of the judged images.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="Truth file (JSON lines: key, label clean|noisy|junk|mismatched, caption, clean source): score "
                   "the warehouse's curation decisions against it.")
@click.option("--from-captions", is_flag=True,
              help="With --labels: run the caption path in process on the truth file's captions instead of "
                   "reading final_captions.")
@click.option("--examples", default=10, show_default=True, help="With --labels: examples per list.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="JSON report path (default: <warehouse>/evaluation/...).")
def evaluate(warehouse, judgments, score, fmt, captions_file, keep_reference_candidates, protocol, bootstrap, seed,
             make_shards, images, labels, from_captions, examples, out) -> None:
    """Measure: agreement of a score with human judgments, or curation decisions against labels.

    Examples: curate evaluate --judgments ExpertAnnotations.txt --captions Flickr8k.token.txt --score clip_score;
    curate evaluate --judgments ExpertAnnotations.txt --captions Flickr8k.token.txt --score ref_minilm;
    curate evaluate --labels truth.jsonl
    """
    from curation_pipeline.evaluation.reports import save_report

    if bool(judgments) == bool(labels):
        raise BadInput("give either --judgments (with --score) or --labels")
    try:
        if labels:
            from curation_pipeline.evaluation.labels import format_labels_report, labels_report, report_name

            result = labels_report(labels, warehouse_root=warehouse, from_captions=from_captions, examples=examples)
            click.echo(format_labels_report(result))
            name = report_name(from_captions)
        else:
            from curation_pipeline.evaluation.judgments import (agreement_report, format_agreement, read_judgments,
                                                                undefined_cause, write_judgment_shards)

            if make_shards:
                if not images:
                    raise BadInput("--make-shards needs --images (the folder of the judged image files)")
                pairs = read_judgments(judgments, fmt, captions_file, not keep_reference_candidates)
                for path in write_judgment_shards(pairs, images, make_shards):
                    click.echo(path)
                click.echo(f"then: curate run --raw {shlex.quote(make_shards)} --warehouse <dir> --profile clip "
                           "--clip-model ...")
                return
            if not score:
                raise BadInput("--judgments needs --score (a quality_scores column, or ref_minilm)")
            protocols = ("mean", "each") if protocol == "both" else (protocol,)
            result = agreement_report(judgments, score, fmt=fmt, captions_file=captions_file,
                                      warehouse_root=warehouse, n_boot=bootstrap, seed=seed,
                                      skip_references=not keep_reference_candidates, protocols=protocols)
            cause = undefined_cause(result, score, "--score")  # NaN coefficients are no result
            if cause:
                raise BadInput(cause)
            click.echo(format_agreement(result))
            name = f"agreement-{result['format']}-{score}.json"
    except (ValueError, FileNotFoundError) as exc:
        raise BadInput(str(exc)) from exc
    click.echo(f"report: {save_report(result, out, warehouse_root=warehouse, name=name)}")


if __name__ == "__main__":  # after every command is defined
    main()
