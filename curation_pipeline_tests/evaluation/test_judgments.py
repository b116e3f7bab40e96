"""Judgment readers (from the published formats, on small files written here), the warehouse join,
the reference baseline, `curate evaluate` and the Dagster assets."""

import json
import math
import tarfile

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from curation_pipeline.cli import main
from curation_pipeline.evaluation.judgments import (
    agreement_report,
    format_agreement,
    join_scores,
    read_judgments,
    reference_minilm_scores,
    sniff_format,
    warehouse_scores,
    write_judgment_shards,
)
from curation_pipeline.evaluation.noise import make_labelled, shipped_items, write_truth
from curation_pipeline.storage.warehouse import Warehouse

# Made-up images and captions in the Flickr8k layouts (not Flickr data). Each judged image has a
# twin whose captions describe the same scene: the good candidates come from the twin.
CAPTIONS = {
    "10_aa.jpg": ["A brown dog runs on the sand .", "A dog running along a beach .", "A dog on the shore .",
                  "Brown dog at the sea .", "A dog sprints near the waves ."],
    "11_ab.jpg": ["A brown dog running on a sandy beach .", "A dog races along the shoreline .",
                  "A dog at the beach .", "The dog runs by the ocean .", "A tan dog on the sand ."],
    "20_bb.jpg": ["Two children play football in a park .", "Kids kick a ball on grass .",
                  "Two boys with a soccer ball .", "Children playing in a field .", "A game of football in the park ."],
    "21_ba.jpg": ["Two kids play soccer on the grass .", "Children chase a football in a park .",
                  "Boys playing ball outside .", "Two young boys play football .", "Kids with a ball in a field ."],
    "30_cc.jpg": ["A red car parked on a street .", "A car by the curb .", "A red sedan on a road .",
                  "A parked red vehicle .", "A small red car in town ."],
    "31_ca.jpg": ["A red car parked by the road .", "A red automobile on the street .", "A parked car .",
                  "A little red car .", "A red car next to the sidewalk ."],
}
# image, caption id, three expert scores (1: does not describe the image ... 4: describes it)
EXPERT = [
    ("10_aa.jpg", "11_ab.jpg#0", 4, 4, 4), ("10_aa.jpg", "11_ab.jpg#2", 3, 4, 3), ("10_aa.jpg", "20_bb.jpg#1", 1, 1, 2),
    ("10_aa.jpg", "31_ca.jpg#2", 1, 1, 1), ("20_bb.jpg", "21_ba.jpg#0", 4, 4, 3), ("20_bb.jpg", "21_ba.jpg#3", 4, 3, 4),
    ("20_bb.jpg", "10_aa.jpg#3", 1, 2, 1), ("20_bb.jpg", "30_cc.jpg#0", 1, 1, 1), ("30_cc.jpg", "31_ca.jpg#1", 4, 4, 4),
    ("30_cc.jpg", "31_ca.jpg#3", 3, 3, 4), ("30_cc.jpg", "11_ab.jpg#1", 1, 1, 1), ("30_cc.jpg", "21_ba.jpg#2", 2, 1, 1),
]
# A candidate that is one of its own image's references: left out by default (CLIPScore / SPICE).
OWN = [("10_aa.jpg", "10_aa.jpg#0", 4, 4, 4)]


@pytest.fixture()
def flickr_files(tmp_path):
    token = tmp_path / "Flickr8k.token.txt"
    token.write_text("".join(f"{img}#{i}\t{c}\n" for img, cs in CAPTIONS.items() for i, c in enumerate(cs)))
    rows = EXPERT + OWN
    expert = tmp_path / "ExpertAnnotations.txt"
    expert.write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    crowd = tmp_path / "CrowdFlowerAnnotations.txt"
    crowd.write_text("".join(f"{img}\t{cid}\t{(s1 - 1) / 3:.6f}\t{s1 - 1}\t{4 - s1}\n" for img, cid, s1, *_ in rows))
    return {"token": token, "expert": expert, "crowd": crowd}


def test_formats_are_sniffed(flickr_files, tmp_path):
    assert sniff_format(flickr_files["expert"]) == "expert"
    assert sniff_format(flickr_files["crowd"]) == "crowdflower"
    (tmp_path / "j.csv").write_text("image,caption,score\n")
    assert sniff_format(tmp_path / "j.csv") == "generic"


def test_expert_reader(flickr_files):
    df = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"])
    assert df.attrs["format"] == "expert" and df.attrs["skipped_references"] == 1  # SPICE / CLIPScore protocol
    assert len(df) == len(EXPERT)
    row = df[df["caption_id"].eq("20_bb.jpg#1")].iloc[0]
    assert row["caption"] == "Kids kick a ball on grass ." and row["ratings"] == [1.0, 1.0, 2.0]
    assert row["score"] == pytest.approx(4 / 3)
    assert row["references"] == CAPTIONS["10_aa.jpg"]  # the judged image's own captions
    kept = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"], skip_references=False)
    assert len(kept) == len(EXPERT) + 1
    assert kept.iloc[-1]["references"] == CAPTIONS["10_aa.jpg"][1:]  # a candidate is never its own reference
    with pytest.raises(ValueError, match="Flickr8k.token.txt"):
        read_judgments(flickr_files["expert"])


def test_crowdflower_reader(flickr_files):
    df = read_judgments(flickr_files["crowd"], captions_file=flickr_files["token"])
    assert df.attrs["format"] == "crowdflower" and len(df) == len(EXPERT) + 1
    assert df["score"].between(0, 1).all() and {"n_yes", "n_no"} <= set(df.columns)


def test_generic_readers(tmp_path):
    (tmp_path / "j.csv").write_text('image,caption,score\na.jpg,"A dog, running",3\nb.jpg,A cat,1\nc.jpg,A car,2\n')
    df = read_judgments(tmp_path / "j.csv")
    assert df["caption"].tolist() == ["A dog, running", "A cat", "A car"] and df["score"].tolist() == [3, 1, 2]
    lines = [{"key": "k1", "score": 0.5, "references": ["x"]}, {"key": "k2", "score": 1.0, "references": ["y"]}]
    (tmp_path / "j.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert read_judgments(tmp_path / "j.jsonl")["key"].tolist() == ["k1", "k2"]
    (tmp_path / "bad.csv").write_text("picture,text\nx,y\n")
    with pytest.raises(ValueError, match="score"):
        read_judgments(tmp_path / "bad.csv")
    # said without the file, at the wrong line, or as missing the columns the header has
    (tmp_path / "bad.jsonl").write_text('{"key": "k1", "score": 1}\n{key: "k2"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON \(Expecting property name"):
        read_judgments(tmp_path / "bad.jsonl")
    (tmp_path / "j.tsv").write_text("image,caption,score\na.jpg,A dog,3\n")
    with pytest.raises(ValueError, match=r"j.tsv:1: not JSON .*; a CSV file must be named .csv"):
        read_judgments(tmp_path / "j.tsv", fmt="generic")
    (tmp_path / "list.json").write_text('\n\n\n[\n{"key": "k1", "score": 1},\n{key: 2}\n]\n')  # line 6
    with pytest.raises(ValueError, match=r"list.json:6: not JSON"):
        read_judgments(tmp_path / "list.json", fmt="generic")
    (tmp_path / "header.csv").write_text("image,caption,score\n")
    with pytest.raises(ValueError, match=r"header.csv: no records$"):
        read_judgments(tmp_path / "header.csv")


BOM = "\ufeff"  # Excel's "CSV UTF-8" and Notepad start a file with it


def test_files_saved_with_a_bom_read_as_without(flickr_files, tmp_path):
    """A BOM made the first header "\\ufeffimage": the reader said image and caption were missing, and a file with
    key first joined on image and caption instead (finding nothing); Flickr8k files lost their first row's name."""
    (tmp_path / "j.csv").write_text(BOM + "image,caption,score\na.jpg,A dog,3\nb.jpg,A cat,1\n", encoding="utf-8")
    assert read_judgments(tmp_path / "j.csv")["image"].tolist() == ["a.jpg", "b.jpg"]
    (tmp_path / "j.jsonl").write_text(BOM + '{"key": "0000001", "score": 2}\n', encoding="utf-8")
    assert read_judgments(tmp_path / "j.jsonl")["key"].tolist() == ["0000001"]
    wh = Warehouse(str(tmp_path / "wh"))
    keys = [f"{i:07d}" for i in range(4)]
    wh.write_table("quality_scores", "judged-000000", pd.DataFrame({
        "shard": "judged-000000", "key": keys, "caption": keys, "my_score": [0.0, 1.0, 2.0, 3.0]}))
    (tmp_path / "keys.csv").write_text(BOM + "key,score\n" + "".join(f"{k},{i}\n" for i, k in enumerate(keys)),
                                       encoding="utf-8")
    assert agreement_report(tmp_path / "keys.csv", "my_score", warehouse_root=wh.root, n_boot=5)["matched_pairs"] == 4
    for name in ("token", "expert"):
        flickr_files[name].write_text(BOM + flickr_files[name].read_text(), encoding="utf-8")
    expert = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"])
    assert expert.attrs["format"] == "expert" and expert["image"].iloc[0] == EXPERT[0][0]


def _warehouse(tmp_path, judgments, metric):
    """A warehouse holding the judged pairs, scored by ``metric``, images named in the sample json."""
    wh = Warehouse(str(tmp_path / "wh"))
    unique = judgments.drop_duplicates(["image", "caption"]).reset_index(drop=True)
    keys = [f"{i:07d}" for i in range(len(unique))]
    wh.write_table("quality_scores", "judged-000000", pd.DataFrame({
        "shard": "judged-000000", "key": keys, "caption": unique["caption"],
        "my_score": [metric(img, cap) for img, cap in zip(unique["image"], unique["caption"])]}))
    wh.write_table("pairs", "judged-000000", pd.DataFrame({
        "shard": "judged-000000", "key": keys, "caption": unique["caption"],
        "meta_json": [json.dumps({"image": f"Flicker8k_Dataset/{img}"}) for img in unique["image"]]}))
    return wh


SOURCE = {c: img for img, cs in CAPTIONS.items() for c in cs}


def _right(img, cap):
    """1 when the caption describes the image's scene (its twin's caption), else 0."""
    return 1.0 if SOURCE[cap][0] == img[0] else 0.0


def test_join_and_agreement_with_a_warehouse_column(flickr_files, tmp_path):
    judgments = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"])
    wh = _warehouse(tmp_path, judgments, _right)
    scores = warehouse_scores(wh, "my_score")
    joined = join_scores(judgments, scores)
    assert joined.attrs["matched"] == len(judgments)  # matched on image file name + caption, folders ignored
    # a NUL byte in a judged caption is dropped, as ingest dropped it from the stored one
    nul = judgments.assign(caption=[c.replace(" ", " \x00", 1) for c in judgments["caption"]])
    assert nul["caption"].str.contains("\x00").all() and join_scores(nul, scores).attrs["matched"] == len(judgments)
    report = agreement_report(flickr_files["expert"], "my_score", captions_file=flickr_files["token"],
                              warehouse_root=wh.root, n_boot=30)
    assert [r["protocol"] for r in report["results"]] == ["mean", "each"]
    mean, each = report["results"]
    assert mean["n"] == len(EXPERT) and each["n"] == 3 * len(EXPERT) and each["n_groups"] == len(EXPERT)
    assert mean["kendall_tau_c"]["value"] > 0.5 and mean["pearson"]["value"] > 0.8
    with pytest.raises(ValueError, match="not in quality_scores"):
        warehouse_scores(wh, "nope")
    inverted = _warehouse(tmp_path / "inv", judgments, lambda i, c: -_right(i, c))
    bad = agreement_report(flickr_files["expert"], "my_score", captions_file=flickr_files["token"],
                           warehouse_root=inverted.root, n_boot=10, protocols=("mean",))
    assert bad["results"][0]["kendall_tau_c"]["value"] < -0.5



def test_a_score_column_that_is_not_numeric_is_refused(flickr_files, tmp_path):
    """A text column (datacomp_lang) read as NaN everywhere: the run said "only 0 of 12 judged pairs have a finite
    score", not that the column holds no numbers."""
    judgments = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"])
    wh = _warehouse(tmp_path, judgments, _right)
    wh.write_table("quality_scores", "judged-000000", wh.read_all("quality_scores").assign(lang="en"))
    with pytest.raises(ValueError, match=r"score column 'lang' of quality_scores is not numeric \(e.g. 'en'\); "
                                         r"numeric columns: my_score$"):
        warehouse_scores(wh, "lang")
    result = CliRunner().invoke(main, ["evaluate", "--judgments", str(flickr_files["expert"]), "--captions",
                                       str(flickr_files["token"]), "--score", "lang", "--warehouse", wh.root])
    assert result.exit_code == 2 and "'lang' of quality_scores is not numeric" in result.output, result.output


def test_a_pair_rated_in_several_rows_is_one_pair(flickr_files, tmp_path):
    """One row per annotator is a common layout: the bootstrap draws pairs (all their rows), and the report counts
    pairs, so three ratings of a pair do not narrow the interval as three pairs would. A blank key column (a CSV
    cell reads as "") names no key: the join falls back to image and caption."""
    import csv

    judgments = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"])
    wh = _warehouse(tmp_path, judgments, lambda img, cap: _right(img, cap) + len(cap) / 100)
    path = tmp_path / "annotators.csv"
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["shard", "key", "image", "caption", "score"])
        for row in judgments.itertuples():
            for offset in (-0.5, 0.0, 0.5):
                out.writerow(["", "", row.image, row.caption, row.score + offset])
    report = agreement_report(path, "my_score", warehouse_root=wh.root, n_boot=30)
    result = report["results"][0]
    pairs = len(judgments.drop_duplicates(["image", "caption"]))
    assert result["n"] == 3 * len(judgments) and result["n_groups"] == pairs
    assert result["label"] == "each rating (rows), drawn by pair" and report["matched_rows"] == 3 * len(judgments)
    assert report["matched_pairs"] == report["judged_pairs"] == pairs
    assert "judged pairs" not in (report["unmatched_note"] or "")  # every row matched on image and caption


def test_the_report_counts_pairs_rated_in_several_rows_as_pairs(tmp_path):
    """Three annotators per pair: the title, the counts and the unmatched note say pairs where they mean pairs
    (it said "9 of 9 judged pairs scored" for 3 pairs), and count the rows as ratings."""
    wh = Warehouse(str(tmp_path / "wh"))
    wh.write_table("quality_scores", "judged-000000", pd.DataFrame({
        "shard": "judged-000000", "key": ["0000000", "0000001"], "caption": ["a dog", "a cat"],
        "my_score": [1.0, 2.0]}))
    path = tmp_path / "annotators.csv"
    ratings = {"0000000": (1, 2, 1), "0000001": (3, 4, "n/a"), "0000009": (2, 2, 3)}  # 0000009: not in the warehouse
    path.write_text("key,score\n" + "".join(f"{key},{r}\n" for key, rs in ratings.items() for r in rs))
    report = agreement_report(path, "my_score", warehouse_root=wh.root, n_boot=5)
    assert (report["judged_pairs"], report["matched_pairs"], report["judged_rows"], report["matched_rows"]) == \
        (3, 2, 9, 5)
    assert (report["no_human_score_rows"], report["no_metric_rows"]) == (1, 3)
    assert "joined on key: 1 judged pairs are not in the warehouse's quality_scores" in report["unmatched_note"]
    title = format_agreement(report).splitlines()[0]
    assert "2 of 3 judged pairs (5 of 9 ratings) scored; 1 ratings without a human score that is a number " \
        "(e.g. 'n/a'); 3 ratings without a my_score score" in title, title


def test_judgments_by_key_alone_must_name_one_shard(tmp_path):
    wh = Warehouse(str(tmp_path / "wh"))
    for shard, n, sign in (("part-000000", 7, 1.0), ("part-000001", 4, -1.0)):  # keys restart in every shard
        keys = [f"{i:06d}" for i in range(n)]
        wh.write_table("quality_scores", shard, pd.DataFrame({"shard": shard, "key": keys, "caption": keys,
                                                              "my_score": [sign * i for i in range(n)]}))

    def report(rows, name):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return agreement_report(tmp_path / name, "my_score", warehouse_root=wh.root, n_boot=10)

    shared = [{"key": f"{i:06d}", "score": i} for i in range(4)]  # in both shards, scored +i and -i
    with pytest.raises(ValueError, match=r"4 of its keys are in more than one shard .*000000, 000001.*'shard'"):
        report(shared, "keys.jsonl")
    named = report([{**r, "shard": "part-000001"} for r in shared], "named.jsonl")
    assert named["matched_pairs"] == 4 and named["results"][0]["pearson"]["value"] == pytest.approx(-1.0)
    only_one = report([{"key": f"{i:06d}", "score": i} for i in range(4, 7)], "unique.jsonl")  # shard 0 only
    assert only_one["matched_pairs"] == 3 and only_one["results"][0]["pearson"]["value"] == pytest.approx(1.0)
    # one blank shard cell: every row was joined on its key alone, a shard the warehouse lacks taken for another
    mixed = [{"key": f"{i:06d}", "score": i, "shard": "" if i == 4 else "part-000009"} for i in range(4, 7)]
    with pytest.raises(ValueError, match=r"mixed.jsonl: 1 row\(s\) name no shard while 2 do: fill the shard column"):
        report(mixed, "mixed.jsonl")

def test_a_key_join_that_finds_nothing_says_so(tmp_path):
    wh = Warehouse(str(tmp_path / "wh"))
    keys = [f"{i:07d}" for i in range(5)]  # as `curate evaluate --make-shards` names samples
    wh.write_table("quality_scores", "judged-000000", pd.DataFrame({
        "shard": "judged-000000", "key": keys, "caption": keys, "my_score": [0.0, 1.0, 2.0, 3.0, np.inf]}))

    def report(rows, name):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return agreement_report(tmp_path / name, "my_score", warehouse_root=wh.root, n_boot=10)

    # JSON numbers lose the zero padding: no match, and the error names the key join, not images and captions
    with pytest.raises(ValueError, match=r"joined on key: 5 judged pairs .*'0'.*'0000000'.*JSON numbers") as err:
        report([{"key": i, "score": i} for i in range(5)], "numbers.jsonl")
    assert "image" not in str(err.value)
    # keys written as strings match; the infinite score is left out of the matched pairs, as a NaN one is
    named = report([{"key": k, "score": i} for i, k in enumerate(keys)] + [{"key": "x", "score": 9}], "strings.jsonl")
    assert named["judged_pairs"] == 6 and named["matched_pairs"] == 4 == named["results"][0]["n"]
    assert named["results"][0]["pearson"]["value"] == pytest.approx(1.0)
    assert "1 judged pairs are not in the warehouse's quality_scores (e.g. 'x'" in named["unmatched_note"]
    assert "JSON numbers" not in named["unmatched_note"]


def test_a_blank_key_in_a_key_only_file_leaves_the_other_rows_joined(tmp_path):
    wh = Warehouse(str(tmp_path / "wh"))
    keys = [f"{i:07d}" for i in range(4)]
    wh.write_table("quality_scores", "judged-000000", pd.DataFrame({
        "shard": "judged-000000", "key": keys, "caption": keys, "my_score": [0.0, 1.0, 2.0, 3.0]}))
    (tmp_path / "keys.csv").write_text("key,score\n0000000,0\n,5\n0000002,2\n0000003,3\n")
    report = agreement_report(tmp_path / "keys.csv", "my_score", warehouse_root=wh.root, n_boot=10)
    assert report["matched_pairs"] == 3 and report["results"][0]["pearson"]["value"] == pytest.approx(1.0)
    assert "joined on key: 1 judged pairs are not in the warehouse's quality_scores" in report["unmatched_note"]


def test_reference_baseline_runs_without_a_warehouse(flickr_files):
    report = agreement_report(flickr_files["expert"], "ref_minilm", captions_file=flickr_files["token"], n_boot=30)
    tau = report["results"][0]["kendall_tau_c"]["value"]
    assert report["warehouse"] is None and report["matched_pairs"] == len(EXPERT)
    assert tau > 0.3  # the right captions are paraphrases of their references
    judgments = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"])
    scores = reference_minilm_scores(judgments)
    assert np.isfinite(scores).all() and scores.max() <= 1.0 + 1e-6


def test_shards_of_judged_pairs(flickr_files, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for img in CAPTIONS:
        (images / img).write_bytes(b"\xff\xd8fake-jpeg")
    judgments = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"])
    paths = write_judgment_shards(judgments, images, tmp_path / "raw", per_shard=5)
    assert [p.name for p in paths] == ["judged-000000.tar", "judged-000001.tar", "judged-000002.tar"]  # 12 pairs
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("0000000.json").read())
    assert names[:3] == ["0000000.jpg", "0000000.txt", "0000000.json"] and meta["image"] in CAPTIONS
    with pytest.raises(FileNotFoundError):
        write_judgment_shards(judgments, tmp_path, tmp_path / "raw2")


def test_make_shards_of_a_keyed_file_says_it_needs_images_and_captions(tmp_path):
    """A file keyed by sample key judges pairs already in a warehouse: --make-shards has nothing to put in a
    shard, and says so (exit 2) instead of a TypeError, leaving no empty folder behind."""
    (tmp_path / "keyed.csv").write_text("key,score\n0000000,1\n0000001,2\n")
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(main, ["evaluate", "--judgments", str(tmp_path / "keyed.csv"), "--make-shards",
                                       str(tmp_path / "shards"), "--images", str(tmp_path / "images")])
    assert result.exit_code == 2, result.output
    assert "--make-shards needs an image file name and a caption in every judged row: 2 of 2 rows have no image" \
        in " ".join(result.output.split())
    assert not (tmp_path / "shards").exists()


def test_cli_evaluate(flickr_files, tmp_path):
    runner = CliRunner()
    judgments = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"])
    wh = _warehouse(tmp_path, judgments, _right)
    out = tmp_path / "agreement.json"
    result = runner.invoke(main, ["evaluate", "--judgments", str(flickr_files["expert"]), "--captions",
                                  str(flickr_files["token"]), "--score", "my_score", "--warehouse", wh.root,
                                  "--bootstrap", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "kendall_tau_c" in result.output and "each expert score" in result.output
    saved = json.loads(out.read_text())
    assert saved["score"] == "my_score" and saved["results"][0]["kendall_tau_c"]["value"] > 0.5
    default = runner.invoke(main, ["evaluate", "--judgments", str(flickr_files["crowd"]), "--captions",
                                   str(flickr_files["token"]), "--score", "my_score", "--warehouse", wh.root,
                                   "--bootstrap", "10"])
    assert default.exit_code == 0, default.output
    assert (tmp_path / "wh" / "evaluation" / "agreement-crowdflower-my_score.json").is_file()
    for args in (["--score", "x"], ["--judgments", str(flickr_files["expert"])],
                 ["--judgments", str(flickr_files["expert"]), "--score", "my_score", "--warehouse", wh.root]):
        bad = runner.invoke(main, ["evaluate", *args])
        assert bad.exit_code == 2, bad.output


def test_cli_labels_from_captions(tmp_path):
    truth = write_truth(make_labelled(shipped_items()), tmp_path / "truth.jsonl")
    out = tmp_path / "labels.json"
    result = CliRunner().invoke(main, ["evaluate", "--labels", str(truth), "--from-captions", "--out", str(out),
                                       "--warehouse", str(tmp_path / "wh")])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["summary"]["noisy_caught"] >= 0.95 and "kept unchanged" in result.output
    assert "labelled samples matched\n" in result.output and "not in the warehouse" not in result.output  # none read
    missing = CliRunner().invoke(main, ["evaluate", "--labels", str(truth), "--warehouse", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "final_captions" in missing.output


def test_assets_show_the_evaluation(flickr_files, tmp_path):
    from curation_pipeline.assets.evaluation import curation_vs_labels, human_agreement
    from curation_pipeline.resources import WarehouseResource

    judgments = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"])
    wh = _warehouse(tmp_path, judgments, lambda img, cap: _right(img, cap) + len(cap) / 100)  # graded: protocols differ
    truth = write_truth(make_labelled(shipped_items()[:60]), tmp_path / "truth.jsonl")
    resources = {"warehouse": WarehouseResource(raw_root=str(tmp_path), root=wh.root)}
    config = {"ops": {
        "human_agreement": {"config": {"judgments": str(flickr_files["expert"]), "captions": str(flickr_files["token"]),
                                       "score_column": "my_score", "bootstrap": 10}},
        "curation_vs_labels": {"config": {"truth": str(truth), "from_captions": True}},
    }}
    result = dg.materialize([human_agreement, curation_vs_labels], resources=resources, run_config=config,
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert meta["human_agreement"]["kendall_tau_c"].value > 0.5
    shown = meta["human_agreement"]
    assert shown["matched_pairs"].value == shown["matched_rows"].value == len(EXPERT)  # Expert: one row a pair
    # the headline is the protocol of the published figures (each expert score a row), and says so
    saved = json.loads((tmp_path / "wh" / "evaluation" / "agreement-expert-my_score.json").read_text())
    mean, each = ({r["protocol"]: r for r in saved["results"]}[p]["kendall_tau_c"]["value"] for p in ("mean", "each"))
    assert round(mean, 4) != round(each, 4)
    assert meta["human_agreement"]["kendall_tau_c"].value == pytest.approx(each, abs=1e-4)
    assert meta["human_agreement"]["protocol"].value == "each expert score (CLIPScore's rows)"
    labelled = meta["curation_vs_labels"]
    assert labelled["noisy_caught"].value >= 0.95
    # what the figures come from, and how many of them judge a clean caption
    assert labelled["source"].value == "caption path in process (text scorers, default policy, cleaner)"
    assert labelled["dropped_for_image"].value == 0 and labelled["clean_judged"].value > 0
    # its own file: the report of the warehouse's curation (labels.json) is not replaced
    assert (tmp_path / "wh" / "evaluation" / "labels-from-captions.json").is_file()
    assert not (tmp_path / "wh" / "evaluation" / "labels.json").exists()
    unset = dg.materialize([human_agreement], resources=resources, raise_on_error=False,
                           instance=dg.DagsterInstance.ephemeral())
    assert not unset.success


def test_a_constant_score_is_an_error_not_nan(flickr_files, tmp_path):
    """A score column with one value over the judged pairs (text_quality of human captions) has no order:
    every coefficient is NaN. The CLI and the asset fail and say why instead of reporting nothing."""
    judgments = read_judgments(flickr_files["expert"], captions_file=flickr_files["token"])
    wh = _warehouse(tmp_path, judgments, lambda img, cap: 100.0)
    result = CliRunner().invoke(main, ["evaluate", "--judgments", str(flickr_files["expert"]), "--captions",
                                       str(flickr_files["token"]), "--score", "my_score", "--warehouse", wh.root,
                                       "--bootstrap", "5"])
    assert result.exit_code == 2, result.output
    assert f"score column 'my_score' is constant (100) over the {len(EXPERT)} matched pairs: pick another --score" \
        in result.output
    config = {"judgments": str(flickr_files["expert"]), "captions": str(flickr_files["token"]),
              "score_column": "my_score", "bootstrap": 5}
    assert "'my_score' is constant (100)" in _agreement_failure(config, tmp_path, wh)
    # the same for human scores that are all one value
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps({"key": f"{i:07d}", "score": 3}) + "\n" for i in range(len(EXPERT))))
    varied = _warehouse(tmp_path / "v", judgments, _right)
    same = CliRunner().invoke(main, ["evaluate", "--judgments", str(flat), "--score", "my_score",
                                     "--warehouse", varied.root, "--bootstrap", "5"])
    assert same.exit_code == 2 and "the human scores are constant (3)" in same.output, same.output


def test_a_constant_mean_of_varied_expert_scores_is_an_error(flickr_files, tmp_path):
    """Expert's two rows: every pair's three scores the same three values in another order gives one mean per
    pair (no order to agree with) while the single scores vary. The mean row is NaN, so the run fails naming
    it, where it used to print nan beside the single scores' coefficients."""
    shuffled = tmp_path / "Shuffled.txt"
    orders = [(1, 2, 4), (4, 1, 2), (2, 4, 1)]
    shuffled.write_text("".join("\t".join(map(str, (img, cid, *orders[i % 3]))) + "\n"
                                for i, (img, cid, *_) in enumerate(EXPERT)))
    judgments = read_judgments(shuffled, fmt="expert", captions_file=flickr_files["token"])
    wh = _warehouse(tmp_path, judgments, _right)
    report = agreement_report(shuffled, "my_score", fmt="expert", captions_file=flickr_files["token"],
                              warehouse_root=wh.root, n_boot=5)
    each = next(r for r in report["results"] if r["protocol"] == "each")
    assert not math.isnan(each["kendall_tau_c"]["value"])  # the headline row alone has coefficients
    result = CliRunner().invoke(main, ["evaluate", "--judgments", str(shuffled), "--format", "expert", "--captions",
                                       str(flickr_files["token"]), "--score", "my_score", "--warehouse", wh.root,
                                       "--bootstrap", "5"])
    assert result.exit_code == 2, result.output
    assert "mean of the 3 expert scores per pair: the human scores are constant (2.33333)" in result.output
    config = {"judgments": str(shuffled), "format": "expert", "captions": str(flickr_files["token"]),
              "score_column": "my_score", "bootstrap": 5}
    assert "mean of the 3 expert scores per pair: the human scores are constant" in \
        _agreement_failure(config, tmp_path, wh)
    # a folder given as the judgment file: the step's own failure, saying so, not a traceback of IsADirectoryError
    said = _agreement_failure({**config, "judgments": str(tmp_path)}, tmp_path, wh)
    assert "Is a directory" in said and "IsADirectoryError" not in said, said


def _agreement_failure(config: dict, tmp_path, wh) -> str:
    """human_agreement materialized with ``config``: it must fail with no materialization; its error message."""
    from curation_pipeline.assets.evaluation import human_agreement
    from curation_pipeline.resources import WarehouseResource

    run = dg.materialize([human_agreement], resources={"warehouse": WarehouseResource(raw_root=str(tmp_path),
                                                                                      root=wh.root)},
                         run_config={"ops": {"human_agreement": {"config": config}}},
                         instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not run.success and not run.get_asset_materialization_events()
    return next(e for e in run.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error.message


def test_judged_pairs_left_out_are_counted_with_the_reason(tmp_path):
    """A human score that is no number ("n/a", a decimal comma) is left out of the correlation, and the report
    says how many and shows one, as it says how many have no score of the metric."""
    rows = [("a dog runs on grass", "a dog running on the grass", str(s)) for s in (1, 2, 3, 4, 5, 2, 4)]
    rows += [("a cat sleeps", "a cat sleeping", "n/a"), ("a red car", "a red car parked", "3,5")]
    path = tmp_path / "j.csv"
    path.write_text("image,caption,references,score\n" + "".join(
        f"img{i}.jpg,{cap},\"[\"\"{ref}\"\"]\",\"{score}\"\n" for i, (ref, cap, score) in enumerate(rows)))
    report = agreement_report(path, "ref_minilm", n_boot=10)
    assert (report["judged_pairs"], report["matched_pairs"], report["no_human_score_rows"]) == (9, 7, 2)
    assert report["unread_human_scores"] == ["n/a", "3,5"] and report["no_metric_rows"] == 0
    title = format_agreement(report).splitlines()[0]
    assert "7 of 9 judged pairs scored; 2 without a human score that is a number (e.g. 'n/a', '3,5')" in title


def test_too_few_pairs_left_says_why(tmp_path):
    path = tmp_path / "j.csv"
    path.write_text("image,caption,references,score\n" + "".join(
        f'img{i}.jpg,a dog on grass,"[""a dog running on grass""]","{v}"\n' for i, v in enumerate(["3,5", "n/a", "inf"])))
    with pytest.raises(ValueError, match=r"only 0 of 3 judged pairs have a finite score to compare: 3 without a human "
                                         r"score that is a number \(e.g. '3,5', 'n/a', 'inf'\)"):
        agreement_report(path, "ref_minilm", n_boot=10)


def test_labels_whose_every_sample_was_dropped_for_its_image_show_no_clean_figure_in_the_ui(tmp_path):
    """Nothing judged is no perfect score: the UI's metadata leaves clean_false_changes out and counts the drops."""
    from curation_pipeline.assets.evaluation import curation_vs_labels
    from curation_pipeline.resources import WarehouseResource
    from curation_pipeline.storage.warehouse import Warehouse

    wh = Warehouse(str(tmp_path / "wh"))
    captions = {"a": "A dog runs on the beach.", "b": "Two cats sleep on a sofa."}
    wh.write_table("final_captions", "s", pd.DataFrame({
        "shard": "s", "key": list(captions), "outcome": "dropped", "reason": "image_too_small",
        "original_caption": list(captions.values()), "final_caption": None}))
    truth = tmp_path / "truth.jsonl"
    truth.write_text("".join(json.dumps({"shard": "s", "key": k, "label": "clean", "caption": c}) + "\n"
                             for k, c in captions.items()))
    result = dg.materialize([curation_vs_labels], resources={"warehouse": WarehouseResource(root=str(wh.root))},
                            run_config={"ops": {"curation_vs_labels": {"config": {"truth": str(truth)}}}},
                            instance=dg.DagsterInstance.ephemeral())
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["samples"].value == 2 and meta["dropped_for_image"].value == 2
    assert meta["clean_judged"].value == 0 and "clean_false_changes" not in meta
    assert meta["source"].value == f"final_captions of {wh.root}"
    # and so do the saved report and the CLI's table
    saved = json.loads((tmp_path / "wh" / "evaluation" / "labels.json").read_text())
    assert saved["clean"]["n"] == 0 and saved["clean"]["false_changes"] is None
    out = CliRunner().invoke(main, ["evaluate", "--labels", str(truth), "--warehouse", str(tmp_path / "wh")])
    assert out.exit_code == 0 and "clean: kept unchanged n/a, false changes n/a" in out.output, out.output
