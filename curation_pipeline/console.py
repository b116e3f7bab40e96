"""The console logger of every job: Dagster's own, less the failures of a run the user interrupted.

A Ctrl-C (or a SIGTERM from a scheduler) during a run makes Dagster fail the step it lands in, then the run, with
``DagsterExecutionInterruptedError``, and its console logger printed each failure with some forty lines of stack
above the one line that says what happened (`curate run`'s "Aborted!"). That stack says nothing about the data
or the code; the run's event log keeps it, for the UI."""

from __future__ import annotations

import logging

import dagster as dg

INTERRUPTED = "DagsterExecutionInterruptedError"


FAILURES = (dg.DagsterEventType.STEP_FAILURE.value, dg.DagsterEventType.RUN_FAILURE.value)


def interrupted(record: logging.LogRecord) -> bool:
    """Whether ``record`` is the failure of a step or run that a signal interrupted."""
    event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
    if event is None or event.event_type_value not in FAILURES:
        return False
    error = getattr(event.event_specific_data, "error", None)
    return error is not None and error.cls_name == INTERRUPTED


@dg.logger(dg.colored_console_logger.config_schema,
           description="Dagster's colored console logger, without the stacks of a run the user interrupted.")
def console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = dg.colored_console_logger.logger_fn(init_context)
    logger.addFilter(lambda record: not interrupted(record))
    return logger
