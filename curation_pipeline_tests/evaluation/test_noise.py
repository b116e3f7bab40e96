"""The labelled-noise generator, and the cleaner measured on it with the repository's own captions."""

import json
import os
import random
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from curation_pipeline.evaluation import noise
from curation_pipeline.evaluation.curation import curate_captions
from curation_pipeline.evaluation.labels import evaluate_labels, join_outcomes, read_truth
from curation_pipeline.evaluation.noise import NOISE_KINDS, inject, make_labelled, shipped_items, split_of, write_truth
from curation_pipeline.evaluation.shipped_captions import CAPTIONS

# The targets, on the split the rules were not written from.
TARGETS = {"noisy_caught": 0.95, "noisy_exactly_clean": 0.80, "clean_kept_unchanged": 0.99}
MAX_P90_EDIT = 0.15


def test_every_kind_is_documented():
    for kind in NOISE_KINDS:
        assert f"``{kind}``" in noise.__doc__, kind


@pytest.mark.parametrize("kind", list(NOISE_KINDS))
def test_each_kind_changes_the_caption_and_only_adds(kind):
    rng = random.Random(1)
    for caption in CAPTIONS[:40]:
        noisy = inject(caption, [kind], rng)
        assert noisy != caption
        # noise is only ever inserted: every character of the caption survives, in order
        chars = iter(noisy)
        assert all(ch in chars for ch in caption), (kind, noisy)


def test_generation_is_deterministic_and_split_by_image():
    items = shipped_items()
    a, b = make_labelled(items, seed=3), make_labelled(items, seed=3)
    assert [asdict(s) for s in a] == [asdict(s) for s in b]
    assert [asdict(s) for s in make_labelled(items, seed=4)] != [asdict(s) for s in a]
    for sample in a:
        assert sample.split == split_of(sample.image)
        if sample.label == "mismatched":
            assert sample.caption_of != sample.image and split_of(sample.caption_of) == sample.split
        if sample.label == "noisy":
            assert sample.clean in CAPTIONS and 1 <= len(sample.kinds) <= 3 and sample.caption != sample.clean
    counts = pd.Series([s.label for s in a]).value_counts()
    assert set(counts.index) == set(noise.LABELS) and counts["noisy"] > counts["clean"] > counts["junk"]
    assert {s.split for s in a} == {"dev", "heldout"}
    # the split is a stable hash, the same on every machine and run: pinned values, and the same samples
    # from processes with different string-hash seeds (Python's hash() is salted per process)
    assert {image: split_of(image) for image in PINNED_SPLITS} == PINNED_SPLITS
    expected = json.loads(json.dumps([asdict(s) for s in a]))
    for hash_seed in ("1", "2"):
        assert _labelled_in_subprocess(seed=3, hash_seed=hash_seed) == expected, hash_seed


# split_of's values when the evaluation split was fixed: a change here moves samples between dev and heldout
PINNED_SPLITS = {"images/1000268201_693b08cb0e.jpg": "dev", "shipped-000": "dev", "shipped-001": "heldout",
                 "shipped-002": "heldout", "shipped-003": "dev", "shipped-005": "heldout"}
_LABELLED_SCRIPT = ("import json, sys; from dataclasses import asdict; "
                    "from curation_pipeline.evaluation.noise import make_labelled, shipped_items; "
                    "print(json.dumps([asdict(s) for s in make_labelled(shipped_items(), seed=int(sys.argv[1]))]))")


def _labelled_in_subprocess(*, seed: int, hash_seed: str) -> list[dict]:
    """``make_labelled`` in a fresh interpreter, run beside the package this process imported."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    root = Path(noise.__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _LABELLED_SCRIPT, str(seed)], env=env, cwd=root,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_truth_file_round_trip(tmp_path):
    samples = make_labelled(shipped_items()[:30])
    truth = read_truth(write_truth(samples, tmp_path / "truth.jsonl"))
    assert truth["key"].tolist() == [s.key for s in samples]
    assert truth.loc[truth["label"].eq("noisy"), "kinds"].map(len).min() >= 1
    saved_by_notepad = tmp_path / "bom.jsonl"  # a BOM first: the first line was "not JSON"
    saved_by_notepad.write_text("\ufeff" + (tmp_path / "truth.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    assert read_truth(saved_by_notepad)["key"].tolist() == truth["key"].tolist()
    (tmp_path / "bad.jsonl").write_text('{"key": "a", "label": "noisy", "caption": "x"}\n')
    with pytest.raises(ValueError, match="clean"):
        read_truth(tmp_path / "bad.jsonl")


def _measure(items, split, **kwargs):
    samples = [s for s in make_labelled(items, **kwargs) if s.split == split]
    truth = pd.DataFrame([asdict(s) for s in samples]).assign(shard=None)
    final, _ = curate_captions(truth["key"].tolist(), truth["caption"].tolist())
    return evaluate_labels(join_outcomes(truth, final))


@pytest.mark.parametrize("split", ["dev", "heldout"])
def test_cleaner_meets_the_targets_on_shipped_captions(split):
    report = _measure(shipped_items(), split, seed=0, shares={"clean": 0.3, "noisy": 0.6, "junk": 0.1})
    summary = report["summary"]
    assert report["noisy"]["n"] >= 30 and report["clean"]["n"] >= 10
    for name, bound in TARGETS.items():
        assert summary[name] >= bound, (name, summary, report["noisy"]["not_clean_examples"])
    assert summary["noisy_edit_ratio_p90"] <= MAX_P90_EDIT
    assert summary["junk_dropped"] == 1.0, report["junk"]["kept_examples"]


@pytest.mark.parametrize("kind", list(NOISE_KINDS))
def test_each_kind_alone_comes_out_exactly_clean(kind):
    """Every shipped caption with one noise kind goes through score -> decide -> clean -> accept."""
    rng = random.Random(7)
    noisy = [inject(c, [kind], rng) for c in CAPTIONS]
    final, lineage = curate_captions([str(i) for i in range(len(CAPTIONS))], noisy)
    wrong = [(n, f) for n, f, c in zip(noisy, final["final_caption"], CAPTIONS) if f != c]
    assert not wrong, wrong[:5]
    assert final["outcome"].eq("rewritten").all()


def test_clean_captions_are_kept_as_written():
    final, lineage = curate_captions([str(i) for i in range(len(CAPTIONS))], list(CAPTIONS))
    assert final["outcome"].eq("kept").all() and lineage.empty
    assert final["final_caption"].tolist() == list(CAPTIONS)


def test_flickr_heldout_split_meets_the_targets(flickr_dir):
    """The same measurement on the real Flickr8k captions, when ../shared is there (the benchmark's figure)."""
    report = _measure(noise.flickr_items(flickr_dir)[:300], "heldout", captions_per_image=1)
    summary = report["summary"]
    for name, bound in TARGETS.items():
        assert summary[name] >= bound, (name, summary)
    assert summary["noisy_edit_ratio_p90"] <= MAX_P90_EDIT


def test_a_captions_file_with_a_bom_reads(tmp_path):
    (tmp_path / "captions.jsonl").write_text('\ufeff{"image": "images/a.jpg", "captions": ["A dog ."]}\n',
                                             encoding="utf-8")
    assert noise.flickr_items(tmp_path) == [("images/a.jpg", ["A dog ."])]


def test_several_captions_of_a_photo_in_shards_warn_of_the_duplicate_images(tmp_path):
    """--captions-per-image 2 wrote each photo's bytes twice: `curate run` kept one copy (duplicate:exact_image),
    so half the labels were never scored, in silence. Writing such shards says so and how to run them."""
    import warnings

    items = [(f"p{i}.jpg", [f"A dog number {i} runs .", f"A dog {i} on the grass ."]) for i in range(6)]
    images = tmp_path / "images"
    images.mkdir()
    for image, _ in items:
        (images / image).write_bytes(b"\xff\xd8not-really-a-jpeg")
    two = make_labelled(items, captions_per_image=2)
    with pytest.warns(UserWarning, match=r"6 photos are written with several captions \(12 samples\): the copies are "
                                         r"exact duplicates.*--set policy.drop_duplicates=false"):
        noise.write_labelled_shards(two, images, tmp_path / "raw2", tmp_path / "truth2.jsonl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one caption per photo: no copies, no warning
        noise.write_labelled_shards(make_labelled(items), images, tmp_path / "raw1", tmp_path / "truth1.jsonl")


def test_the_script_names_a_folder_without_captions(tmp_path, capsys):
    """A fresh clone has no Flickr8k copy: the README's command said so with a traceback (FileNotFoundError)."""
    from curation_pipeline.evaluation.noise import main

    with pytest.raises(SystemExit) as exit_:
        main(["--flickr", str(tmp_path / "none"), "--raw", str(tmp_path / "raw"), "--truth", str(tmp_path / "t")])
    assert exit_.value.code == 2 and "no captions.jsonl there" in capsys.readouterr().err
    assert not (tmp_path / "raw").exists() and not (tmp_path / "t").exists()
