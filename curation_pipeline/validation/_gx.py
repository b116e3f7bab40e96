"""Great Expectations validation, in this process or in the home's warm helper process (``helper``).

Importing GX costs seconds of one core. The helper imports it (``warm``) once for every run of a
Dagster home, and each check runs there. Checks send GX expectation names and arguments and get
plain ``Outcome`` values back, so both places give the same results (tested). Without a helper
(no DAGSTER_HOME, ``CURATE_HELPER=off``, or one that cannot be reached), GX runs here. One in-memory
context, pandas data source and whole-dataframe batch definition serve every check; progress
bars and analytics are off (see the package ``__init__``): checks run inside pipeline steps.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from curation_pipeline import deferred, helper
from curation_pipeline.values import plain_tree

if TYPE_CHECKING:
    import pandas as pd

Spec = tuple[str, dict]  # a GX expectation class name (gx.expectations.<name>) and its arguments

# held around GX's batch and validation, which first use the packages ``warm`` defers (the KL expectation's
# scipy.stats): LazyLoader runs a module safely only if no other thread touches it meanwhile
_LOCK = threading.Lock()
_BATCH_DEFINITION = None
_CLASSES: dict[str, type] = {}  # GX expectation class name -> its subclass with ``configuration`` built once


@dataclass(frozen=True)
class Outcome:
    """One expectation's result, as plain values."""

    type: str
    kwargs: dict
    success: bool
    result: dict
    error: str | None  # GX could not evaluate the expectation (a failing metric), not a failed check

    def describe(self) -> dict:
        """What a report needs: type, column, success, observed value or unexpected count."""
        described = {"type": self.type, "column": self.kwargs.get("column"), "success": self.success,
                     "observed_value": self.result.get("observed_value"), "error": self.error}
        if "unexpected_count" in self.result:
            described["unexpected_count"] = int(self.result["unexpected_count"])
        return described


def _batch_definition():
    global _BATCH_DEFINITION
    if _BATCH_DEFINITION is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        asset = context.data_sources.add_pandas("curation_validation").add_dataframe_asset("frame")
        _BATCH_DEFINITION = asset.add_batch_definition_whole_dataframe("whole")
    return _BATCH_DEFINITION


def _expectation_class(name: str) -> type:
    """``gx.expectations.<name>``, subclassed so that each instance builds its ``configuration`` once.

    GX builds that property anew (a pydantic ``dict()`` of every field, then an
    ``ExpectationConfiguration``) on every read, so that it follows any change to the fields, and reads
    it some 50 times per expectation while validating: a quarter to a third of a validation's time. The instances
    GX validates are its own, made from a configuration (``to_domain_obj``) and never changed; this
    subclass still builds it again after any assignment to a field or a ``copy``. Its name is GX's with
    ``Memo`` appended, so its GX type keeps the prefix GX reads the domain from (``expect_table_``,
    ``expect_column``); ``validate`` reports GX's own type name.
    """
    cls = _CLASSES.get(name)
    if cls is None:
        import great_expectations as gx
        from great_expectations.compatibility.pydantic import PrivateAttr

        base = getattr(gx.expectations, name)

        def configuration(self):
            if self._built is None:
                object.__setattr__(self, "_built", base.configuration.fget(self))
            return self._built

        def __setattr__(self, attribute, value):
            base.__setattr__(self, attribute, value)
            if attribute in self.__fields__:  # not GX's private attributes (the suite's save callback)
                object.__setattr__(self, "_built", None)

        def copy(self, **kwargs):
            copied = base.copy(self, **kwargs)
            object.__setattr__(copied, "_built", None)
            return copied

        # the metaclass registers it under its snake-cased name (GX's type name plus "_memo")
        cls = type(base)(f"{name}Memo", (base,), {
            "__module__": __name__, "__doc__": base.__doc__, "_built": PrivateAttr(default=None),
            "configuration": property(configuration), "__setattr__": __setattr__, "copy": copy})
        _CLASSES[name] = cls
    return cls


def _exception_message(result) -> str | None:
    """GX reports a failing metric inside the result; surface its message instead of a silent False."""
    info = result.exception_info or {}
    if "raised_exception" in info:
        info = {"_": info}
    for detail in info.values():
        if isinstance(detail, dict) and detail.get("raised_exception"):
            return str(detail.get("exception_message"))
    return None


def _validate_here(df: pd.DataFrame, specs: list[Spec], result_format: Any) -> list[Outcome]:
    """The specs as one suite (metrics are shared), results in input order (GX reorders them)."""
    import great_expectations as gx  # seconds to import: only when a check runs

    with _LOCK:
        classes = [_expectation_class(name) for name, _ in specs]
    expectations = [cls(**kwargs, meta={"position": i}) for i, (cls, (_, kwargs)) in enumerate(zip(classes, specs))]
    suite = gx.ExpectationSuite(name="curation_validation", expectations=expectations)
    with _LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": df})
        results = batch.validate(suite, result_format=result_format).results
    results = sorted(results, key=lambda r: r.expectation_config.meta["position"])
    return [Outcome(type=classes[i].__base__.expectation_type, kwargs=plain_tree(dict(specs[i][1])),
                    success=bool(r.success), result=plain_tree(r.result or {}), error=_exception_message(r))
            for i, r in enumerate(results)]


DEFERRED = ("scipy", "altair")  # GX imports them for expectations and renderers a run's first checks never use


def warm() -> Callable[[], None]:
    """Import GX and build the context (the helper's first work), ``DEFERRED`` left to the function returned
    (``deferred``: a run's first check need not wait for them; the helper runs it when no call is in flight)."""
    with deferred.defer(DEFERRED) as later:
        _batch_definition()
    return later.load


def validate(df: pd.DataFrame, specs: list[Spec], result_format: Any = "SUMMARY") -> list[Outcome]:
    """In the home's warm helper process (``helper``) when there is one, else here."""
    return helper.call(_validate_here, df, specs, result_format)
