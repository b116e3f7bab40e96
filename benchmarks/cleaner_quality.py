"""How well the offline curation cleans real human captions with web noise injected.

Labelled samples come from ``curation_pipeline.evaluation.noise``: the human captions of
``../shared/evaldata/flickr8k_1k_small`` (``--captions-per-image`` of each photo), split by
photo into ``dev`` (the split the cleaner's rules were written from) and ``heldout`` (the split
the figures are measured on); each sample is clean, noisy (1-3 noise kinds injected), junk or
mismatched. Every sample goes through the pipeline's caption path (text scorers, default
policy, the rule-based cleaner, the independent acceptance check), and the outcome is scored
against its label (``curation_pipeline.evaluation.labels``).

Targets on the held-out split: noisy caught >= 95%, exactly clean >= 80%, p90 edit ratio of
the cleaned caption vs its clean source <= 0.15, clean captions kept unchanged >= 99%.

``--smoke`` reads the Flickr folder where there is one, else the captions the repository ships
(``evaluation.shipped_captions``): a few seconds, no figures worth quoting.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from _common import FLICKR, add_smoke_flag, flickr_available, met, parse_args, result_line, verdict, verdict

TARGETS = {"noisy_caught": (">=", 0.95), "noisy_exactly_clean": (">=", 0.80), "noisy_edit_ratio_p90": ("<=", 0.15),
           "clean_kept_unchanged": (">=", 0.99)}


def main(argv=None) -> None:
    import pandas as pd

    from curation_pipeline.evaluation.curation import curate_captions
    from curation_pipeline.evaluation.labels import evaluate_labels, format_labels_report, join_outcomes
    from curation_pipeline.evaluation.noise import flickr_items, make_labelled, shipped_items, write_truth

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=0, help="photos to use (0 = all 1,000)")
    parser.add_argument("--captions-per-image", type=int, default=2, help="human captions taken from each photo")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise generator")
    parser.add_argument("--truth-out", default=None, help="also write the truth file (JSON lines) here")
    add_smoke_flag(parser, images=40)
    args = parse_args(parser, argv)

    if flickr_available():
        items, source = flickr_items(FLICKR), "flickr8k_1k_small"
        if args.images:
            items = items[: args.images]
    elif args.smoke:
        items, source = shipped_items(), "shipped_captions"
    else:
        raise SystemExit(f"Flickr captions not found at {FLICKR} (set CURATE_FLICKR_DIR, or run with --smoke)")

    samples = make_labelled(items, seed=args.seed, captions_per_image=args.captions_per_image)
    if args.truth_out:
        write_truth(samples, args.truth_out)
    truth = pd.DataFrame([asdict(s) for s in samples])
    start = time.perf_counter()
    final, _ = curate_captions(truth["key"].tolist(), truth["caption"].tolist())
    seconds = time.perf_counter() - start
    reports = {}
    for split in ("dev", "heldout"):
        part = truth[truth["split"].eq(split)].assign(shard=None)
        reports[split] = evaluate_labels(join_outcomes(part, final), examples=8)

    held = reports["heldout"]
    print(f"source: {source}, {len(items)} photos, {len(truth)} labelled samples "
          f"({reports['dev']['samples']} dev, {held['samples']} held-out); curated in {seconds:.2f} s\n")
    print("== held-out split (measured; the cleaner's rules were written from dev) ==")
    print(format_labels_report(held))
    dev = reports["dev"]["summary"]
    print(f"\n== dev split: noisy caught {dev['noisy_caught']:.3f}, exactly clean {dev['noisy_exactly_clean']:.3f}, "
          f"p90 edit ratio {dev['noisy_edit_ratio_p90']:.3f}, clean kept {dev['clean_kept_unchanged']:.3f}")
    summary = held["summary"]
    held_to = {name: (summary[name] >= bound if op == ">=" else summary[name] <= bound)
               for name, (op, bound) in TARGETS.items()}
    print("\ntargets (held-out): " + ", ".join(f"{name} {TARGETS[name][0]} {TARGETS[name][1]}: "
                                             f"{met(ok)}" for name, ok in held_to.items()))
    print("per noise kind (held-out): " + json.dumps({k: round(v["exactly_clean"], 3)
                                                       for k, v in held["noisy"]["by_kind"].items()}))
    result_line({
        "source": source,
        "samples": int(len(truth)),
        "heldout_samples": held["samples"],
        "heldout_noisy": held["noisy"]["n"],
        **{k: v for k, v in summary.items()},
        "noisy_edit_ratio_p50": held["noisy"]["edit_ratio"]["p50"],
        "noisy_dropped": held["noisy"]["dropped"],
        "clean_false_changes": held["clean"]["false_changes"],
        "dev_noisy_caught": dev["noisy_caught"],
        "dev_noisy_exactly_clean": dev["noisy_exactly_clean"],
        "targets_met": verdict(all(held_to.values())),
        "seconds": seconds,
    })


if __name__ == "__main__":
    main()
