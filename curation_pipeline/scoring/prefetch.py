"""Overlap reading, decoding and preprocessing with the model: a bounded background prefetch.

Run serially, the model waits while inputs are made and the spare cores idle during the forward
pass; torch and PIL release the GIL, so a producer thread overlaps the two. The queue holds at most
``depth`` batches; items come out in order and the iterator's exceptions are raised where they
would be without prefetch.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
U = TypeVar("U")

DEFAULT_DEPTH = 2
_DONE = object()


@dataclass
class _Raised:
    """An exception from the producer, carried through the queue to be raised in the consumer."""

    exc: BaseException


def prefetch(items: Iterable[T], prepare: Callable[[T], U] | None = None, depth: int = DEFAULT_DEPTH,
             name: str = "curate-prefetch") -> Iterator[U]:
    """``prepare(item)`` for every item, up to ``depth`` items ahead in a background thread (``depth <= 0``:
    serially). Closing the generator early stops and joins the producer, so no thread outlives the stage."""
    prepare = prepare if prepare is not None else (lambda item: item)
    if depth <= 0:
        return (prepare(item) for item in items)
    return _prefetched(items, prepare, depth, name)


def _prefetched(items: Iterable[T], prepare: Callable[[T], U], depth: int, name: str) -> Iterator[U]:
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value) -> bool:
        """Block while the queue is full, but give up once the consumer has gone."""
        while not stop.is_set():
            try:
                slots.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set() or not put(prepare(item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Raised(exc))
            return
        put(_DONE)

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            value = slots.get()
            if value is _DONE:
                return
            if isinstance(value, _Raised):
                raise value.exc
            yield value
    finally:
        stop.set()
        worker.join()
        close = getattr(items, "close", None)
        if close is not None and not worker.is_alive():
            close()  # a generator's own finally blocks (open files) run now, not at garbage collection
