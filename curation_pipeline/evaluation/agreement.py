"""Agreement of a score with human judgments: Kendall tau-c and tau-b, Spearman, Pearson, each with a
bootstrap 95% interval (scipy.stats).

The image-captioning literature reports Kendall's tau-c on Flickr8k-Expert and tau-b on
Flickr8k-CrowdFlower (CLIPScore, PAC-S), times 100. The interval is a percentile bootstrap
over judged pairs: when one pair has several rows (one per expert rating), its rows are
resampled together (``groups``), so the interval is not narrowed by counting a pair three times.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

STATISTICS = ("kendall_tau_c", "kendall_tau_b", "spearman", "pearson")
# resamples with no value (a side constant over the pairs drawn) at most this share: past it, the interval
# of the rest would describe the draws that happened to vary (a score nonzero on 2 pairs of 200 looks tight),
# so it is left undefined
UNDEFINED_RESAMPLES_MAX = 0.01


def comparable(human, metric) -> np.ndarray:
    """The rows a correlation can use: neither side NaN nor infinite (an infinite score has no rank or
    product, so the value would be NaN while resamples without that row still gave an interval)."""
    return np.isfinite(np.asarray(human, dtype=float)) & np.isfinite(np.asarray(metric, dtype=float))


def _point(human: np.ndarray, metric: np.ndarray) -> dict[str, float]:
    if len(human) < 3 or np.ptp(human) == 0 or np.ptp(metric) == 0:
        return {name: math.nan for name in STATISTICS}
    return {
        "kendall_tau_c": float(stats.kendalltau(metric, human, variant="c").statistic),
        "kendall_tau_b": float(stats.kendalltau(metric, human, variant="b").statistic),
        "spearman": float(stats.spearmanr(metric, human).statistic),
        "pearson": float(stats.pearsonr(metric, human).statistic),
    }


def correlations(human, metric, *, groups=None, n_boot: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> dict:
    """Each statistic with its bootstrap interval: ``{"n": rows, "n_groups": pairs, "kendall_tau_c":
    {"value", "ci_low", "ci_high"}, ...}``. Only ``comparable`` rows count (also in ``n``)."""
    human = np.asarray(human, dtype=float)
    metric = np.asarray(metric, dtype=float)
    if human.shape != metric.shape:
        raise ValueError(f"human ({human.shape}) and metric ({metric.shape}) scores differ in length")
    groups = np.arange(len(human)) if groups is None else np.asarray(groups)
    keep = comparable(human, metric)
    human, metric, groups = human[keep], metric[keep], groups[keep]
    _, group_index = np.unique(groups, return_inverse=True)
    n_groups = int(group_index.max()) + 1 if len(group_index) else 0
    order = np.argsort(group_index, kind="stable")
    counts = np.bincount(group_index, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_groups else counts
    point = _point(human, metric)
    draws = {name: [] for name in STATISTICS}
    rng = np.random.default_rng(seed)
    for _ in range(n_boot if n_groups >= 3 else 0):
        picked = rng.integers(0, n_groups, n_groups)
        if n_groups == len(human):
            rows = order[starts[picked]]
        else:  # every row of each picked pair
            lens = counts[picked]
            offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
            rows = order[np.repeat(starts[picked] - offsets, lens) + np.arange(lens.sum())]
        for name, value in _point(human[rows], metric[rows]).items():
            draws[name].append(value)
    alpha = (1 - confidence) / 2
    out: dict = {"n": int(len(human)), "n_groups": n_groups, "bootstrap": int(n_boot), "confidence": confidence,
                 # a side with one value over the rows: it ranks nothing, so every statistic is NaN
                 "constant": {side: (float(values[0]) if len(values) and np.ptp(values) == 0 else None)
                              for side, values in (("human", human), ("metric", metric))}}
    undefined = 0
    for name in STATISTICS:
        values = np.asarray([v for v in draws[name] if not math.isnan(v)])
        undefined = max(undefined, len(draws[name]) - len(values))
        usable = len(values) and len(draws[name]) - len(values) <= UNDEFINED_RESAMPLES_MAX * len(draws[name])
        low, high = (np.quantile(values, [alpha, 1 - alpha]) if usable else (math.nan, math.nan))
        out[name] = {"value": point[name], "ci_low": float(low), "ci_high": float(high)}
    out["bootstrap_undefined"] = undefined  # resamples a statistic had no value in (the interval counts none)
    return out


def undefined_interval(result: dict) -> str | None:
    """Why the intervals are left undefined where too many resamples had no value, else None."""
    undefined, drawn = result.get("bootstrap_undefined", 0), result["bootstrap"]
    if not undefined or undefined <= UNDEFINED_RESAMPLES_MAX * drawn or any(
            v is not None for v in (result.get("constant") or {}).values()):
        return None  # a side constant over every pair: constant_cause says why, there is no rest to speak of
    return (f"{undefined} of {drawn} bootstrap resamples drew pairs on which a side is constant (a score that varies "
            f"on a few pairs only): no interval is given, as the rest would be a biased one")


def constant_cause(result: dict, metric_name: str, option: str = "--score") -> str | None:
    """Why ``result``'s coefficients are NaN where a side is constant over its rows (no order to agree
    with: a correlation with a constant is undefined, not zero), else None. ``option``: how the caller
    names the score column, for the advice."""
    constant = result.get("constant") or {}
    if not math.isnan(result["kendall_tau_c"]["value"]):
        return None
    pairs = f"the {result['n_groups']} matched pairs"
    if constant.get("metric") is not None:
        return f"score column {metric_name!r} is constant ({constant['metric']:g}) over {pairs}: pick another {option}"
    if constant.get("human") is not None:
        return (f"the human scores are constant ({constant['human']:g}) over {pairs}: no order to agree with; "
                "judge pairs that differ")
    return None


def format_correlations(rows: list[tuple[str, dict]], title: str = "") -> str:
    """A terminal table; coefficients x 100, as the literature prints them."""
    lines = [title] if title else []
    header = f"{'protocol':<34}{'rows':>7}{'pairs':>7}" + "".join(f"{name:>24}" for name in STATISTICS)
    lines += [header, "-" * len(header)]
    for label, result in rows:
        cells = "".join(f"{100 * r['value']:>8.1f} [{100 * r['ci_low']:5.1f},{100 * r['ci_high']:5.1f}]".rjust(24)
                        for r in (result[name] for name in STATISTICS))
        lines.append(f"{label:<34}{result['n']:>7}{result['n_groups']:>7}{cells}")
    lines.append(f"(x 100; [bootstrap {int(100 * rows[0][1]['confidence']) if rows else 95}% interval, "
                 f"{rows[0][1]['bootstrap'] if rows else 0} resamples of pairs])")
    lines += [f"{label}: {why}" for label, why in ((label, undefined_interval(r)) for label, r in rows) if why]
    return "\n".join(lines)
