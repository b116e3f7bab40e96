"""Every benchmark script runs end to end in ``--smoke`` mode, as on a fresh clone.

Each script runs as a subprocess with the Flickr photos made unavailable
(``CURATE_FLICKR_DIR`` points at a folder that does not exist), so the smoke run must fall
back to images the repository makes itself. Its last stdout line must be ``RESULT {json}``
carrying the figures the README's performance table quotes, none of them null, with
``"smoke": true`` and no target verdict (a smoke run's figures decide nothing). No timing is
asserted. ``scale.py`` needs a private network namespace for its Ray cluster (``require``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from curation_pipeline.compute.cluster import private_network_available
from curation_pipeline_tests.conftest import REPO_ROOT, require

BENCHMARKS = REPO_ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "_common.py")

# The RESULT keys behind each figure of README.md's performance table.
EXPECTED_KEYS = {
    "dedup_pool.py": {"pairs_per_shard", "pool_shards", "dup_share", "refresh_s", "rebuild_s", "peak_rss_mb",
                      "decision_s", "index_shards", "index_grouped_rows", "index_write_s", "index_decision_read_s"},
    "mlm_filter_speed.py": {"pairs", "params_m", "prompt_tokens", "logits_pairs_per_s", "generate_pairs_per_s",
                            "logits_vs_generate", "separate_pairs_per_s", "shared_vs_separate",
                            "pipeline_pairs_per_s", "bare_forward_pairs_per_s", "pipeline_vs_bare"},
    "backfill.py": {"shards", "job_s", "backfill_s", "backfill_vs_job", "executor"},
    "pool_growth.py": {"shards", "rows", "write_ms", "orphan_lookup_ms", "folder_listing_ms", "slice_digests_s",
                       "slice_digests_per_shard_frames_s", "shards_growth", "write_growth", "orphan_lookup_growth",
                       "folder_listing_growth", "slice_digests_growth"},
    "refresh_plan.py": {"shards", "refresh_plan_s", "per_shard_ms", "to_run", "dagster_statuses_s",
                        "prefetched_statuses_s", "statuses_vs_dagster", "same_statuses", "shards_12800_s"},
    # --smoke runs the small shape only; a full run adds the same keys for b32 (b32_...)
    "clip_speed.py": {"pairs", "threads", "prompt", "small_params_m", "small_pipeline_pairs_per_s",
                      "small_no_prefetch_pairs_per_s", "small_model_only_pairs_per_s", "small_serial_pairs_per_s",
                      "small_pipeline_vs_model_only", "small_pipeline_vs_serial", "small_serial_ms_per_pair_decode",
                      "small_serial_ms_per_pair_preprocess", "small_serial_ms_per_pair_forward",
                      "small_ceiling_vs_serial"},
    "overhead.py": {"cores", "threads_per_run", "pairs_per_shard", "served", "one_run_s", "one_run_steps_s",
                    "outside_steps_s", "fixed_per_run_s", "per_shard_s", "per_shard_steps_s",
                    "per_shard_overhead_s", "per_shard_scoring_s", "per_shard_non_scoring_s", "two_runs_s",
                    "two_runs_vs_one", "per_shard_non_scoring_steps", "step_floor_s", "per_shard_non_scoring_floor_s",
                    "pairs_step_s"},  # a full run adds the cold figures (one_run_cold_s, pairs_step_cold_s, ...)
    "data_juicer.py": {"pairs", "rounds", "served_median_s", "local_median_s"},
    "instance_storage.py": {"runs", "assets", "events_per_run", "dagster_run_ms", "shipped_run_ms",
                            "shipped_vs_dagster"},  # + the ratios when --dj names one
    "rewrite_speed.py": {"rewrites_per_s", "partition_pairs", "f0_seconds", "f10_seconds", "f50_seconds",
                         "f10_rewritten", "f50_rewritten", "f50_cost_ratio"},
    "offline_signals.py": {"pairs", "decode_pairs_per_s", "ms_per_pair_nsfw", "ms_per_pair_ocr",
                           "ms_per_pair_dup", "ms_per_pair_image_quality", "ms_per_pair_datacomp",
                           "ms_per_pair_text_quality", "full_pairs_per_s", "slowdown_vs_decode"},
    "report_s3.py": {"shards", "rounds", "build_s", "head_requests", "get_requests", "list_requests",
                     "head_per_shard"},
    "load.py": {"pairs", "seconds", "pairs_per_s", "peak_rss_mb", "small_shard_peak_rss_mb",
                "big_shard_peak_rss_mb", "peak_rss_ratio_big_small"},
    "caption_rules_speed.py": {"shapes", "chars", "rules_max_s", "rules_worst", "clean_max_s", "clean_worst",
                               "rules_total_s", "clean_total_s", "targets_met"},
    "cleaner_quality.py": {"source", "samples", "heldout_samples", "noisy_caught", "noisy_exactly_clean",
                           "noisy_edit_ratio_p90", "clean_kept_unchanged", "junk_dropped", "mismatched_dropped",
                           "dev_noisy_caught", "dev_noisy_exactly_clean", "targets_met"},
    # --smoke measures the tiny_clip profile alone (the offline profile's figures come from the same loop)
    "scale.py": {"cores", "profiles", "clip_shape", "tiny_clip_ray1_ceiling_vs_local", "tiny_clip_ray1_allcores_vs_local",
                 "tiny_clip_local_pairs_per_s", "tiny_clip_ray1_pairs_per_s",
                 "tiny_clip_ray2_pairs_per_s", "tiny_clip_ray1_model_pairs_per_s", "tiny_clip_ray2_model_pairs_per_s",
                 "tiny_clip_ray1_vs_local", "tiny_clip_ray2_vs_ray1_model", "ray_worker_peak_rss_small_mb",
                 "ray_worker_peak_rss_big_mb", "ray_worker_peak_rss_ratio_big_small", "targets",
                 "tiny_clip_local_1thread_pairs_per_s", "tiny_clip_ray1_vs_local_1thread", "tiny_clip_load_average",
                 "tiny_clip_ray1_loaded_pairs_per_s", "tiny_clip_ray2_loaded_pairs_per_s",
                 "tiny_clip_ray1_loaded_vs_local", "tiny_clip_ray1_loaded_vs_local_1thread",
                 "tiny_clip_ray1_allcores_pairs_per_s", "tiny_clip_ray1_allcores_loaded_pairs_per_s",
                 "tiny_clip_ray1_allcores_vs_local", "tiny_clip_ray1_allcores_loaded_vs_local",
                 "tiny_clip_ray1_model_cores_per_actor", "tiny_clip_ray2_model_cores_per_actor",
                 "tiny_clip_ray1_model_wall_pairs_per_s", "tiny_clip_ray2_model_wall_pairs_per_s",
                 "tiny_clip_ray2_vs_ray1_model_wall"},
}
# Target verdicts: a smoke run gives none (null, or a structure of nulls)
VERDICTS = {"targets_met", "ratio_ok", "targets"}
# The longest smoke runs (several seconds of model building or three pipeline processes).
SLOW = {"load.py", "mlm_filter_speed.py", "scale.py", "overhead.py", "data_juicer.py"}


def verdicts(value) -> list[bool]:
    """The booleans in a verdict value (one, or a dict of them per target and profile)."""
    if isinstance(value, dict):
        return [b for v in value.values() for b in verdicts(v)]
    return [value] if isinstance(value, bool) else []


def test_every_benchmark_has_expected_keys():
    assert set(SCRIPTS) == set(EXPECTED_KEYS), "add each new benchmark's RESULT keys to EXPECTED_KEYS"


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in SCRIPTS])
def test_benchmark_smoke(script, tmp_path):
    if script == "scale.py":  # without a private network namespace it measures nothing (all figures null)
        require(*private_network_available())
    scratch = tmp_path / "tmp"  # the script's temp folder: what it makes there (bench-*) it must remove
    scratch.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "GX_ANALYTICS_ENABLED": "false", "CURATE_FLICKR_DIR": str(tmp_path / "no-flickr-here"),
           "TMPDIR": str(scratch)}
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900, check=False)
    assert out.returncode == 0, f"{script} --smoke exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    lines = out.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("RESULT "), f"last stdout line is not RESULT:\n{out.stdout[-3000:]}"
    figures = json.loads(lines[-1][len("RESULT "):])
    missing = EXPECTED_KEYS.get(script, set()) - set(figures)
    assert not missing, f"{script}: RESULT lacks {sorted(missing)}: {figures}"
    null = sorted(k for k in EXPECTED_KEYS[script] - VERDICTS if figures[k] is None)
    assert not null, f"{script}: RESULT has no figure for {null}: {figures}"
    assert figures.get("smoke") is True, f"{script}: a smoke RESULT must say so: {figures}"
    judged = {k: figures[k] for k in VERDICTS & set(figures) if verdicts(figures[k])}
    assert not judged, f"{script}: a smoke run must give no target verdict: {judged}"
    left = sorted(p.name for p in scratch.glob("bench-*"))
    assert not left, f"{script} left its temp folders behind: {left}"
