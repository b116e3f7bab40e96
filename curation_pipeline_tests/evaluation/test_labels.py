"""Curation outcomes scored against labels: shares, exactly clean, edit ratios, false changes."""

import math

import pandas as pd
import pytest

from curation_pipeline.evaluation.labels import evaluate_labels, format_labels_report, join_outcomes

TRUTH = pd.DataFrame([
    {"key": "c1", "label": "clean", "caption": "A dog runs .", "clean": "A dog runs .", "kinds": []},
    {"key": "c2", "label": "clean", "caption": "A cat sleeps", "clean": "A cat sleeps", "kinds": []},
    {"key": "n1", "label": "noisy", "caption": "A dog runs . Buy now", "clean": "A dog runs .", "kinds": ["advertising"]},
    {"key": "n2", "label": "noisy", "caption": "A cat sleeps #a #b", "clean": "A cat sleeps", "kinds": ["hashtags"]},
    {"key": "n3", "label": "noisy", "caption": "Photo: J Doe a b c d", "clean": "a b c d", "kinds": ["credit"]},
    {"key": "n4", "label": "noisy", "caption": "x y z w (src", "clean": "x y z w", "kinds": ["bracketed_source"]},
    {"key": "j1", "label": "junk", "caption": "IMG_1.JPG", "clean": None, "kinds": ["filename"]},
    {"key": "m1", "label": "mismatched", "caption": "A boat", "clean": None, "kinds": []},
]).assign(shard=None)
FINAL = pd.DataFrame([
    {"key": "c1", "outcome": "kept", "final_caption": "A dog runs .", "reason": "ok"},
    {"key": "c2", "outcome": "rewritten", "final_caption": "A cat sleeps.", "reason": "rewritten: x"},
    {"key": "n1", "outcome": "rewritten", "final_caption": "A dog runs .", "reason": "rewritten: x"},
    {"key": "n2", "outcome": "kept", "final_caption": "A cat sleeps #a #b", "reason": "rejected"},
    {"key": "n3", "outcome": "rewritten", "final_caption": "Doe a b c d", "reason": "rewritten: x"},
    {"key": "n4", "outcome": "dropped", "final_caption": None, "reason": "weak"},
    {"key": "j1", "outcome": "dropped", "final_caption": None, "reason": "weak"},
    {"key": "m1", "outcome": "kept", "final_caption": "A boat", "reason": "ok"},
    {"key": "zz", "outcome": "kept", "final_caption": "not labelled", "reason": "ok"},
]).assign(original_caption=None)


def test_report_figures():
    report = evaluate_labels(join_outcomes(TRUTH, FINAL))
    assert report["samples"] == 8
    assert report["labels"]["clean"] == {"n": 2, "kept_unchanged": 0.5, "rewritten": 0.5, "dropped": 0.0,
                                         "drop_reasons": {}, "dropped_for_image": 0}
    assert report["labels"]["junk"]["drop_reasons"] == {"weak": 1}
    noisy = report["noisy"]
    assert noisy["n"] == 4 and noisy["caught"] == 0.75 and noisy["exactly_clean"] == 0.25 and noisy["dropped"] == 0.25
    # edit ratios of the three surviving noisy captions vs their clean source: 0, 1 - 2*3/(3+5), 1 - 2*4/(4+5)
    ratios = sorted([0.0, 1 - 6 / 8, 1 - 8 / 9])
    assert noisy["edit_ratio"]["p50"] == pytest.approx(ratios[1])
    assert noisy["edit_ratio_mean"] == pytest.approx(sum(ratios) / 3)
    assert noisy["by_kind"]["advertising"]["exactly_clean"] == 1.0 and noisy["by_kind"]["hashtags"]["caught"] == 0.0
    assert report["clean"]["false_changes"] == 1
    assert report["clean"]["false_change_examples"][0]["final_caption"] == "A cat sleeps."
    assert report["junk"]["dropped"] == 1.0 and report["mismatched"]["dropped"] == 0.0
    assert report["summary"]["clean_kept_unchanged"] == 0.5
    text = format_labels_report(report)
    assert "exactly clean 25.0%" in text and "A cat sleeps." in text


def test_a_sample_dropped_for_its_image_is_no_caption_verdict():
    """A thumbnail or an NSFW photo is dropped whatever its caption: counting that as a noisy caption caught, a clean
    one changed or a mismatch seen credits (or blames) the caption work with what it never did."""
    truth = pd.concat([TRUTH, pd.DataFrame([
        {"key": "c3", "label": "clean", "caption": "A red bus", "clean": "A red bus", "kinds": []},
        {"key": "n5", "label": "noisy", "caption": "A bus #a #b", "clean": "A bus", "kinds": ["hashtags"]},
        {"key": "m2", "label": "mismatched", "caption": "A cow", "clean": None, "kinds": []},
    ]).assign(shard=None)])
    final = pd.concat([FINAL, pd.DataFrame([
        {"key": "c3", "outcome": "dropped", "final_caption": None, "reason": "image_too_small"},
        {"key": "n5", "outcome": "dropped", "final_caption": None, "reason": "nsfw"},
        {"key": "m2", "outcome": "dropped", "final_caption": None, "reason": "duplicate:near_image"},
    ]).assign(original_caption=None)])
    report, before = evaluate_labels(join_outcomes(truth, final)), evaluate_labels(join_outcomes(TRUTH, FINAL))
    for part in ("noisy", "clean", "junk", "mismatched"):  # the caption figures: as without those three samples
        assert report[part] == before[part], part
    assert report["labels"]["clean"]["n"] == 3 and report["labels"]["clean"]["dropped_for_image"] == 1
    assert report["labels"]["clean"]["drop_reasons"] == {"image_too_small": 1}  # still counted where it was
    assert report["dropped_for_image"] == 3
    assert report["image_drop_reasons"] == {"duplicate:near_image": 1, "image_too_small": 1, "nsfw": 1}
    assert ("left out of the caption figures above: 3 samples dropped for their image, whatever their caption"
            in format_labels_report(report))


def test_noise_that_ingest_removed_is_scored_as_the_clean_caption_the_pipeline_got():
    """A NUL byte or a leading BOM never reaches a rule from a shard (ingest removes it): the warehouse's pair is
    the clean caption, kept as it came, which is no noise missed. The in-process caption path sees the noise."""
    truth = pd.DataFrame([
        {"key": "n1", "label": "noisy", "caption": "A d\x00og runs", "clean": "A dog runs", "kinds": ["control"]},
        {"key": "n2", "label": "noisy", "caption": "A dog\u200b runs", "clean": "A dog runs", "kinds": ["control"]},
    ]).assign(shard=None)
    final = pd.DataFrame([
        {"key": "n1", "outcome": "kept", "final_caption": "A dog runs", "reason": "ok",
         "original_caption": "A dog runs"},
        {"key": "n2", "outcome": "kept", "final_caption": "A dog\u200b runs", "reason": "ok",
         "original_caption": "A dog\u200b runs"},
    ])
    report = evaluate_labels(join_outcomes(truth, final))
    assert report["noise_removed_at_ingest"] == 1
    assert report["labels"]["clean"]["n"] == 1 and report["clean"]["kept_unchanged"] == 1.0
    assert report["noisy"]["n"] == 1 and report["noisy"]["caught"] == 0.0  # the zero-width space reached the rules
    assert "1 noisy samples counted as clean: ingest removed their noise" in format_labels_report(report)


def test_a_long_truth_caption_is_cut_as_the_reader_cuts_it(tmp_path):
    """Ingest cuts a caption over the reader's limit back to a space ("... coffee", not "... coffee coff"); the
    labels report sliced the truth caption at the limit, so a long labelled caption counted as a caption mismatch."""
    from curation_pipeline.evaluation.labels import as_ingested
    from curation_pipeline.shards.reader import ShardReader
    from curation_pipeline.shards.writer import write_tar
    from curation_pipeline_tests.shards.faults import jpeg

    caption = "coffee " * 1500  # 10,500 characters: the limit falls inside a word
    tar = write_tar(tmp_path / "long.tar", [("k.jpg", jpeg()), ("k.txt", caption.encode("utf-8"))])
    stored = next(iter(ShardReader(str(tar), "long"))).caption
    assert as_ingested(caption) == stored and stored.endswith("coffee")
    truth = pd.DataFrame([{"key": "k", "label": "clean", "caption": caption, "clean": caption, "kinds": []}])
    final = pd.DataFrame([{"key": "k", "outcome": "kept", "final_caption": stored, "reason": "ok",
                           "original_caption": stored}])
    joined = join_outcomes(truth.assign(shard=None), final)
    assert len(joined) == 1 and joined.attrs["caption_mismatches"] == 0


def test_drop_reasons_count_each_signal_whatever_the_pairs_score():
    """Each junk pair dropped for low text quality counts under one reason, not one per score; a duplicate's
    kind and a second signal of the same pair are their own."""
    truth = pd.DataFrame([{"key": f"j{i}", "label": "junk", "caption": "x", "clean": None, "kinds": []}
                          for i in range(6)]).assign(shard=None)
    reasons = ["low_text_quality=30.0 (rules)", "low_text_quality=0.0 (rules)", "low_text_quality=10.0 (rules)",
               "low_text_quality=60.0 (rules); not_english", "duplicate:near_image", "duplicate:exact_pair"]
    final = pd.DataFrame({"key": truth["key"], "outcome": "dropped", "final_caption": None, "reason": reasons,
                          "original_caption": None})
    assert evaluate_labels(join_outcomes(truth, final))["labels"]["junk"]["drop_reasons"] == {
        "low_text_quality": 4, "duplicate:exact_pair": 1, "duplicate:near_image": 1}


def test_nothing_matches():
    with pytest.raises(ValueError, match="no labelled sample matches"):
        join_outcomes(TRUTH, FINAL.assign(key="other"))


def test_a_label_without_samples_is_nan_not_zero():
    report = evaluate_labels(join_outcomes(TRUTH[TRUTH["label"].ne("junk")], FINAL))
    assert report["labels"]["junk"]["n"] == 0 and math.isnan(report["junk"]["dropped"])


def test_labels_against_a_warehouse(tmp_path):
    import tarfile

    from curation_pipeline.evaluation.curation import curate_captions
    from curation_pipeline.evaluation.labels import labels_report, read_truth
    from curation_pipeline.evaluation.noise import make_labelled, shipped_items, write_labelled_shards
    from curation_pipeline.storage.warehouse import Warehouse

    samples = make_labelled(shipped_items()[:40])
    images = tmp_path / "images"
    images.mkdir()
    for sample in samples:
        (images / sample.image).write_bytes(b"\xff\xd8not-really-a-jpeg")
    paths = write_labelled_shards(samples, images, tmp_path / "raw", tmp_path / "truth.jsonl", per_shard=25)
    assert [p.name for p in paths] == ["labelled-000000.tar", "labelled-000001.tar"]
    with tarfile.open(paths[0]) as tar:
        assert tar.extractfile(f"{samples[0].key}.txt").read().decode() == samples[0].caption
    truth = read_truth(tmp_path / "truth.jsonl")
    assert truth["shard"].notna().all() and len(truth) == len(samples)
    wh = Warehouse(str(tmp_path / "wh"))  # final captions per shard, as the pipeline would store them
    for shard, part in truth.groupby("shard"):
        final, _ = curate_captions(part["key"].tolist(), part["caption"].tolist(), shard=shard)
        wh.write_table("final_captions", shard, final)
    report = labels_report(tmp_path / "truth.jsonl", warehouse_root=wh.root)
    assert report["unmatched"] == 0 and report["samples"] == len(samples)
    assert report["summary"]["noisy_exactly_clean"] >= 0.8 and report["summary"]["clean_kept_unchanged"] == 1.0


def _labelled_shards(tmp_path, n=40, per_shard=25):
    """The truth file (and shards) that `python -m curation_pipeline.evaluation.noise` writes: rows name their shard."""
    from curation_pipeline.evaluation.noise import make_labelled, shipped_items, write_labelled_shards

    samples = make_labelled(shipped_items()[:n])
    images = tmp_path / "images"
    images.mkdir()
    for sample in samples:
        (images / sample.image).write_bytes(b"\xff\xd8not-really-a-jpeg")
    write_labelled_shards(samples, images, tmp_path / "raw", tmp_path / "truth.jsonl", per_shard=per_shard)
    return samples, tmp_path / "truth.jsonl"


def test_from_captions_on_the_truth_of_labelled_shards(tmp_path):
    from curation_pipeline.evaluation.labels import labels_report

    samples, truth = _labelled_shards(tmp_path)
    report = labels_report(truth, from_captions=True)  # curated pairs carry the truth's shards: joined on both
    assert report["samples"] == len(samples) and report["unmatched"] == 0
    assert report["summary"]["clean_kept_unchanged"] == 1.0


def test_key_only_truth_must_name_one_shard():
    final = pd.concat([FINAL.assign(shard="s0"), FINAL.assign(shard="s1")], ignore_index=True)
    with pytest.raises(ValueError, match=r"8 of its keys are in more than one shard .*add a 'shard' column"):
        join_outcomes(TRUTH, final)  # keys repeat across shards: each truth row would count twice
    spread = FINAL.assign(shard=["s0"] * 4 + ["s1"] * 5)  # several shards, each key in one: unambiguous
    assert len(join_outcomes(TRUTH, spread)) == 8
    assert len(join_outcomes(TRUTH.assign(shard="s1"), final)) == 8  # named shards: exact join


def test_a_truth_sample_is_labelled_once(tmp_path):
    from curation_pipeline.evaluation.labels import read_truth
    from curation_pipeline.evaluation.noise import write_truth

    rows = [{"key": "000001", "label": "clean", "caption": "a dog"}, {"key": "000001", "label": "junk", "caption": "x"}]
    with pytest.raises(ValueError, match="labelled more than once"):
        read_truth(write_truth(rows, tmp_path / "keys.jsonl"))
    with_shards = [{**rows[0], "shard": "s0"}, {**rows[1], "shard": "s1"}]  # the same key in two shards: two samples
    assert len(read_truth(write_truth(with_shards, tmp_path / "shards.jsonl"))) == 2
    with pytest.raises(ValueError, match="labelled more than once"):
        read_truth(write_truth([with_shards[0], with_shards[0]], tmp_path / "twice.jsonl"))


def _labelled_and_final(n=200):
    """A truth file's rows and the curated pairs ingest made of them (same shard, keys and captions)."""
    truth = pd.DataFrame({"key": [f"h{i:06d}" for i in range(n)], "label": "clean", "kinds": [[]] * n,
                          "caption": [f"a dog number {i} runs" for i in range(n)], "shard": "labelled-000000"})
    truth["clean"] = truth["caption"]
    final = truth[["shard", "key"]].assign(outcome="kept", final_caption=truth["caption"], reason="ok",
                                          original_caption=truth["caption"])
    return truth, final


def test_a_truth_file_of_other_shards_is_refused():
    """Shard names and keys repeat across generator runs: a truth file of another seed joins on them alone.
    Its captions are not the pairs' original_caption: too many such rows is an error; a few are left out."""
    truth, final = _labelled_and_final()
    other = truth.assign(caption=truth["caption"].str.replace("dog", "cat"))  # another run: same keys, other text
    with pytest.raises(ValueError, match=r"200 of 200 labelled samples .*original_caption.*"
                                         r"labelled-000000/h000000, labelled-000000/h000001"):
        join_outcomes(other, final)
    one_off = truth.copy()
    one_off.loc[7, "caption"] = "something else"  # 0.5%: left out and counted, never scored against the wrong text
    joined = join_outcomes(one_off, final)
    assert len(joined) == 199 and "h000007" not in set(joined["key"])
    report = evaluate_labels(joined)
    assert report["caption_mismatches"] == 1 and report["samples"] == 199 and report["labelled"] == 200
    assert "1 left out: caption differs" in format_labels_report(report)
    # what ingest changes is no mismatch: a leading BOM, NUL bytes, the file's final line ending
    saved = truth.copy()
    saved.loc[0, "caption"] = "\ufeff" + saved.loc[0, "caption"]
    saved.loc[1, "caption"] = saved.loc[1, "caption"].replace("dog", "d\x00og") + "\r\n"
    assert evaluate_labels(join_outcomes(saved, final))["caption_mismatches"] == 0


def test_the_terminal_report_says_how_many_samples_matched(tmp_path):
    """Labelled samples not in the warehouse were in the JSON only; the terminal says it too."""
    from curation_pipeline.evaluation.curation import curate_captions
    from curation_pipeline.evaluation.labels import labels_report, read_truth
    from curation_pipeline.storage.warehouse import Warehouse

    samples, truth_path = _labelled_shards(tmp_path, n=40, per_shard=25)
    truth = read_truth(truth_path)
    first = truth[truth["shard"].eq("labelled-000000")]  # only the first shard was run
    wh = Warehouse(str(tmp_path / "wh"))
    wh.write_table("final_captions", "labelled-000000",
                   curate_captions(first["key"].tolist(), first["caption"].tolist(), shard="labelled-000000")[0])
    report = labels_report(truth_path, warehouse_root=wh.root)
    missing = len(truth) - len(first)
    assert missing > 0 and report["unmatched"] == missing
    assert format_labels_report(report).startswith(
        f"{len(first)} of {len(truth)} labelled samples matched; {missing} not in the warehouse\n")
