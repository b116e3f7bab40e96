"""Does rewriting shift the caption length distribution of a shard?

Length is the cheapest proxy for style drift (rewriters tend to pad). The final captions are checked
against the originals with three GX expectations: KL divergence, mean length ratio, and quantile bands.
Empty and None captions count as length 0: a rewriter returning nothing is drift (GX would skip nulls).
The same comparison holds a new shard's captions against a stored reference distribution
(``validation.reference``): a source that changed (truncated captions, alt-text stubs) is noticed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd

from curation_pipeline.reporting.markdown import markdown_table
from curation_pipeline.validation.lengths import LengthCounts, caption_lengths

LENGTH_COLUMN = "caption_length"
# GX's pandas quantile metric uses this interpolation; the reference uses it too so bands line up.
_INTERPOLATION = "nearest"


@dataclass(frozen=True)
class DriftThresholds:
    """Tolerances of the drift check (the pipeline's defaults: ``PolicyResource`` reads them).

    ``quantile_abs_floor`` keeps the band from collapsing on short captions (±50% of 2 words flaps);
    ``empty_bin_holdout`` is the mass GX spreads over empty reference bins, so KL stays finite where
    captions land in one (and only there: it costs every other comparison log(1/(1 - holdout)) of KL).
    """

    max_kl: float = 0.25
    mean_ratio_min: float = 0.8
    mean_ratio_max: float = 1.25
    quantiles: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
    quantile_tolerance: float = 0.5
    quantile_abs_floor: float = 3.0
    n_bins: int = 10
    length_unit: str = "words"
    min_rows: int = 20
    empty_bin_holdout: float = 0.01

    def __post_init__(self):
        if self.length_unit not in ("words", "chars"):
            raise ValueError(f"length_unit must be 'words' or 'chars', not {self.length_unit!r}")
        if self.n_bins < 2:
            raise ValueError("n_bins must be at least 2")


@dataclass
class DriftResult:
    """One drift check; ``allowed`` is the band each statistic was held to (keys mean, kl, p10, ...), ``ok``
    GX's verdict on each (its quantile expectation takes a value within 1e-4 of a band's edge: the table
    shows that verdict, never a check of its own)."""

    passed: bool
    kl: float
    mean_original: float
    mean_final: float
    mean_ratio: float
    quantiles_original: dict[float, float]
    quantiles_final: dict[float, float]
    failures: list[str]
    expectations: list[dict]
    n_original: int
    n_final: int
    length_unit: str = "words"
    note: str = ""
    allowed: dict[str, tuple[float, float]] = field(default_factory=dict)
    # what the two sides are: the shard's originals and finals, or a reference and a shard's captions
    labels: tuple[str, str] = ("original", "final")
    ok: dict[str, bool] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, float | int | str | bool]:
        """Flat Python scalars for Dagster metadata; non-finite numbers (not computed) are left out."""
        a, b = self.labels
        values: dict[str, float | int | str | bool] = {
            "drift_passed": bool(self.passed), f"drift_n_{a}": int(self.n_original),
            f"drift_n_{b}": int(self.n_final), "drift_length_unit": self.length_unit, "drift_kl": float(self.kl),
            f"drift_mean_{a}": float(self.mean_original), f"drift_mean_{b}": float(self.mean_final),
            "drift_mean_ratio": float(self.mean_ratio)}
        for q, v in self.quantiles_original.items():
            values[f"drift_{_pname(q)}_{a}"] = float(v)
        for q, v in self.quantiles_final.items():
            values[f"drift_{_pname(q)}_{b}"] = float(v)
        if self.failures:
            values["drift_failures"] = "; ".join(self.failures)
        if self.note:
            values["drift_note"] = self.note
        return {k: v for k, v in values.items() if not (isinstance(v, float) and not math.isfinite(v))}

    def to_markdown(self) -> str:
        unit = self.length_unit
        rows = [("rows", str(self.n_original), str(self.n_final), "", "")]
        stats = [(f"mean ({unit})", "mean", self.mean_original, self.mean_final)]
        stats += [(f"{_pname(q)} ({unit})", _pname(q), v, self.quantiles_final.get(q, math.nan))
                  for q, v in self.quantiles_original.items()]
        if not math.isnan(self.kl):  # not compared (too few rows): no divergence to show
            stats.append(("KL divergence", "kl", 0.0, self.kl))
        for label, name, before, after in stats:
            band = self.allowed.get(name)
            allowed = f"{_fmt(band[0], 2)}-{_fmt(band[1], 2)}" if band else ""
            ok = {True: "yes", False: "no"}.get(self.ok.get(name), "") if band else ""
            rows.append((label, _fmt(before), _fmt(after, 3 if name == "kl" else 1), allowed, ok))
        lines = [markdown_table(["metric", *self.labels, "allowed", "ok"], rows)]
        status = "PASSED" if self.passed else "FAILED"
        lines += ["", f"Caption length drift: **{status}**" + (f" ({self.note})" if self.note else "")]
        lines += [f"- {f}" for f in self.failures]
        return "\n".join(lines)


def reference_partition(reference: np.ndarray | LengthCounts, n_bins: int) -> dict:
    """GX continuous partition from the reference's (deduplicated) quantiles, open at both ends.

    GX rejects ``tail_weights`` for infinite endpoints, so the tails are the first and last weights.
    Weights come from the same ``np.histogram`` call GX makes for the final column, so identical
    inputs give KL exactly 0 (``compare_lengths`` holds no weight out for empty bins that stay empty).
    Bins are ``[a, b)``, so the right tail ``[p90, inf)`` always holds the longest captions; the left
    tail holds the shortest just as surely: where the first quantile is the shortest length itself
    (common on short captions), its edge moves one past it. Else the left tail was empty, and a few
    captions shortened below the shortest failed on KL alone while the same growth past the longest cost
    nothing. With one length L only, the bin ``[L, L+1)`` sits between two empty tails: a word more or
    less costs the same.
    """
    counts = reference if isinstance(reference, LengthCounts) else LengthCounts.of(reference)
    levels = [i / n_bins for i in range(1, n_bins)]
    edges = np.unique(list(counts.quantiles(levels).values()))
    if counts.n and edges[0] == counts.lengths[0]:  # the shortest length would open an empty left tail
        edges = np.unique([edges[0] + 1, *edges[1:]])
        if edges[-1] > counts.lengths[-1]:  # one length only: [L, L+1) between two empty tails, alike
            edges = np.unique([counts.lengths[0], *edges])
    bins = [-math.inf, *(float(e) for e in edges), math.inf]
    hist = counts.histogram(bins)
    return {"bins": bins, "weights": [float(w) for w in hist / hist.sum()]}


def drift_pairs(final: pd.DataFrame, unit: str) -> pd.DataFrame:
    """The pairs whose rewriting the drift check judges (and the chart and report show): kept, and
    captioned before. Dropping junk is the filter's doing, and a caption written for a pair that had
    none is not a length change."""
    return _drift_rows(final, unit)[0]


def _drift_rows(final: pd.DataFrame, unit: str) -> tuple[pd.DataFrame, np.ndarray]:
    """``drift_pairs`` and the lengths of their original captions."""
    kept = final[final["outcome"].ne("dropped")]
    lengths = caption_lengths(kept["original_caption"], unit)
    # captioned: a word, whatever the unit (in characters a caption of only whitespace is no caption either,
    # as the report and the rewriter count it)
    captioned = caption_lengths(kept["original_caption"]) > 0 if unit != "words" else lengths > 0
    return kept[captioned], lengths[captioned]


def check_final_captions_drift(final: pd.DataFrame, thresholds: DriftThresholds | None = None) -> DriftResult:
    """``check_caption_length_drift`` over ``drift_pairs(final)`` (``n_original`` of them), each original
    caption's length counted once (choosing the pairs counts them)."""
    t = thresholds or DriftThresholds()
    compared, original = _drift_rows(final, t.length_unit)
    return compare_lengths(LengthCounts.of(original, t.length_unit),
                           caption_lengths(compared["final_caption"], t.length_unit), t, paired=True)


def check_caption_length_drift(original: pd.Series, final: pd.Series,
                               thresholds: DriftThresholds | None = None) -> DriftResult:
    """Compare final caption lengths with the shard's original captions: the same pairs before and after (the caller
    picks the rows; sides of unequal length are not compared below min_rows)."""
    t = thresholds or DriftThresholds()
    return compare_lengths(LengthCounts.of_captions(original, t.length_unit),
                           caption_lengths(final, t.length_unit), t, paired=True)


def compare_lengths(reference: LengthCounts, lengths: np.ndarray, thresholds: DriftThresholds | None = None,
                    labels: tuple[str, str] = ("original", "final"), paired: bool = False) -> DriftResult:
    """``lengths`` held to the ``reference`` distribution by the three expectations (``labels`` name
    the two sides in the result's words). Below ``min_rows`` a distribution says too little, and they pass
    uncompared, unless ``paired`` (the same pairs' captions before and after): their mean moves only by what
    rewriting changed, however few they are, so it is still held to its limits (16 kept pairs whose rewrites
    made them 1.6x longer were published)."""
    from curation_pipeline.validation import _gx

    t = thresholds or DriftThresholds()
    unit = t.length_unit
    if reference.unit != unit:
        raise ValueError(f"the reference counts {reference.unit}, the thresholds {unit}")
    fin = np.asarray(lengths, dtype=float)
    mean_ref, mean_fin = reference.mean(), _mean(fin)
    q_ref, q_fin = reference.quantiles(t.quantiles), _quantiles(fin, t.quantiles)
    if mean_ref > 0:
        ratio = mean_fin / mean_ref
    else:
        ratio = 1.0 if mean_fin == 0 else math.inf

    def result(**kwargs) -> DriftResult:
        return DriftResult(mean_original=mean_ref, mean_final=mean_fin, mean_ratio=ratio,
                           quantiles_original=q_ref, quantiles_final=q_fin,
                           n_original=reference.n, n_final=len(fin), length_unit=unit, labels=labels, **kwargs)

    few = min(reference.n, len(fin)) < max(t.min_rows, 1)
    note = (f"too few rows to compare ({labels[0]} {reference.n}, {labels[1]} {len(fin)}; "
            f"min_rows {t.min_rows})") if few else ""
    if few and not (paired and len(fin) and reference.n == len(fin)):
        return result(passed=True, kl=math.nan, failures=[], expectations=[], note=note)

    mean_band = _mean_band(reference, t)
    mean_spec = ("ExpectColumnMeanToBeBetween", {"column": LENGTH_COLUMN, "min_value": mean_band[0],
                                                 "max_value": mean_band[1]})
    failures = []
    if not fin.any() and mean_ref > 0:  # emptied; what was empty and stays so has not drifted
        failures.append(f"all {len(fin)} {labels[1]} captions are empty or None")
    if few:  # paired: the mean alone
        (mean_res,) = _gx.validate(pd.DataFrame({LENGTH_COLUMN: fin}), [mean_spec])
        failures += _mean_failures(mean_res, ratio, mean_ref, mean_fin, unit, t)
        return result(passed=not failures, kl=math.nan, failures=failures, expectations=[mean_res.describe()],
                      allowed={"mean": mean_band}, ok={"mean": mean_res.success},
                      note=f"{note}: the distribution not compared, the mean held to its limits")

    partition = reference_partition(reference, t.n_bins)
    bands = {q: _band(v, t) for q, v in q_ref.items()}
    specs = [
        ("ExpectColumnKLDivergenceToBeLessThan", {"column": LENGTH_COLUMN, "partition_object": partition,
                                                  "threshold": t.max_kl,
                                                  "internal_weight_holdout": _holdout(partition, fin, t)}),
        mean_spec,
        ("ExpectColumnQuantileValuesToBeBetween", {"column": LENGTH_COLUMN, "quantile_ranges": {
            "quantiles": list(bands), "value_ranges": [list(b) for b in bands.values()]}}),
    ]
    kl_res, mean_res, quant_res = _gx.validate(pd.DataFrame({LENGTH_COLUMN: fin}), specs)
    kl_observed = (kl_res.result or {}).get("observed_value")
    kl = math.inf if kl_observed is None else float(kl_observed)

    for res in (kl_res, quant_res):
        if res.error:
            failures.append(f"{res.type} could not be evaluated: {res.error}")
    n_bins = len(partition["weights"])
    if not kl_res.success and not kl_res.error:
        failures.append(f"caption length distribution drifted: KL divergence {_fmt(kl, 3)} over {n_bins} "
                        f"reference-quantile bins, allowed <= {t.max_kl:g}")
    failures += _mean_failures(mean_res, ratio, mean_ref, mean_fin, unit, t)
    # GX's verdict per quantile (all alike where it could not evaluate them)
    details = (quant_res.result or {}).get("details") or {}
    in_band = details.get("success_details") or [quant_res.success] * len(bands)
    if not quant_res.success and not quant_res.error:
        out = [f"{_pname(q)} {_fmt(q_ref[q])} -> {_fmt(q_fin[q])} (allowed {_fmt(lo, 2)}-{_fmt(hi, 2)})"
               for ok, (q, (lo, hi)) in zip(in_band, bands.items()) if not ok]
        failures.append(f"caption length quantiles out of band ({unit}): " + ", ".join(out))

    allowed = {"kl": (0.0, t.max_kl), "mean": mean_band}
    allowed.update({_pname(q): band for q, band in bands.items()})
    ok = {"kl": kl_res.success, "mean": mean_res.success}
    ok.update({_pname(q): bool(v) for q, v in zip(bands, in_band)})
    return result(passed=not failures, kl=kl, failures=failures,
                  expectations=[r.describe() for r in (kl_res, mean_res, quant_res)], allowed=allowed, ok=ok)


def _mean_failures(res, ratio: float, mean_ref: float, mean_fin: float, unit: str, t: DriftThresholds) -> list[str]:
    """What GX's mean expectation found wrong, in words (none where it passed)."""
    if res.error:
        return [f"{res.type} could not be evaluated: {res.error}"]
    if res.success:
        return []
    verb = "grew" if mean_fin > mean_ref else "shrank to"
    r, m = _apart(ratio, t.mean_ratio_min, t.mean_ratio_max), _apart(mean_fin, mean_ref, least=1)
    return [f"mean caption length {verb} {ratio:.{r}f}x ({mean_ref:.{m}f} -> {mean_fin:.{m}f} {unit}), "
            f"allowed {t.mean_ratio_min:.{r}f}-{t.mean_ratio_max:.{r}f}x"]


def _mean_band(reference: LengthCounts, t: DriftThresholds) -> tuple[float, float]:
    """The mean's limits handed to GX: each ratio as written (0.8 is 4/5) times the reference mean (a fraction
    of whole numbers), exactly, then rounded outward to a float. ``0.8 * 12.0`` is 9.600000000000001, so a
    mean of exactly 0.8x failed the limit it sat on; rounded outward, a mean on a limit passes, and one past it
    fails unless it is closer than a float can tell apart (one ulp, some 1e-15 of the mean)."""
    mean = Fraction(int(np.dot(reference.lengths, reference.counts)), reference.n)

    def bound(ratio: float, upper: bool) -> float:
        exact = Fraction(repr(float(ratio))) * mean
        value = float(exact)  # the nearest float: one step outward where it lies inside the exact limit
        inside = Fraction(value) < exact if upper else Fraction(value) > exact
        return math.nextafter(value, math.inf if upper else -math.inf) if inside else value

    return bound(t.mean_ratio_min, upper=False), bound(t.mean_ratio_max, upper=True)


def _holdout(partition: dict, lengths: np.ndarray, t: DriftThresholds) -> float:
    """The weight GX holds out for empty reference bins: ``empty_bin_holdout`` where a length lands in one
    (else KL is infinite), none where none does. GX scales every reference weight by 1 - holdout, so an
    unused holdout cost identical distributions log(1/0.99) = 0.01 of KL (fifty 3-word captions against
    themselves failed ``max_kl=0``)."""
    empty = np.asarray(partition["weights"]) == 0
    landed = np.histogram(lengths, partition["bins"])[0]
    return t.empty_bin_holdout if landed[empty].any() else 0.0


def _apart(value: float, *others: float, least: int = 2, most: int = 6) -> int:
    """Decimals enough to print ``value`` unlike each of ``others``: a ratio of 0.9972 against a limit of
    0.9975 must not read "0.99x, allowed 0.99-1.25x"."""
    return next((d for d in range(least, most) if all(f"{value:.{d}f}" != f"{o:.{d}f}" for o in others)), most)


def _band(value: float, t: DriftThresholds) -> tuple[float, float]:
    tol = max(t.quantile_tolerance * value, t.quantile_abs_floor)
    return max(0.0, value - tol), value + tol


def _mean(lengths: np.ndarray) -> float:
    return float(lengths.mean()) if len(lengths) else math.nan


def _quantiles(lengths: np.ndarray, quantiles: tuple[float, ...]) -> dict[float, float]:
    if not len(lengths):
        return {q: math.nan for q in quantiles}
    values = pd.Series(lengths).quantile(list(quantiles), interpolation=_INTERPOLATION)
    return {float(q): float(v) for q, v in values.items()}


def _pname(q: float) -> str:
    return f"p{q * 100:g}"


def _fmt(value: float, digits: int = 1) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")
