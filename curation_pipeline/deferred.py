"""Imports that a process takes now but runs later: for the GX helper, whose first call waits on its import.

``import great_expectations`` takes 2.5-3 s of one core, 0.7 s of it scipy, which GX imports for the few
expectations that compute distributions (the drift check's KL divergence). A run's first check comes about
2 s after the run and its helper start together, so a first run waited for the helper. Inside ``defer``,
the named packages' Python modules are created empty and run on first use (``importlib.util.LazyLoader``);
``Deferred.load`` runs them all later, when the helper has time. Extension modules load as they would.

LazyLoader (Python 3.11) is not safe when two threads first touch the same module: the caller runs
``load`` while no other thread can (the helper: no call in flight), and any first use in between under one
lock (``_gx._LOCK``). A deferred module whose run fails stays half-run in ``sys.modules``: the helper then
refuses its calls.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator

class Deferred(importlib.abc.MetaPathFinder):
    """A finder that defers the Python modules of ``packages``; remembers what it deferred."""

    def __init__(self, packages: tuple[str, ...]) -> None:
        self.packages = frozenset(packages)
        self.names: list[str] = []

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] not in self.packages:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        # only modules run from Python source or bytecode: an extension module creates itself
        if isinstance(spec.loader, (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader)):
            spec.loader = importlib.util.LazyLoader(spec.loader)
            self.names.append(name)
        return spec

    def pending(self) -> int:
        """The deferred modules not run yet."""
        return sum(1 for name in self.names if _lazy(sys.modules.get(name)))

    def load(self) -> None:
        """Run every module deferred that has not run yet (what they import then loads at once)."""
        for name in list(self.names):
            module = sys.modules.get(name)
            if _lazy(module):
                module.__dict__  # noqa: B018 - any attribute runs a deferred module

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)


def _lazy(module) -> bool:
    return type(module).__name__ == "_LazyModule"  # importlib.util's private class; a run module is a module again


@contextlib.contextmanager
def defer(packages: tuple[str, ...]) -> Iterator[Deferred]:
    """Imports inside defer the Python modules of ``packages`` not imported yet, until their first use or
    ``load``; imports after it do not (what a deferred module imports when it runs loads at once)."""
    deferred = Deferred(packages)
    sys.meta_path.insert(0, deferred)
    try:
        yield deferred
    finally:
        deferred.stop()
