"""Provenance is never dropped: the source sample's json travels whole into the curated sidecar
(``test_hostile_input``), and ``curate export-uids`` writes the kept uids as DataComp's subset file,
which its ``resharder.py`` reads to apply the selection to the original pool."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner

from curation_pipeline.cli import EXIT_BAD_INPUT, main
from curation_pipeline.shards.uids import UID_DTYPE, uid_array
from curation_pipeline_tests.faults import builders

pytestmark = pytest.mark.faults

U16 = np.dtype("u8,u8")  # datacomp/resharder.py, verbatim


def datacomp_selects(subset: np.ndarray, key_str: str) -> bool:
    """DataComp's resharder.py, process_example: the uid -> u16 scalar, then searchsorted."""
    key_u16 = np.array([divmod(int(key_str, 16), 2**64)], U16)[0]
    a = np.searchsorted(subset, key_u16, "left")
    b = np.searchsorted(subset, key_u16, "right")
    return bool(b - a)


def test_export_uids_writes_datacomps_subset_format(hostile_run, tmp_path):
    hostile, _, _ = hostile_run
    out = tmp_path / "kept.npy"
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(hostile.warehouse), "--shard", "badjson",
                                       "--out", str(out)])
    assert result.exit_code == EXIT_BAD_INPUT, result.output  # written, but it misses published samples
    with tarfile.open(hostile.warehouse / "curated" / "badjson.tar") as tar:
        sidecars = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    kept = sorted((s["source"] or {}).get("uid") for s in sidecars if (s["source"] or {}).get("uid"))
    assert builders.DATACOMP_META["uid"] in kept and len(kept) == 3
    assert f"3 uids from {len(sidecars)} curated samples in 1 shards" in result.output
    assert f"{len(sidecars) - 3} samples without a uid in their source json" in result.output
    assert "warning" not in result.output  # its tar is the current final_captions'
    # as resharder.py loads it: np.load, dtype u8,u8 (little-endian), sorted
    with open(out, "rb") as handle:
        assert handle.read(6) == b"\x93NUMPY"
    subset = np.load(out, mmap_mode="r")
    assert subset.dtype == U16 and subset.dtype.fields["f0"][0].str == "<u8"
    assert subset.tolist() == sorted(subset.tolist()) and len(subset) == 3
    for uid in kept:
        assert datacomp_selects(subset, uid)
    # a file where its folder should be: a one-line error, exit 2, nothing written
    (tmp_path / "afile").write_text("x")
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(hostile.warehouse), "--shard", "badjson",
                                       "--out", str(tmp_path / "afile" / "kept.npy")])
    assert result.exit_code == EXIT_BAD_INPUT and "cannot write" in result.output, result.output
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    assert not datacomp_selects(subset, "ffffffffffffffffffffffffffffffff")


def test_uid_pairs_split_the_128_bits_as_datacomp():
    array = uid_array(["00000000000000010000000000000002", "ff" * 16, "1", "00000000000000010000000000000002"])
    assert array.dtype == UID_DTYPE == U16
    assert array.tolist() == [(0, 1), (1, 2), (2**64 - 1, 2**64 - 1)]  # sorted, de-duplicated
    with pytest.raises(ValueError, match="hex"):
        uid_array(["not-a-uid"])


def test_export_uids_without_curated_shards_is_bad_input(tmp_path):
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(tmp_path), "--out", str(tmp_path / "x.npy")])
    assert result.exit_code == EXIT_BAD_INPUT and "no curated shard" in result.output
    (tmp_path / "afile").write_text("x")  # a file as the warehouse: one line, not a traceback
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(tmp_path / "afile"), "--out",
                                       str(tmp_path / "x.npy")])
    assert result.exit_code == EXIT_BAD_INPUT and "Traceback" not in result.output, result.output


def test_export_uids_of_samples_without_uids_writes_nothing(hostile_run, tmp_path):
    """The sample shards' json has no uid: an empty subset file would select nothing from the pool, and a
    script would not notice. Nothing is written, exit 2."""
    hostile, _, _ = hostile_run
    out = tmp_path / "kept.npy"
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(hostile.warehouse), "--shard", "hostile",
                                       "--out", str(out)])
    assert result.exit_code == EXIT_BAD_INPUT and "has a hex uid in its source json" in result.output, result.output
    assert not out.exists()


def test_export_uids_says_which_tars_are_not_the_current_final_captions(hostile_run, tmp_path):
    """A tar left by a run killed while publishing (or replaced since): the report calls it unpublished; the
    export still reads it, as curated/ holds it, and now says so, naming the shard."""
    import shutil

    from curation_pipeline.shards.writer import ROWS_DIGEST_KEY
    from curation_pipeline.storage.warehouse import Warehouse

    hostile, _, _ = hostile_run
    copy = tmp_path / "wh"
    shutil.copytree(hostile.warehouse, copy)
    Warehouse(str(copy)).update_table_metadata("final_captions", "badjson", {ROWS_DIGEST_KEY: "0" * 64})
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(copy), "--shard", "badjson",
                                       "--out", str(tmp_path / "kept.npy")])
    assert result.exit_code == EXIT_BAD_INPUT, result.output  # (samples without a uid)
    assert ("  warning: badjson: curated/badjson.tar was not made from the current final_captions (a run was "
            "killed while publishing, or another run replaced it)") in result.output
    # an empty tar (it records nothing) where the table keeps pairs: a killed run's, said too
    with tarfile.open(copy / "curated" / "badjson.tar", "w"):
        pass
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(copy), "--shard", "badjson",
                                       "--out", str(tmp_path / "none.npy")])
    assert result.exit_code == 0, result.output
    assert "  warning: badjson: curated/badjson.tar is empty, though final_captions keeps " in result.output


def _with_uids(tmp_path, shards):
    """A raw folder of these sample shards, each sample's json given a uid as DataComp's (32 hex digits)."""
    import hashlib
    import io

    from curation_pipeline_tests.conftest import RAW_SAMPLES

    raw = tmp_path / "raw"
    raw.mkdir()
    for shard in shards:
        with tarfile.open(RAW_SAMPLES / f"{shard}.tar") as src, tarfile.open(raw / f"{shard}.tar", "w") as dst:
            for member in src.getmembers():
                data = src.extractfile(member).read()
                if member.name.endswith(".json"):
                    data = json.dumps({**json.loads(data), "uid": hashlib.md5(f"{shard}/{member.name}".encode())
                                       .hexdigest()}).encode()
                    member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
    return raw


def test_export_uids_leaves_rewritten_samples_out_unless_asked(tmp_path):
    """DataComp's resharder copies a selected sample from the original pool: a rewritten sample's uid would bring
    back the weak caption its rewrite replaced. Left out by default (counted), exported only when asked."""
    from curation_pipeline_tests.conftest import run_pipeline

    shard = "sample-000001"  # captions the cleaner rewrites
    raw = _with_uids(tmp_path, [shard])
    warehouse = tmp_path / "wh"
    _, results = run_pipeline(raw, warehouse, [shard], report=False)
    assert results[shard].success
    with tarfile.open(warehouse / "curated" / f"{shard}.tar") as tar:
        sidecars = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    as_is = {s["source"]["uid"] for s in sidecars if not s["rewritten"]}
    rewritten = {s["source"]["uid"] for s in sidecars if s["rewritten"]}
    assert as_is and rewritten

    out = tmp_path / "kept.npy"
    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(warehouse), "--out", str(out)])
    assert result.exit_code == 0, result.output
    subset = np.load(out)
    assert len(subset) == len(as_is) and all(datacomp_selects(subset, u) for u in as_is)
    assert not any(datacomp_selects(subset, u) for u in rewritten)
    assert f"{len(rewritten)} rewritten samples left out" in result.output and "--rewritten include" in result.output

    result = CliRunner().invoke(main, ["export-uids", "--warehouse", str(warehouse), "--out", str(out),
                                       "--rewritten", "include"])
    assert result.exit_code == 0, result.output
    subset = np.load(out)
    assert len(subset) == len(as_is | rewritten) and all(datacomp_selects(subset, u) for u in rewritten)
    assert f"{len(rewritten)} of them rewritten: the resharder copies their original captions" in result.output


def test_export_uids_leaves_out_the_shards_the_report_holds_back(tmp_path):
    """A shard decided against an older pool (unsettled: a cross-shard duplicate published twice) or blocked (its
    tar an earlier run's) is not the pool's settled selection: left out, named as the report names it, exit 1;
    --as-published exports the tars as they stand."""
    from curation_pipeline.resources import DriftConfig, PolicyResource
    from curation_pipeline.storage.provenance import FAILED_CHECKS_KEY
    from curation_pipeline.storage.warehouse import Warehouse
    from curation_pipeline_tests.conftest import run_pipeline

    shards = ["sample-000000", "sample-000002"]  # a near copy across them
    raw, warehouse = _with_uids(tmp_path, shards), tmp_path / "wh"
    instance, results = run_pipeline(raw, warehouse, shards, report=False, settle=False)  # one by one
    assert all(r.success for r in results.values())

    def export(*extra):
        return CliRunner().invoke(main, ["export-uids", "--warehouse", str(warehouse), "--out",
                                         str(tmp_path / "kept.npy"), *extra])

    result = export()
    assert result.exit_code == 1, result.output
    assert "  left out: sample-000000: unsettled: decided against an older duplicate index" in result.output
    assert "sample-000002" not in result.output.split("left out")[1].split("\n")[0]
    assert "1 shard left out (named above)" in result.output
    assert "uids from" in result.output and "in 1 shards" in result.output

    # sample-000002 again under a drift check its rewrites fail: blocked, its earlier tar left in curated/
    strict = PolicyResource(drift=DriftConfig(mean_ratio_min=0.999))
    _, again = run_pipeline(raw, warehouse, ["sample-000002"], instance=instance, report=False, policy=strict)
    wh = Warehouse(str(warehouse))
    assert not again["sample-000002"].success
    assert wh.table_metadata("final_captions", "sample-000002").get(FAILED_CHECKS_KEY)
    result = export()
    assert result.exit_code == 1, result.output
    assert ("  left out: sample-000002: blocked: final_captions failed its blocking check(s) caption_length_drift, "
            "so its tar is an earlier run's") in result.output
    everything = export("--as-published")
    assert everything.exit_code == 0 and "  left out:" not in everything.output, everything.output
    assert "in 2 shards" in everything.output
